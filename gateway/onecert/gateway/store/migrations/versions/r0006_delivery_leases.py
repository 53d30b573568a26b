"""A notice's copies lose their per-copy push state: cursors took it over.

Since the notice log (r0004) push workers lease a provider's cursor, not a
copy, and a copy's backoff is its cursor's: ``deliveries.lease_owner``,
``lease_until`` and ``next_attempt_at`` were written (cleared, or set once)
and never read. Dropped, each copy is smaller (storage per notice follows
the routed providers: the less per copy, the better).

Revision ID: r0006_delivery_leases
Revises: r0005_routing_keys
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0006_delivery_leases"
down_revision = "r0005_routing_keys"
branch_labels = None
depends_on = None

_COLUMNS = ("lease_owner", "lease_until", "next_attempt_at")


def upgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): no table copy, which
    # would cascade nothing here but cost the whole table.
    for column in _COLUMNS:
        op.drop_column("deliveries", column)


def downgrade() -> None:
    op.add_column("deliveries", sa.Column("lease_owner", sa.String(128)))
    op.add_column("deliveries", sa.Column("lease_until", sa.DateTime(timezone=True)))
    # NOT NULL as it was, with a constant (SQLite adds no column with another
    # default): nothing read it before this revision either.
    sqlite = op.get_bind().dialect.name == "sqlite"
    epoch = "'1970-01-01 00:00:00.000000'" if sqlite else "'1970-01-01 00:00:00+00'"
    op.add_column(
        "deliveries",
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text(epoch),
        ),
    )
    if not sqlite:
        op.alter_column("deliveries", "next_attempt_at", server_default=None)
