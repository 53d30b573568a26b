"""Each provider's copy of a notice: polled and acknowledged (RFC 8936), confirmed, counted.

Push workers reach these rows through the providers' cursors
(:mod:`._cursor_repo`); polls, acknowledgements and confirmations here move
the cursor too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from onecert.gateway.store._audit_repo import AuditRepository
from onecert.gateway.store._claims import WorkQueue, claim
from onecert.gateway.store._cursor_repo import advance_cursor
from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import deliveries
from onecert.gateway.store._rows import (
    aware,
    delivery_from_row,
    delivery_query,
    error_text,
    fetch_all,
    fetch_first,
    instant,
    resolve_now,
)
from onecert.gateway.store._types import (
    AuditDraft,
    Delivery,
    DeliveryMode,
    DeliveryState,
    NotFoundError,
)

__all__ = ["DeliveryRepository"]

_DELIVERIES = WorkQueue(deliveries, deliveries.c.jti, delivery_query)
_PENDING = DeliveryState.PENDING.value


class DeliveryRepository:
    """Each provider's copy of a notice and what the provider did (``store.deliveries``).

    The methods that record what a provider did take an ``audit`` draft (or a
    callback giving one) appended in the same transaction as the change, so a
    crash keeps both or neither.
    """

    def __init__(self, db: StoreDatabase, audit: AuditRepository) -> None:
        self._db = db
        self._audit = audit

    async def get(self, jti: str) -> Delivery | None:
        """The delivery with this SET ``jti``, or None."""
        async with self._db.read() as conn:
            row = await fetch_first(conn, delivery_query().where(deliveries.c.jti == jti))
        return None if row is None else delivery_from_row(row)

    async def for_notice(self, notice_id: str) -> list[Delivery]:
        """Every delivery of one notice, by provider id."""
        async with self._db.read() as conn:
            rows = await fetch_all(
                conn,
                delivery_query()
                .where(deliveries.c.notice_id == notice_id)
                .order_by(deliveries.c.provider_id),
            )
        return [delivery_from_row(r) for r in rows]

    async def poll(
        self,
        provider_id: str,
        *,
        max_events: int = 100,
        now: datetime | None = None,
    ) -> tuple[list[Delivery], bool]:
        """Pending poll-mode deliveries for a provider, oldest first: ``(batch, more)``.

        RFC 8936: a SET is returned by every poll until it is acknowledged
        (:meth:`ack`) or refused (:meth:`reject`). The first hand-out sets
        ``delivered_at``; each counts as an attempt.
        """
        now = resolve_now(now)
        if not 1 <= max_events <= 1000:
            raise ValueError("max_events must be 1 to 1000")
        d = deliveries.c
        async with self._db.write() as conn:
            rows, more = await claim(
                conn,
                _DELIVERIES,
                where=[
                    d.provider_id == provider_id,
                    d.mode == DeliveryMode.POLL.value,
                    d.state == _PENDING,
                ],
                order=[d.seq, d.jti],
                limit=max_events,
                values={
                    "attempts": d.attempts + 1,
                    "delivered_at": func.coalesce(d.delivered_at, instant(now)),
                },
                # Concurrent polls of one provider queue here rather than
                # lock rows in different orders (deadlock), and a poll must
                # not skip a SET another poll holds.
                skip_locked=False,
                peek=True,
            )
        return [delivery_from_row(r) for r in rows], more

    async def _lock_pending(
        self, conn: AsyncConnection, provider_id: str, jtis: Iterable[str]
    ) -> list[str]:
        # The provider's PENDING deliveries among jtis, locked in the order
        # polls lock in, so that concurrent polls, acks and refusals of one
        # provider cannot deadlock.
        d = deliveries.c
        ids = await conn.scalars(
            select(d.jti)
            .where(d.provider_id == provider_id, d.jti.in_(sorted(jtis)), d.state == _PENDING)
            .order_by(d.seq, d.jti)
            .with_for_update()
        )
        return list(ids.all())

    async def settle(
        self,
        provider_id: str,
        acks: Iterable[str],
        errors: Mapping[str, str],
        *,
        now: datetime | None = None,
        audit: Callable[[int, int], AuditDraft] | None = None,
    ) -> tuple[int, int]:
        """A poll's acknowledgements and refusals, in one transaction: ``(acked, refused)``.

        As :meth:`ack` then :meth:`reject` (a jti both acknowledged and
        refused counts as acknowledged). ``audit(acked, refused)`` gives the
        row appended with the change, when anything changed.
        """
        now = resolve_now(now)
        wanted = set(acks)
        refusals = {jti: text for jti, text in errors.items() if jti not in wanted}
        if not wanted and not refusals:
            return 0, 0
        async with self._db.write() as conn:
            ids = await self._lock_pending(conn, provider_id, wanted | set(refusals))
            acked = await self._ack_locked(conn, [i for i in ids if i in wanted], now)
            refused = [i for i in ids if i in refusals]
            await self._reject_locked(conn, refused, refusals)
            if acked or refused:
                await advance_cursor(conn, provider_id)
            if audit is not None and (acked or refused):
                await self._audit.chain(conn, [audit(acked, len(refused))], now)
        return acked, len(refused)

    async def _ack_locked(self, conn: AsyncConnection, ids: list[str], now: datetime) -> int:
        if not ids:
            return 0
        d = deliveries.c
        result = await conn.execute(
            update(deliveries)
            .where(d.jti.in_(ids), d.state == _PENDING)
            .values(
                state=DeliveryState.ACKNOWLEDGED.value,
                acknowledged_at=now,
                delivered_at=func.coalesce(d.delivered_at, instant(now)),
            )
        )
        return int(result.rowcount)

    async def _reject_locked(
        self, conn: AsyncConnection, ids: list[str], errors: Mapping[str, str]
    ) -> None:
        d = deliveries.c
        for jti in ids:
            await conn.execute(
                update(deliveries)
                .where(d.jti == jti)
                .values(
                    state=DeliveryState.FAILED.value,
                    last_error=error_text(errors[jti] or "refused by the provider"),
                )
            )

    async def ack(
        self, provider_id: str, jtis: Iterable[str], *, now: datetime | None = None
    ) -> int:
        """The provider durably received these SETs; returns how many were newly acknowledged.

        Unknown jtis, other providers' jtis and repeats are ignored.
        """
        now = resolve_now(now)
        wanted = set(jtis)
        if not wanted:
            return 0
        async with self._db.write() as conn:
            ids = await self._lock_pending(conn, provider_id, wanted)
            acked = await self._ack_locked(conn, ids, now)
            await advance_cursor(conn, provider_id)
            return acked

    async def reject(self, provider_id: str, errors: Mapping[str, str]) -> int:
        """The provider could not process these SETs (RFC 8936 ``setErrs``): FAILED.

        ``errors`` maps jti to "code: description". Returns how many changed.
        """
        if not errors:
            return 0
        async with self._db.write() as conn:
            ids = await self._lock_pending(conn, provider_id, errors)
            await self._reject_locked(conn, ids, errors)
            await advance_cursor(conn, provider_id)
        return len(ids)

    async def confirm_action(
        self,
        provider_id: str,
        jti: str,
        *,
        bindings_removed: int,
        acted_at: datetime | None = None,
        now: datetime | None = None,
        audit: Callable[[bool], AuditDraft] | None = None,
    ) -> bool:
        """The provider says it acted on a notice; False if it had already confirmed.

        ``audit(recorded)`` gives the row appended in the same transaction.

        ``acted_at`` defaults to ``now`` (the receipt time) and is capped at
        it: an action cannot be confirmed before it happened. A confirmation
        implies receipt, so an unacknowledged delivery becomes ACKNOWLEDGED.
        Raises NotFoundError for a jti that is not this provider's.
        """
        now = resolve_now(now)
        acted = now if acted_at is None else min(aware(acted_at, "acted_at"), now)
        if bindings_removed < 0:
            raise ValueError("bindings_removed must be >= 0")
        d = deliveries.c
        async with self._db.write() as conn:
            row = (
                await conn.execute(
                    select(d.acted_at, d.acknowledged_at)
                    .where(d.jti == jti, d.provider_id == provider_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFoundError("no such notice for this provider")
            if row.acted_at is not None:
                if audit is not None:
                    await self._audit.chain(conn, [audit(False)], now)
                return False
            values: dict[str, Any] = {
                "acted_at": acted,
                "confirmed_at": now,
                "bindings_removed": bindings_removed,
            }
            if row.acknowledged_at is None:
                values.update(
                    state=DeliveryState.ACKNOWLEDGED.value,
                    acknowledged_at=now,
                    delivered_at=func.coalesce(d.delivered_at, instant(now)),
                )
            await conn.execute(update(deliveries).where(d.jti == jti).values(**values))
            if row.acknowledged_at is None:
                await advance_cursor(conn, provider_id)
            if audit is not None:
                await self._audit.chain(conn, [audit(True)], now)
        return True
