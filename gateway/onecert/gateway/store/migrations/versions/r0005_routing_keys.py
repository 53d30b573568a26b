"""Routing keys: the federation's routing keys by version, once an operator rotated them.

Revision ID: r0005_routing_keys
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0005_routing_keys"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routing_keys",
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_routing_keys"),
        sa.CheckConstraint("state IN ('active', 'live', 'retired')", name="ck_routing_keys_state"),
    )


def downgrade() -> None:
    op.drop_table("routing_keys")
