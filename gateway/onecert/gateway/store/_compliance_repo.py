"""The compliance report: per provider, how notices and unbind tickets were handled."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlalchemy.engine import RowMapping

from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import deliveries, number_events, unbind_tickets
from onecert.gateway.store._rows import OPEN_TICKET, aware, fetch_all, resolve_now
from onecert.gateway.store._types import ProviderComplianceRow, StoredTicketState

__all__ = ["ComplianceRepository"]


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.sum(case((condition, 1), else_=0))


def _notice_counts(now: datetime) -> Select[Any]:
    d, n = deliveries.c, number_events.c
    return (
        select(
            d.provider_id,
            func.count().label("total"),
            func.count(d.delivered_at).label("delivered"),
            func.count(d.acknowledged_at).label("acknowledged"),
            _count_if(and_(d.acted_at.is_not(None), d.acted_at <= n.deadline)).label("on_time"),
            _count_if(and_(d.acted_at.is_not(None), d.acted_at > n.deadline)).label("late"),
            _count_if(and_(d.acted_at.is_(None), n.deadline < now)).label("never"),
            _count_if(and_(d.acted_at.is_(None), n.deadline < now, d.delivered_at.is_(None))).label(
                "never_received"
            ),
            _count_if(and_(d.acted_at.is_(None), n.deadline >= now)).label("awaiting"),
        )
        .join(number_events, d.notice_id == n.notice_id)
        .group_by(d.provider_id)
    )


class ComplianceRepository:
    """What the regulator reads about providers (``store.compliance``)."""

    def __init__(self, db: StoreDatabase) -> None:
        self._db = db

    async def report(
        self,
        *,
        now: datetime | None = None,
        since: datetime | None = None,
        providers: Iterable[str] = (),
    ) -> list[ProviderComplianceRow]:
        """Per provider, how notices and unbind tickets were handled, by provider id.

        Counts notices recorded and tickets created at or after ``since``
        (all when None). Providers named in ``providers`` appear even
        without activity. Notices are classified at ``now`` as in
        :func:`~onecert.gateway.store.classify_notice`.
        """
        now = resolve_now(now)
        n, t = number_events.c, unbind_tickets.c
        async with self._db.read() as conn:
            # Deadlines were set on the database's clock when the store uses it:
            # judged on the same clock.
            now = await self._db.clock(conn, now)
        notice_stmt = _notice_counts(now)
        ticket_stmt = select(t.provider_id, t.state, func.count().label("count")).group_by(
            t.provider_id, t.state
        )
        times_stmt = select(t.provider_id, t.created_at, t.answered_at).where(
            t.state.in_((StoredTicketState.DONE.value, StoredTicketState.REJECTED.value)),
            t.answered_at.is_not(None),
        )
        if since is not None:
            since = aware(since, "since")
            notice_stmt = notice_stmt.where(n.recorded_at >= since)
            ticket_stmt = ticket_stmt.where(t.created_at >= since)
            times_stmt = times_stmt.where(t.created_at >= since)
        async with self._db.read() as conn:
            notice_rows = await fetch_all(conn, notice_stmt)
            ticket_rows = await fetch_all(conn, ticket_stmt)
            time_rows = (await conn.execute(times_stmt)).all()

        notices = {r["provider_id"]: r for r in notice_rows}
        tickets: dict[str, dict[str, int]] = {}
        for r in ticket_rows:
            tickets.setdefault(r["provider_id"], {})[r["state"]] = int(r["count"])
        durations: dict[str, list[float]] = {}
        for provider_id, created_at, answered_at in time_rows:
            durations.setdefault(provider_id, []).append(
                max(0.0, (answered_at - created_at).total_seconds())
            )
        ids = {*providers, *notices, *tickets}
        return [
            _row(
                provider_id,
                notices.get(provider_id),
                tickets.get(provider_id, {}),
                durations.get(provider_id),
            )
            for provider_id in sorted(ids)
        ]


def _row(
    provider_id: str,
    nr: RowMapping | None,
    tc: Mapping[str, int],
    times: Sequence[float] | None,
) -> ProviderComplianceRow:
    return ProviderComplianceRow(
        provider_id=provider_id,
        notices=int(nr["total"]) if nr else 0,
        notices_delivered=int(nr["delivered"]) if nr else 0,
        notices_acknowledged=int(nr["acknowledged"]) if nr else 0,
        acted_on_time=int(nr["on_time"]) if nr else 0,
        acted_late=int(nr["late"]) if nr else 0,
        never_acted=int(nr["never"]) if nr else 0,
        never_received=int(nr["never_received"]) if nr else 0,
        awaiting_action=int(nr["awaiting"]) if nr else 0,
        unbinds_open=sum(tc.get(s, 0) for s in OPEN_TICKET),
        unbinds_done=tc.get(StoredTicketState.DONE.value, 0),
        unbinds_rejected=tc.get(StoredTicketState.REJECTED.value, 0),
        unbinds_failed=tc.get(StoredTicketState.FAILED.value, 0),
        unbind_median_time=timedelta(seconds=statistics.median(times)) if times else None,
    )
