"""Tables of the edge proxy (migration 0004).

``edge_proxy_users`` maps local uids (from ``SO_PEERCRED``) to Casemate users with an edge role;
``edge_image_trust`` holds the digest allowlist per repository; ``edge_cosign_keys`` the cosign
public keys (public material: stored as PEM, integrity matters, confidentiality does not);
``edge_image_signatures`` stored simple-signing payloads and their signatures.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from casemate.core.db import Base, UtcDateTime


class EdgeProxyUser(Base):
    """A local uid and the Casemate user (and edge role) behind it."""

    __tablename__ = "edge_proxy_users"

    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(200), default="")


class EdgeImageTrust(Base):
    """A repository's allowlisted digests and whether its digests must also be signed."""

    __tablename__ = "edge_image_trust"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    digests: Mapped[list[str]] = mapped_column(JSON, default=list)
    require_signature: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(200), default="")


class EdgeCosignKey(Base):
    """A trusted cosign public key (ECDSA P-256, PEM)."""

    __tablename__ = "edge_cosign_keys"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(71), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")


class EdgeImageSignature(Base):
    """A stored cosign signature: the exact payload bytes and the base64 signature."""

    __tablename__ = "edge_image_signatures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    digest: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    key_name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")
