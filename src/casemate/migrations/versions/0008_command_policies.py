"""bastion: stored versions of the command policy

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 09:00:00.000000

Table ``command_policies``: one row per stored version of the bastion's command policy (the YAML
as submitted, its SHA-256, who stored it and why); the newest version is in force.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "command_policies",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("yaml", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version", name="uq_command_policies_version"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("command_policies")
