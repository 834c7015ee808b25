"""The cloud side of the edge guard: gateway registry, approval policy, decisions, reports.

:class:`CloudRegistry` holds the state (synchronous; used by the service and the CLI);
:class:`CloudService` connects it to the MQTT broker. Only one service should run per
database.

Approval policy, in order (pure: :func:`evaluate` over frozen :class:`Rule` and
:class:`~casemate.edge.messages.ImageGrant` data):

1. The gateway must be approved (a pending or revoked gateway is denied, with a signed reason).
2. If an image record exists for the request's image (matched on the normalised repository
   name), the caller, action and digest must be allowed by it. Image records only restrict.
3. The first rule (by position, then id) whose globs match the gateway id, caller, action,
   image name and digest decides: ``allow``, ``deny`` or ``manual``.
4. No rule matches: deny.

A ``manual`` request is stored as ``held``; the gateway is told so (a signed ``held`` decision)
and may wait up to ``hold_seconds``. ``approve``/``deny`` (API, CLI) decide it; the service
loop publishes the signed decision. Held requests past their time become ``expired``.

Reports are accepted from approved gateways only (stored once per ``report_id``, audited as
``edge.report``); a pending gateway keeps them in its outbox until it learns of its approval.

Registration: a gateway sends a self-signed ``Register``; the cloud derives the link key
(X25519 + HKDF) and stores it in the vault. The gateway is ``pending`` until an admin approves
it, unless it presents a valid single-use enrolment token (stored as SHA-256; tokens carry
256 bits of entropy). Enrolment tokens travel in the Register message: use TLS to the broker
and an ACL so that only the cloud may subscribe to ``casemate/v1/register``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.vault import Vault
from casemate.edge import messages as m
from casemate.edge.cloudlink import (
    BrokerConfig,
    ThreadRunner,
    as_utc,
    broker_error,
    cancel_and_wait,
    utc_now,
)
from casemate.edge.models import (
    EdgeAuthzRequest,
    EdgeCloudIdentity,
    EdgeEnrolmentToken,
    EdgeGateway,
    EdgeImage,
    EdgeReport,
    EdgeRule,
)
from casemate.errors import (
    AuthenticationFailed,
    CasemateError,
    Conflict,
    InvalidInput,
    NotFound,
    UpstreamError,
)
from casemate.events import (
    EdgeDecisionIssued,
    EdgeGatewayChanged,
    EdgePolicyChanged,
    EdgeReportReceived,
)
from casemate.risks.imageref import InvalidImageReference, parse_image_ref, split_repository

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_PENDING_GATEWAYS: Final = 1000
_GLOB_CHARS: Final = frozenset("*?[")


# Audit events -----------------------------------------------------------------------------------


# Pure policy ------------------------------------------------------------------------------------


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    MANUAL = "manual"


def _check_glob(value: str, name: str, max_len: int = 200) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or not value.isprintable():
        raise InvalidInput(f"{name} must be a glob of 1 to {max_len} printable characters")
    return value


def image_pattern(text: str) -> str:
    """A rule's image glob: ``*``, a glob over normalised names, or a name (normalised; a tag
    is dropped: rules match repositories, and what they let in is pinned by digest)."""
    _check_glob(text, "image", 512)
    if _GLOB_CHARS & set(text):
        return text
    try:
        name, _tag, digest = split_repository(text)
    except InvalidImageReference as e:
        raise InvalidInput(f"image: {e.message}") from None
    if digest is not None:
        raise InvalidInput("image: give the digest with --digest, not in the image name")
    return name


@dataclass(frozen=True, kw_only=True)
class Rule:
    """An automatic approval rule; every field but ``effect`` is a glob (``*``: anything)."""

    id: int
    effect: Effect
    gateway: str = "*"
    caller: str = "*"
    action: str = "*"
    image: str = "*"
    digest: str = "*"
    note: str = ""
    position: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "effect", Effect(self.effect))
        for name in ("gateway", "caller", "action", "digest"):
            _check_glob(getattr(self, name), name)
        _check_glob(self.image, "image", 512)

    def matches(self, subject: Subject) -> bool:
        return (
            fnmatch.fnmatchcase(subject.gateway_id, self.gateway)
            and fnmatch.fnmatchcase(subject.caller, self.caller)
            and fnmatch.fnmatchcase(subject.action, self.action)
            and _optional_match(subject.image, self.image)
            and _optional_match(subject.digest, self.digest)
        )

    def describe(self) -> str:
        parts = [
            f"{k}={v}"
            for k, v in (
                ("gateway", self.gateway),
                ("caller", self.caller),
                ("action", self.action),
                ("image", self.image),
                ("digest", self.digest),
            )
            if v != "*"
        ]
        return f"{self.effect} " + (" ".join(parts) or "everything")


def _optional_match(value: str | None, pattern: str) -> bool:
    return pattern == "*" or (value is not None and fnmatch.fnmatchcase(value, pattern))


@dataclass(frozen=True, kw_only=True)
class Subject:
    """What the policy sees of a request: the image as a normalised repository name."""

    gateway_id: str
    caller: str
    action: str
    image: str | None
    digest: str | None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    effect: Effect
    rule: str
    reason: str


def subject_of(request: m.AuthorizationRequest) -> Subject | Outcome:
    """The request's subject, or a deny if its image reference cannot be parsed."""
    image: str | None = None
    digest = request.digest
    if request.image is not None:
        try:
            ref = parse_image_ref(request.image)
        except InvalidImageReference:
            return Outcome(
                effect=Effect.DENY, rule="cloud:image", reason="the image reference is invalid"
            )
        if not ref.is_id:
            image = ref.name
            if ref.digest is not None:
                if digest is not None and digest != ref.digest:
                    return Outcome(
                        effect=Effect.DENY,
                        rule="cloud:image",
                        reason="the image reference and the digest disagree",
                    )
                digest = ref.digest
    return Subject(
        gateway_id=request.gateway_id,
        caller=request.caller,
        action=request.action,
        image=image,
        digest=digest,
    )


def evaluate(
    rules: Sequence[Rule], images: Mapping[str, m.ImageGrant], subject: Subject
) -> Outcome:
    """Image records restrict, then the first matching rule decides; nothing matches: deny."""
    grant = images.get(subject.image) if subject.image is not None else None
    if grant is not None and not grant.allows(subject.caller, subject.action, subject.digest):
        if subject.action not in grant.actions:
            why = f"{subject.action} is not an allowed action"
        elif grant.users and subject.caller not in grant.users:
            why = f"{subject.caller} is not an allowed user"
        else:
            why = "the digest is not in the allowlist"
        return Outcome(
            effect=Effect.DENY,
            rule=f"image:{grant.name}"[:200],
            reason=f"{why} for image {grant.name}",
        )
    for rule in rules:
        if rule.matches(subject):
            return Outcome(
                effect=rule.effect,
                rule=f"rule:{rule.id}",
                reason=f"rule {rule.id}: {rule.note or rule.describe()}"[:1000],
            )
    return Outcome(effect=Effect.DENY, rule="cloud:default", reason="no rule allows this")


# Views ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayInfo:
    id: str
    mac_address: str
    hostname: str
    state: str
    fingerprint: str
    registered_at: datetime
    approved_at: datetime | None
    approved_by: str
    last_seen: datetime | None


@dataclass(frozen=True)
class PendingApproval:
    request_id: str
    gateway_id: str
    caller: str
    uid: int
    action: str
    image: str | None
    digest: str | None
    container: str | None
    details: Mapping[str, Any]
    received_at: datetime
    hold_until: datetime


@dataclass(frozen=True)
class ReportInfo:
    report_id: str
    gateway_id: str
    seq: int
    kind: str
    payload: Mapping[str, Any]
    ts: datetime
    received_at: datetime


@dataclass(frozen=True)
class CloudKeys:
    ed25519: Ed25519PrivateKey = field(repr=False)
    x25519: X25519PrivateKey = field(repr=False)

    @property
    def ed25519_public(self) -> str:
        return m.public_hex(self.ed25519)

    @property
    def x25519_public(self) -> str:
        return m.public_hex(self.x25519)

    @property
    def fingerprint(self) -> str:
        return m.key_fingerprint(self.ed25519_public, self.x25519_public)


def _raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _gateway_info(row: EdgeGateway) -> GatewayInfo:
    return GatewayInfo(
        id=row.id,
        mac_address=row.mac_address,
        hostname=row.hostname,
        state=row.state,
        fingerprint=m.key_fingerprint(row.ed25519_public, row.x25519_public),
        registered_at=as_utc(row.registered_at),
        approved_at=as_utc(row.approved_at) if row.approved_at else None,
        approved_by=row.approved_by,
        last_seen=as_utc(row.last_seen) if row.last_seen else None,
    )


def _rule(row: EdgeRule) -> Rule:
    return Rule(
        id=row.id,
        effect=Effect(row.effect),
        gateway=row.gateway,
        caller=row.caller,
        action=row.action,
        image=row.image,
        digest=row.digest,
        note=row.note,
        position=row.position,
    )


def _grant(row: EdgeImage) -> m.ImageGrant:
    return m.ImageGrant(
        name=row.name,
        digests=tuple(row.digests),
        actions=tuple(row.actions),
        users=tuple(row.users),
    )


# The registry -----------------------------------------------------------------------------------


class CloudRegistry:
    """The cloud's state over a database, a vault and the audit log (thread-safe: every call
    opens its own transaction)."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        audit: AuditLog,
        *,
        clock: Clock = utc_now,
        decision_ttl: float = 60.0,
        request_window: float = 30.0,
        hold_seconds: float = 60.0,
    ) -> None:
        self.db = db
        self.vault = vault
        self.audit = audit
        self._clock = clock
        self.decision_ttl = timedelta(seconds=decision_ttl)
        self.request_window = timedelta(seconds=request_window)
        self.hold = timedelta(seconds=hold_seconds)
        self._keys: CloudKeys | None = None
        self._link_keys: dict[tuple[str, int], bytes] = {}

    # Keys --------------------------------------------------------------------------------------

    def keys(self) -> CloudKeys:
        """The cloud's key pairs, created (and stored in the vault) on first use."""
        if self._keys is None:
            with self.db.session() as s:
                row = s.get(EdgeCloudIdentity, 1)
                if row is None:
                    keys = CloudKeys(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())
                    s.add(
                        EdgeCloudIdentity(
                            id=1,
                            ed25519_secret_id=self.vault.put(
                                s, "edge.cloud.ed25519", _raw_private(keys.ed25519)
                            ),
                            x25519_secret_id=self.vault.put(
                                s, "edge.cloud.x25519", _raw_private(keys.x25519)
                            ),
                            ed25519_public=keys.ed25519_public,
                            x25519_public=keys.x25519_public,
                            created_at=utc_now(),
                        )
                    )
                    log.info("created the cloud's key pairs")
                else:
                    keys = CloudKeys(
                        Ed25519PrivateKey.from_private_bytes(
                            self.vault.get(s, row.ed25519_secret_id, "edge.cloud.ed25519")
                        ),
                        X25519PrivateKey.from_private_bytes(
                            self.vault.get(s, row.x25519_secret_id, "edge.cloud.x25519")
                        ),
                    )
            self._keys = keys
        return self._keys

    def fingerprint(self) -> str:
        return self.keys().fingerprint

    def _link_key(self, s: Session, row: EdgeGateway) -> bytes:
        cache_key = (row.id, row.link_key_secret_id)
        key = self._link_keys.get(cache_key)
        if key is None:
            key = self.vault.get(s, row.link_key_secret_id, f"edge.cloud.link.{row.id}")
            self._link_keys[cache_key] = key
        return key

    # Gateways ----------------------------------------------------------------------------------

    def list_gateways(self) -> list[GatewayInfo]:
        with self.db.reader() as s:
            rows = s.scalars(select(EdgeGateway).order_by(EdgeGateway.id)).all()
            return [_gateway_info(r) for r in rows]

    def get_gateway(self, gateway_id: str) -> GatewayInfo:
        with self.db.reader() as s:
            row = s.get(EdgeGateway, gateway_id)
            if row is None:
                raise NotFound(f"gateway {gateway_id} is not registered")
            return _gateway_info(row)

    def _set_gateway_state(self, gateway_id: str, state: str, by: str) -> GatewayInfo:
        with self.db.session() as s:
            row = s.get(EdgeGateway, gateway_id)
            if row is None:
                raise NotFound(f"gateway {gateway_id} is not registered")
            row.state = state
            if state == "approved":
                row.approved_at = utc_now()
                row.approved_by = by
            info = _gateway_info(row)
            self.audit.append(
                EdgeGatewayChanged(
                    actor=by,
                    outcome="ok",
                    action=state,
                    gateway_id=row.id,
                    mac_address=row.mac_address,
                    hostname=row.hostname,
                    fingerprint=info.fingerprint,
                    state=state,
                ),
                session=s,
            )
        return info

    def approve_gateway(self, gateway_id: str, *, by: str) -> GatewayInfo:
        return self._set_gateway_state(gateway_id, "approved", by)

    def revoke_gateway(self, gateway_id: str, *, by: str) -> GatewayInfo:
        return self._set_gateway_state(gateway_id, "revoked", by)

    def remove_gateway(self, gateway_id: str, *, by: str) -> None:
        """Forget a gateway and its link key (it may then register again with new keys)."""
        with self.db.session() as s:
            row = s.get(EdgeGateway, gateway_id)
            if row is None:
                raise NotFound(f"gateway {gateway_id} is not registered")
            secret_id = row.link_key_secret_id
            s.delete(row)
            s.flush()
            self.vault.delete(s, secret_id)
            self.audit.append(
                EdgeGatewayChanged(actor=by, outcome="ok", action="removed", gateway_id=gateway_id),
                session=s,
            )

    def create_enrolment_token(
        self, *, by: str, ttl: timedelta = timedelta(hours=24), note: str = ""
    ) -> str:
        """A single-use token that registers one gateway as approved; shown only here."""
        if ttl <= timedelta(0):
            raise InvalidInput("the token lifetime must be positive")
        token = "cmet_" + secrets.token_urlsafe(32)
        now = utc_now()
        with self.db.session() as s:
            row = EdgeEnrolmentToken(
                token_hash=_token_hash(token),
                prefix=token[:12],
                note=note[:200],
                created_at=now,
                created_by=by,
                expires_at=now + ttl,
            )
            s.add(row)
            s.flush()
            self.audit.append(
                EdgePolicyChanged(
                    actor=by,
                    outcome="ok",
                    action="token_created",
                    target=row.prefix,
                    changes={"expires_at": m.format_ts(now + ttl), "note": note[:200]},
                ),
                session=s,
            )
        return token

    def _consume_token(self, s: Session, token: str, gateway_id: str) -> int | None:
        row = s.scalars(
            select(EdgeEnrolmentToken).where(EdgeEnrolmentToken.token_hash == _token_hash(token))
        ).one_or_none()
        now = utc_now()
        if row is None or row.used_at is not None or as_utc(row.expires_at) <= now:
            return None
        row.used_at = now
        row.used_by = gateway_id
        return row.id

    def handle_register(self, msg: m.Register) -> m.Registered | None:
        """Register (or re-register) a gateway; ``None`` for a message to ignore."""
        now = self._clock()
        try:
            m.verify_signature(msg, msg.ed25519_public)
        except AuthenticationFailed as e:
            log.warning("ignored a registration of %s: %s", msg.gateway_id, e.message)
            return None
        keys = self.keys()
        skew = abs(now - msg.ts)
        if skew > self.request_window:
            log.warning("refused a registration of %s: clock off by %s", msg.gateway_id, skew)
            return self._registered(
                msg,
                keys,
                "rejected",
                f"the gateway's clock is {skew.total_seconds():.0f} s off the cloud's",
            )
        fingerprint = m.key_fingerprint(msg.ed25519_public, msg.x25519_public)
        with self.db.session() as s:
            row = s.get(EdgeGateway, msg.gateway_id)
            if row is None:
                status, reason, action = self._new_gateway(s, msg, keys)
                if not status:
                    return None
            elif (row.ed25519_public, row.x25519_public) != (
                msg.ed25519_public,
                msg.x25519_public,
            ):
                status, action = "rejected", "rejected"
                reason = (
                    "this gateway id is registered with other keys; "
                    "a cloud admin must remove it first"
                )
            else:
                row.last_seen = utc_now()
                row.hostname = msg.hostname
                if row.state == "pending" and msg.enrolment_token:
                    token_id = self._consume_token(s, msg.enrolment_token, msg.gateway_id)
                    if token_id is not None:
                        row.state, row.enrolment_token_id = "approved", token_id
                        row.approved_at, row.approved_by = utc_now(), "enrolment-token"
                status = {"approved": "approved", "pending": "pending"}.get(row.state, "rejected")
                reason = {
                    "approved": "",
                    "pending": "awaiting approval by a cloud admin",
                }.get(row.state, "this gateway is revoked")
                action = "reregistered"
            self.audit.append(
                EdgeGatewayChanged(
                    actor=msg.gateway_id,
                    source="mqtt",
                    outcome=status,
                    action=action,
                    gateway_id=msg.gateway_id,
                    mac_address=msg.mac_address,
                    hostname=msg.hostname,
                    fingerprint=fingerprint,
                    state=status,
                ),
                session=s,
            )
        return self._registered(msg, keys, status, reason)

    def _registered(
        self, msg: m.Register, keys: CloudKeys, status: str, reason: str
    ) -> m.Registered:
        reply = m.Registered(
            gateway_id=msg.gateway_id,
            nonce=msg.nonce,
            status=status,
            reason=reason,
            cloud_ed25519_public=keys.ed25519_public,
            cloud_x25519_public=keys.x25519_public,
            ts=self._clock(),
        )
        return m.sign(reply, keys.ed25519)

    def _new_gateway(self, s: Session, msg: m.Register, keys: CloudKeys) -> tuple[str, str, str]:
        pending = s.scalar(
            select(func.count()).select_from(EdgeGateway).where(EdgeGateway.state == "pending")
        )
        if (pending or 0) >= MAX_PENDING_GATEWAYS:
            log.warning("ignored a registration of %s: too many pending", msg.gateway_id)
            return "", "", ""
        try:
            link_key = m.derive_link_key(
                keys.x25519,
                msg.x25519_public,
                gateway_id=msg.gateway_id,
                gateway_x25519_public=msg.x25519_public,
                cloud_x25519_public=keys.x25519_public,
            )
        except AuthenticationFailed as e:
            log.warning("ignored a registration of %s: %s", msg.gateway_id, e.message)
            return "", "", ""
        token_id = (
            self._consume_token(s, msg.enrolment_token, msg.gateway_id)
            if msg.enrolment_token
            else None
        )
        now = utc_now()
        s.add(
            EdgeGateway(
                id=msg.gateway_id,
                mac_address=msg.mac_address,
                hostname=msg.hostname,
                x25519_public=msg.x25519_public,
                ed25519_public=msg.ed25519_public,
                link_key_secret_id=self.vault.put(s, f"edge.cloud.link.{msg.gateway_id}", link_key),
                state="approved" if token_id is not None else "pending",
                registered_at=now,
                approved_at=now if token_id is not None else None,
                approved_by="enrolment-token" if token_id is not None else "",
                last_seen=now,
                enrolment_token_id=token_id,
            )
        )
        if token_id is not None:
            return "approved", "", "registered"
        reason = "awaiting approval by a cloud admin"
        if msg.enrolment_token:
            reason = "the enrolment token was not accepted; " + reason
        return "pending", reason, "registered"

    # Rules and images --------------------------------------------------------------------------

    def add_rule(
        self,
        *,
        effect: Effect | str,
        by: str,
        gateway: str = "*",
        caller: str = "*",
        action: str = "*",
        image: str = "*",
        digest: str = "*",
        note: str = "",
        position: int | None = None,
    ) -> Rule:
        """Add a rule (appended unless ``position`` is given; lower positions go first)."""
        try:
            effect = Effect(effect)
        except ValueError:
            raise InvalidInput("effect must be allow, deny or manual") from None
        image = image_pattern(image)
        draft = Rule(
            id=0,
            effect=effect,
            gateway=gateway,
            caller=caller,
            action=action,
            image=image,
            digest=digest,
            note=note[:200],
        )
        with self.db.session() as s:
            if position is None:
                last = s.scalar(select(func.max(EdgeRule.position)))
                position = (last or 0) + 10
            row = EdgeRule(
                position=position,
                gateway=draft.gateway,
                caller=draft.caller,
                action=draft.action,
                image=draft.image,
                digest=draft.digest,
                effect=str(draft.effect),
                note=draft.note,
                created_at=utc_now(),
                created_by=by,
            )
            s.add(row)
            s.flush()
            rule = _rule(row)
            self.audit.append(
                EdgePolicyChanged(
                    actor=by,
                    outcome="ok",
                    action="rule_added",
                    target=str(rule.id),
                    changes={"rule": rule.describe(), "position": position, "note": rule.note},
                ),
                session=s,
            )
        return rule

    def list_rules(self) -> list[Rule]:
        with self.db.reader() as s:
            return self._rules(s)

    @staticmethod
    def _rules(s: Session) -> list[Rule]:
        rows = s.scalars(select(EdgeRule).order_by(EdgeRule.position, EdgeRule.id)).all()
        return [_rule(r) for r in rows]

    def remove_rule(self, rule_id: int, *, by: str) -> None:
        with self.db.session() as s:
            row = s.get(EdgeRule, rule_id)
            if row is None:
                raise NotFound(f"rule {rule_id} does not exist")
            described = _rule(row).describe()
            s.delete(row)
            self.audit.append(
                EdgePolicyChanged(
                    actor=by,
                    outcome="ok",
                    action="rule_removed",
                    target=str(rule_id),
                    changes={"rule": described},
                ),
                session=s,
            )

    def set_image(
        self,
        name: str,
        *,
        by: str,
        digests: Iterable[str] = (),
        actions: Iterable[str] = (),
        users: Iterable[str] = (),
    ) -> m.ImageGrant:
        """Create or replace the record of a repository (``nginx`` → docker.io/library/nginx)."""
        try:
            normalised, _tag, pinned = split_repository(name)
        except InvalidImageReference as e:
            raise InvalidInput(e.message) from None
        if pinned is not None:
            digests = [*digests, pinned]
        grant = m.ImageGrant(
            name=normalised, digests=tuple(digests), actions=tuple(actions), users=tuple(users)
        )
        with self.db.session() as s:
            row = s.scalars(select(EdgeImage).where(EdgeImage.name == normalised)).one_or_none()
            if row is None:
                row = EdgeImage(name=normalised)
                s.add(row)
            row.digests, row.actions, row.users = (
                list(grant.digests),
                list(grant.actions),
                list(grant.users),
            )
            row.updated_at, row.updated_by = utc_now(), by
            self.audit.append(
                EdgePolicyChanged(
                    actor=by,
                    outcome="ok",
                    action="image_set",
                    target=normalised,
                    changes=grant.to_doc(),
                ),
                session=s,
            )
        return grant

    def list_images(self) -> list[m.ImageGrant]:
        with self.db.reader() as s:
            return self._images(s)

    @staticmethod
    def _images(s: Session) -> list[m.ImageGrant]:
        return [_grant(r) for r in s.scalars(select(EdgeImage).order_by(EdgeImage.name)).all()]

    def remove_image(self, name: str, *, by: str) -> None:
        try:
            normalised = split_repository(name)[0]
        except InvalidImageReference as e:
            raise InvalidInput(e.message) from None
        with self.db.session() as s:
            row = s.scalars(select(EdgeImage).where(EdgeImage.name == normalised)).one_or_none()
            if row is None:
                raise NotFound(f"no image record for {normalised}")
            s.delete(row)
            self.audit.append(
                EdgePolicyChanged(
                    actor=by, outcome="ok", action="image_removed", target=normalised
                ),
                session=s,
            )

    def build_push(self, gateway_id: str) -> m.Push:
        """The signed image records for one gateway."""
        push = m.Push(
            gateway_id=gateway_id, issued_at=self._clock(), images=tuple(self.list_images())
        )
        return m.sign(push, self.keys().ed25519)

    def approved_gateway_ids(self) -> list[str]:
        with self.db.reader() as s:
            return list(
                s.scalars(
                    select(EdgeGateway.id)
                    .where(EdgeGateway.state == "approved")
                    .order_by(EdgeGateway.id)
                ).all()
            )

    # Authorization -----------------------------------------------------------------------------

    def handle_request(self, topic_gateway: str, req: m.AuthorizationRequest) -> m.Decision | None:
        """Decide a request; ``None`` for a message to ignore (unknown gateway, bad MAC,
        replayed request id)."""
        if req.gateway_id != topic_gateway:
            log.warning("ignored a request on the topic of another gateway")
            return None
        now = self._clock()
        with self.db.session() as s:
            gw = s.get(EdgeGateway, req.gateway_id)
            if gw is None:
                log.info("ignored a request from unknown gateway %s", req.gateway_id)
                return None
            try:
                m.verify_mac(req, self._link_key(s, gw))
            except AuthenticationFailed:
                log.warning("ignored a request with a bad MAC from gateway %s", req.gateway_id)
                return None
            if s.get(EdgeAuthzRequest, req.request_id) is not None:
                log.warning("ignored a replayed request %s from %s", req.request_id, gw.id)
                return None
            outcome = self._outcome(s, gw, req, now)
            hold_until = now + self.hold if outcome.effect is Effect.MANUAL else None
            state = {
                Effect.ALLOW: "allowed",
                Effect.DENY: "denied",
                Effect.MANUAL: "held",
            }[outcome.effect]
            gw.last_seen = utc_now()
            s.add(
                EdgeAuthzRequest(
                    request_id=req.request_id,
                    gateway_id=req.gateway_id,
                    caller=req.caller,
                    uid=req.uid,
                    action=req.action,
                    image=req.image,
                    digest=req.digest,
                    container=req.container,
                    details=m.thaw_json(req.details),
                    request_hash=m.request_hash(req),
                    ts=req.ts,
                    received_at=now,
                    state=state,
                    rule=outcome.rule,
                    reason=outcome.reason,
                    hold_until=hold_until,
                    decided_at=None if hold_until else now,
                    decided_by="" if hold_until else "policy",
                    published=True,
                )
            )
            s.flush()
            self.audit.append(
                EdgeDecisionIssued(
                    actor=req.caller,
                    source=req.gateway_id,
                    outcome=state,
                    gateway_id=req.gateway_id,
                    request_id=req.request_id,
                    caller=req.caller,
                    uid=req.uid,
                    action=req.action,
                    image=req.image,
                    digest=req.digest,
                    container=req.container,
                    request_details=m.thaw_json(req.details),
                    rule=outcome.rule,
                    reason=outcome.reason,
                ),
                session=s,
            )
        return self._decision(
            request_id=req.request_id,
            gateway_id=req.gateway_id,
            request_hash=m.request_hash(req),
            effect=outcome.effect,
            reason=outcome.reason,
            rule=outcome.rule,
            now=now,
            valid_until=hold_until,
            cacheable=outcome.effect is Effect.ALLOW,
        )

    def _outcome(
        self, s: Session, gw: EdgeGateway, req: m.AuthorizationRequest, now: datetime
    ) -> Outcome:
        skew = abs(now - req.ts)
        if skew > self.request_window:
            return Outcome(
                effect=Effect.DENY,
                rule="cloud:clock",
                reason=f"the request is {skew.total_seconds():.0f} s off the cloud's clock",
            )
        if gw.state != "approved":
            reason = {
                "pending": "this gateway awaits approval by a cloud admin",
                "revoked": "this gateway is revoked",
            }.get(gw.state, "this gateway is not approved")
            return Outcome(effect=Effect.DENY, rule=f"cloud:gateway-{gw.state}", reason=reason)
        subject = subject_of(req)
        if isinstance(subject, Outcome):
            return subject
        images = MappingProxyType({g.name: g for g in self._images(s)})
        return evaluate(self._rules(s), images, subject)

    def _decision(
        self,
        *,
        request_id: str,
        gateway_id: str,
        request_hash: str,
        effect: Effect,
        reason: str,
        rule: str,
        now: datetime,
        valid_until: datetime | None = None,
        cacheable: bool = False,
    ) -> m.Decision:
        decision = m.Decision(
            request_id=request_id,
            gateway_id=gateway_id,
            request_hash=request_hash,
            allowed=effect is Effect.ALLOW,
            held=effect is Effect.MANUAL,
            cacheable=cacheable,
            reason=reason,
            rule=rule,
            issued_at=now,
            valid_until=valid_until or now + self.decision_ttl,
        )
        return m.sign(decision, self.keys().ed25519)

    # Manual approvals --------------------------------------------------------------------------

    def pending_approvals(self) -> list[PendingApproval]:
        now = self._clock()
        with self.db.reader() as s:
            rows = s.scalars(
                select(EdgeAuthzRequest)
                .where(EdgeAuthzRequest.state == "held")
                .order_by(EdgeAuthzRequest.received_at)
            ).all()
            return [
                PendingApproval(
                    request_id=r.request_id,
                    gateway_id=r.gateway_id,
                    caller=r.caller,
                    uid=r.uid,
                    action=r.action,
                    image=r.image,
                    digest=r.digest,
                    container=r.container,
                    details=r.details,
                    received_at=as_utc(r.received_at),
                    hold_until=as_utc(r.hold_until),
                )
                for r in rows
                if r.hold_until is not None and as_utc(r.hold_until) > now
            ]

    def approve(self, request_id: str, *, by: str) -> None:
        self._decide_held(request_id, allowed=True, by=by, reason=f"approved by {by}")

    def deny(self, request_id: str, *, by: str, reason: str = "") -> None:
        text = f"denied by {by}" + (f": {reason}" if reason else "")
        self._decide_held(request_id, allowed=False, by=by, reason=text[:1000])

    def _decide_held(self, request_id: str, *, allowed: bool, by: str, reason: str) -> None:
        now = self._clock()
        with self.db.session() as s:
            row = s.get(EdgeAuthzRequest, request_id)
            if row is None:
                raise NotFound(f"request {request_id} does not exist")
            if row.state != "held":
                raise Conflict(f"request {request_id} is not awaiting approval ({row.state})")
            if row.hold_until is None or as_utc(row.hold_until) <= now:
                raise Conflict(f"request {request_id} has expired; the gateway has blocked it")
            row.state = "allowed" if allowed else "denied"
            row.rule, row.reason = "manual", reason
            row.decided_at, row.decided_by = now, by
            row.published = False
            self.audit.append(
                EdgeDecisionIssued(
                    actor=by,
                    source="approval",
                    outcome=row.state,
                    gateway_id=row.gateway_id,
                    request_id=row.request_id,
                    caller=row.caller,
                    uid=row.uid,
                    action=row.action,
                    image=row.image,
                    digest=row.digest,
                    container=row.container,
                    rule="manual",
                    reason=reason,
                ),
                session=s,
            )

    def take_due_decisions(self) -> list[m.Decision]:
        """Manual decisions not yet sent (marked sent now: at most once); expires old holds."""
        now = self._clock()
        out: list[m.Decision] = []
        with self.db.session() as s:
            held = s.scalars(
                select(EdgeAuthzRequest).where(
                    EdgeAuthzRequest.state == "held", EdgeAuthzRequest.hold_until <= now
                )
            ).all()
            for row in held:
                row.state, row.decided_at, row.reason = "expired", now, "manual approval timed out"
                self.audit.append(
                    EdgeDecisionIssued(
                        actor="system",
                        source=row.gateway_id,
                        outcome="expired",
                        gateway_id=row.gateway_id,
                        request_id=row.request_id,
                        caller=row.caller,
                        action=row.action,
                        rule="manual",
                        reason=row.reason,
                    ),
                    session=s,
                )
            due = s.scalars(
                select(EdgeAuthzRequest).where(
                    EdgeAuthzRequest.state.in_(("allowed", "denied")),
                    EdgeAuthzRequest.published.is_(False),
                )
            ).all()
            for row in due:
                row.published = True
                out.append(
                    self._decision(
                        request_id=row.request_id,
                        gateway_id=row.gateway_id,
                        request_hash=row.request_hash,
                        effect=Effect.ALLOW if row.state == "allowed" else Effect.DENY,
                        reason=row.reason,
                        rule=row.rule,
                        now=now,
                    )
                )
        return out

    # Reports -----------------------------------------------------------------------------------

    def handle_report(self, topic_gateway: str, report: m.Report) -> bool:
        """Store and audit a report; ``False`` if ignored (unknown or unapproved gateway, bad
        MAC, duplicate)."""
        if report.gateway_id != topic_gateway:
            log.warning("ignored a report on the topic of another gateway")
            return False
        with self.db.session() as s:
            gw = s.get(EdgeGateway, report.gateway_id)
            if gw is None or gw.state != "approved":
                log.info("ignored a report from unapproved gateway %s", report.gateway_id)
                return False
            try:
                m.verify_mac(report, self._link_key(s, gw))
            except AuthenticationFailed:
                log.warning("ignored a report with a bad MAC from gateway %s", report.gateway_id)
                return False
            exists = s.scalar(select(EdgeReport.id).where(EdgeReport.report_id == report.report_id))
            if exists is not None:
                log.info("dropped duplicate report %s", report.report_id)
                return False
            payload = m.thaw_json(report.payload)
            s.add(
                EdgeReport(
                    report_id=report.report_id,
                    gateway_id=report.gateway_id,
                    seq=report.seq,
                    kind=report.kind,
                    payload=payload,
                    ts=report.ts,
                    received_at=utc_now(),
                )
            )
            gw.last_seen = utc_now()
            s.flush()
            self.audit.append(
                EdgeReportReceived(
                    actor=report.gateway_id,
                    source="mqtt",
                    outcome="received",
                    gateway_id=report.gateway_id,
                    report_id=report.report_id,
                    seq=report.seq,
                    report_kind=report.kind,
                    payload=payload,
                    ts=m.format_ts(report.ts),
                ),
                session=s,
            )
        return True

    def list_reports(self, gateway_id: str | None = None, limit: int = 100) -> list[ReportInfo]:
        with self.db.reader() as s:
            q = select(EdgeReport).order_by(EdgeReport.id.desc()).limit(limit)
            if gateway_id is not None:
                q = q.where(EdgeReport.gateway_id == gateway_id)
            rows = s.scalars(q).all()
            return [
                ReportInfo(
                    report_id=r.report_id,
                    gateway_id=r.gateway_id,
                    seq=r.seq,
                    kind=r.kind,
                    payload=r.payload,
                    ts=as_utc(r.ts),
                    received_at=as_utc(r.received_at),
                )
                for r in reversed(rows)
            ]


# The service ------------------------------------------------------------------------------------


class CloudService:
    """Runs a :class:`CloudRegistry` on the broker until stopped.

    Subscribes (QoS 1; with ``persistent_session``, the default, the broker keeps the
    subscription under ``client_id`` so reports sent while the service is down wait for it) to
    the register topic and every gateway's requests and reports. Requests are decided
    concurrently (up to ``concurrency``); registrations and reports in arrival order. Manual
    decisions made elsewhere (the CLI, another process) are picked up from the database every
    ``poll_interval`` seconds.
    """

    def __init__(
        self,
        registry: CloudRegistry,
        broker: BrokerConfig,
        *,
        client_id: str = "casemate-cloud",
        persistent_session: bool = True,
        poll_interval: float = 0.5,
        concurrency: int = 16,
        reconnect_min: float = 0.2,
        reconnect_max: float = 5.0,
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.client_id = client_id
        self.persistent_session = persistent_session
        self.poll_interval = poll_interval
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._limit = asyncio.Semaphore(concurrency)
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[str] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._threads = ThreadRunner()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, *, wait: float = 10.0) -> None:
        """Load the keys, connect and subscribe; raises ``UpstreamError`` if the broker cannot
        be reached within ``wait`` seconds (0: do not wait)."""
        if self._task is not None:
            raise CasemateError("the cloud service is already started")
        await self._threads.run(self.registry.keys)
        self._task = asyncio.create_task(self._run(), name="casemate-cloud")
        if wait > 0:
            try:
                async with asyncio.timeout(wait):
                    await self._connected.wait()
            except TimeoutError:
                await self.stop()
                raise UpstreamError(
                    f"cannot reach the MQTT broker at {self.broker.host}:{self.broker.port}"
                ) from None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        for worker in list(self._workers):
            await cancel_and_wait(worker)
        await self._threads.drain()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    # Operations --------------------------------------------------------------------------------

    async def approve(self, request_id: str, *, by: str) -> None:
        await self._threads.run(self.registry.approve, request_id, by=by)
        self._wake.set()

    async def deny(self, request_id: str, *, by: str, reason: str = "") -> None:
        await self._threads.run(self.registry.deny, request_id, by=by, reason=reason)
        self._wake.set()

    async def push_image_records(self, gateway_id: str | None = None, *, by: str = "system") -> int:
        """Publish the signed image records (retained) to one gateway or all approved ones;
        returns how many gateways got them."""
        client = self._client
        if client is None or not self.connected:
            raise UpstreamError("the MQTT broker is unreachable")
        return await publish_image_records(client, self.registry, gateway_id, by=by)

    # Loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.reconnect_min
        while True:
            client = self.broker.client(self.client_id, clean_session=not self.persistent_session)
            try:
                async with client:
                    await client.subscribe(
                        [
                            (m.REGISTER_TOPIC, 1),
                            (m.gateway_wildcard(m.AUTHZ_REQUEST), 1),
                            (m.gateway_wildcard(m.REPORT), 1),
                        ]
                    )
                    self._client = client
                    self._connected.set()
                    delay = self.reconnect_min
                    log.info("cloud service connected to the MQTT broker")
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._read(client))
                        tg.create_task(self._publish_due(client))
            except* aiomqtt.MqttError as group:
                log.warning("cloud MQTT connection lost or refused: %s", group.exceptions[0])
            except* CasemateError as group:
                log.error("cloud service error: %s", group.exceptions[0])
            except* Exception as group:
                log.error("cloud service failure; reconnecting", exc_info=group.exceptions[0])
            finally:
                self._connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            topic = str(message.topic)
            if not isinstance(payload, bytes):
                continue
            try:
                await self._dispatch(client, topic, payload)
            except InvalidInput as e:
                log.warning("ignored a malformed message on %s: %s", topic[:120], e)
            except CasemateError as e:
                log.error("could not handle a message on %s: %s", topic[:120], e)

    async def _dispatch(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        if topic == m.REGISTER_TOPIC:
            register = m.Register.from_json(payload)
            reply = await self._threads.run(self.registry.handle_register, register)
            if reply is not None:
                await self._send(
                    client, m.gateway_topic(reply.gateway_id, m.REGISTERED), reply.to_json()
                )
            return
        parsed = m.parse_gateway_topic(topic)
        if parsed is None:
            return
        gateway_id, leaf = parsed
        if leaf == m.REPORT:
            report = m.Report.from_json(payload)
            await self._threads.run(self.registry.handle_report, gateway_id, report)
        elif leaf == m.AUTHZ_REQUEST:
            request = m.AuthorizationRequest.from_json(payload)
            if request.request_id in self._inflight:
                return
            self._inflight.add(request.request_id)
            await self._limit.acquire()
            worker = asyncio.create_task(self._decide(client, gateway_id, request))
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def _decide(
        self, client: aiomqtt.Client, gateway_id: str, request: m.AuthorizationRequest
    ) -> None:
        try:
            decision = await self._threads.run(self.registry.handle_request, gateway_id, request)
            if decision is not None:
                await self._send(
                    client, m.gateway_topic(gateway_id, m.AUTHZ_RESPONSE), decision.to_json()
                )
        except CasemateError as e:
            log.error("could not decide request %s: %s", request.request_id, e)
        finally:
            self._inflight.discard(request.request_id)
            self._limit.release()

    async def _send(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as e:
            log.warning("could not publish on %s: %s", topic, e)

    async def _publish_due(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            for decision in await self._threads.run(self.registry.take_due_decisions):
                await self._send(
                    client,
                    m.gateway_topic(decision.gateway_id, m.AUTHZ_RESPONSE),
                    decision.to_json(),
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()


async def publish_image_records(
    client: aiomqtt.Client, registry: CloudRegistry, gateway_id: str | None, *, by: str
) -> int:
    """Publish signed, retained image records to ``gateway_id`` or every approved gateway."""
    targets = (
        [gateway_id]
        if gateway_id is not None
        else await asyncio.to_thread(registry.approved_gateway_ids)
    )
    for gid in targets:
        push = await asyncio.to_thread(registry.build_push, gid)
        try:
            await client.publish(m.gateway_topic(gid, m.PUSH), push.to_json(), qos=1, retain=True)
        except aiomqtt.MqttError as e:
            raise broker_error(e) from e
    await asyncio.to_thread(
        registry.audit.append,
        EdgePolicyChanged(
            actor=by,
            outcome="ok",
            action="pushed",
            target=gateway_id or "*",
            changes={"gateways": targets},
        ),
    )
    return len(targets)


async def push_once(
    registry: CloudRegistry, broker: BrokerConfig, gateway_id: str | None, *, by: str
) -> int:
    """Connect, publish the image records, disconnect (for the CLI; uses its own client id so
    it never takes over the running service's session)."""
    client = broker.client(f"casemate-cloud-push-{secrets.token_hex(4)}", clean_session=True)
    try:
        async with client:
            return await publish_image_records(client, registry, gateway_id, by=by)
    except aiomqtt.MqttError as e:
        raise broker_error(e) from e
