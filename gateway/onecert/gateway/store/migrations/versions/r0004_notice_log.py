"""Notice log: notices in seq order, and one cursor per provider instead of work per delivery.

Every notice gets its place in one ordered log (``number_events.seq``, from
``notice_head``); each provider's copy carries it (``deliveries.seq``), and
``number_events.route_tag`` lets a provider's later filter additions route a
notice to it; ``notice_cursors`` holds, per provider, the last notice routed to it and how
far it has settled them, with the lease a push worker takes on it. Existing
notices are numbered by the order they were recorded in, and every provider
with deliveries gets its cursor.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # NOT NULL with a default first, numbered below: SQLite cannot change a
    # column in place, and copying number_events would cascade-delete deliveries.
    for table in ("number_events", "deliveries"):
        op.add_column(table, sa.Column("seq", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("number_events", sa.Column("route_tag", sa.String(48)))
    op.create_index("ix_number_events_route_tag", "number_events", ["route_tag"])
    head = op.create_table(
        "notice_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notice_head"),
    )
    op.create_table(
        "notice_cursors",
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("acked_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_until", _TS),
        sa.Column("last_error", sa.Text()),
        sa.PrimaryKeyConstraint("provider_id", name="pk_notice_cursors"),
        sa.CheckConstraint("mode IN ('push', 'poll')", name="ck_notice_cursors_mode"),
    )
    op.create_index(
        "ix_notice_cursors_mode_next_attempt_at", "notice_cursors", ["mode", "next_attempt_at"]
    )
    last = _number_notices()
    op.bulk_insert(head, [{"id": 1, "seq": last}])
    op.execute(
        "UPDATE deliveries SET seq = (SELECT n.seq FROM number_events n "
        "WHERE n.notice_id = deliveries.notice_id)"
    )
    _cursors()
    if op.get_bind().dialect.name != "sqlite":
        for table in ("number_events", "deliveries"):
            op.alter_column(table, "seq", server_default=None)
    op.create_index("ix_number_events_seq", "number_events", ["seq"], unique=True)
    op.drop_index("ix_deliveries_provider_id_state", table_name="deliveries")
    # Push work is found through the cursors now: this index only cost storage.
    op.drop_index("ix_deliveries_mode_state_next_attempt_at", table_name="deliveries")
    op.create_index(
        "ix_deliveries_provider_id_state_seq", "deliveries", ["provider_id", "state", "seq"]
    )


def _number_notices() -> int:
    """Number the existing notices 1, 2, ... in the order they were recorded; the last."""
    conn = op.get_bind()
    ids = conn.execute(
        sa.text("SELECT notice_id FROM number_events ORDER BY recorded_at, notice_id")
    ).scalars()
    seq = 0
    for seq, notice_id in enumerate(list(ids), 1):
        conn.execute(
            sa.text("UPDATE number_events SET seq = :seq WHERE notice_id = :id"),
            {"seq": seq, "id": notice_id},
        )
    return seq


def _cursors() -> None:
    """A cursor per provider with deliveries: settled up to just before its first pending one."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT provider_id, MAX(seq) AS head, "
            "MIN(CASE WHEN state = 'PENDING' THEN seq END) AS first_pending, "
            "MAX(mode) AS mode FROM deliveries GROUP BY provider_id"
        )
    ).all()
    now = datetime.now(UTC)
    cursors = sa.table(
        "notice_cursors",
        sa.column("provider_id", sa.String()),
        sa.column("mode", sa.String()),
        sa.column("acked_seq", sa.BigInteger()),
        sa.column("head_seq", sa.BigInteger()),
        sa.column("attempts", sa.Integer()),
        sa.column("next_attempt_at", _TS),
    )
    values = [
        {
            "provider_id": r.provider_id,
            "mode": r.mode,
            "acked_seq": r.head if r.first_pending is None else r.first_pending - 1,
            "head_seq": r.head,
            "attempts": 0,
            # SQLite stores instants as naive UTC text (the store's UTCDateTime).
            "next_attempt_at": now if conn.dialect.name != "sqlite" else now.replace(tzinfo=None),
        }
        for r in rows
    ]
    if values:
        conn.execute(sa.insert(cursors), values)


def downgrade() -> None:
    op.drop_index("ix_deliveries_provider_id_state_seq", table_name="deliveries")
    op.create_index("ix_deliveries_provider_id_state", "deliveries", ["provider_id", "state"])
    op.create_index(
        "ix_deliveries_mode_state_next_attempt_at",
        "deliveries",
        ["mode", "state", "next_attempt_at"],
    )
    op.drop_index("ix_number_events_seq", table_name="number_events")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): no table copy.
    op.drop_column("deliveries", "seq")
    op.drop_column("number_events", "seq")
    op.drop_index("ix_number_events_route_tag", table_name="number_events")
    op.drop_column("number_events", "route_tag")
    op.drop_table("notice_cursors")
    op.drop_table("notice_head")
