"""edge: gateway identity and outbox, cloud registry, rules, images, requests, reports

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24 09:00:00.000000

``down_revision`` is the newest revision present when this was written (0001). If a 0002 lands
(e.g. from the audit work), point ``down_revision`` at it so the history stays one chain.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Gateway side -----------------------------------------------------------------------------
    op.create_table(
        "edge_gateway_identity",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("mac_address", sa.String(length=17), nullable=False),
        sa.Column("x25519_secret_id", sa.Integer(), nullable=False),
        sa.Column("ed25519_secret_id", sa.Integer(), nullable=False),
        sa.Column("x25519_public", sa.String(length=64), nullable=False),
        sa.Column("ed25519_public", sa.String(length=64), nullable=False),
        sa.Column("cloud_ed25519_public", sa.String(length=64), nullable=True),
        sa.Column("cloud_x25519_public", sa.String(length=64), nullable=True),
        sa.Column("link_key_secret_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("registered_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(["ed25519_secret_id"], ["vault_secrets.id"]),
        sa.ForeignKeyConstraint(["link_key_secret_id"], ["vault_secrets.id"]),
        sa.ForeignKeyConstraint(["x25519_secret_id"], ["vault_secrets.id"]),
        sa.PrimaryKeyConstraint("gateway_id"),
    )
    op.create_table(
        "edge_outbox",
        sa.Column("seq", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("report_id", sa.String(length=36), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("report_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_edge_outbox_pending", "edge_outbox", ["gateway_id", "delivered_at", "seq"])
    op.create_table(
        "edge_gateway_push",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("gateway_id"),
    )

    # Cloud side -------------------------------------------------------------------------------
    op.create_table(
        "edge_cloud_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ed25519_secret_id", sa.Integer(), nullable=False),
        sa.Column("x25519_secret_id", sa.Integer(), nullable=False),
        sa.Column("ed25519_public", sa.String(length=64), nullable=False),
        sa.Column("x25519_public", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["ed25519_secret_id"], ["vault_secrets.id"]),
        sa.ForeignKeyConstraint(["x25519_secret_id"], ["vault_secrets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "edge_gateways",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("mac_address", sa.String(length=17), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("x25519_public", sa.String(length=64), nullable=False),
        sa.Column("ed25519_public", sa.String(length=64), nullable=False),
        sa.Column("link_key_secret_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("registered_at", _TS, nullable=False),
        sa.Column("approved_at", _TS, nullable=True),
        sa.Column("approved_by", sa.String(length=200), nullable=False),
        sa.Column("last_seen", _TS, nullable=True),
        sa.Column("enrolment_token_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["link_key_secret_id"], ["vault_secrets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_edge_gateways_mac_address", "edge_gateways", ["mac_address"])
    op.create_index("ix_edge_gateways_state", "edge_gateways", ["state"])
    op.create_table(
        "edge_enrolment_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
        sa.Column("used_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "edge_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("digests", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("users", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "edge_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=200), nullable=False),
        sa.Column("caller", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("effect", sa.String(length=8), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_edge_rules_position", "edge_rules", ["position"])
    op.create_table(
        "edge_authz_requests",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=True),
        sa.Column("digest", sa.String(length=200), nullable=True),
        sa.Column("container", sa.String(length=256), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("hold_until", _TS, nullable=True),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_edge_authz_requests_received_at", "edge_authz_requests", ["received_at"])
    op.create_index("ix_edge_authz_requests_state", "edge_authz_requests", ["state", "published"])
    op.create_table(
        "edge_reports",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("report_id", sa.String(length=36), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("report_id"),
    )
    op.create_index("ix_edge_reports_gateway_seq", "edge_reports", ["gateway_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_edge_reports_gateway_seq", table_name="edge_reports")
    op.drop_table("edge_reports")
    op.drop_index("ix_edge_authz_requests_state", table_name="edge_authz_requests")
    op.drop_index("ix_edge_authz_requests_received_at", table_name="edge_authz_requests")
    op.drop_table("edge_authz_requests")
    op.drop_index("ix_edge_rules_position", table_name="edge_rules")
    op.drop_table("edge_rules")
    op.drop_table("edge_images")
    op.drop_table("edge_enrolment_tokens")
    op.drop_index("ix_edge_gateways_state", table_name="edge_gateways")
    op.drop_index("ix_edge_gateways_mac_address", table_name="edge_gateways")
    op.drop_table("edge_gateways")
    op.drop_table("edge_cloud_identity")
    op.drop_table("edge_gateway_push")
    op.drop_index("ix_edge_outbox_pending", table_name="edge_outbox")
    op.drop_table("edge_outbox")
    op.drop_table("edge_gateway_identity")
