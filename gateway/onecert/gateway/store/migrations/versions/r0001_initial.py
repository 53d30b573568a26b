"""Initial schema: replay cache, unbind tickets, number events, deliveries, audit chain.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copy of the types at this revision (the store's UTCDateTime stores
# through this type).
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "replay_cache",
        sa.Column("jti", sa.String(128), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_replay_cache"),
    )
    op.create_index("ix_replay_cache_expires_at", "replay_cache", ["expires_at"])

    op.create_table(
        "unbind_tickets",
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("handle_digest", sa.String(64), nullable=False),
        sa.Column("sub_hash", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("msisdn_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_until", _TS),
        sa.Column("provider_outcome", sa.String(16)),
        sa.Column("provider_reason", sa.Text()),
        sa.Column("answered_at", _TS),
        sa.Column("last_error", sa.Text()),
        sa.Column("closed_at", _TS),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_unbind_tickets"),
        sa.UniqueConstraint("handle_digest", name="uq_unbind_tickets_handle_digest"),
        sa.CheckConstraint(
            "state IN ('QUEUED', 'PENDING', 'DONE', 'REJECTED', 'FAILED')",
            name="ck_unbind_tickets_state",
        ),
        sa.CheckConstraint(
            "provider_outcome IS NULL OR provider_outcome IN ('DONE', 'PENDING', 'REJECTED')",
            name="ck_unbind_tickets_provider_outcome",
        ),
    )
    op.create_index(
        "ix_unbind_tickets_state_next_attempt_at", "unbind_tickets", ["state", "next_attempt_at"]
    )
    op.create_index("ix_unbind_tickets_provider_id", "unbind_tickets", ["provider_id"])
    op.create_index("ix_unbind_tickets_sub_hash", "unbind_tickets", ["sub_hash"])
    op.create_index("ix_unbind_tickets_msisdn_hash", "unbind_tickets", ["msisdn_hash"])

    op.create_table(
        "number_events",
        sa.Column("notice_id", sa.String(64), nullable=False),
        sa.Column("carrier_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("msisdn", sa.String(16), nullable=False),
        sa.Column("msisdn_hash", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(16), nullable=False),
        sa.Column("effective_at", _TS, nullable=False),
        sa.Column("quiet_period_ends_at", _TS),
        sa.Column("deadline", _TS, nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("notice_id", name="pk_number_events"),
        sa.UniqueConstraint("carrier_id", "event_id", name="uq_number_events_carrier_id_event_id"),
        sa.CheckConstraint(
            "event_type IN ('CANCELLED', 'RECYCLED')", name="ck_number_events_event_type"
        ),
    )
    op.create_index("ix_number_events_msisdn_hash", "number_events", ["msisdn_hash"])

    op.create_table(
        "deliveries",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("notice_id", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_until", _TS),
        sa.Column("last_error", sa.Text()),
        sa.Column("delivered_at", _TS),
        sa.Column("acknowledged_at", _TS),
        sa.Column("acted_at", _TS),
        sa.Column("confirmed_at", _TS),
        sa.Column("bindings_removed", sa.Integer()),
        sa.PrimaryKeyConstraint("jti", name="pk_deliveries"),
        sa.UniqueConstraint("notice_id", "provider_id", name="uq_deliveries_notice_id_provider_id"),
        sa.CheckConstraint("mode IN ('push', 'poll')", name="ck_deliveries_mode"),
        sa.CheckConstraint(
            "state IN ('PENDING', 'ACKNOWLEDGED', 'FAILED')", name="ck_deliveries_state"
        ),
        sa.ForeignKeyConstraint(
            ["notice_id"],
            ["number_events.notice_id"],
            name="fk_deliveries_notice_id_number_events",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_deliveries_mode_state_next_attempt_at",
        "deliveries",
        ["mode", "state", "next_attempt_at"],
    )
    op.create_index("ix_deliveries_provider_id_state", "deliveries", ["provider_id", "state"])

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "row_hash": "0" * 64}])


def downgrade() -> None:
    for table in (
        "audit_head",
        "audit_log",
        "deliveries",
        "number_events",
        "unbind_tickets",
        "replay_cache",
    ):
        op.drop_table(table)
