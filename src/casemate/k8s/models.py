"""Tables of Kubernetes cluster access (migration 0005).

``k8s_clusters`` holds each cluster's address and CA bundle; ``k8s_system_accounts`` the
credentials Casemate uses on a cluster (their secrets only as vault ids); ``k8s_grants`` which
user or group may use which system account, in which namespaces, until when.

Credentials never sit in these tables: a token, a client certificate and its key each live in
the vault (``*_secret_id``), bound to the purpose ``k8s:account:<id>:<part>``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from casemate.core.db import Base, UtcDateTime


class Cluster(Base):
    """A registered Kubernetes API server. ``server`` is always ``https://``."""

    __tablename__ = "k8s_clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    server: Mapped[str] = mapped_column(String(2048))
    ca_pem: Mapped[str] = mapped_column(Text)
    ca_fingerprint: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500), default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")


class SystemAccount(Base):
    """A credential Casemate holds for one cluster: a bearer token or a client certificate.

    ``subject`` is the Kubernetes user name the credential authenticates as (checked with a
    SelfSubjectReview when stored). ``sa_namespace``/``sa_name``/``k8s_secret_name`` are set
    when Casemate provisioned the ServiceAccount itself; ``namespaces`` lists the namespaces it
    is bound in (empty: not known to Casemate, e.g. an imported credential).
    """

    __tablename__ = "k8s_system_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("k8s_clusters.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))  # token, client-cert
    token_secret_id: Mapped[int | None] = mapped_column(
        ForeignKey("vault_secrets.id"), nullable=True
    )
    cert_secret_id: Mapped[int | None] = mapped_column(
        ForeignKey("vault_secrets.id"), nullable=True
    )
    key_secret_id: Mapped[int | None] = mapped_column(ForeignKey("vault_secrets.id"), nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(300), default="")
    sa_namespace: Mapped[str | None] = mapped_column(String(63), nullable=True)
    sa_name: Mapped[str | None] = mapped_column(String(253), nullable=True)
    k8s_secret_name: Mapped[str | None] = mapped_column(String(253), nullable=True)
    namespaces: Mapped[list[str]] = mapped_column(JSON, default=list)
    preset: Mapped[str | None] = mapped_column(String(16), nullable=True)
    can_impersonate: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("cluster_id", "name", name="uq_k8s_system_accounts_cluster_name"),
        CheckConstraint("kind IN ('token', 'client-cert')", name="ck_k8s_system_accounts_kind"),
    )


class Grant(Base):
    """A user (``user_id``) or a group (``group_id``) may use ``account_id`` on its cluster in
    ``namespaces`` until ``expires_at`` (``None``: no expiry), unless revoked."""

    __tablename__ = "k8s_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), nullable=True
    )
    cluster_id: Mapped[int] = mapped_column(ForeignKey("k8s_clusters.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(
        ForeignKey("k8s_system_accounts.id", ondelete="CASCADE")
    )
    namespaces: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(String(500), default="")
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_by: Mapped[str] = mapped_column(String(200), default="")

    __table_args__ = (
        CheckConstraint(
            "(user_id IS NULL) <> (group_id IS NULL)", name="ck_k8s_grants_one_subject"
        ),
        Index("ix_k8s_grants_cluster", "cluster_id"),
        Index("ix_k8s_grants_user", "user_id"),
        Index("ix_k8s_grants_group", "group_id"),
    )
