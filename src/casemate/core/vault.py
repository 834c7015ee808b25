"""The secret vault: envelope encryption with AES-256-GCM.

Each secret gets its own random 256-bit data key; the data key is wrapped (AES-256-GCM) by a
master key (the key-encryption key, KEK). Only wrapped data keys and ciphertexts reach the
database. The secret's ``purpose`` is bound as associated data, so a ciphertext moved to another
row or purpose fails authentication instead of decrypting.

Master keys come from ``CASEMATE_MASTER_KEY`` (base64 of 32 bytes; a comma-separated list, the
first one primary, during a rotation) or from a key file (one base64 key a line, primary first)
that Casemate creates with mode 0600 on first start.

Rotation without downtime (:meth:`Vault.rotate`): the new key is put first in the key file with
the old one still listed, every data key is re-wrapped in small batches, then the old key is
dropped. Running instances re-read the key file when it changes and whenever they meet a key id
they do not know, so reads and writes keep working throughout.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.core.db import Database
from casemate.core.files import write_atomic
from casemate.core.models import VaultDataKey, VaultSecret
from casemate.errors import ConfigError, IntegrityError, NotFound

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
_WRAP_AAD = b"casemate-vault-dek-v1:"
_SECRET_AAD = b"casemate-vault-secret-v1:"


@dataclass(frozen=True)
class MasterKey:
    """A key-encryption key. ``repr`` shows only its id."""

    id: str
    key: bytes

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id!r})"

    @classmethod
    def from_bytes(cls, key: bytes) -> MasterKey:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"a master key must be {KEY_BYTES} bytes (base64-encoded)")
        return cls(id=hashlib.sha256(b"casemate-kek-id:" + key).hexdigest()[:16], key=key)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls.from_bytes(secrets.token_bytes(KEY_BYTES))

    def encoded(self) -> str:
        return base64.b64encode(self.key).decode("ascii")


def _decode_key(text: str, where: str) -> MasterKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(text.strip())
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where} holds a key that is not base64") from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{where} holds a key that is not {KEY_BYTES} bytes long")
    return MasterKey.from_bytes(raw)


class Keyring:
    """The master keys in use: ``primary`` wraps new data keys, the others only unwrap."""

    def __init__(self, keys: Sequence[MasterKey], *, source: Callable[[], list[MasterKey]] | None):
        if not keys:
            raise ConfigError("no master key configured")
        self._keys = list(keys)
        self._source = source
        self._lock = threading.Lock()

    @property
    def primary(self) -> MasterKey:
        return self._keys[0]

    @property
    def ids(self) -> list[str]:
        return [k.id for k in self._keys]

    def get(self, kek_id: str) -> MasterKey:
        for k in self._keys:
            if k.id == kek_id:
                return k
        self.reload()
        for k in self._keys:
            if k.id == kek_id:
                return k
        raise IntegrityError(f"the master key {kek_id} needed to unwrap a data key is not loaded")

    def reload(self) -> None:
        if self._source is None:
            return
        keys = self._source()
        if keys:
            with self._lock:
                self._keys = keys

    @classmethod
    def from_env_value(cls, value: str) -> Keyring:
        keys = [_decode_key(p, "CASEMATE_MASTER_KEY") for p in value.split(",") if p.strip()]
        return cls(keys, source=None)

    @classmethod
    def from_file(cls, path: Path, *, create: bool, strict_mode: bool = True) -> Keyring:
        """Load (or create, mode 0600) a key file; refuse one readable by others."""
        if not path.exists():
            if not create:
                raise ConfigError(f"master key file {path} does not exist")
            write_key_file(path, [MasterKey.generate()])
            log.info("created a new master key file at %s", path)
        keyfile = _KeyFile(path, strict_mode)
        return cls(keyfile.read(), source=keyfile.read_if_changed)


class _KeyFile:
    def __init__(self, path: Path, strict_mode: bool) -> None:
        self.path = path
        self.strict_mode = strict_mode
        self._mtime_ns = -1

    def read(self) -> list[MasterKey]:
        try:
            st = self.path.stat()
            if self.strict_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"master key file {self.path} is readable by others; run chmod 600 on it"
                )
            text = self.path.read_text(encoding="ascii")
        except OSError as e:
            raise ConfigError(f"cannot read master key file {self.path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"master key file {self.path} is not a key file") from None
        self._mtime_ns = st.st_mtime_ns
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        keys = [_decode_key(ln, f"master key file {self.path}") for ln in lines]
        if not keys:
            raise ConfigError(f"master key file {self.path} holds no key")
        return keys

    def read_if_changed(self) -> list[MasterKey]:
        try:
            if self.path.stat().st_mtime_ns == self._mtime_ns:
                return []
        except OSError:
            return []
        return self.read()


def write_key_file(path: Path, keys: Sequence[MasterKey]) -> None:
    """Write a key file atomically with mode 0600 (the temporary file is 0600 from birth)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# Casemate master keys: the first one is primary. Keep this file secret.\n"
    body += "".join(k.encoded() + "\n" for k in keys)
    write_atomic(path, body.encode("ascii"), 0o600)


def _now() -> datetime:
    return datetime.now(UTC)


class Vault:
    """Stores secrets encrypted; see the module docstring for the scheme."""

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self.db = db
        self.keyring = keyring

    # Secrets -------------------------------------------------------------------------------

    def put(self, session: Session, purpose: str, plaintext: bytes) -> int:
        """Encrypt and store ``plaintext``; returns the secret's id."""
        self.keyring.reload()  # picks up a rotation in progress (cheap: one stat)
        dek = AESGCM.generate_key(bit_length=256)
        data_key = VaultDataKey(
            kek_id=self.keyring.primary.id,
            wrapped=self._wrap(self.keyring.primary, dek),
            created_at=_now(),
        )
        session.add(data_key)
        session.flush()
        nonce = secrets.token_bytes(NONCE_BYTES)
        secret = VaultSecret(
            purpose=purpose,
            data_key_id=data_key.id,
            nonce=nonce,
            ciphertext=AESGCM(dek).encrypt(nonce, plaintext, _SECRET_AAD + purpose.encode()),
            created_at=_now(),
        )
        session.add(secret)
        session.flush()
        return secret.id

    def get(self, session: Session, secret_id: int, purpose: str) -> bytes:
        """Decrypt a secret; a wrong purpose or tampered row raises ``IntegrityError``."""
        row = session.get(VaultSecret, secret_id)
        if row is None:
            raise NotFound(f"secret {secret_id} does not exist")
        if row.purpose != purpose:
            raise IntegrityError(f"secret {secret_id} is not stored for this purpose")
        data_key = session.get(VaultDataKey, row.data_key_id)
        if data_key is None:
            raise IntegrityError(f"secret {secret_id} has lost its data key")
        dek = self._unwrap(data_key)
        try:
            return AESGCM(dek).decrypt(row.nonce, row.ciphertext, _SECRET_AAD + purpose.encode())
        except InvalidTag:
            raise IntegrityError(f"secret {secret_id} failed authentication") from None

    def replace(self, session: Session, secret_id: int, purpose: str, plaintext: bytes) -> None:
        """Re-encrypt a secret in place under a fresh data key and nonce."""
        row = session.get(VaultSecret, secret_id)
        if row is None:
            raise NotFound(f"secret {secret_id} does not exist")
        new_id = self.put(session, purpose, plaintext)
        new = session.get(VaultSecret, new_id)
        assert new is not None
        old_key_id = row.data_key_id
        row.purpose, row.data_key_id, row.nonce, row.ciphertext = (
            purpose,
            new.data_key_id,
            new.nonce,
            new.ciphertext,
        )
        session.delete(new)
        session.flush()
        self._drop_data_key(session, old_key_id)

    def delete(self, session: Session, secret_id: int) -> None:
        row = session.get(VaultSecret, secret_id)
        if row is None:
            return
        key_id = row.data_key_id
        session.delete(row)
        session.flush()
        self._drop_data_key(session, key_id)

    def _drop_data_key(self, session: Session, data_key_id: int) -> None:
        still_used = session.scalar(
            select(VaultSecret.id).where(VaultSecret.data_key_id == data_key_id).limit(1)
        )
        if still_used is None:
            dk = session.get(VaultDataKey, data_key_id)
            if dk is not None:
                session.delete(dk)

    # Key wrapping --------------------------------------------------------------------------

    @staticmethod
    def _wrap(kek: MasterKey, dek: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(kek.key).encrypt(nonce, dek, _WRAP_AAD + kek.id.encode())

    def _unwrap(self, data_key: VaultDataKey) -> bytes:
        kek = self.keyring.get(data_key.kek_id)
        nonce, body = data_key.wrapped[:NONCE_BYTES], data_key.wrapped[NONCE_BYTES:]
        try:
            return AESGCM(kek.key).decrypt(nonce, body, _WRAP_AAD + kek.id.encode())
        except InvalidTag:
            raise IntegrityError(f"data key {data_key.id} failed authentication") from None

    # Rotation ------------------------------------------------------------------------------

    def rewrap_all(self, *, batch: int = 200) -> int:
        """Re-wrap every data key not under the primary key; returns how many were re-wrapped.

        Works in small transactions so concurrent readers and writers are never blocked long.
        """
        primary = self.keyring.primary
        done = 0
        while True:
            with self.db.session() as s:
                rows = s.scalars(
                    select(VaultDataKey)
                    .where(VaultDataKey.kek_id != primary.id)
                    .order_by(VaultDataKey.id)
                    .limit(batch)
                ).all()
                for dk in rows:
                    dek = self._unwrap(dk)
                    dk.wrapped = self._wrap(primary, dek)
                    dk.kek_id = primary.id
                done += len(rows)
            if len(rows) < batch:
                return done

    def count_foreign_keys(self) -> int:
        """Data keys still wrapped by a key other than the primary."""
        with self.db.reader() as s:
            rows = s.scalars(
                select(VaultDataKey.id).where(VaultDataKey.kek_id != self.keyring.primary.id)
            ).all()
            return len(rows)


def rotate_key_file(
    db: Database, path: Path, *, settle_seconds: float = 2.0
) -> tuple[str, str, int]:
    """Rotate the master key kept in ``path``; returns (old id, new id, data keys re-wrapped).

    1. write [new, old] (running instances pick the new primary up on their next write),
    2. re-wrap every data key under the new key, wait for in-flight writes, re-wrap again,
    3. write [new] once no data key needs the old key any more.
    """
    current = _KeyFile(path, strict_mode=True).read()
    old = current[0]
    new = MasterKey.generate()
    write_key_file(path, [new, *current])
    vault = Vault(db, Keyring([new, *current], source=None))
    count = vault.rewrap_all()
    time.sleep(settle_seconds)
    count += vault.rewrap_all()
    if vault.count_foreign_keys():
        raise IntegrityError("some data keys could not be re-wrapped; the old key is kept")
    write_key_file(path, [new])
    return old.id, new.id, count


def open_keyring(
    master_key: str | None, key_file: Path, *, create: bool, dev_mode: bool
) -> Keyring:
    """The keyring the settings describe: the environment's key wins over the key file."""
    if master_key:
        return Keyring.from_env_value(master_key)
    return Keyring.from_file(key_file, create=create, strict_mode=not dev_mode)
