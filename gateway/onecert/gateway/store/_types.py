"""Values the store hands out, its errors, and the pure rules it applies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = [
    "AttemptOutcome",
    "AuditDraft",
    "AuditEntry",
    "AuditValueError",
    "AuditVerification",
    "ConflictError",
    "Delivery",
    "DeliveryMode",
    "DeliveryState",
    "NotFoundError",
    "Notice",
    "NoticeStatus",
    "NumberEvent",
    "ProviderComplianceRow",
    "RecycledCheck",
    "RecycledStatus",
    "StoreError",
    "StoredEventType",
    "StoredTicketState",
    "Ticket",
    "classify_notice",
    "classify_recycled",
]


class StoreError(Exception):
    """Base class of the store's own errors."""


class ConflictError(StoreError):
    """An idempotency key was reused with different content."""


class NotFoundError(StoreError):
    """The row asked for does not exist (or belongs to someone else)."""


class AuditValueError(StoreError, ValueError):
    """An audit value is malformed or looks like a raw phone or ID number.

    The message names the field, never the value.
    """


class StoredTicketState(StrEnum):
    """Where an unbind ticket stands (``onecert.v1.TicketState`` without prefix)."""

    QUEUED = "QUEUED"
    PENDING = "PENDING"
    DONE = "DONE"
    REJECTED = "REJECTED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        """DONE, REJECTED and FAILED are final: a ticket never leaves them."""
        return self in (
            StoredTicketState.DONE,
            StoredTicketState.REJECTED,
            StoredTicketState.FAILED,
        )


class AttemptOutcome(StrEnum):
    """How one delivery attempt of an unbind ticket ended."""

    # The provider answered (UnbindOutcome DONE / REJECTED / PENDING).
    DONE = "DONE"
    REJECTED = "REJECTED"
    PENDING = "PENDING"
    # No answer, try again later (UNAVAILABLE, DEADLINE_EXCEEDED, ...).
    RETRY = "RETRY"
    # No answer and never will be (INVALID_ARGUMENT, UNAUTHENTICATED, ...).
    FATAL = "FATAL"


class StoredEventType(StrEnum):
    """What a carrier reported about a number."""

    CANCELLED = "CANCELLED"
    RECYCLED = "RECYCLED"


class DeliveryMode(StrEnum):
    """How a provider receives notices."""

    PUSH = "push"
    POLL = "poll"


class DeliveryState(StrEnum):
    """Where the delivery of one notice to one provider stands."""

    # Not acknowledged yet: pushed again / returned by polls until it is.
    PENDING = "PENDING"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    # Given up (push dead letter) or refused by the provider (poll setErrs).
    FAILED = "FAILED"


class NoticeStatus(StrEnum):
    """A notice's standing for compliance, see :func:`classify_notice`."""

    ON_TIME = "ON_TIME"
    LATE = "LATE"
    NEVER = "NEVER"
    AWAITING = "AWAITING"


class RecycledStatus(StrEnum):
    """The answer of a recycled check (``onecert.v1.RecycledStatus`` without prefix)."""

    RECYCLED = "RECYCLED"
    NOT_RECYCLED = "NOT_RECYCLED"
    NO_DATA = "NO_DATA"


@dataclass(frozen=True)
class Ticket:
    """An unbind ticket: the durable request and its receipt.

    ``attempts`` counts deliveries started (claims). ``provider_outcome``,
    ``provider_reason`` and ``answered_at`` hold the provider's last answer
    (``answered_at`` is when the gateway received it). ``lease_owner`` and
    ``lease_until`` name the worker currently delivering it, if any.
    """

    ticket_id: str
    handle_digest: str
    sub_hash: str
    provider_id: str
    reason: int
    payload: str
    msisdn_hash: str
    state: StoredTicketState
    attempts: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    next_attempt_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    provider_outcome: str | None
    provider_reason: str | None
    answered_at: datetime | None
    last_error: str | None
    closed_at: datetime | None


@dataclass(frozen=True)
class Notice:
    """A recorded carrier event and the notice sent about it.

    ``msisdn`` is kept because each delivery's SET names the number;
    ``providers`` is how many deliveries the notice has (the providers it
    was routed to; None when the read that built it did not count them, as
    the push workers' does); ``seq`` is its place in the notice log.
    """

    notice_id: str
    carrier_id: str
    event_id: str
    msisdn: str
    msisdn_hash: str
    event_type: StoredEventType
    effective_at: datetime
    quiet_period_ends_at: datetime | None
    deadline: datetime
    recorded_at: datetime
    providers: int | None
    seq: int = 0


@dataclass(frozen=True)
class Delivery:
    """One notice for one provider; ``jti`` is the SET's id.

    ``delivered_at``: first pushed successfully or first handed out by a
    poll. ``acted_at`` / ``bindings_removed``: the provider's confirmation,
    received at ``confirmed_at``.
    """

    jti: str
    notice_id: str
    provider_id: str
    mode: DeliveryMode
    state: DeliveryState
    attempts: int
    created_at: datetime
    last_error: str | None
    delivered_at: datetime | None
    acknowledged_at: datetime | None
    acted_at: datetime | None
    confirmed_at: datetime | None
    bindings_removed: int | None
    notice: Notice


@dataclass(frozen=True)
class NumberEvent:
    """One event in a number's history (no msisdn: history is read by hash)."""

    notice_id: str
    carrier_id: str
    event_type: StoredEventType
    effective_at: datetime
    quiet_period_ends_at: datetime | None
    recorded_at: datetime


@dataclass(frozen=True)
class RecycledCheck:
    """The answer to "was this number recycled after a date?".

    ``recycled_at`` is set with RECYCLED: the most recent recycling.
    ``coverage_start`` is where the gateway's history of the number begins
    (None when it has none).
    """

    status: RecycledStatus
    recycled_at: datetime | None = None
    coverage_start: datetime | None = None


@dataclass(frozen=True)
class ProviderComplianceRow:
    """Per provider: how notices and unbind tickets were handled.

    Every delivery counts in exactly one of ``acted_on_time``, ``acted_late``,
    ``never_acted`` and ``awaiting_action`` (see :func:`classify_notice`);
    ``never_received`` are those of ``never_acted`` never delivered at all.
    ``unbind_median_time`` runs from ticket creation to the provider's final
    answer (DONE or REJECTED); None without such tickets.
    """

    provider_id: str
    notices: int
    notices_delivered: int
    notices_acknowledged: int
    acted_on_time: int
    acted_late: int
    never_acted: int
    awaiting_action: int
    unbinds_open: int
    unbinds_done: int
    unbinds_rejected: int
    unbinds_failed: int
    unbind_median_time: timedelta | None
    never_received: int = 0


@dataclass(frozen=True)
class AuditDraft:
    """An audit row to append in the same transaction as the change it records,
    so that a crash cannot keep the change and lose its row."""

    kind: str
    actor: str
    subject: str
    detail: Mapping[str, str | int | bool]


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit chain."""

    seq: int
    ts: datetime
    kind: str
    actor: str
    subject: str
    detail: Mapping[str, str | int | bool]
    prev_hash: str
    row_hash: str


@dataclass(frozen=True)
class AuditVerification:
    """The result of checking the audit chain.

    ``first_broken_seq`` is the first row that is missing or does not match
    (None when ``ok``); ``reason`` says what was wrong.
    """

    ok: bool
    rows_checked: int
    first_broken_seq: int | None = None
    reason: str = ""


def classify_notice(
    *, acted_at: datetime | None, deadline: datetime, now: datetime
) -> NoticeStatus:
    """Compliance standing of one delivered notice at ``now``.

    Acted at or before the deadline: ON_TIME; after it: LATE. Not acted and
    the deadline passed (``now > deadline``): NEVER; otherwise AWAITING (a
    provider may still act at the deadline itself).
    """
    if acted_at is not None:
        return NoticeStatus.ON_TIME if acted_at <= deadline else NoticeStatus.LATE
    return NoticeStatus.NEVER if now > deadline else NoticeStatus.AWAITING


def classify_recycled(
    history: Sequence[NumberEvent],
    specified_date: datetime,
    *,
    history_start: datetime | None = None,
) -> RecycledCheck:
    """Apply the recycled-check rule to a number's history.

    RECYCLED when a RECYCLED event took effect strictly after
    ``specified_date`` (``recycled_at`` = the latest). Otherwise the answer
    depends on coverage: the gateway holds a number's history from the first
    event it recorded for it, or from ``history_start`` (the configured
    instant since which carriers report every event of every number), which
    ever is earlier. ``specified_date`` at or after the coverage start:
    NOT_RECYCLED; before it, or with no coverage at all: NO_DATA.
    """
    recycled = [
        e.effective_at
        for e in history
        if e.event_type is StoredEventType.RECYCLED and e.effective_at > specified_date
    ]
    starts = [e.effective_at for e in history]
    if history_start is not None:
        starts.append(history_start)
    coverage_start = min(starts) if starts else None
    if recycled:
        return RecycledCheck(RecycledStatus.RECYCLED, max(recycled), coverage_start)
    if coverage_start is not None and specified_date >= coverage_start:
        return RecycledCheck(RecycledStatus.NOT_RECYCLED, None, coverage_start)
    return RecycledCheck(RecycledStatus.NO_DATA, None, coverage_start)
