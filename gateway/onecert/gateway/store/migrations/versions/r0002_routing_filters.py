"""Routing filters: providers' sealed membership filters and the version counter replicas poll.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "routing_filters",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("interval_s", sa.Integer()),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_routing_filters"),
        sa.CheckConstraint(
            "kind IN ('snapshot', 'additions', 'opt_out')", name="ck_routing_filters_kind"
        ),
    )
    op.create_index("ix_routing_filters_provider_id", "routing_filters", ["provider_id"])
    head = op.create_table(
        "routing_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_routing_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0}])


def downgrade() -> None:
    op.drop_table("routing_head")
    op.drop_table("routing_filters")
