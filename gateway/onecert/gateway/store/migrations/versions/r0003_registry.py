"""The provider registry: entries, their history, enrollment tokens, the version replicas poll;
and the rate limits replicas share.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "registry_entries",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("category", sa.String(32)),
        sa.Column("address", sa.String(255)),
        sa.Column("delivery", sa.String(8), nullable=False),
        sa.Column("plaintext", sa.Boolean(), nullable=False),
        sa.Column("client_cn", sa.String(128)),
        sa.Column("deadline_s", sa.Float()),
        sa.Column("max_concurrency", sa.Integer()),
        sa.Column("prefixes", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("invited_at", _TS),
        sa.Column("joined_at", _TS),
        sa.Column("activated_at", _TS),
        sa.Column("status_changed_at", _TS, nullable=False),
        sa.Column("status_actor", sa.String(128), nullable=False),
        sa.Column("status_reason", sa.Text()),
        sa.Column("cert_serial", sa.String(64)),
        sa.Column("cert_not_after", _TS),
        sa.Column("gate_passed", sa.Boolean()),
        sa.Column("gate_failures", sa.Text()),
        sa.Column("gate_at", _TS),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "id", name="pk_registry_entries"),
        sa.CheckConstraint("kind IN ('provider', 'carrier')", name="ck_registry_entries_kind"),
        sa.CheckConstraint("delivery IN ('push', 'poll')", name="ck_registry_entries_delivery"),
        sa.CheckConstraint(
            "status IN ('invited', 'pending', 'active', 'suspended', 'removed')",
            name="ck_registry_entries_status",
        ),
        sa.CheckConstraint("origin IN ('config', 'enrolled')", name="ck_registry_entries_origin"),
    )
    op.create_index("ix_registry_entries_status", "registry_entries", ["status"])
    op.create_table(
        "registry_history",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16)),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_registry_history"),
    )
    op.create_index("ix_registry_history_kind_entry_id", "registry_history", ["kind", "entry_id"])
    op.create_table(
        "enrollment_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS),
        sa.Column("revoked_at", _TS),
        sa.PrimaryKeyConstraint("token_hash", name="pk_enrollment_tokens"),
    )
    op.create_index("ix_enrollment_tokens_provider_id", "enrollment_tokens", ["provider_id"])
    head = op.create_table(
        "registry_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registry_head"),
    )
    op.bulk_insert(head, [{"id": 1, "version": 0}])
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_rate_limits"),
    )
    op.create_index("ix_rate_limits_tat", "rate_limits", ["tat"])


def downgrade() -> None:
    op.drop_table("rate_limits")
    op.drop_table("registry_head")
    op.drop_table("enrollment_tokens")
    op.drop_table("registry_history")
    op.drop_table("registry_entries")
