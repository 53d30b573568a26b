"""Row <-> value conversion, shared queries, and the ticket transition rules."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    String,
    Table,
    any_,
    bindparam,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.sql.type_api import TypeEngine

from onecert.gateway.store._models import UTCDateTime, deliveries, number_events
from onecert.gateway.store._types import (
    AttemptOutcome,
    Delivery,
    DeliveryMode,
    DeliveryState,
    Notice,
    StoredEventType,
    StoredTicketState,
    Ticket,
)
from onecert.sdk._msisdn import mask_numbers_in_text

__all__ = [
    "OPEN_TICKET",
    "attempt_values",
    "aware",
    "check_text",
    "delivery_from_row",
    "delivery_query",
    "error_text",
    "expiry_error",
    "fetch_all",
    "fetch_first",
    "fetch_one",
    "from_row",
    "instant",
    "lease_free",
    "new_id",
    "next_seq",
    "notice_from_row",
    "notice_query",
    "resolve_now",
    "ticket_from_row",
    "utcnow",
]

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_D = TypeVar("_D", bound="DataclassInstance")

OPEN_TICKET = (StoredTicketState.QUEUED.value, StoredTicketState.PENDING.value)
_MAX_ERROR = 2000


def utcnow() -> datetime:
    return datetime.now(UTC)


def resolve_now(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    return aware(now, "now")


def aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a time-zone-aware datetime")
    return value.astimezone(UTC)


def new_id(prefix: str) -> str:
    # 144 random bits, URL-safe: unguessable, so an id is not a capability
    # leak even if it is shown around.
    return prefix + secrets.token_urlsafe(18)


def check_text(name: str, value: str, limit: int) -> str:
    if not value or len(value) > limit:
        raise ValueError(f"{name} must be 1 to {limit} characters")
    return value


def error_text(text: str) -> str:
    # Errors and providers' reasons are shown in receipts: mask anything
    # that reads like a phone number, and bound the size.
    return mask_numbers_in_text(text)[:_MAX_ERROR]


def from_row(cls: type[_D], row: RowMapping, prefix: str = "", **converted: Any) -> _D:
    """A ``cls`` whose fields are the row's columns of the same names (after
    ``prefix``), but for the ``converted`` ones, given as they are."""
    plain = {f.name: row[prefix + f.name] for f in fields(cls) if f.name not in converted}
    return cls(**plain, **converted)


def ticket_from_row(row: RowMapping) -> Ticket:
    return from_row(Ticket, row, state=StoredTicketState(row["state"]))


def notice_from_row(row: RowMapping, prefix: str = "") -> Notice:
    return from_row(
        Notice,
        row,
        prefix,
        event_type=StoredEventType(row[prefix + "event_type"]),
        seq=int(row[prefix + "seq"]),
    )


def delivery_from_row(row: RowMapping) -> Delivery:
    return from_row(
        Delivery,
        row,
        mode=DeliveryMode(row["mode"]),
        state=DeliveryState(row["state"]),
        notice=notice_from_row(row, "n_"),
    )


def _provider_count() -> ColumnElement[int]:
    counted = deliveries.alias("counted")
    return (
        select(func.count())
        .where(counted.c.notice_id == number_events.c.notice_id)
        .correlate(number_events)
        .scalar_subquery()
    )


def notice_query() -> Select[Any]:
    return select(number_events, _provider_count().label("providers"))


def delivery_query(*, counted: bool = True) -> Select[Any]:
    """Deliveries with their notices; ``counted=False`` leaves the notice's
    ``providers`` out (None): counting them costs a look at every copy of the
    notice for each row read (a thousand for a notice to a thousand providers)."""
    notice_cols = [c.label(f"n_{c.name}") for c in number_events.c]
    providers = _provider_count() if counted else null()
    return select(deliveries, *notice_cols, providers.label("n_providers")).join(
        number_events, deliveries.c.notice_id == number_events.c.notice_id
    )


async def fetch_one(conn: AsyncConnection, stmt: Executable) -> RowMapping:
    return (await conn.execute(stmt)).mappings().one()


async def fetch_first(conn: AsyncConnection, stmt: Executable) -> RowMapping | None:
    return (await conn.execute(stmt)).mappings().first()


async def fetch_all(conn: AsyncConnection, stmt: Executable) -> Sequence[RowMapping]:
    return (await conn.execute(stmt)).mappings().all()


def instant(value: datetime) -> BindParameter[datetime]:
    # A bound instant outside a column comparison (coalesce) needs the
    # column type spelled out, or SQLite would store it in another format.
    return bindparam(None, value, type_=UTCDateTime())


async def next_seq(conn: AsyncConnection, head: Table) -> int:
    """Take the next number from a one-row counter (``id`` = 1, ``seq``).

    The row stays locked until the transaction ends, so rows numbered from
    one counter commit in number order: a reader that has seen every row up
    to ``n`` never sees one below ``n`` appear later.
    """
    stmt = update(head).where(head.c.id == 1).values(seq=head.c.seq + 1).returning(head.c.seq)
    return int((await conn.execute(stmt)).scalar_one())


def lease_free(table: Table, now: datetime) -> ColumnElement[bool]:
    return or_(table.c.lease_until.is_(None), table.c.lease_until <= now)


def expiry_error(state: StoredTicketState, last_error: str | None) -> str:
    if state is StoredTicketState.PENDING:
        message = "expired while the provider's answer was PENDING"
    else:
        message = "expired before the provider answered"
    if last_error:
        message += f"; last error: {last_error}"
    return message[:_MAX_ERROR]


def attempt_values(
    ticket: Ticket,
    outcome: AttemptOutcome,
    *,
    now: datetime,
    provider_reason: str,
    answered_at: datetime | None,
    error: str,
    next_attempt_at: datetime | None,
) -> dict[str, Any]:
    answered = None if answered_at is None else aware(answered_at, "answered_at")
    expired = now >= ticket.expires_at
    if outcome in (AttemptOutcome.DONE, AttemptOutcome.REJECTED):
        return {
            "state": outcome.value,
            "provider_outcome": outcome.value,
            "provider_reason": error_text(provider_reason) or None,
            "answered_at": answered or now,
            "closed_at": now,
        }
    if outcome is AttemptOutcome.FATAL:
        return {
            "state": StoredTicketState.FAILED.value,
            "last_error": error_text(error),
            "closed_at": now,
        }
    assert next_attempt_at is not None
    retry_at = min(aware(next_attempt_at, "next_attempt_at"), ticket.expires_at)
    if outcome is AttemptOutcome.PENDING:
        values: dict[str, Any] = {
            "provider_outcome": AttemptOutcome.PENDING.value,
            "provider_reason": error_text(provider_reason) or None,
            "answered_at": answered or now,
        }
        if expired:
            values.update(
                state=StoredTicketState.FAILED.value,
                last_error=expiry_error(StoredTicketState.PENDING, ticket.last_error),
                closed_at=now,
            )
        else:
            values.update(state=StoredTicketState.PENDING.value, next_attempt_at=retry_at)
        return values
    # RETRY: a ticket the provider already accepted stays PENDING.
    if expired:
        return {
            "state": StoredTicketState.FAILED.value,
            "last_error": expiry_error(ticket.state, error_text(error)),
            "closed_at": now,
        }
    return {"last_error": error_text(error), "next_attempt_at": retry_at}


def pg_unnest(**columns: tuple[str, TypeEngine[Any]]) -> TableValuedAlias:
    """PostgreSQL's ``unnest`` of array parameters side by side, as a table
    (``columns``: column name -> the name of its array parameter and the
    elements' type; each array must be as long as the others).

    For statements over many rows on PostgreSQL: one execution over a few
    arrays, where an executemany runs the statement once per row and a VALUES
    list is compiled afresh for every length.
    """
    return (
        func.unnest(*(bindparam(p, type_=postgresql.ARRAY(t)) for p, t in columns.values()))
        .table_valued(*columns)
        .render_derived()
    )


def among(
    conn: AsyncConnection, column: ColumnElement[str], values: Sequence[str], name: str = "among"
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:name)``, one array parameter.

    An IN list is rendered with one placeholder per value, so every length
    is another statement to the server (prepared again, on each pooled
    connection); the array keeps one statement text for any length.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(name, list(values), type_=postgresql.ARRAY(String)))
    return column.in_(values)
