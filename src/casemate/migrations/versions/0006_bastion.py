"""bastion: review tickets and the recording index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 09:00:00.000000

Chained after 0005 (k8s); 0007 (kubeproxy) follows. Tables: ``review_tickets`` (held
commands) and ``recordings`` (the index of session recordings).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review_tickets",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("command_hash", sa.String(length=64), nullable=False),
        sa.Column("command_display", sa.Text(), nullable=False),
        sa.Column("cluster", sa.String(length=200), nullable=False),
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("rule_id", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("preview_format", sa.String(length=8), nullable=False),
        sa.Column("preview", sa.Text(), nullable=False),
        sa.Column("preview_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=False),
        sa.Column("decision_note", sa.String(length=1000), nullable=False),
        sa.Column("self_approved", sa.Boolean(), nullable=False),
        sa.Column("consumed_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_review_tickets_state", "review_tickets", ["state", "expires_at"])
    op.create_index("ix_review_tickets_username", "review_tickets", ["username", "created_at"])
    op.create_table(
        "recordings",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("cluster", sa.String(length=200), nullable=False),
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("file_name", sa.String(length=100), nullable=False),
        sa.Column("format_version", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=300), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("session_id"),
    )
    op.create_index("ix_recordings_username", "recordings", ["username", "started_at"])
    op.create_index("ix_recordings_started_at", "recordings", ["started_at"])
    op.create_index("ix_recordings_status", "recordings", ["status"])


def downgrade() -> None:
    op.drop_index("ix_recordings_status", table_name="recordings")
    op.drop_index("ix_recordings_started_at", table_name="recordings")
    op.drop_index("ix_recordings_username", table_name="recordings")
    op.drop_table("recordings")
    op.drop_index("ix_review_tickets_username", table_name="review_tickets")
    op.drop_index("ix_review_tickets_state", table_name="review_tickets")
    op.drop_table("review_tickets")
