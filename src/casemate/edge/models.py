"""Tables of the edge cloud link (migration 0003).

Gateway side: ``edge_gateway_identity`` (own keys, the cloud's pinned keys), ``edge_outbox``
(reports not yet acknowledged by the broker), ``edge_gateway_push`` (the last image records).
Cloud side: ``edge_cloud_identity`` (the cloud's keys), ``edge_gateways`` (the registry),
``edge_enrolment_tokens``, ``edge_images``, ``edge_rules``, ``edge_authz_requests`` (every
request, held manual approvals included) and ``edge_reports``.

Private keys and link keys live only in the vault (``*_secret_id`` columns); the tables hold
public keys in hex.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from casemate.core.db import Base, UtcDateTime
from casemate.core.models import BigId

# Gateway side ---------------------------------------------------------------------------------


class EdgeGatewayIdentity(Base):
    """This gateway's keys and what it pinned of the cloud at registration."""

    __tablename__ = "edge_gateway_identity"

    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    mac_address: Mapped[str] = mapped_column(String(17))
    x25519_secret_id: Mapped[int] = mapped_column(ForeignKey("vault_secrets.id"))
    ed25519_secret_id: Mapped[int] = mapped_column(ForeignKey("vault_secrets.id"))
    x25519_public: Mapped[str] = mapped_column(String(64))
    ed25519_public: Mapped[str] = mapped_column(String(64))
    cloud_ed25519_public: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cloud_x25519_public: Mapped[str | None] = mapped_column(String(64), nullable=True)
    link_key_secret_id: Mapped[int | None] = mapped_column(
        ForeignKey("vault_secrets.id"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(16), default="unregistered")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    registered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class EdgeOutbox(Base):
    """A report waiting for (or past) delivery; ``seq`` never repeats (AUTOINCREMENT)."""

    __tablename__ = "edge_outbox"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    report_id: Mapped[str] = mapped_column(String(36), unique=True)
    gateway_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_edge_outbox_pending", "gateway_id", "delivered_at", "seq"),
        {"sqlite_autoincrement": True},
    )


class EdgeGatewayPush(Base):
    """The newest verified image records the cloud pushed to this gateway."""

    __tablename__ = "edge_gateway_push"

    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


# Cloud side -----------------------------------------------------------------------------------


class EdgeCloudIdentity(Base):
    """The cloud's signing (Ed25519) and key-agreement (X25519) keys; one row, id 1."""

    __tablename__ = "edge_cloud_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ed25519_secret_id: Mapped[int] = mapped_column(ForeignKey("vault_secrets.id"))
    x25519_secret_id: Mapped[int] = mapped_column(ForeignKey("vault_secrets.id"))
    ed25519_public: Mapped[str] = mapped_column(String(64))
    x25519_public: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class EdgeGateway(Base):
    """A registered gateway: state ``pending``, ``approved`` or ``revoked``."""

    __tablename__ = "edge_gateways"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    mac_address: Mapped[str] = mapped_column(String(17), index=True)
    hostname: Mapped[str] = mapped_column(String(253), default="")
    x25519_public: Mapped[str] = mapped_column(String(64))
    ed25519_public: Mapped[str] = mapped_column(String(64))
    link_key_secret_id: Mapped[int] = mapped_column(ForeignKey("vault_secrets.id"))
    state: Mapped[str] = mapped_column(String(16), index=True)
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    approved_by: Mapped[str] = mapped_column(String(200), default="")
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    enrolment_token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class EdgeEnrolmentToken(Base):
    """A single-use enrolment token; only its SHA-256 is stored (256 bits of entropy)."""

    __tablename__ = "edge_enrolment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    used_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class EdgeImage(Base):
    """Image metadata pushed to gateways: digest allowlist, allowed actions, allowed users."""

    __tablename__ = "edge_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    digests: Mapped[list[str]] = mapped_column(JSON, default=list)
    actions: Mapped[list[str]] = mapped_column(JSON, default=list)
    users: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(200), default="")


class EdgeRule(Base):
    """An automatic approval rule; evaluated by ``position`` then ``id``, first match wins."""

    __tablename__ = "edge_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, index=True)
    gateway: Mapped[str] = mapped_column(String(200), default="*")
    caller: Mapped[str] = mapped_column(String(200), default="*")
    action: Mapped[str] = mapped_column(String(200), default="*")
    image: Mapped[str] = mapped_column(String(512), default="*")
    digest: Mapped[str] = mapped_column(String(200), default="*")
    effect: Mapped[str] = mapped_column(String(8))
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")


class EdgeAuthzRequest(Base):
    """One authorization request and its outcome (``allowed``, ``denied``, ``held``,
    ``expired``). The primary key makes request ids single-use; ``published`` marks decisions
    sent to the gateway (manual ones are sent by the service loop)."""

    __tablename__ = "edge_authz_requests"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(64))
    caller: Mapped[str] = mapped_column(String(64))
    uid: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(64))
    image: Mapped[str | None] = mapped_column(String(512), nullable=True)
    digest: Mapped[str | None] = mapped_column(String(200), nullable=True)
    container: Mapped[str | None] = mapped_column(String(256), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_hash: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    state: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(String(1000), default="")
    hold_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    decided_by: Mapped[str] = mapped_column(String(200), default="")
    published: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_edge_authz_requests_state", "state", "published"),)


class EdgeReport(Base):
    """A report received from a gateway; ``report_id`` is unique (idempotent delivery)."""

    __tablename__ = "edge_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    report_id: Mapped[str] = mapped_column(String(36), unique=True)
    gateway_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_edge_reports_gateway_seq", "gateway_id", "seq"),)
