"""Recycled-number notices: carriers report, providers poll, acknowledge and confirm.

``ReportNumberEvent`` records a carrier's event in the notice log with one
delivery per provider it is routed to (push or poll) in one transaction:
providers whose fresh routing filter may hold the number, and every
provider without one (as a lookup asks them); the push worker
(:mod:`onecert.gateway._notice_delivery`) sends the push deliveries, and
poll-mode providers fetch theirs with ``PollEvents`` (RFC 8936: a SET is
returned by every poll until it is acknowledged). Every SET names the
delivery's ``jti``, so redeliveries are recognisable; the SET is signed
afresh each time (its ``iat`` is when it was sent).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import grpc
import structlog
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from onecert.gateway._audit import Auditor
from onecert.gateway._config import CarrierConfig, NoticesConfig, ProviderConfig
from onecert.gateway._directory import by_id
from onecert.gateway._principals import Principal
from onecert.gateway._refusal import Refusal, invalid, store_call
from onecert.gateway.store import (
    AuditDraft,
    ConflictError,
    Delivery,
    DeliveryMode,
    Handoff,
    NotFoundError,
    Notice,
    Store,
    StoredEventType,
)
from onecert.sdk._msisdn import InvalidMsisdnError, mask_msisdn, sha256_hex, validate_msisdn
from onecert.sdk._set import MAX_JTI, SetIssuer
from onecert.v1 import gateway_pb2

__all__ = [
    "Clock",
    "Doorbell",
    "NoticeRouting",
    "NoticeService",
    "PushHandoff",
    "build_set",
    "notice_deadline",
    "timestamp_arg",
    "utc_now",
]

Clock = Callable[[], datetime]

_log = structlog.get_logger("onecert.gateway.notices")

MAX_EVENT_ID = 128
DEFAULT_MAX_EVENTS = 100
MAX_EVENTS = 1000
MAX_ACKS = 1000
MAX_ERROR_CODE = 64
MAX_ERROR_DESCRIPTION = 1024
# Time kept back from a poll's deadline to answer it.
_POLL_MARGIN_S = 0.5
# While a poll waits, how often it looks at the database: other gateway
# replicas record notices too, and only this process's doorbell rings here.
_POLL_RECHECK_S = 1.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_EVENT_TYPES: Mapping[int, StoredEventType] = {
    gateway_pb2.NUMBER_EVENT_TYPE_CANCELLED: StoredEventType.CANCELLED,
    gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED: StoredEventType.RECYCLED,
}


def utc_now() -> datetime:
    """The current time, aware, in UTC (the default clock)."""
    return datetime.now(UTC)


class Doorbell:
    """Wakes whoever waits for new notices in this process (push workers, polls).

    A ring wakes the current waiters; one who was busy when it rang (a push
    worker in the middle of a claim) learns of it from :attr:`rings`, read
    before it got busy and passed to :meth:`wait` as ``since``.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.rings = 0

    def ring(self) -> None:
        """Wake every current waiter."""
        self.rings += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float, *, since: int | None = None) -> bool:  # noqa: ASYNC109 - a bounded nap, not an RPC deadline
        """Wait for the next ring, at most ``timeout`` seconds; True if it rang (at once,
        if it rang after :attr:`rings` was ``since``)."""
        if since is not None and self.rings != since:
            return True
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), max(0.0, timeout))
        except TimeoutError:
            return False
        return True


class PushHandoff(Protocol):
    """The push worker of this process, which takes a report's fresh copies
    (:class:`~onecert.gateway._notice_delivery.NoticePusher`)."""

    @property
    def worker_id(self) -> str:
        """The lease owner's name."""
        ...

    def reserve(self, wanted: int) -> int:
        """Up to ``wanted`` places in flight for handed-over pushes (0: none now)."""
        ...

    def adopt(self, reserved: int, handed: Sequence[Handoff]) -> None:
        """Push ``handed`` (leased to :attr:`worker_id`); free the other places."""
        ...


class NoticeRouting(Protocol):
    """Which providers a notice about a number goes to (the routing service)."""

    @property
    def registered(self) -> frozenset[str]:
        """The providers routing knows; a notice goes to every other one."""
        ...

    def routed_to(self, msisdn: str) -> frozenset[str]:
        """Of :attr:`registered`: those whose filter may hold the number, or without one."""
        ...

    def route_tag(self, msisdn: str) -> str:
        """The tag that providers' later filter additions of the number carry."""
        ...


def timestamp_arg(ts: Timestamp, name: str) -> datetime:
    """A request's Timestamp as an aware datetime; :class:`ValueError` when out of range."""
    if not 0 <= ts.nanos < 1_000_000_000:
        raise ValueError(f"{name} has invalid nanos")
    try:
        value = ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{name} is out of range") from None
    if value < _EPOCH:
        raise ValueError(f"{name} must not be before 1970")
    return value


def time_arg(request: Message, name: str) -> datetime:
    """The required Timestamp field ``name`` of ``request``; INVALID_ARGUMENT when unset
    or out of range."""
    if not request.HasField(name):
        raise invalid(f"{name} is required")
    try:
        return timestamp_arg(getattr(request, name), name)
    except ValueError as exc:
        raise invalid(str(exc)) from None


def optional_time_arg(request: Message, name: str) -> datetime | None:
    """The Timestamp field ``name`` of ``request``, None when unset; INVALID_ARGUMENT
    when out of range."""
    return time_arg(request, name) if request.HasField(name) else None


def notice_deadline(
    config: NoticesConfig,
    *,
    event_type: StoredEventType,
    effective_at: datetime,
    quiet_period_ends_at: datetime | None,
    now: datetime,
) -> datetime:
    """When providers must have acted on a notice.

    ``deadline_s`` when configured; otherwise before the number can go to
    someone else: the end of the quiet period for CANCELLED (reported, or
    the default quiet period), ``recycled_deadline_s`` after the event for
    RECYCLED. Never less than ``min_action_s`` from ``now``, so a notice
    reported late still leaves time to act.
    """
    if config.deadline_s is not None:
        deadline = effective_at + timedelta(seconds=config.deadline_s)
    elif event_type is StoredEventType.CANCELLED:
        deadline = quiet_period_ends_at or effective_at + timedelta(
            seconds=config.default_quiet_period_s
        )
    else:
        deadline = effective_at + timedelta(seconds=config.recycled_deadline_s)
    return max(deadline, now + timedelta(seconds=config.min_action_s))


def build_set(sets: SetIssuer, delivery: Delivery) -> str:
    """The Security Event Token for one delivery (its ``jti`` is the delivery's).

    ``toe`` is when the event took effect: for CANCELLED the cancellation
    (accounts bound before it are the old holder's), for RECYCLED the
    recycling; ``act_by`` is the notice's deadline.
    """
    notice = delivery.notice
    return sets.issue(
        audience=delivery.provider_id,
        msisdn=notice.msisdn,
        recycled_at=notice.effective_at,
        deadline=notice.deadline,
        jti=delivery.jti,
    )


class NoticeService:
    """``ReportNumberEvent``, ``PollEvents`` and ``ConfirmEventAction``, without the server.

    Each takes the caller the access policy identified and the request;
    refusals are raised as :class:`~onecert.gateway._refusal.Refusal`.

    Args:
        store: the durable state.
        carriers: the configured carriers (their ``prefixes``).
        providers: the active providers by id (each notice goes to those
            routing picks, by their ``delivery`` mode); the gateway's live
            :class:`~onecert.gateway._directory.ProviderDirectory`, read at each notice.
        config: deadlines and poll limits.
        sets: signs the SETs handed out by polls.
        auditor: where audit rows go.
        doorbell: rung when a notice is recorded (wakes push workers and polls).
        clock: the gateway's notion of now (deadlines, receipt times).
        routing: picks the providers a notice goes to; None (or routing off):
            every provider. May be set after construction.
        pusher: this process's push worker, which pushes the copies a report
            makes due at once (leased with the report); None: the workers
            claim them. May be set after construction.
    """

    def __init__(
        self,
        *,
        store: Store,
        carriers: Sequence[CarrierConfig],
        providers: Mapping[str, ProviderConfig] | Sequence[ProviderConfig],
        config: NoticesConfig,
        sets: SetIssuer,
        auditor: Auditor,
        doorbell: Doorbell | None = None,
        clock: Clock = utc_now,
        history_start: datetime | None = None,
        routing: NoticeRouting | None = None,
        pusher: PushHandoff | None = None,
    ) -> None:
        self._store = store
        self._history_start = history_start
        self._carriers = {c.id: c for c in carriers}
        self._providers = by_id(providers)
        self.routing = routing
        self.pusher = pusher
        self._config = config
        self._sets = sets
        self._auditor = auditor
        self.doorbell = doorbell or Doorbell()
        self._clock = clock

    # ------------------------------------------------------------ carriers

    async def report_number_event(
        self, request: gateway_pb2.ReportNumberEventRequest, caller: Principal
    ) -> gateway_pb2.ReportNumberEventResponse:
        """Record a carrier's event with one delivery per provider; idempotent on event_id."""
        now = self._clock()
        msisdn, kind, effective_at, quiet = self._check_report(request, now)
        structlog.contextvars.bind_contextvars(msisdn=mask_msisdn(msisdn))
        carrier = self._carriers[caller.id]
        if not carrier.serves(msisdn):
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"carrier {caller.id!r} does not serve this number (see its configured prefixes)",
                reason="foreign_number",
            )
        history = request.history
        deadline, providers = self._addressees(
            msisdn, kind, effective_at, quiet, now, history=history
        )

        def audit_row(notice: Notice, created: bool) -> AuditDraft:
            # Written with the notice, in its transaction: a crash cannot
            # keep the notice and lose the row.
            return AuditDraft(
                kind="notice.reported",
                actor=caller.actor,
                subject=self._auditor.number(msisdn),
                detail={
                    "notice_id": notice.notice_id,
                    "event_type": kind.value,
                    "created": created,
                    "providers": notice.providers or 0,  # counted: read with notice_query
                    "deadline": notice.deadline.isoformat(),
                    "history": history,
                },
            )

        try:
            notice, created, handed = await self._record(
                functools.partial(
                    self._store.notices.record,
                    carrier_id=caller.id,
                    event_id=request.event_id,
                    # History is kept by its hash alone: no delivery needs the number.
                    msisdn="" if history else msisdn,
                    msisdn_hash=sha256_hex(msisdn),
                    event_type=kind,
                    effective_at=effective_at,
                    quiet_period_ends_at=quiet,
                    deadline=deadline,
                    providers=providers,
                    now=now,
                    min_action=timedelta(seconds=self._config.min_action_s),
                    route_tag=None if self.routing is None else self.routing.route_tag(msisdn),
                    audit=audit_row,
                ),
                targets=sum(m is DeliveryMode.PUSH for _, m in providers),
            )
        except ConflictError:
            raise Refusal(
                grpc.StatusCode.ALREADY_EXISTS,
                "this event_id was already reported with another number, type or time",
            ) from None
        if created and handed < len(providers):
            # Wake the workers (and polls) for the copies this worker did not take.
            self.doorbell.ring()
        _log.info(
            "notice.reported",
            notice_id=notice.notice_id,
            event_type=kind.value,
            created=created,
            providers=notice.providers,
            history=history,
        )
        return gateway_pb2.ReportNumberEventResponse(
            notice_id=notice.notice_id, created=created, providers=notice.providers or 0
        )

    async def _record(
        self, record: Callable[..., Awaitable[tuple[Notice, bool, list[Handoff]]]], *, targets: int
    ) -> tuple[Notice, bool, int]:
        """Record the notice (``record``: the store's ``notices.record``, less the
        lease); the local push worker (:attr:`pusher`) takes the copies it alone
        made due, leased in the same transaction, and pushes them at once. How
        many it took."""
        pusher = self.pusher
        reserved = pusher.reserve(targets) if pusher is not None and targets else 0
        handed: list[Handoff] = []
        try:
            notice, created, handed = await store_call(
                record(
                    worker_id=pusher.worker_id if pusher is not None else "none",
                    limit=reserved,
                    lease_s=self._config.lease_s,
                ),
                "record_number_event",
            )
        finally:
            if pusher is not None and reserved:
                pusher.adopt(reserved, handed)
        return notice, created, len(handed)

    def _addressees(
        self,
        msisdn: str,
        kind: StoredEventType,
        effective_at: datetime,
        quiet: datetime | None,
        now: datetime,
        *,
        history: bool,
    ) -> tuple[datetime, list[tuple[str, DeliveryMode]]]:
        """The notice's deadline and who gets it; a history event has no one to notify,
        so nothing to act on by a deadline."""
        if history:
            return effective_at, []
        deadline = notice_deadline(
            self._config,
            event_type=kind,
            effective_at=effective_at,
            quiet_period_ends_at=quiet,
            now=now,
        )
        return deadline, [(p.id, DeliveryMode(p.delivery)) for p in self.route(msisdn)]

    def route(self, msisdn: str) -> list[ProviderConfig]:
        """The providers a notice about ``msisdn`` goes to now, by id.

        Those whose fresh filter may hold the number and those without one
        (the lookup's routing query), plus every current provider routing
        does not know yet. Without routing: every current provider.
        """
        current = self._providers
        routing = self.routing
        if routing is None:
            return sorted(current.values(), key=lambda p: p.id)
        # Routing's choice, and every current provider it does not know (yet).
        ids = (routing.routed_to(msisdn) & current.keys()) | (current.keys() - routing.registered)
        return [current[p] for p in sorted(ids)]

    async def route_late(self, provider_id: str, route_tags: list[str]) -> int:
        """A provider's filter additions name numbers open notices were not routed to it
        for: route those notices to it now (before their deadline); how many."""
        provider = self._providers.get(provider_id)
        if provider is None or not route_tags:
            return 0

        def audit_row(count: int) -> AuditDraft:
            return AuditDraft(
                kind="notice.routed_late",
                actor="gateway",
                subject=f"provider:{provider_id}",
                detail={"notices": count},
            )

        count = await store_call(
            self._store.notices.route_late(
                provider_id, provider.delivery, route_tags, now=self._clock(), audit=audit_row
            ),
            "route_late",
        )
        if count:
            self.doorbell.ring()
            _log.info("notice.routed_late", provider=provider_id, notices=count)
        return count

    def _check_report(
        self, request: gateway_pb2.ReportNumberEventRequest, now: datetime
    ) -> tuple[str, StoredEventType, datetime, datetime | None]:
        if not 0 < len(request.event_id) <= MAX_EVENT_ID:
            raise invalid(f"event_id is required (1 to {MAX_EVENT_ID} characters)")
        if not request.event_id.isprintable():
            raise invalid("event_id must be printable text")
        try:
            msisdn = validate_msisdn(request.msisdn)
        except InvalidMsisdnError as exc:
            raise invalid(str(exc)) from None
        kind = _EVENT_TYPES.get(request.type)
        if kind is None:
            raise invalid("type must be NUMBER_EVENT_TYPE_CANCELLED or _RECYCLED")
        effective_at = time_arg(request, "effective_at")
        quiet = optional_time_arg(request, "quiet_period_ends_at")
        if effective_at > now + timedelta(seconds=self._config.clock_skew_s):
            raise invalid("effective_at is in the future")
        if quiet is not None:
            if kind is not StoredEventType.CANCELLED:
                raise invalid("quiet_period_ends_at applies to CANCELLED events only")
            if quiet <= effective_at:
                raise invalid("quiet_period_ends_at must be after effective_at")
        start = self._history_start
        if request.history and (start is None or effective_at >= start):
            # History is what happened before carriers reported live; a later
            # event reported as history would spare providers their notice.
            raise invalid(
                "history = true is for events before check_recycled.history_start "
                f"({start.isoformat() if start else 'not set'}); report later events "
                "without it, so that providers get their notice"
            )
        return msisdn, kind, effective_at, quiet

    # ------------------------------------------------------------ providers

    async def poll_events(
        self,
        request: gateway_pb2.PollEventsRequest,
        caller: Principal,
        *,
        time_remaining: float | None = None,
    ) -> gateway_pb2.PollEventsResponse:
        """Settle the provider's acks and errors, then hand out its pending SETs.

        Without ``return_immediately`` it waits for notices, up to
        ``poll_wait_s`` and within ``time_remaining`` (seconds before the
        caller's deadline; None: none set).
        """
        provider = self._providers.get(caller.id)
        if provider is None:
            # The policy let an active provider in; it was suspended since.
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"provider {caller.id!r} is no longer active in the registry",
                reason="not_active",
            )
        if provider.delivery != DeliveryMode.POLL.value:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"provider {caller.id!r} receives notices by push (ReceiveEvent), not by polling",
            )
        max_events, errors = _check_poll(request)

        # Acknowledgements and errors first: what they settle is not handed
        # out again below. Unknown and other providers' jtis are ignored.
        def audited(acked: int, refused: int) -> AuditDraft:
            return AuditDraft(
                kind="notice.acknowledged",
                actor=caller.actor,
                subject=f"provider:{caller.id}",
                detail={"acknowledged": acked, "refused": refused, "via": "poll"},
            )

        # One transaction for both, with their audit row: a crash keeps all
        # of it or none, and the provider's next poll settles what is left.
        acked, refused = await store_call(
            self._store.deliveries.settle(
                caller.id, request.acks, errors, now=self._clock(), audit=audited
            ),
            "ack_deliveries",
        )
        batch, more = await store_call(
            self._store.deliveries.poll(caller.id, max_events=max_events, now=self._clock()),
            "poll_deliveries",
        )
        if not batch and not request.return_immediately:
            batch, more = await self._wait_for_notices(time_remaining, caller.id, max_events)
        if acked or refused:
            _log.info("notice.polled_acks", acknowledged=acked, refused=refused)
        return gateway_pb2.PollEventsResponse(
            events=[
                gateway_pb2.PolledEvent(jti=d.jti, set=build_set(self._sets, d)) for d in batch
            ],
            more_available=more,
        )

    async def _wait_for_notices(
        self, remaining: float | None, provider_id: str, max_events: int
    ) -> tuple[list[Delivery], bool]:
        hold = self._config.poll_wait_s
        if remaining is not None:
            hold = min(hold, remaining - _POLL_MARGIN_S)
        until = time.monotonic() + hold
        while (left := until - time.monotonic()) > 0:
            await self.doorbell.wait(min(left, _POLL_RECHECK_S))
            batch, more = await store_call(
                self._store.deliveries.poll(provider_id, max_events=max_events, now=self._clock()),
                "poll_deliveries",
            )
            if batch:
                return batch, more
        return [], False

    async def confirm_event_action(
        self, request: gateway_pb2.ConfirmEventActionRequest, caller: Principal
    ) -> gateway_pb2.ConfirmEventActionResponse:
        """Record that the provider acted on a notice it was sent."""
        if not 0 < len(request.jti) <= MAX_JTI:
            raise invalid(f"jti is required (1 to {MAX_JTI} characters)")
        acted_at = optional_time_arg(request, "acted_at")

        def audited(recorded: bool) -> AuditDraft:
            return AuditDraft(
                kind="notice.confirmed",
                actor=caller.actor,
                subject=f"jti:{request.jti}",
                detail={
                    "bindings_removed": request.bindings_removed,
                    "recorded": recorded,
                    "via": "poll",
                },
            )

        try:
            # The audit row commits with the confirmation: both or neither.
            recorded = await store_call(
                self._store.deliveries.confirm_action(
                    caller.id,
                    request.jti,
                    bindings_removed=request.bindings_removed,
                    acted_at=acted_at,
                    now=self._clock(),
                    audit=audited,
                ),
                "confirm_action",
            )
        except NotFoundError:
            raise Refusal(
                grpc.StatusCode.NOT_FOUND, "no notice with this jti was sent to this provider"
            ) from None
        _log.info("notice.confirmed", jti=request.jti, recorded=recorded)
        return gateway_pb2.ConfirmEventActionResponse(recorded=recorded)


def _check_poll(request: gateway_pb2.PollEventsRequest) -> tuple[int, dict[str, str]]:
    if request.max_events > MAX_EVENTS:
        raise invalid(f"max_events must be at most {MAX_EVENTS}")
    max_events = request.max_events or DEFAULT_MAX_EVENTS
    if len(request.acks) > MAX_ACKS:
        raise invalid(f"at most {MAX_ACKS} acks per poll")
    for jti in request.acks:
        if not 0 < len(jti) <= MAX_JTI:
            raise invalid(f"every ack must be a jti of 1 to {MAX_JTI} characters")
    if len(request.errors) > MAX_ACKS:
        raise invalid(f"at most {MAX_ACKS} errors per poll")
    errors: dict[str, str] = {}
    for error in request.errors:
        if not 0 < len(error.jti) <= MAX_JTI:
            raise invalid(f"every error needs a jti of 1 to {MAX_JTI} characters")
        if not 0 < len(error.code) <= MAX_ERROR_CODE:
            raise invalid(
                f"every error needs a code of 1 to {MAX_ERROR_CODE} characters "
                "(RFC 8935, e.g. invalid_request)"
            )
        if len(error.description) > MAX_ERROR_DESCRIPTION:
            raise invalid(f"an error description is at most {MAX_ERROR_DESCRIPTION}")
        text = error.code
        if error.description:
            text += ": " + error.description
        errors[error.jti] = text
    return max_events, errors
