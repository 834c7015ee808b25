"""kubeproxy: stored kubeconfig credentials of the Kubernetes API proxy

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 15:00:00.000000

``down_revision`` is the newest revision present when this was written (0006). If the chain
is re-ordered, point ``down_revision`` at the newest revision before this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kubeproxy_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("credential_id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("cluster", sa.String(length=63), nullable=False),
        sa.Column("account", sa.String(length=63), nullable=False),
        sa.Column("namespaces", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("credential_id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("kubeproxy_credentials", schema=None) as batch_op:
        batch_op.create_index("ix_kubeproxy_credentials_username", ["username"], unique=False)
        batch_op.create_index("ix_kubeproxy_credentials_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("kubeproxy_credentials", schema=None) as batch_op:
        batch_op.drop_index("ix_kubeproxy_credentials_expires_at")
        batch_op.drop_index("ix_kubeproxy_credentials_username")
    op.drop_table("kubeproxy_credentials")
