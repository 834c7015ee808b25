"""Tables of the bastion's review and recording parts (migration 0006).

``review_tickets`` holds commands held for approval, one row per ticket, with their state
machine (:mod:`casemate.bastion.review`). ``recordings`` indexes the asciicast files kept under
the data directory (:mod:`casemate.bastion.recording`); the files themselves are not in the
database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from casemate.core.db import Base, UtcDateTime
from casemate.core.models import BigId


class ReviewTicket(Base):
    """A command held by a review rule. ``state`` is pending, approved, denied, cancelled,
    expired or consumed; only pending and approved tickets are ever updated."""

    __tablename__ = "review_tickets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(16))
    username: Mapped[str] = mapped_column(String(64))
    command_hash: Mapped[str] = mapped_column(String(64))
    command_display: Mapped[str] = mapped_column(Text)
    cluster: Mapped[str] = mapped_column(String(200), default="")
    account: Mapped[str] = mapped_column(String(200), default="")
    namespace: Mapped[str] = mapped_column(String(253), default="")
    rule_id: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(String(1000), default="")
    preview_format: Mapped[str] = mapped_column(String(8), default="none")
    preview: Mapped[str] = mapped_column(Text, default="")
    preview_sha256: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    decided_by: Mapped[str] = mapped_column(String(64), default="")
    decision_note: Mapped[str] = mapped_column(String(1000), default="")
    self_approved: Mapped[bool] = mapped_column(Boolean, default=False)
    consumed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    __table_args__ = (
        Index("ix_review_tickets_state", "state", "expires_at"),
        Index("ix_review_tickets_username", "username", "created_at"),
        {"sqlite_autoincrement": True},
    )


class Recording(Base):
    """One session recording. ``status`` is open (being written), closed (``sha256`` and
    ``size`` final) or interrupted (its writer died; hashed as found). ``file_name`` is relative
    to the recording directory; ``owner`` is ``host:pid`` of the writer."""

    __tablename__ = "recordings"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    cluster: Mapped[str] = mapped_column(String(200), default="")
    account: Mapped[str] = mapped_column(String(200), default="")
    title: Mapped[str] = mapped_column(String(500), default="")
    file_name: Mapped[str] = mapped_column(String(100))
    format_version: Mapped[int] = mapped_column(Integer, default=2)
    width: Mapped[int] = mapped_column(Integer, default=80)
    height: Mapped[int] = mapped_column(Integer, default=24)
    status: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(300), default="")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_recordings_username", "username", "started_at"),
        Index("ix_recordings_started_at", "started_at"),
        Index("ix_recordings_status", "status"),
    )


class CommandPolicy(Base):
    """One stored version of the bastion's command policy (migration 0008): the YAML exactly as
    submitted, its SHA-256 and who stored it. Rows are never updated; the newest ``version`` is
    in force (:mod:`casemate.bastion.policystore`)."""

    __tablename__ = "command_policies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version: Mapped[int] = mapped_column(Integer)
    yaml: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    comment: Mapped[str] = mapped_column(String(1000), default="")

    __table_args__ = (
        UniqueConstraint("version", name="uq_command_policies_version"),
        {"sqlite_autoincrement": True},
    )
