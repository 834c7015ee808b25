"""posture: exceptions (waivers) with owner, reason and expiry

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 01:40:00.000000

Table ``posture_exceptions``: one row per exception (rule, namespace, kind, name, labels as
JSON); ``expiry_recorded`` is set once its expiry has been audited.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "posture_exceptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expiry_recorded", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_posture_exceptions_rule", "posture_exceptions", ["rule"])


def downgrade() -> None:
    op.drop_index("ix_posture_exceptions_rule", table_name="posture_exceptions")
    op.drop_table("posture_exceptions")
