"""The edge proxy's configuration in the database: who a local uid is, and which images to trust.

Every change is audited (:class:`EdgeProxyConfigChanged`, kind ``edge.proxy.config``) in the
same transaction. The running proxy reads a :class:`ProxySnapshot` (:meth:`ProxyStore.snapshot`)
and refreshes it periodically, so changes made with the CLI in another process take effect
within the proxy's refresh interval. Signatures are verified when they are added (one of the
stored keys must verify them) and again for every snapshot (a removed key stops trusting its
signatures at once).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from casemate.core.audit import AuditLog
from casemate.core.db import Database, as_utc
from casemate.core.identity import validate_name
from casemate.edge import imagetrust as it
from casemate.edge.decide import Role
from casemate.edge.proxy_models import (
    EdgeCosignKey,
    EdgeImageSignature,
    EdgeImageTrust,
    EdgeProxyUser,
)
from casemate.errors import Conflict, InvalidInput, NotFound
from casemate.events import EdgeProxyConfigChanged
from casemate.risks import signatures as sig
from casemate.risks.imageref import InvalidImageReference, is_digest, parse_image_ref

__all__ = [
    "KeyInfo",
    "MappedUser",
    "ProxySnapshot",
    "ProxyStore",
    "SignatureInfo",
]

log = logging.getLogger(__name__)

MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid"
_KEY_NAME_MAX = 100


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class MappedUser:
    uid: int
    username: str
    role: Role


@dataclass(frozen=True)
class KeyInfo:
    name: str
    fingerprint: str
    created_at: datetime


@dataclass(frozen=True)
class SignatureInfo:
    id: int
    name: str
    digest: str
    key_name: str
    created_at: datetime


@dataclass(frozen=True)
class ProxySnapshot:
    """Everything the proxy needs from the database, loaded at once."""

    users: Mapping[int, MappedUser] = field(default_factory=lambda: MappingProxyType({}))
    trust: it.TrustSnapshot = field(default_factory=it.TrustSnapshot)


def parse_role(value: str | Role) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput("the edge role must be 'ordinary' or 'super'") from None


def _check_uid(uid: int) -> int:
    if not 0 <= uid <= MAX_UID:
        raise InvalidInput(f"uid must be between 0 and {MAX_UID}")
    return uid


def _check_key_name(name: str) -> str:
    if not name or len(name) > _KEY_NAME_MAX or not name.isprintable() or name.strip() != name:
        raise InvalidInput(f"a key name is 1-{_KEY_NAME_MAX} printable characters")
    return name


class ProxyStore:
    """Reads and changes the proxy's tables (thread-safe: each call is one transaction)."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit

    def _audit(self, s: Session, by: str, action: str, target: str, **changes: Any) -> None:
        self.audit.append(
            EdgeProxyConfigChanged(
                actor=by, outcome="ok", action=action, target=target, changes=changes
            ),
            session=s,
        )

    # Users -------------------------------------------------------------------------------------

    def map_user(self, uid: int, username: str, role: str | Role, *, by: str) -> MappedUser:
        """Map a local uid to a Casemate user (replacing an earlier mapping of that uid).

        The caller checks that ``username`` exists (the CLI does); a mapping to a user that
        is later deleted leaves the uid without a valid token, so it can only read.
        """
        _check_uid(uid)
        validate_name(username)
        edge_role = parse_role(role)
        with self.db.session() as s:
            row = s.get(EdgeProxyUser, uid)
            before = None if row is None else {"username": row.username, "role": row.role}
            if row is None:
                row = EdgeProxyUser(uid=uid)
                s.add(row)
            row.username = username
            row.role = edge_role.value
            row.updated_at = _now()
            row.updated_by = by
            self._audit(
                s,
                by,
                "user_mapped",
                str(uid),
                username=username,
                role=edge_role.value,
                before=before,
            )
        return MappedUser(uid, username, edge_role)

    def unmap_user(self, uid: int, *, by: str) -> None:
        with self.db.session() as s:
            row = s.get(EdgeProxyUser, uid)
            if row is None:
                raise NotFound(f"uid {uid} is not mapped")
            self._audit(s, by, "user_unmapped", str(uid), username=row.username, role=row.role)
            s.delete(row)

    def list_users(self) -> list[MappedUser]:
        with self.db.reader() as s:
            return [
                _mapped(r) for r in s.scalars(select(EdgeProxyUser).order_by(EdgeProxyUser.uid))
            ]

    def user(self, uid: int) -> MappedUser | None:
        with self.db.reader() as s:
            row = s.get(EdgeProxyUser, uid)
            return None if row is None else _mapped(row)

    # Image allowlist ---------------------------------------------------------------------------

    def allow_image(
        self,
        name: str,
        digests: Iterable[str] = (),
        *,
        by: str,
        require_signature: bool | None = None,
    ) -> it.ImagePolicy:
        """Add ``digests`` to a repository's record (created if needed); ``require_signature``
        set to True/False changes the flag, ``None`` keeps it (False for a new record)."""
        wanted = frozenset(digests)
        policy = it.ImagePolicy(name, wanted)  # validates and normalises
        with self.db.session() as s:
            row = s.get(EdgeImageTrust, policy.name)
            if row is None:
                row = EdgeImageTrust(name=policy.name, digests=[], require_signature=False)
                s.add(row)
            merged = sorted(set(row.digests) | wanted)
            if require_signature is not None:
                row.require_signature = require_signature
            row.digests = merged
            row.updated_at = _now()
            row.updated_by = by
            self._audit(
                s,
                by,
                "image_allowed",
                policy.name,
                added=sorted(wanted),
                digests=merged,
                require_signature=row.require_signature,
            )
            return it.ImagePolicy(policy.name, frozenset(merged), row.require_signature)

    def remove_image(self, name: str, digests: Iterable[str] = (), *, by: str) -> None:
        """Remove some digests from a record, or (no digests given) the whole record."""
        normalised = it.ImagePolicy(name).name
        dropped = set(digests)
        with self.db.session() as s:
            row = s.get(EdgeImageTrust, normalised)
            if row is None:
                raise NotFound(f"there is no trust record for {normalised}")
            if dropped:
                missing = dropped - set(row.digests)
                if missing:
                    raise NotFound(f"{sorted(missing)[0]} is not allowlisted for {normalised}")
                row.digests = sorted(set(row.digests) - dropped)
                row.updated_at = _now()
                row.updated_by = by
                self._audit(s, by, "image_digests_removed", normalised, removed=sorted(dropped))
            else:
                self._audit(s, by, "image_removed", normalised, digests=list(row.digests))
                s.delete(row)

    def list_images(self) -> list[it.ImagePolicy]:
        with self.db.reader() as s:
            return [
                _policy(r) for r in s.scalars(select(EdgeImageTrust).order_by(EdgeImageTrust.name))
            ]

    # Keys --------------------------------------------------------------------------------------

    def add_key(self, name: str, pem: bytes | str, *, by: str) -> KeyInfo:
        """Store a cosign public key (ECDSA P-256 PEM) under ``name``."""
        _check_key_name(name)
        key = sig.load_public_key(pem)
        fingerprint = sig.key_fingerprint(key)
        now = _now()
        with self.db.session() as s:
            if s.get(EdgeCosignKey, name) is not None:
                raise Conflict(f"there is already a key named {name!r}")
            same = s.scalars(
                select(EdgeCosignKey).where(EdgeCosignKey.fingerprint == fingerprint)
            ).first()
            if same is not None:
                raise Conflict(f"this key is already stored as {same.name!r}")
            s.add(
                EdgeCosignKey(
                    name=name,
                    pem=sig.public_pem(key),
                    fingerprint=fingerprint,
                    created_at=now,
                    created_by=by,
                )
            )
            self._audit(s, by, "key_added", name, fingerprint=fingerprint)
        return KeyInfo(name, fingerprint, now)

    def remove_key(self, name: str, *, by: str) -> None:
        with self.db.session() as s:
            row = s.get(EdgeCosignKey, name)
            if row is None:
                raise NotFound(f"there is no key named {name!r}")
            self._audit(s, by, "key_removed", name, fingerprint=row.fingerprint)
            s.delete(row)

    def list_keys(self) -> list[KeyInfo]:
        with self.db.reader() as s:
            rows = s.scalars(select(EdgeCosignKey).order_by(EdgeCosignKey.name))
            return [KeyInfo(r.name, r.fingerprint, as_utc(r.created_at)) for r in rows]

    def _keys(self, s: Session) -> dict[str, ec.EllipticCurvePublicKey]:
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for row in s.scalars(select(EdgeCosignKey)):
            try:
                keys[row.name] = sig.load_public_key(row.pem)
            except sig.SignatureError as e:
                log.warning("ignoring stored key %r: %s", row.name, e.message)
        return keys

    # Signatures --------------------------------------------------------------------------------

    def add_signature(
        self, image: str, payload: bytes, signature: str | bytes, *, by: str
    ) -> SignatureInfo:
        """Store a signature for ``image`` (a repository, optionally with tag or digest).

        It must verify with a stored key now and vouch for ``image``'s repository (and for its
        digest, if ``image`` carries one).
        """
        try:
            ref = parse_image_ref(image)
        except InvalidImageReference as e:
            raise InvalidInput(e.message) from e
        if ref.is_id:
            raise InvalidInput("name the image's repository, not its ID")
        text = signature.decode("ascii", "replace") if isinstance(signature, bytes) else signature
        text = text.strip()
        digest_hash = hashlib.sha256(payload + b"\x00" + text.encode()).hexdigest()
        with self.db.session() as s:
            verified = sig.verify_signature(payload, text, self._keys(s))
            if verified.repository != ref.name:
                raise sig.SignatureError(
                    f"the signature is for {verified.repository}, not for {ref.name}"
                )
            if ref.digest is not None and ref.digest != verified.digest:
                raise sig.SignatureError(
                    f"the signature is for digest {verified.digest}, not {ref.digest}"
                )
            if s.scalars(
                select(EdgeImageSignature).where(EdgeImageSignature.sha256 == digest_hash)
            ).first():
                raise Conflict("this signature is already stored")
            row = EdgeImageSignature(
                name=verified.repository,
                digest=verified.digest,
                payload=payload,
                signature=text,
                sha256=digest_hash,
                key_name=verified.key_name,
                created_at=_now(),
                created_by=by,
            )
            s.add(row)
            s.flush()
            self._audit(
                s,
                by,
                "signature_added",
                verified.repository,
                digest=verified.digest,
                key=verified.key_name,
                id=row.id,
            )
            return _signature_info(row)

    def remove_signature(self, signature_id: int, *, by: str) -> None:
        with self.db.session() as s:
            row = s.get(EdgeImageSignature, signature_id)
            if row is None:
                raise NotFound(f"there is no signature {signature_id}")
            self._audit(s, by, "signature_removed", row.name, digest=row.digest, id=row.id)
            s.delete(row)

    def list_signatures(self) -> list[SignatureInfo]:
        with self.db.reader() as s:
            rows = s.scalars(
                select(EdgeImageSignature).order_by(EdgeImageSignature.name, EdgeImageSignature.id)
            )
            return [_signature_info(r) for r in rows]

    # Everything at once ------------------------------------------------------------------------

    def snapshot(self) -> ProxySnapshot:
        """Users and verified trust, read in one transaction."""
        with self.db.reader() as s:
            users = {r.uid: _mapped(r) for r in s.scalars(select(EdgeProxyUser))}
            policies = [_policy(r) for r in s.scalars(select(EdgeImageTrust))]
            keys = self._keys(s)
            signatures = [
                it.StoredSignature(r.payload, r.signature, ident=str(r.id))
                for r in s.scalars(select(EdgeImageSignature))
            ]
        return ProxySnapshot(
            users=MappingProxyType(users),
            trust=it.build_snapshot(policies, keys, signatures),
        )

    def clear(self, *, by: str) -> None:
        """Remove every mapping and trust record (tests and resets)."""
        with self.db.session() as s:
            for table in (EdgeImageSignature, EdgeCosignKey, EdgeImageTrust, EdgeProxyUser):
                s.execute(delete(table))
            self._audit(s, by, "cleared", "*")


def _mapped(row: EdgeProxyUser) -> MappedUser:
    try:
        role = Role(row.role)
    except ValueError:
        role = Role.ORDINARY  # an unreadable role never grants anything
    return MappedUser(int(row.uid), row.username, role)


def _policy(row: EdgeImageTrust) -> it.ImagePolicy:
    digests = frozenset(d for d in (row.digests or []) if isinstance(d, str) and is_digest(d))
    return it.ImagePolicy(row.name, digests, bool(row.require_signature))


def _signature_info(row: EdgeImageSignature) -> SignatureInfo:
    return SignatureInfo(row.id, row.name, row.digest, row.key_name, as_utc(row.created_at))
