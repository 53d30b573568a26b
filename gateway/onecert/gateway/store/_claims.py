"""Handing out work: the one claim query every repository that queues work uses.

A claim locks the rows that are due (``FOR UPDATE``, ``SKIP LOCKED`` for
leases, so concurrent workers on PostgreSQL never wait for each other and
never take the same row; SQLite's write transaction serialises them anyway),
stamps them in the same transaction and reads them back in claim order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, ColumnElement, Select, Table, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from onecert.gateway.store._rows import check_text, fetch_all, lease_free

__all__ = ["Lease", "WorkQueue", "claim", "claim_leases"]


@dataclass(frozen=True)
class WorkQueue:
    """A table whose rows are handed out as work.

    Attributes:
        table: the table (it has ``attempts``, ``lease_owner``, ``lease_until``).
        key: its primary key column.
        rows: builds the query that reads whole rows (a join, for deliveries).
    """

    table: Table
    key: Column[str]
    rows: Callable[[], Select[Any]]


@dataclass(frozen=True)
class Lease:
    """Who takes work, how much, and until when; build with :meth:`take`."""

    worker_id: str
    limit: int
    now: datetime
    until: datetime

    @classmethod
    def take(cls, worker_id: str, *, limit: int, lease_s: float, now: datetime) -> Lease:
        """Check the arguments of a claim (ValueError) before any transaction opens."""
        check_text("worker_id", worker_id, 128)
        if limit < 1 or lease_s <= 0:
            raise ValueError("limit must be >= 1 and lease_s > 0")
        return cls(worker_id, limit, now, now + timedelta(seconds=lease_s))

    def at(self, now: datetime) -> Lease:
        """The same lease taken at ``now`` (the database's clock) instead."""
        return Lease(self.worker_id, self.limit, now, now + (self.until - self.now))


async def claim(
    conn: AsyncConnection,
    queue: WorkQueue,
    *,
    where: Sequence[ColumnElement[bool]],
    order: Sequence[ColumnElement[Any]],
    limit: int,
    values: Mapping[str, Any],
    skip_locked: bool = True,
    peek: bool = False,
) -> tuple[Sequence[RowMapping], bool]:
    """Lock up to ``limit`` rows matching ``where``, set ``values`` on them, return them.

    Rows are taken and returned in ``order``. ``skip_locked=False`` queues
    behind other transactions instead of passing their rows by (for work
    that belongs to one caller, where skipping would hide rows). With
    ``peek`` one row more is locked to tell whether more are waiting: the
    second element of the answer (always False without ``peek``).
    """
    ids = (
        await conn.scalars(
            select(queue.key)
            .where(*where)
            .order_by(*order)
            .limit(limit + 1 if peek else limit)
            .with_for_update(skip_locked=skip_locked)
        )
    ).all()
    more = len(ids) > limit
    ids = ids[:limit]
    if not ids:
        return [], False
    await conn.execute(update(queue.table).where(queue.key.in_(ids)).values(**values))
    rows = await fetch_all(conn, queue.rows().where(queue.key.in_(ids)).order_by(*order))
    return rows, more


async def claim_leases(
    conn: AsyncConnection,
    queue: WorkQueue,
    lease: Lease,
    *,
    where: Sequence[ColumnElement[bool]],
    order: Sequence[ColumnElement[Any]],
    values: Mapping[str, Any] | None = None,
) -> Sequence[RowMapping]:
    """Lease due rows to ``lease.worker_id`` for one attempt each; returns them.

    Adds "no live lease" to ``where`` (a lease whose ``lease_until`` passed
    belongs to a crashed or stuck worker and no longer counts), and sets
    ``lease_owner``, ``lease_until`` and one more attempt, plus ``values``.
    """
    c = queue.table.c
    rows, _ = await claim(
        conn,
        queue,
        where=[*where, lease_free(queue.table, lease.now)],
        order=order,
        limit=lease.limit,
        values={
            "attempts": c.attempts + 1,
            "lease_owner": lease.worker_id,
            "lease_until": lease.until,
            **(values or {}),
        },
    )
    return rows
