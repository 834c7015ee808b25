"""core: single sign-on links of external subjects (LDAP entry, OIDC sub) to users

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 23:30:00.000000

Table ``sso_links``: one row per (provider, subject), unique; deleted with its user.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sso_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "subject", name="uq_sso_links_subject"),
    )
    op.create_index("ix_sso_links_user_id", "sso_links", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_sso_links_user_id", table_name="sso_links")
    op.drop_table("sso_links")
