"""The cloud registry's first layer: keys, gateways, enrolment tokens and registration."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.vault import Vault
from casemate.edge import messages as m
from casemate.edge.cloud.records import (
    CloudKeys,
    GatewayInfo,
    _gateway_info,
    _token_hash,
)
from casemate.edge.linkconfig import (
    raw_private,
    utc_now,
)
from casemate.edge.models import (
    EdgeCloudIdentity,
    EdgeEnrolmentToken,
    EdgeGateway,
)
from casemate.errors import (
    AuthenticationFailed,
    InvalidInput,
    NotFound,
)
from casemate.events import (
    EdgeGatewayChanged,
    EdgePolicyChanged,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_PENDING_GATEWAYS: Final = 1000


class GatewayRegistry:
    """The cloud's keys and its gateways: enrolment tokens, registration, approval state
    (thread-safe: every call opens its own transaction). Extended by the rule, approval and
    report layers into :class:`~casemate.edge.cloud.registry.CloudRegistry`."""

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
                                s, "edge.cloud.ed25519", raw_private(keys.ed25519)
                            ),
                            x25519_secret_id=self.vault.put(
                                s, "edge.cloud.x25519", raw_private(keys.x25519)
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

    def _maced_sender(
        self, s: Session, msg: m.AuthorizationRequest | m.Report, what: str, *, approved: bool
    ) -> EdgeGateway | None:
        """The gateway that sent ``msg`` (a ``what``: request or report), once its MAC under
        that gateway's link key checks out; None, logged, for an unknown gateway (with
        ``approved``: any gateway not approved) or a bad MAC: the message is to be ignored."""
        gw = s.get(EdgeGateway, msg.gateway_id)
        if gw is None or (approved and gw.state != "approved"):
            state = "unapproved" if approved else "unknown"
            log.info("ignored a %s from %s gateway %s", what, state, msg.gateway_id)
            return None
        try:
            m.verify_mac(msg, self._link_key(s, gw))
        except AuthenticationFailed:
            log.warning("ignored a %s with a bad MAC from gateway %s", what, msg.gateway_id)
            return None
        return gw

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
        if row is None or row.used_at is not None or row.expires_at <= now:
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
