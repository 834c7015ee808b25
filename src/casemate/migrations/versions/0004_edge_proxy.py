"""edge proxy: uid mapping, image trust, cosign keys and signatures

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 09:00:00.000000

``down_revision`` is 0003, the newest revision present when this was written. Revisions
written later in parallel (0005 k8s, 0006 bastion, 0007 kubeproxy) must chain after this one
(0005 -> 0004, 0006 -> 0005) so the history stays one chain.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "edge_proxy_users",
        sa.Column("uid", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("uid"),
    )
    op.create_table(
        "edge_image_trust",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("digests", sa.JSON(), nullable=False),
        sa.Column("require_signature", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "edge_cosign_keys",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=71), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_table(
        "edge_image_signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("key_name", sa.String(length=100), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_index("ix_edge_image_signatures_name", "edge_image_signatures", ["name"])


def downgrade() -> None:
    op.drop_index("ix_edge_image_signatures_name", table_name="edge_image_signatures")
    op.drop_table("edge_image_signatures")
    op.drop_table("edge_cosign_keys")
    op.drop_table("edge_image_trust")
    op.drop_table("edge_proxy_users")
