"""Carriers' number events (notices), one delivery per provider each, and number history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from onecert.gateway.store._audit_repo import AuditRepository
from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import deliveries, number_events
from onecert.gateway.store._rows import (
    aware,
    check_text,
    fetch_all,
    fetch_first,
    fetch_one,
    new_id,
    notice_from_row,
    notice_query,
    resolve_now,
)
from onecert.gateway.store._types import (
    AuditDraft,
    ConflictError,
    DeliveryMode,
    DeliveryState,
    Notice,
    NumberEvent,
    RecycledCheck,
    StoredEventType,
    classify_recycled,
)
from onecert.sdk._msisdn import is_e164

__all__ = ["NoticeRepository"]


class NoticeRepository:
    """Notices of recycled numbers and the history they make (``store.notices``).

    Raw msisdns are stored only here: the Security Event Token a provider
    receives names the number. What happens to each provider's copy is in
    :class:`~onecert.gateway.store.DeliveryRepository`.
    """

    def __init__(self, db: StoreDatabase, audit: AuditRepository) -> None:
        self._db = db
        self._audit = audit

    async def record(
        self,
        *,
        carrier_id: str,
        event_id: str,
        msisdn: str,
        msisdn_hash: str,
        event_type: StoredEventType | str,
        effective_at: datetime,
        quiet_period_ends_at: datetime | None,
        deadline: datetime,
        providers: Sequence[tuple[str, DeliveryMode | str]],
        now: datetime | None = None,
        audit: Callable[[Notice, bool], AuditDraft] | None = None,
    ) -> tuple[Notice, bool]:
        """Record a carrier's event and one delivery per provider, in one transaction.

        Idempotent on ``(carrier_id, event_id)``: the same event again
        returns ``(notice, False)`` and creates nothing. The same id with
        another number, type or time raises ConflictError (the deadline and
        provider list are the gateway's and may change between retries).
        Each delivery gets its own SET ``jti``, is PENDING and due at once;
        ``providers`` pairs a provider id with ``"push"`` or ``"poll"``.
        ``audit(notice, created)`` gives the audit row appended in the same
        transaction.
        """
        now = resolve_now(now)
        # The raw number is kept only to sign deliveries: an event without
        # providers (a carrier's history) passes "" and is kept by its hash alone.
        if not (is_e164(msisdn) or (msisdn == "" and not providers)):
            raise ValueError("msisdn must be E.164 (or empty for an event without deliveries)")
        event = {
            "carrier_id": check_text("carrier_id", carrier_id, 64),
            "event_id": check_text("event_id", event_id, 128),
            "msisdn": msisdn,
            "msisdn_hash": check_text("msisdn_hash", msisdn_hash, 64),
            "event_type": StoredEventType(event_type).value,
            "effective_at": aware(effective_at, "effective_at"),
            "quiet_period_ends_at": None
            if quiet_period_ends_at is None
            else aware(quiet_period_ends_at, "quiet_period_ends_at"),
            "deadline": aware(deadline, "deadline"),
            "recorded_at": now,
        }
        targets = [(check_text("provider_id", p, 64), DeliveryMode(m)) for p, m in providers]
        if len({p for p, _ in targets}) != len(targets):
            raise ValueError("each provider may appear once")
        async with self._db.write() as conn:
            notice, created = await self._insert(conn, event, targets, now)
            if audit is not None:
                await self._audit.chain(conn, [audit(notice, created)], now)
        return notice, created

    async def _insert(
        self,
        conn: AsyncConnection,
        event: dict[str, Any],
        targets: Sequence[tuple[str, DeliveryMode]],
        now: datetime,
    ) -> tuple[Notice, bool]:
        n = number_events.c
        notice_id = (
            await conn.execute(
                self._db.insert(number_events)
                .values(notice_id=new_id("nt_"), **event)
                .on_conflict_do_nothing(index_elements=[n.carrier_id, n.event_id])
                .returning(n.notice_id)
            )
        ).scalar()
        if notice_id is not None and targets:
            await conn.execute(
                insert(deliveries),
                [
                    {
                        "jti": new_id(""),
                        "notice_id": notice_id,
                        "provider_id": provider_id,
                        "mode": mode.value,
                        "state": DeliveryState.PENDING.value,
                        "attempts": 0,
                        "created_at": now,
                        "next_attempt_at": now,
                    }
                    for provider_id, mode in targets
                ],
            )
        row = await fetch_one(
            conn,
            notice_query().where(
                n.carrier_id == event["carrier_id"], n.event_id == event["event_id"]
            ),
        )
        notice = notice_from_row(row)
        created = notice_id is not None
        if not created and (
            notice.msisdn_hash != event["msisdn_hash"]
            or notice.event_type.value != event["event_type"]
            or notice.effective_at != event["effective_at"]
            or notice.quiet_period_ends_at != event["quiet_period_ends_at"]
        ):
            raise ConflictError("this event_id was already reported with other content")
        return notice, created

    async def get(self, notice_id: str) -> Notice | None:
        """The notice, or None."""
        async with self._db.read() as conn:
            row = await fetch_first(
                conn, notice_query().where(number_events.c.notice_id == notice_id)
            )
        return None if row is None else notice_from_row(row)

    async def history(self, msisdn_hash: str) -> list[NumberEvent]:
        """Every event recorded for the number, oldest first (by effective time)."""
        n = number_events.c
        async with self._db.read() as conn:
            rows = await fetch_all(
                conn,
                select(
                    n.notice_id,
                    n.carrier_id,
                    n.event_type,
                    n.effective_at,
                    n.quiet_period_ends_at,
                    n.recorded_at,
                )
                .where(n.msisdn_hash == msisdn_hash)
                .order_by(n.effective_at, n.recorded_at, n.notice_id),
            )
        return [
            NumberEvent(
                notice_id=r["notice_id"],
                carrier_id=r["carrier_id"],
                event_type=StoredEventType(r["event_type"]),
                effective_at=r["effective_at"],
                quiet_period_ends_at=r["quiet_period_ends_at"],
                recorded_at=r["recorded_at"],
            )
            for r in rows
        ]

    async def check_recycled(
        self,
        msisdn_hash: str,
        specified_date: datetime,
        *,
        history_start: datetime | None = None,
    ) -> RecycledCheck:
        """RECYCLED / NOT_RECYCLED / NO_DATA for the number since ``specified_date``.

        See :func:`~onecert.gateway.store.classify_recycled` for the rule and
        ``history_start``.
        """
        history = await self.history(msisdn_hash)
        return classify_recycled(
            history,
            aware(specified_date, "specified_date"),
            history_start=None if history_start is None else aware(history_start, "history_start"),
        )
