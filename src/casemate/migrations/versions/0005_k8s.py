"""k8s: clusters, system accounts, grants

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 12:00:00.000000

``down_revision`` is the newest revision present when this was written (0003). If a 0004 lands
in between, point ``down_revision`` at it so the history stays one chain.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "k8s_clusters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("server", sa.String(length=2048), nullable=False),
        sa.Column("ca_pem", sa.Text(), nullable=False),
        sa.Column("ca_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "k8s_system_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("token_secret_id", sa.Integer(), nullable=True),
        sa.Column("cert_secret_id", sa.Integer(), nullable=True),
        sa.Column("key_secret_id", sa.Integer(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("sa_namespace", sa.String(length=63), nullable=True),
        sa.Column("sa_name", sa.String(length=253), nullable=True),
        sa.Column("k8s_secret_name", sa.String(length=253), nullable=True),
        sa.Column("namespaces", sa.JSON(), nullable=False),
        sa.Column("preset", sa.String(length=16), nullable=True),
        sa.Column("can_impersonate", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("rotated_at", _TS, nullable=True),
        sa.CheckConstraint("kind IN ('token', 'client-cert')", name="ck_k8s_system_accounts_kind"),
        sa.ForeignKeyConstraint(["cluster_id"], ["k8s_clusters.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["token_secret_id"], ["vault_secrets.id"]),
        sa.ForeignKeyConstraint(["cert_secret_id"], ["vault_secrets.id"]),
        sa.ForeignKeyConstraint(["key_secret_id"], ["vault_secrets.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cluster_id", "name", name="uq_k8s_system_accounts_cluster_name"),
    )
    op.create_table(
        "k8s_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("namespaces", sa.JSON(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=False),
        sa.CheckConstraint(
            "(user_id IS NULL) <> (group_id IS NULL)", name="ck_k8s_grants_one_subject"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["cluster_id"], ["k8s_clusters.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["account_id"], ["k8s_system_accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_k8s_grants_cluster", "k8s_grants", ["cluster_id"])
    op.create_index("ix_k8s_grants_user", "k8s_grants", ["user_id"])
    op.create_index("ix_k8s_grants_group", "k8s_grants", ["group_id"])


def downgrade() -> None:
    op.drop_index("ix_k8s_grants_group", table_name="k8s_grants")
    op.drop_index("ix_k8s_grants_user", table_name="k8s_grants")
    op.drop_index("ix_k8s_grants_cluster", table_name="k8s_grants")
    op.drop_table("k8s_grants")
    op.drop_table("k8s_system_accounts")
    op.drop_table("k8s_clusters")
