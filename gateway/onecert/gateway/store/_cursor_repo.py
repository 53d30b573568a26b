"""Providers' cursors in the notice log: push workers lease a provider, not a notice.

A cursor (``notice_cursors``) says, for one provider, the last notice routed
to it (``head_seq``) and how far it has settled them (``acked_seq``: every
notice routed to it up to there is acknowledged, refused or given up). A push
worker leases the cursor with the one claim query (:mod:`._claims`), so one
worker at a time delivers to a provider, in log order, in batches; the
lease runs out after a crash and another worker (of any replica) resumes
from the cursor. Per-notice rows (``deliveries``) keep what the compliance
report counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    func,
    null,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from onecert.gateway.store._audit_repo import AuditRepository
from onecert.gateway.store._claims import Lease, WorkQueue, claim_leases
from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import deliveries, notice_cursors
from onecert.gateway.store._rows import (
    among,
    delivery_from_row,
    delivery_query,
    error_text,
    fetch_all,
    instant,
    lease_free,
    resolve_now,
)
from onecert.gateway.store._types import AuditDraft, Delivery, DeliveryMode, DeliveryState

__all__ = [
    "Handoff",
    "NoticeCursor",
    "NoticeCursorRepository",
    "PushResult",
    "Settlement",
    "advance_cursor",
    "advance_cursors",
]

_PENDING = DeliveryState.PENDING.value
# A cursor with nothing to deliver waits here, out of the claim query's range,
# until a notice routed to its provider makes it due again.
IDLE = datetime(9999, 1, 1, tzinfo=UTC)


def _cursor_rows() -> Select[Any]:
    return select(notice_cursors)


_CURSORS = WorkQueue(notice_cursors, notice_cursors.c.provider_id, _cursor_rows)


@dataclass(frozen=True)
class NoticeCursor:
    """A provider's place in the notice log, as a push worker leased it.

    ``attempts`` counts attempts since the last success, this one included
    (the backoff's exponent);
    ``last_error`` is the last one's reason.
    """

    provider_id: str
    mode: DeliveryMode
    acked_seq: int
    head_seq: int
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None


def _cursor(row: Any) -> NoticeCursor:
    values = {f.name: row[f.name] for f in fields(NoticeCursor)}
    return NoticeCursor(**{**values, "mode": DeliveryMode(row["mode"])})


@dataclass(frozen=True)
class Handoff:
    """A push provider's cursor leased in the transaction that recorded a notice for
    it, with that notice's copy: the only one it has to deliver (see
    :meth:`~onecert.gateway.store.NoticeRepository.record`)."""

    cursor: NoticeCursor
    delivery: Delivery


async def lease_fresh(
    conn: AsyncConnection, lease: Lease, seq: int, provider_ids: Sequence[str]
) -> list[NoticeCursor]:
    """Lease, of ``provider_ids``' push cursors, those whose only notice to deliver is
    ``seq`` (just routed to them) and that are due and free, as :meth:`claim_due`
    would lease them (of the first ``lease.limit`` ids; in ``conn``'s transaction,
    which routed ``seq`` to them and so holds their rows)."""
    ids = sorted(provider_ids)[: lease.limit]
    if not ids:
        return []
    c = notice_cursors.c
    # One UPDATE ... RETURNING: the rows are this transaction's already (the
    # heads moved), so nothing is skipped or waited for, and the lease costs one
    # statement, not a lock, an update and a read.
    rows = await fetch_all(
        conn,
        update(notice_cursors)
        .where(
            among(conn, c.provider_id, ids),
            c.mode == DeliveryMode.PUSH.value,
            c.next_attempt_at <= lease.now,
            # Nothing older waits (that one goes first, through claim_due) and
            # no later notice committed before this one.
            c.acked_seq == seq - 1,
            c.head_seq == seq,
            lease_free(notice_cursors, lease.now),
        )
        .values(attempts=c.attempts + 1, lease_owner=lease.worker_id, lease_until=lease.until)
        .returning(*(c[f.name] for f in fields(NoticeCursor))),
    )
    return sorted((_cursor(r) for r in rows), key=lambda cursor: cursor.provider_id)


async def advance_cursor(conn: AsyncConnection, provider_id: str) -> None:
    """Move the provider's ``acked_seq`` up to just below its first unsettled notice."""
    await advance_cursors(conn, [provider_id])


async def advance_cursors(conn: AsyncConnection, provider_ids: Sequence[str]) -> None:
    """:func:`advance_cursor` for several providers, in one statement."""
    ids = await _lock_cursors(conn, provider_ids)
    c = notice_cursors.c
    await conn.execute(
        update(notice_cursors).where(among(conn, c.provider_id, ids)).values(acked_seq=_acked())
    )


async def _lock_cursors(conn: AsyncConnection, provider_ids: Sequence[str]) -> list[str]:
    """Lock the providers' cursors (in one order: no deadlock); their sorted ids.

    Taken before a cursor is moved, in a statement of its own: a notice being
    routed to a provider (which locks its cursor too) is then either wholly
    seen by the next statement or not at all, so a cursor never passes a
    notice it did not see.
    """
    c = notice_cursors.c
    ids = sorted(set(provider_ids))
    if conn.dialect.name == "sqlite":
        # No such lock there (FOR UPDATE is left out of the SELECT); the
        # write transaction (BEGIN IMMEDIATE) holds the database's one write
        # lock instead, so nothing routes a notice meanwhile.
        return ids
    await conn.execute(
        select(c.provider_id)
        .where(among(conn, c.provider_id, ids))
        .order_by(c.provider_id)
        .with_for_update()
    )
    return ids


def _acked() -> ColumnElement[int]:
    """A cursor's ``acked_seq`` moved up to just below its first unsettled notice."""
    d, c = deliveries.c, notice_cursors.c
    first_pending = (
        select(func.min(d.seq))
        .where(d.provider_id == c.provider_id, d.state == _PENDING)
        .scalar_subquery()
    )
    return func.coalesce(first_pending - 1, c.head_seq)


@dataclass(frozen=True)
class PushResult:
    """How one notice of a pushed batch ended; build with the class methods.

    ``state``: ACKNOWLEDGED (with ``bindings_removed`` when the provider
    already acted), FAILED (refused by the provider, ``received``, or given
    up, not received), or PENDING (to be tried again); ``error`` says why.
    """

    jti: str
    state: DeliveryState
    bindings_removed: int | None
    error: str
    received: bool

    @classmethod
    def acknowledged(cls, jti: str, bindings_removed: int | None = None) -> PushResult:
        """Recorded by the provider (and acted on, with ``bindings_removed``)."""
        return cls(jti, DeliveryState.ACKNOWLEDGED, bindings_removed, "", True)

    @classmethod
    def refused(cls, jti: str, error: str) -> PushResult:
        """Received and refused for good (not sent again)."""
        return cls(jti, DeliveryState.FAILED, None, error, True)

    @classmethod
    def given_up(cls, jti: str, error: str) -> PushResult:
        """Never received, and not to be sent again (the deadline passed)."""
        return cls(jti, DeliveryState.FAILED, None, error, False)

    @classmethod
    def retry(cls, jti: str, error: str) -> PushResult:
        """Not received now: to be sent again."""
        return cls(jti, DeliveryState.PENDING, None, error, False)


@dataclass(frozen=True)
class Settlement:
    """How one leased cursor's batch went, for :meth:`NoticeCursorRepository.settle_many`.

    ``retry_at`` (with ``error``) backs the provider off until then; None:
    due again at once when notices remain, idle otherwise.
    """

    cursor: NoticeCursor
    results: Sequence[PushResult]
    retry_at: datetime | None = None
    error: str = ""


class NoticeCursorRepository:
    """Providers' cursors and the push work they lease (``store.cursors``)."""

    def __init__(self, db: StoreDatabase, audit: AuditRepository) -> None:
        self._db = db
        self._audit = audit

    async def get(self, provider_id: str) -> NoticeCursor | None:
        """The provider's cursor, or None when no notice was ever routed to it."""
        async with self._db.read() as conn:
            found = await fetch_all(
                conn, _cursor_rows().where(notice_cursors.c.provider_id == provider_id)
            )
        return _cursor(found[0]) if found else None

    async def claim_due(
        self,
        *,
        now: datetime | None = None,
        worker_id: str,
        limit: int = 10,
        lease_s: float = 60.0,
    ) -> list[NoticeCursor]:
        """Lease up to ``limit`` push providers with notices to deliver and due.

        Due: mode push, notices past the cursor, ``next_attempt_at <= now``
        (the database's clock when the store uses it), no live lease.
        """
        lease = Lease.take(worker_id, limit=limit, lease_s=lease_s, now=resolve_now(now))
        c = notice_cursors.c
        async with self._db.write() as conn:
            lease = lease.at(await self._db.clock(conn, lease.now))
            rows = await claim_leases(
                conn,
                _CURSORS,
                lease,
                where=[
                    c.mode == DeliveryMode.PUSH.value,
                    c.next_attempt_at <= lease.now,
                    c.head_seq > c.acked_seq,
                ],
                order=[c.next_attempt_at, c.provider_id],
            )
        return [_cursor(r) for r in rows]

    async def pending(self, cursor: NoticeCursor, *, limit: int) -> list[Delivery]:
        """The provider's unsettled notices past its cursor, in log order, at most ``limit``."""
        return (await self.pending_for([cursor], limit=limit))[cursor.provider_id]

    async def pending_for(
        self, cursors: Sequence[NoticeCursor], *, limit: int
    ) -> dict[str, list[Delivery]]:
        """:meth:`pending` for several cursors, in one query: by provider id."""
        if not cursors:
            return {}
        d = deliveries.c
        # No pending notice lies at or below a cursor's acked_seq (advance_cursors
        # and move_heads keep it so), so the provider and the state pick them.
        place = func.row_number().over(partition_by=d.provider_id, order_by=d.seq).label("place")
        ranked = (
            select(d.jti, place)
            .where(d.provider_id.in_(sorted({c.provider_id for c in cursors})), d.state == _PENDING)
            .subquery()
        )
        stmt = (
            delivery_query(counted=False)
            .join(ranked, ranked.c.jti == d.jti)
            .where(ranked.c.place <= limit)
            .order_by(d.provider_id, d.seq)
        )
        async with self._db.read() as conn:
            rows = await fetch_all(conn, stmt)
        out: dict[str, list[Delivery]] = {c.provider_id: [] for c in cursors}
        for row in rows:
            out[row["provider_id"]].append(delivery_from_row(row))
        return out

    async def settle(
        self,
        cursor: NoticeCursor,
        results: Sequence[PushResult],
        *,
        worker_id: str,
        retry_at: datetime | None = None,
        error: str = "",
        now: datetime | None = None,
        audit: Sequence[AuditDraft] = (),
    ) -> None:
        """Record how a batch went, move the cursor and release its lease (one transaction).

        As :meth:`settle_many` with one :class:`Settlement`.
        """
        await self.settle_many(
            [Settlement(cursor, results, retry_at, error)],
            worker_id=worker_id,
            now=now,
            audit=audit,
        )

    async def settle_many(
        self,
        settlements: Sequence[Settlement],
        *,
        worker_id: str,
        now: datetime | None = None,
        audit: Sequence[AuditDraft] = (),
    ) -> bool:
        """Record how each leased cursor's batch went, in one transaction; whether one
        of those providers has notices left to push now (routed to it while it
        was leased, or past its batch).

        Each result settles its notice (still PENDING) as acknowledged (with
        the action when the provider acted), refused or given up (FAILED), or
        leaves it for another attempt; each cursor moves past what is settled
        and its lease is released, backed off until its ``retry_at`` or due
        again at once (idle when nothing remains). An acknowledgement is a
        fact and is recorded whoever holds the lease; the lease is released
        only by its holder. ``audit`` rows are appended with it all.
        """
        if not settlements:
            return False
        now = resolve_now(now)
        async with self._db.write() as conn:
            now = await self._db.clock(conn, now)
            await _settle_results(conn, [r for s in settlements for r in s.results], now)
            ids = await _lock_cursors(conn, [s.cursor.provider_id for s in settlements])
            done = sorted(s.cursor.provider_id for s in settlements if s.retry_at is None)
            # Every cursor moved, and those whose batch went well released (by
            # their holder) and due again at once, or idle (out of the claim
            # query's way until the next notice) when nothing remains: one
            # statement. Every SET expression reads the row as it was.
            c = notice_cursors.c
            acked = _acked()
            ok = among(conn, c.provider_id, done, "done")
            released = and_(ok, c.lease_owner == worker_id)
            moved = await conn.execute(
                update(notice_cursors)
                .where(among(conn, c.provider_id, ids))
                .values(
                    acked_seq=acked,
                    lease_owner=case((released, null()), else_=c.lease_owner),
                    lease_until=case((released, null()), else_=c.lease_until),
                    attempts=case((released, 0), else_=c.attempts),
                    last_error=case((released, null()), else_=c.last_error),
                    next_attempt_at=case(
                        (and_(ok, acked >= c.head_seq), instant(IDLE)),
                        (released, instant(now)),
                        else_=c.next_attempt_at,
                    ),
                )
                .returning(c.provider_id, c.acked_seq, c.head_seq)
            )
            left = {r.provider_id for r in moved if r.acked_seq < r.head_seq}
            for s in settlements:
                if s.retry_at is not None:
                    # The claim counted this attempt: failures in a row stay counted.
                    await conn.execute(
                        update(notice_cursors)
                        .where(c.provider_id == s.cursor.provider_id, c.lease_owner == worker_id)
                        .values(
                            lease_owner=None,
                            lease_until=None,
                            next_attempt_at=s.retry_at,
                            last_error=error_text(s.error or "failed"),
                        )
                    )
            if audit:
                await self._audit.chain(conn, list(audit), now)
        return not left.isdisjoint(done)


async def _settle_results(
    conn: AsyncConnection, results: Sequence[PushResult], now: datetime
) -> None:
    """Every result, in a few statements (one per kind of outcome, executemany, and
    one per count of bindings removed)."""
    d = deliveries.c
    plain = sorted(
        r.jti
        for r in results
        if r.state is DeliveryState.ACKNOWLEDGED and r.bindings_removed is None
    )
    received = func.coalesce(d.delivered_at, instant(now))
    if plain:
        await conn.execute(
            update(deliveries)
            .where(among(conn, d.jti, plain), d.state == _PENDING)
            .values(
                state=DeliveryState.ACKNOWLEDGED.value,
                delivered_at=received,
                acknowledged_at=now,
                attempts=d.attempts + 1,
            )
        )
    # Acted on: one UPDATE per count of bindings removed (most answers share a
    # few counts), not one execution per notice.
    acted: dict[int, list[str]] = {}
    for r in results:
        if r.state is DeliveryState.ACKNOWLEDGED and r.bindings_removed is not None:
            acted.setdefault(r.bindings_removed, []).append(r.jti)
    for removed, jtis in sorted(acted.items()):
        await conn.execute(
            update(deliveries)
            .where(among(conn, d.jti, sorted(jtis)), d.state == _PENDING)
            .values(
                state=DeliveryState.ACKNOWLEDGED.value,
                delivered_at=received,
                acknowledged_at=now,
                acted_at=now,
                confirmed_at=now,
                bindings_removed=removed,
                attempts=d.attempts + 1,
            )
        )
    failed = [r for r in results if r.state is DeliveryState.FAILED]
    # Refused: received (and pushed); given up: neither (not pushed again).
    await _each(
        conn,
        [
            {"b_jti": r.jti, "b_error": error_text(r.error or "failed")}
            for r in failed
            if r.received
        ],
        state=DeliveryState.FAILED.value,
        last_error=bindparam("b_error"),
        delivered_at=received,
        attempts=d.attempts + 1,
    )
    await _each(
        conn,
        [
            {"b_jti": r.jti, "b_error": error_text(r.error or "failed")}
            for r in failed
            if not r.received
        ],
        state=DeliveryState.FAILED.value,
        last_error=bindparam("b_error"),
    )
    await _each(
        conn,
        [
            {"b_jti": r.jti, "b_error": error_text(r.error or "retry")}
            for r in results
            if r.state is DeliveryState.PENDING
        ],
        last_error=bindparam("b_error"),
        attempts=d.attempts + 1,  # it was pushed
    )


async def _each(conn: AsyncConnection, params: list[dict[str, Any]], **values: Any) -> None:
    """One UPDATE of still-PENDING deliveries, run for each of ``params`` (``b_jti``...)."""
    if not params:
        return
    d = deliveries.c
    stmt = update(deliveries).where(d.jti == bindparam("b_jti"), d.state == _PENDING)
    await conn.execute(stmt.values(**values), params)
