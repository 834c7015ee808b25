"""Users' SSH public keys for the bastion's SSH entry (table ``user_ssh_keys``, migration 0010).

A user may register public keys (OpenSSH ``authorized_keys`` format, one key per entry) to
log in to ``ssh -p PORT user@gateway`` without a password. Only strong key types are accepted:
``ssh-ed25519``, ``ecdsa-sha2-nistp256/384/521`` and ``ssh-rsa`` of at least
:data:`MIN_RSA_BITS` bits; everything else (DSA, short RSA, certificates, security-key types,
options before the key, private keys, several keys at once, garbage) is refused with an
``InvalidInput`` that says why. A key is identified by its SHA-256 fingerprint (as ``ssh-keygen
-l`` prints it, ``SHA256:…``), unique across all users: one key cannot open two accounts.

Adding and removing keys is audited (:class:`~casemate.events.SshKeyChanged`) in the same
transaction. A key login goes through :meth:`SshKeys.check_login`: a disabled or locked account
cannot log in by key either; the SSH layer audits the outcome with :meth:`SshKeys.audit_login`
(:class:`~casemate.events.LoginAttempted`, method ``publickey``) the same way a password login
is audited. Keys are deleted with their user (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Mapped, Session, mapped_column

from casemate.core.audit import AuditLog
from casemate.core.db import Base, Database, UtcDateTime, as_utc
from casemate.core.identity import Identity, Principal, Role, Scope, UserRef
from casemate.core.models import User
from casemate.core.sso.links import SsoLink
from casemate.errors import Conflict, Denied, InvalidInput, NotFound
from casemate.events import LoginAttempted, SshKeyChanged

__all__ = [
    "ALLOWED_KEY_TYPES",
    "MIN_RSA_BITS",
    "KeyLogin",
    "PublicKey",
    "SshKeyInfo",
    "SshKeys",
    "UserSshKey",
    "fingerprint_of",
    "parse_public_key",
]

MIN_RSA_BITS: Final = 3072
ALLOWED_KEY_TYPES: Final = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
MAX_KEY_TEXT: Final = 16 * 1024
MAX_KEYS_PER_USER: Final = 50
_CURVES: Final = {
    "ecdsa-sha2-nistp256": "secp256r1",
    "ecdsa-sha2-nistp384": "secp384r1",
    "ecdsa-sha2-nistp521": "secp521r1",
}
_SYSTEM = "system"


class UserSshKey(Base):
    __tablename__ = "user_ssh_keys"
    __table_args__ = (UniqueConstraint("fingerprint", name="uq_user_ssh_keys_fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    public_key: Mapped[str] = mapped_column(Text)  # "TYPE BASE64", OpenSSH format
    fingerprint: Mapped[str] = mapped_column(String(100))  # "SHA256:...", unique
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


# Pure parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    """A validated public key."""

    algorithm: str  # ssh-ed25519, ecdsa-sha2-nistp256, ..., ssh-rsa
    blob: bytes  # the SSH wire encoding
    bits: int
    comment: str

    @property
    def openssh(self) -> str:
        """``TYPE BASE64`` (the comment is not part of the key)."""
        return f"{self.algorithm} {base64.b64encode(self.blob).decode('ascii')}"

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.blob)


def fingerprint_of(blob: bytes) -> str:
    """The SHA-256 fingerprint of a key's wire encoding, as ``ssh-keygen -l`` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def parse_public_key(text: str) -> PublicKey:
    """Validate one public key in OpenSSH format (``TYPE BASE64 [COMMENT]``); blank lines and
    ``#`` comment lines around it are ignored. Raises ``InvalidInput`` saying what is wrong."""
    if len(text) > MAX_KEY_TEXT:
        raise InvalidInput("that is not a public key (too long)")
    if "PRIVATE KEY" in text:
        raise InvalidInput("this is a private key: give the public key (the .pub file)")
    if "BEGIN SSH2 PUBLIC KEY" in text:
        raise InvalidInput(
            "this is an RFC 4716 key: convert it with 'ssh-keygen -i -f FILE' to OpenSSH format"
        )
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise InvalidInput("no public key given")
    if len(lines) > 1:
        raise InvalidInput("give one public key at a time")
    line = lines[0]
    if not line.isprintable() or not line.isascii():
        raise InvalidInput("that is not a public key (unexpected characters)")
    parts = line.split(None, 2)
    algorithm = parts[0]
    if algorithm not in ALLOWED_KEY_TYPES:
        if any(word in ALLOWED_KEY_TYPES for word in line.split()[1:]):
            raise InvalidInput("options before the key are not supported: give the bare key")
        if "-cert-" in algorithm:
            raise InvalidInput("SSH certificates are not supported: give the public key")
        if algorithm in ("ssh-dss", "ssh-dsa"):
            raise InvalidInput("DSA keys are refused: use an ed25519 key (ssh-keygen -t ed25519)")
        if algorithm.startswith("sk-"):
            raise InvalidInput("security-key (sk-) types are not supported yet")
        if algorithm.startswith("ssh-") or algorithm.startswith("ecdsa-"):
            raise InvalidInput(
                f"key type {algorithm[:40]!r} is not accepted "
                f"(accepted: {', '.join(ALLOWED_KEY_TYPES)})"
            )
        raise InvalidInput("that is not an OpenSSH public key ('ssh-ed25519 AAAA... comment')")
    if len(parts) < 2:
        raise InvalidInput("the key data is missing after the key type")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the key data is not valid base64") from None
    if _wire_type(blob) != algorithm:
        raise InvalidInput("the key data does not match the key type")
    try:
        key = load_ssh_public_key(f"{algorithm} {parts[1]}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput("the key data is malformed") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        bits = 256
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != _CURVES.get(algorithm):
            raise InvalidInput("the key's curve does not match its type")
        bits = key.curve.key_size
    elif isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise InvalidInput(
                f"an RSA key needs at least {MIN_RSA_BITS} bits (this one has {bits}); "
                "better use ed25519 (ssh-keygen -t ed25519)"
            )
    else:  # pragma: no cover - the type check above admits no other kinds
        raise InvalidInput("that key type is not accepted")
    comment = parts[2].strip() if len(parts) > 2 else ""
    return PublicKey(algorithm, blob, bits, comment[:100])


def _wire_type(blob: bytes) -> str:
    if len(blob) < 4:
        return ""
    (length,) = struct.unpack(">I", blob[:4])
    if length > 64 or len(blob) < 4 + length:
        return ""
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return ""


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput("a key needs a name")
    if len(name) > 100:
        raise InvalidInput("a key name is at most 100 characters long")
    if not name.isprintable():
        raise InvalidInput("a key name must not contain control characters")
    return name


def _normalize_fingerprint(value: str) -> str:
    value = value.strip()
    if not value.startswith("SHA256:"):
        value = "SHA256:" + value
    return value.rstrip("=")


# The service ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshKeyInfo:
    id: int
    username: str
    name: str
    algorithm: str
    bits: int
    fingerprint: str
    public_key: str
    created_at: datetime


@dataclass(frozen=True)
class KeyLogin:
    """The result of :meth:`SshKeys.check_login` for a registered key of the user: the
    principal to log in as, or ``refused`` with the reason (for the audit log only)."""

    username: str
    fingerprint: str
    principal: Principal | None
    refused: str = ""
    provider: str = ""  # the single sign-on provider(s) the account is linked to, if any


class SshKeys:
    """Add, list and remove users' SSH keys; check key logins (see the module docstring).

    Mutating methods take ``by`` like :class:`~casemate.core.identity.Identity`: the acting
    principal (the user themself or an admin), or ``None`` for the local system (CLI)."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        identity: Identity,
        *,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.audit = audit
        self.identity = identity
        self._clock = now or (lambda: datetime.now(UTC))

    def add_key(
        self, user: UserRef, text: str, *, by: Principal | None, name: str | None = None
    ) -> SshKeyInfo:
        key = parse_public_key(text)
        key_name = _check_name(name if name is not None else (key.comment or key.algorithm))
        with self.db.session() as s:
            u = self._user(s, user)
            _require_self_or_admin(by, u.id)
            if u.disabled:
                raise Conflict(f"user {u.username} is disabled")
            taken = s.scalars(
                select(UserSshKey).where(UserSshKey.fingerprint == key.fingerprint)
            ).first()
            if taken is not None:
                raise Conflict(f"this key ({key.fingerprint}) is already registered")
            count = len(s.scalars(select(UserSshKey.id).where(UserSshKey.user_id == u.id)).all())
            if count >= MAX_KEYS_PER_USER:
                raise Conflict(f"a user has at most {MAX_KEYS_PER_USER} SSH keys")
            row = UserSshKey(
                user_id=u.id,
                name=key_name,
                public_key=key.openssh,
                fingerprint=key.fingerprint,
                created_at=self._now(),
            )
            s.add(row)
            try:
                s.flush()
            except sa_exc.IntegrityError:
                raise Conflict(f"this key ({key.fingerprint}) is already registered") from None
            self._event(s, by, "added", u.username, row)
            return _info(row, u.username)

    def list_keys(self, user: UserRef) -> list[SshKeyInfo]:
        with self.db.reader() as s:
            u = self._user(s, user)
            rows = s.scalars(
                select(UserSshKey).where(UserSshKey.user_id == u.id).order_by(UserSshKey.id)
            ).all()
            return [_info(r, u.username) for r in rows]

    def remove_key(self, user: UserRef, fingerprint: str, *, by: Principal | None) -> SshKeyInfo:
        wanted = _normalize_fingerprint(fingerprint)
        with self.db.session() as s:
            u = self._user(s, user)
            _require_self_or_admin(by, u.id)
            row = s.scalars(
                select(UserSshKey).where(
                    UserSshKey.user_id == u.id, UserSshKey.fingerprint == wanted
                )
            ).first()
            if row is None:
                raise NotFound(f"user {u.username} has no SSH key {wanted[:60]}")
            info = _info(row, u.username)
            s.delete(row)
            self._event(s, by, "removed", u.username, row)
            return info

    # Logins ------------------------------------------------------------------------------

    def check_login(self, username: str, blob: bytes) -> KeyLogin | None:
        """``None`` unless ``blob`` is a key registered to ``username``; otherwise the
        principal, or the reason the login is refused (disabled or locked account). Writes
        nothing: the caller audits the outcome once the client proved it holds the key."""
        fingerprint = fingerprint_of(blob)
        with self.db.reader() as s:
            row = s.scalars(select(UserSshKey).where(UserSshKey.fingerprint == fingerprint)).first()
            if row is None or _parse_stored(row.public_key) != blob:
                return None
            u = s.get(User, row.user_id)
            if u is None or u.username != username.strip().lower():
                return None
            name, user_id = u.username, u.id
            links = s.scalars(select(SsoLink.provider).where(SsoLink.user_id == user_id))
            provider = ",".join(sorted(set(links)))
        info = self.identity.get_user(user_id)
        if info.disabled:
            return KeyLogin(name, fingerprint, None, "account disabled", provider)
        if info.locked_until is not None:
            return KeyLogin(name, fingerprint, None, "account locked", provider)
        try:
            principal = self.identity.principal_of(user_id)
        except (Denied, NotFound):
            return KeyLogin(name, fingerprint, None, "account disabled or locked", provider)
        return KeyLogin(name, fingerprint, principal, provider=provider)

    def audit_login(self, login: KeyLogin, source: str) -> None:
        """Audit a key login (success, or ``login.refused``) like a password login."""
        event = LoginAttempted(
            actor=login.username,
            source=source[:100],
            outcome="failure" if login.refused or login.principal is None else "success",
            username=login.username,
            method="publickey",
            provider=login.provider,
            reason=login.refused,
            key_fingerprint=login.fingerprint,
        )
        self.audit.append(event)

    def principal_for(self, user_id: int) -> Principal:
        """The current principal of a key-authenticated user (``Denied`` once the account is
        disabled or locked): checked again for every new session on a connection."""
        try:
            return self.identity.principal_of(user_id)
        except NotFound:
            raise Denied("your account no longer exists") from None
        except Denied:
            raise Denied("your account is disabled or locked") from None

    # Helpers -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return as_utc(self._clock())

    @staticmethod
    def _user(s: Session, ref: UserRef) -> User:
        if isinstance(ref, int):
            query = select(User).where(User.id == ref)
        else:
            query = select(User).where(User.username == ref.strip().lower())
        user = s.scalars(query).first()
        if user is None:
            raise NotFound(f"there is no user {ref!r}")
        return user

    def _event(
        self, s: Session, by: Principal | None, action: str, username: str, row: UserSshKey
    ) -> None:
        s.flush()
        event = SshKeyChanged(
            actor=by.username if by is not None else _SYSTEM,
            outcome="success",
            action=action,
            username=username,
            name=row.name,
            algorithm=row.public_key.split(" ", 1)[0],
            fingerprint=row.fingerprint,
        )
        self.audit.append(event, session=s)


def _require_self_or_admin(by: Principal | None, user_id: int) -> None:
    if by is None or by.has_role(Role.ADMIN):
        return
    if by.user_id == user_id and (by.via == "session" or by.allows(Scope.WRITE)):
        return
    raise Denied("only the user themself or an admin may manage these SSH keys")


def _parse_stored(text: str) -> bytes:
    try:
        return base64.b64decode(text.split(" ", 2)[1], validate=True)
    except (IndexError, binascii.Error, ValueError):
        return b""


def _info(row: UserSshKey, username: str) -> SshKeyInfo:
    try:
        key = parse_public_key(row.public_key)
        algorithm, bits = key.algorithm, key.bits
    except InvalidInput:  # pragma: no cover - stored keys were validated
        algorithm, bits = row.public_key.split(" ", 1)[0], 0
    return SshKeyInfo(
        id=row.id,
        username=username,
        name=row.name,
        algorithm=algorithm,
        bits=bits,
        fingerprint=row.fingerprint,
        public_key=row.public_key,
        created_at=row.created_at,
    )
