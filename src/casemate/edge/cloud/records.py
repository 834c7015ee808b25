"""What the cloud registry returns (gateways, held requests, reports, the cloud's keys) and the
row conversions it uses."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from casemate.edge import messages as m
from casemate.edge.cloud.policy import Effect, Rule
from casemate.edge.models import (
    EdgeGateway,
    EdgeImage,
    EdgeRule,
)


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


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _gateway_info(row: EdgeGateway) -> GatewayInfo:
    return GatewayInfo(
        id=row.id,
        mac_address=row.mac_address,
        hostname=row.hostname,
        state=row.state,
        fingerprint=m.key_fingerprint(row.ed25519_public, row.x25519_public),
        registered_at=row.registered_at,
        approved_at=row.approved_at if row.approved_at else None,
        approved_by=row.approved_by,
        last_seen=row.last_seen if row.last_seen else None,
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
