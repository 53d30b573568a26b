"""Clients of the gateway: the portal's (citizen RPCs), and those of providers,
carriers and the regulator (:class:`ProviderGatewayClient`,
:class:`CarrierGatewayClient`, :class:`AdminGatewayClient`).

::

    async with GatewayClient("gateway.example:443", tls=ClientTLS(ca_file="ca.pem",
            cert_file="portal.pem", key_file="portal.key.pem")) as client:
        async for update in client.lookup(assertion, timeout=10):
            match update:
                case Started(): ...   # the numbers found, the calls planned
                case Result(): ...    # one provider's answer for one number
                case Summary(): ...   # always last: coverage and time taken

        ticket = await client.unbind(fresh_assertion, account.handle)
        receipt = await client.get_unbind(another_fresh_assertion, ticket.ticket_id)

The updates are frozen dataclasses, not protobufs. A refused or failed call
raises :class:`GatewayError` with the gRPC status code and the gateway's
explanation. An assertion is good for one call: mint a fresh one each time.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from onecert.sdk._tls import ClientTLS
from onecert.sdk._types import (
    BindingKind,
    ProviderCategory,
    TenureState,
    UnbindOutcome,
    UnbindReason,
    coerce_enum,
)
from onecert.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

__all__ = [
    "Account",
    "AdminGatewayClient",
    "Attribution",
    "CallOutcome",
    "CarrierGatewayClient",
    "CarrierStatus",
    "ComplianceReport",
    "Coverage",
    "EventError",
    "GatewayClient",
    "GatewayError",
    "LookupUpdate",
    "NumberCoverage",
    "NumberEventType",
    "NumberStatus",
    "PollResult",
    "PolledEvent",
    "ProviderCompliance",
    "ProviderGatewayClient",
    "RateLimitedError",
    "Receipt",
    "RecycledAnswer",
    "RecycledStatus",
    "ReportedEvent",
    "Result",
    "Started",
    "Summary",
    "TicketInfo",
    "TicketState",
]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class Attribution(enum.StrEnum):
    """Whose account a shown binding is."""

    MINE = "mine"
    """The caller's current number, bound while they hold it."""
    LEFT_BEHIND = "left_behind"
    """The caller's former number, bound while they held it. Dangerous."""
    PREVIOUS_HOLDER = "previous_holder"
    """A previous holder's account on the caller's current number."""


class CallOutcome(enum.StrEnum):
    """How one carrier or provider call ended."""

    ANSWERED = "answered"
    TIMED_OUT = "timed_out"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not asked: circuit breaker open, or routing."""
    UNKNOWN = "unknown"
    """A value this client does not know (a newer gateway)."""


class TicketState(enum.StrEnum):
    """Where an unbind ticket stands."""

    QUEUED = "queued"
    """Committed, waiting for (another) delivery attempt."""
    PENDING = "pending"
    """The provider accepted it and has not finished; the gateway asks again."""
    DONE = "done"
    """Final: the provider detached the number."""
    REJECTED = "rejected"
    """Final: the provider refused; ``provider_reason`` says why."""
    FAILED = "failed"
    """Final: not delivered before the ticket expired, or refused for good."""
    UNKNOWN = "unknown"
    """A value this client does not know (a newer gateway)."""

    @property
    def final(self) -> bool:
        """Whether the ticket will never change again."""
        return self in (TicketState.DONE, TicketState.REJECTED, TicketState.FAILED)


_E = TypeVar("_E", bound=enum.StrEnum)


def _enum_from_pb(
    enum_type: type[_E], name: str, prefix: str, default: _E | None = None
) -> _E | None:
    member = name.removeprefix(prefix)
    try:
        return enum_type[member]
    except KeyError:
        return default


def _outcome(value: gateway_pb2.CallOutcome.ValueType) -> CallOutcome:
    name = gateway_pb2.CallOutcome.Name(value) if value in gateway_pb2.CallOutcome.values() else ""
    found = _enum_from_pb(CallOutcome, name, "CALL_OUTCOME_")
    return found if found is not None else CallOutcome.UNKNOWN


def _time(message: Message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def _delta(duration: Duration) -> timedelta:
    return duration.ToTimedelta()


@dataclass(frozen=True)
class NumberStatus:
    """A number registered under the caller's identity (one tenure of it)."""

    msisdn: str
    carrier_id: str
    held_from: datetime | None
    held_until: datetime | None
    state: TenureState | None
    current: bool


@dataclass(frozen=True)
class CarrierStatus:
    """How one carrier answered."""

    carrier_id: str
    outcome: CallOutcome
    detail: str


@dataclass(frozen=True)
class Account:
    """One of the caller's accounts at a provider (never a previous holder's).

    ``handle`` (empty when the account cannot be unbound) is what to pass to
    the gateway's Unbind; it works only for this caller and expires.
    """

    attribution: Attribution
    display_name_masked: str
    kind: BindingKind | None
    bound_at: datetime | None
    last_used_at: datetime | None
    unbindable: bool
    handle: str
    dangerous: bool


@dataclass(frozen=True)
class Started:
    """First update: the numbers found and how many provider results follow."""

    query_id: str
    numbers: tuple[NumberStatus, ...]
    carriers: tuple[CarrierStatus, ...]
    provider_calls: int


@dataclass(frozen=True)
class Result:
    """One provider's answer for one number.

    ``accounts`` are the caller's own (LEFT_BEHIND first); previous holders'
    accounts are only counted, with one ``release_handles`` entry per account
    that can be released.
    """

    query_id: str
    provider_id: str
    provider_name: str
    category: ProviderCategory | None
    msisdn: str
    outcome: CallOutcome
    detail: str
    accounts: tuple[Account, ...]
    previous_holder_count: int
    release_handles: tuple[str, ...]
    elapsed: timedelta


@dataclass(frozen=True)
class Coverage:
    """Provider calls: ``asked`` = answered + timed out + failed + skipped."""

    asked: int
    answered: int
    timed_out: int
    failed: int
    skipped: int


@dataclass(frozen=True)
class NumberCoverage:
    """Coverage and counts for one number."""

    msisdn: str
    coverage: Coverage
    mine: int
    left_behind: int
    previous_holder: int


@dataclass(frozen=True)
class Summary:
    """Last update of a lookup."""

    query_id: str
    total: Coverage
    numbers: tuple[NumberCoverage, ...]
    carriers: tuple[CarrierStatus, ...]
    elapsed: timedelta


LookupUpdate = Started | Result | Summary


@dataclass(frozen=True)
class TicketInfo:
    """What Unbind answers: the durable ticket; delivery happens in the background.

    ``created`` is False when the same account had already been asked to be
    unbound (the existing ticket is returned).
    """

    ticket_id: str
    state: TicketState
    created: bool


@dataclass(frozen=True)
class Receipt:
    """The receipt of an unbind ticket.

    ``provider_outcome``, ``provider_reason`` and ``answered_at`` hold the
    provider's answer once it gave one; ``last_error`` the last delivery
    failure; ``next_attempt_at`` is None once the ticket is final.
    """

    ticket_id: str
    provider_id: str
    provider_name: str
    reason: UnbindReason | None
    state: TicketState
    attempts: int
    created_at: datetime | None
    provider_outcome: UnbindOutcome | None
    provider_reason: str
    answered_at: datetime | None
    last_error: str
    next_attempt_at: datetime | None
    expires_at: datetime | None

    @property
    def final(self) -> bool:
        """Whether the ticket will never change again."""
        return self.state.final


def _ticket_state(value: gateway_pb2.TicketState.ValueType) -> TicketState:
    name = gateway_pb2.TicketState.Name(value) if value in gateway_pb2.TicketState.values() else ""
    found = _enum_from_pb(TicketState, name, "TICKET_STATE_")
    return found if found is not None else TicketState.UNKNOWN


def _receipt(pb: gateway_pb2.UnbindTicket) -> Receipt:
    reason_name = (
        common_pb2.UnbindReason.Name(pb.reason)
        if pb.reason in common_pb2.UnbindReason.values()
        else ""
    )
    outcome_name = (
        common_pb2.UnbindOutcome.Name(pb.provider_outcome)
        if pb.provider_outcome in common_pb2.UnbindOutcome.values()
        else ""
    )
    return Receipt(
        ticket_id=pb.ticket_id,
        provider_id=pb.provider_id,
        provider_name=pb.provider_name,
        reason=_enum_from_pb(UnbindReason, reason_name, "UNBIND_REASON_"),
        state=_ticket_state(pb.state),
        attempts=pb.attempts,
        created_at=_time(pb, "created_at"),
        provider_outcome=_enum_from_pb(UnbindOutcome, outcome_name, "UNBIND_OUTCOME_"),
        provider_reason=pb.provider_reason,
        answered_at=_time(pb, "answered_at"),
        last_error=pb.last_error,
        next_attempt_at=_time(pb, "next_attempt_at"),
        expires_at=_time(pb, "expires_at"),
    )


class GatewayError(Exception):
    """The gateway refused or failed a call.

    Attributes:
        code: the gRPC status (UNAUTHENTICATED, PERMISSION_DENIED,
            RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, ...).
        details: the gateway's explanation.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}" if details else code.name)
        self.code = code
        self.details = details


def _coverage(pb: gateway_pb2.Coverage) -> Coverage:
    return Coverage(pb.asked, pb.answered, pb.timed_out, pb.failed, pb.skipped)


def _carrier_list(items: object) -> tuple[CarrierStatus, ...]:
    return tuple(
        CarrierStatus(c.carrier_id, _outcome(c.outcome), c.detail)
        for c in items  # type: ignore[attr-defined]  # a repeated CarrierOutcome field
    )


def _account(pb: gateway_pb2.ShownBinding) -> Account:
    attribution = _enum_from_pb(
        Attribution,
        gateway_pb2.Attribution.Name(pb.attribution)
        if pb.attribution in gateway_pb2.Attribution.values()
        else "",
        "ATTRIBUTION_",
        Attribution.PREVIOUS_HOLDER,
    )
    assert attribution is not None
    kind_name = (
        common_pb2.BindingKind.Name(pb.kind) if pb.kind in common_pb2.BindingKind.values() else ""
    )
    return Account(
        attribution=attribution,
        display_name_masked=pb.display_name_masked,
        kind=_enum_from_pb(BindingKind, kind_name, "BINDING_KIND_"),
        bound_at=_time(pb, "bound_at"),
        last_used_at=_time(pb, "last_used_at"),
        unbindable=pb.unbindable,
        handle=pb.handle,
        dangerous=pb.dangerous,
    )


def _update(pb: gateway_pb2.LookupResponse) -> LookupUpdate | None:
    kind = pb.WhichOneof("update")
    if kind == "started":
        s = pb.started
        numbers = tuple(
            NumberStatus(
                msisdn=n.msisdn,
                carrier_id=n.carrier_id,
                held_from=_time(n, "held_from"),
                held_until=_time(n, "held_until"),
                state=_enum_from_pb(
                    TenureState,
                    common_pb2.TenureState.Name(n.state)
                    if n.state in common_pb2.TenureState.values()
                    else "",
                    "TENURE_STATE_",
                ),
                current=n.current,
            )
            for n in s.numbers
        )
        return Started(pb.query_id, numbers, _carrier_list(s.carriers), s.provider_calls)
    if kind == "result":
        r = pb.result
        category_name = (
            common_pb2.ProviderCategory.Name(r.category)
            if r.category in common_pb2.ProviderCategory.values()
            else ""
        )
        return Result(
            query_id=pb.query_id,
            provider_id=r.provider_id,
            provider_name=r.provider_name,
            category=_enum_from_pb(ProviderCategory, category_name, "PROVIDER_CATEGORY_"),
            msisdn=r.msisdn,
            outcome=_outcome(r.outcome),
            detail=r.detail,
            accounts=tuple(_account(b) for b in r.bindings),
            previous_holder_count=r.previous_holder_count,
            release_handles=tuple(r.release_handles),
            elapsed=_delta(r.elapsed),
        )
    if kind == "summary":
        m = pb.summary
        return Summary(
            query_id=pb.query_id,
            total=_coverage(m.total),
            numbers=tuple(
                NumberCoverage(
                    n.msisdn, _coverage(n.coverage), n.mine, n.left_behind, n.previous_holder
                )
                for n in m.numbers
            ),
            carriers=_carrier_list(m.carriers),
            elapsed=_delta(m.elapsed),
        )
    # An update kind this client does not know (a newer gateway): skip it.
    return None


class GatewayClient:
    """An async client of the gateway for the portal.

    Args:
        target: ``host:port`` of the gateway.
        tls: the CA to check the gateway and the portal's client certificate
            (mutual TLS, required by a production gateway).
        insecure: plaintext, for a development gateway only. Exactly one of
            ``tls`` and ``insecure`` must be given.
        max_message_bytes: the largest message accepted from the gateway.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTLS | None = None,
        insecure: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if (tls is None) == (not insecure):
            raise ValueError("give either tls=ClientTLS(...) or insecure=True (development only)")
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(
                target, tls.credentials(), options=[*options, *tls.channel_options()]
            )
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self.target = target

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def lookup(
        self,
        assertion: str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline, enforced by the gateway too
        client_request_id: str = "",
    ) -> AsyncIterator[LookupUpdate]:
        """Look up the numbers and accounts of the citizen the assertion names.

        Yields a :class:`Started`, then one :class:`Result` per provider and
        number as each arrives, then a :class:`Summary`. Stopping the iteration
        early cancels the lookup at the gateway.

        Args:
            assertion: the citizen's identity assertion (a JWT, used once).
            timeout: seconds the whole lookup may take.
            client_request_id: an id of yours to find in the gateway's logs
                (at most 64 characters).

        Raises:
            GatewayError: the gateway refused or failed the lookup.
        """
        call = self._stub.Lookup(
            gateway_pb2.LookupRequest(client_request_id=client_request_id),
            timeout=timeout,
            metadata=(("authorization", f"Bearer {assertion.strip()}"),),
        )
        try:
            async for response in call:
                update = _update(response)
                if update is not None:
                    yield update
        except grpc.aio.AioRpcError as exc:
            raise GatewayError(exc.code(), exc.details() or "") from None
        finally:
            call.cancel()

    async def unbind(
        self,
        assertion: str,
        handle: str,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> TicketInfo:
        """Ask for the account behind ``handle`` to be unbound (or released).

        Returns at once with the ticket; read its receipt with :meth:`get_unbind`.
        The same account twice gives the same ticket.

        Args:
            assertion: the citizen's identity assertion (a JWT, used once).
            handle: an :attr:`Account.handle` or a :attr:`Result.release_handles`
                entry from this citizen's lookup.
            timeout: seconds the call may take.

        Raises:
            GatewayError: INVALID_ARGUMENT (malformed or expired handle),
                PERMISSION_DENIED (another citizen's or altered handle),
                FAILED_PRECONDITION (the provider left), UNAUTHENTICATED, ...
        """
        try:
            response = await self._stub.Unbind(
                gateway_pb2.GatewayUnbindRequest(handle=handle.strip()),
                timeout=timeout,
                metadata=(("authorization", f"Bearer {assertion.strip()}"),),
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError(exc.code(), exc.details() or "") from None
        return TicketInfo(
            ticket_id=response.ticket_id,
            state=_ticket_state(response.state),
            created=response.created,
        )

    async def get_unbind(
        self,
        assertion: str,
        ticket_id: str,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> Receipt:
        """The receipt of one of the citizen's unbind tickets.

        Raises:
            GatewayError: NOT_FOUND (unknown, or another citizen's ticket),
                INVALID_ARGUMENT (malformed id), UNAUTHENTICATED, ...
        """
        try:
            response = await self._stub.GetUnbind(
                gateway_pb2.GetUnbindRequest(ticket_id=ticket_id.strip()),
                timeout=timeout,
                metadata=(("authorization", f"Bearer {assertion.strip()}"),),
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError(exc.code(), exc.details() or "") from None
        return _receipt(response.ticket)


# ------------------------------------------------------------------ providers


class RecycledStatus(enum.StrEnum):
    """The gateway's answer to "was this number recycled after a date?"."""

    RECYCLED = "recycled"
    """Recycled after the date: an account bound before it is a previous holder's."""
    NOT_RECYCLED = "not_recycled"
    """The gateway holds the number's history over the date, and it was not."""
    NO_DATA = "no_data"
    """The gateway has no history covering the date: decide by your own rules."""
    UNKNOWN = "unknown"
    """A value this client does not know (a newer gateway)."""


@dataclass(frozen=True)
class RecycledAnswer:
    """The answer of :meth:`ProviderGatewayClient.check_recycled`.

    ``recycled_at`` is the most recent recycling, with RECYCLED.
    """

    status: RecycledStatus
    recycled_at: datetime | None = None

    @property
    def recycled(self) -> bool:
        return self.status is RecycledStatus.RECYCLED


@dataclass(frozen=True)
class PolledEvent:
    """A notice fetched by polling: its ``jti`` and the SET to verify.

    Verify ``token`` with :class:`onecert.sdk.SetVerifier` before trusting it.
    """

    jti: str
    token: str


@dataclass(frozen=True)
class PollResult:
    """One poll's notices, and whether more are waiting."""

    events: tuple[PolledEvent, ...]
    more_available: bool


@dataclass(frozen=True)
class EventError:
    """A notice you could not process (RFC 8936 ``setErrs``).

    ``code`` is an RFC 8935 error code ("invalid_request", "invalid_key",
    "invalid_issuer", "invalid_audience", "authentication_failed").
    """

    jti: str
    code: str
    description: str = ""


class RateLimitedError(GatewayError):
    """RESOURCE_EXHAUSTED from the gateway; ``retry_after`` is the hint in seconds."""

    def __init__(self, details: str, retry_after: float | None) -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        self.retry_after = retry_after


DEV_PRINCIPAL_HEADER = "x-onecert-dev-principal"


def _stamp(value: datetime, name: str) -> Timestamp:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    out = Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def _retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after-ms":
            try:
                return max(0.0, int(value) / 1000)
            except (TypeError, ValueError):
                return None
    return None


class ProviderGatewayClient:
    """A provider's client of the gateway: recycled checks and polled notices.

    ::

        async with ProviderGatewayClient("gateway.example:443", tls=ClientTLS(
                ca_file="ca.pem", cert_file="me.pem", key_file="me.key.pem")) as gw:
            answer = await gw.check_recycled("+8613800138000", since=account.bound_at)
            if answer.recycled:
                ...  # refuse the SMS login: the number changed hands

    The gateway knows you by your client certificate. A development gateway
    without TLS takes ``insecure=True, dev_provider_id="your-id"`` instead.

    Args:
        target: ``host:port`` of the gateway.
        tls: the CA to check the gateway and your client certificate.
        insecure: plaintext, for a development gateway only.
        dev_provider_id: with ``insecure``: the provider id to claim.
        max_message_bytes: the largest message accepted from the gateway.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTLS | None = None,
        insecure: bool = False,
        dev_provider_id: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if (tls is None) == (not insecure):
            raise ValueError("give either tls=ClientTLS(...) or insecure=True (development only)")
        if dev_provider_id is not None and not insecure:
            raise ValueError("dev_provider_id is for insecure development gateways only")
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(
                target, tls.credentials(), options=[*options, *tls.channel_options()]
            )
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            ()
            if dev_provider_id is None
            else ((DEV_PRINCIPAL_HEADER, f"provider:{dev_provider_id}"),)
        )
        self.target = target

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def check_recycled(
        self,
        msisdn: str,
        since: datetime,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> RecycledAnswer:
        """Was ``msisdn`` recycled after ``since`` (typically when the account bound it)?

        Raises:
            RateLimitedError: too many checks; wait ``retry_after`` seconds.
            GatewayError: refused (INVALID_ARGUMENT, UNAUTHENTICATED, ...).
        """
        request = gateway_pb2.CheckRecycledRequest(msisdn=msisdn)
        request.specified_date.CopyFrom(_stamp(since, "since"))
        try:
            response = await self._stub.CheckRecycled(
                request, timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise RateLimitedError(exc.details() or "", _retry_after(exc)) from None
            raise GatewayError(exc.code(), exc.details() or "") from None
        name = (
            gateway_pb2.RecycledStatus.Name(response.status)
            if response.status in gateway_pb2.RecycledStatus.values()
            else ""
        )
        status = _enum_from_pb(RecycledStatus, name, "RECYCLED_STATUS_", RecycledStatus.UNKNOWN)
        assert status is not None
        return RecycledAnswer(status, _time(response, "recycled_at"))

    async def poll_events(
        self,
        *,
        acks: Sequence[str] = (),
        errors: Sequence[EventError] = (),
        max_events: int = 0,
        return_immediately: bool = True,
        timeout: float = 15.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> PollResult:
        """Acknowledge notices, report the ones you could not process, fetch pending ones.

        A notice comes back in every poll until it is acknowledged: ack it
        once you have recorded it durably. With ``return_immediately=False``
        the gateway holds the call (within ``timeout``) until a notice arrives.

        Raises:
            GatewayError: refused (UNAUTHENTICATED, FAILED_PRECONDITION for a
                provider configured for push, INVALID_ARGUMENT, ...).
        """
        request = gateway_pb2.PollEventsRequest(
            max_events=max_events,
            return_immediately=return_immediately,
            acks=list(acks),
            errors=[
                gateway_pb2.EventError(jti=e.jti, code=e.code, description=e.description)
                for e in errors
            ],
        )
        try:
            response = await self._stub.PollEvents(
                request, timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError(exc.code(), exc.details() or "") from None
        return PollResult(
            events=tuple(PolledEvent(e.jti, e.set) for e in response.events),
            more_available=response.more_available,
        )

    async def confirm_event_action(
        self,
        jti: str,
        bindings_removed: int,
        *,
        acted_at: datetime | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> bool:
        """Tell the gateway you acted on notice ``jti``; False if already confirmed.

        Raises:
            GatewayError: NOT_FOUND for a notice not sent to you, or another refusal.
        """
        request = gateway_pb2.ConfirmEventActionRequest(jti=jti, bindings_removed=bindings_removed)
        if acted_at is not None:
            request.acted_at.CopyFrom(_stamp(acted_at, "acted_at"))
        try:
            response = await self._stub.ConfirmEventAction(
                request, timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError(exc.code(), exc.details() or "") from None
        return response.recorded


# ------------------------------------------------------------ carriers, regulator


class _CertifiedClient:
    """A channel to the gateway for callers it knows by their client certificate.

    A development gateway without TLS takes the name in ``dev_principal``
    (metadata ``x-onecert-dev-principal``) instead.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTLS | None,
        insecure: bool,
        dev_principal: str | None,
        max_message_bytes: int,
    ) -> None:
        if (tls is None) == (not insecure):
            raise ValueError("give either tls=ClientTLS(...) or insecure=True (development only)")
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(
                target, tls.credentials(), options=[*options, *tls.channel_options()]
            )
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            () if dev_principal is None else ((DEV_PRINCIPAL_HEADER, dev_principal),)
        )
        self.target = target

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class NumberEventType(enum.StrEnum):
    """What happened to a carrier's number."""

    CANCELLED = "cancelled"
    """The subscriber cancelled it; the quiet period starts."""
    RECYCLED = "recycled"
    """It was given to a new subscriber."""


_NUMBER_EVENT_TYPES = {
    NumberEventType.CANCELLED: gateway_pb2.NUMBER_EVENT_TYPE_CANCELLED,
    NumberEventType.RECYCLED: gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED,
}


@dataclass(frozen=True)
class ReportedEvent:
    """What the gateway answers a carrier's event.

    ``created`` is False when this event id had already been reported (the
    notice recorded then is returned); ``providers`` is how many providers
    the notice goes to.
    """

    notice_id: str
    created: bool
    providers: int


class CarrierGatewayClient(_CertifiedClient):
    """A carrier's client of the gateway: report cancelled and recycled numbers.

    ::

        async with CarrierGatewayClient("gateway.example:443", tls=ClientTLS(
                ca_file="ca.pem", cert_file="me.pem", key_file="me.key.pem")) as gw:
            await gw.report_number_event(event_id="ev-1042", msisdn="+8613800138000",
                                         event_type="recycled", effective_at=handed_over)

    The gateway knows you by your client certificate and accepts only
    numbers in your configured prefixes.

    Args:
        target: ``host:port`` of the gateway.
        tls: the CA to check the gateway and your client certificate.
        insecure: plaintext, for a development gateway only.
        dev_carrier_id: with ``insecure``: the carrier id to claim.
        max_message_bytes: the largest message accepted from the gateway.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTLS | None = None,
        insecure: bool = False,
        dev_carrier_id: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if dev_carrier_id is not None and not insecure:
            raise ValueError("dev_carrier_id is for insecure development gateways only")
        super().__init__(
            target,
            tls=tls,
            insecure=insecure,
            dev_principal=None if dev_carrier_id is None else f"carrier:{dev_carrier_id}",
            max_message_bytes=max_message_bytes,
        )

    async def report_number_event(
        self,
        *,
        event_id: str,
        msisdn: str,
        event_type: NumberEventType | str,
        effective_at: datetime,
        quiet_period_ends_at: datetime | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ReportedEvent:
        """Report that ``msisdn`` was cancelled or recycled at ``effective_at``.

        Idempotent on ``event_id``: report again after a timeout with the
        same id and content.

        Args:
            event_id: your id for the event (1 to 128 characters).
            msisdn: the number (E.164), one you serve.
            event_type: CANCELLED or RECYCLED (or "cancelled", "recycled").
            effective_at: when it took effect (timezone-aware, not in the future).
            quiet_period_ends_at: CANCELLED only: when the number may go to
                someone else (the gateway's default quiet period otherwise).
            timeout: seconds the call may take.

        Raises:
            ValueError: an unknown ``event_type`` or a naive datetime.
            GatewayError: PERMISSION_DENIED (not your number), INVALID_ARGUMENT,
                ALREADY_EXISTS (the same id with other content), UNAUTHENTICATED, ...
        """
        kind = coerce_enum(NumberEventType, event_type, "event_type")
        request = gateway_pb2.ReportNumberEventRequest(
            event_id=event_id, msisdn=msisdn, type=_NUMBER_EVENT_TYPES[kind]
        )
        request.effective_at.CopyFrom(_stamp(effective_at, "effective_at"))
        if quiet_period_ends_at is not None:
            request.quiet_period_ends_at.CopyFrom(
                _stamp(quiet_period_ends_at, "quiet_period_ends_at")
            )
        try:
            response = await self._stub.ReportNumberEvent(
                request, timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError(exc.code(), exc.details() or "") from None
        return ReportedEvent(response.notice_id, response.created, response.providers)


@dataclass(frozen=True)
class ProviderCompliance:
    """One provider's line of the compliance report.

    Every notice counts in exactly one of ``acted_on_time``, ``acted_late``,
    ``never_acted`` (deadline passed, no action confirmed) and
    ``awaiting_action`` (not due yet). ``unbind_median_time`` runs from a
    ticket's creation to the provider's final answer; None without any.
    """

    provider_id: str
    provider_name: str
    notices_delivered: int
    notices_acknowledged: int
    acted_on_time: int
    acted_late: int
    never_acted: int
    awaiting_action: int
    unbinds_done: int
    unbinds_rejected: int
    unbinds_failed: int
    unbind_median_time: timedelta | None

    @property
    def notices(self) -> int:
        """Notices sent to this provider (delivered or not)."""
        return self.acted_on_time + self.acted_late + self.never_acted + self.awaiting_action


@dataclass(frozen=True)
class ComplianceReport:
    """The regulator's report: when the gateway made it, one line per provider."""

    generated_at: datetime | None
    providers: tuple[ProviderCompliance, ...]


class AdminGatewayClient(_CertifiedClient):
    """The regulator's client of the gateway: the compliance report.

    ::

        async with AdminGatewayClient("gateway.example:443", tls=ClientTLS(
                ca_file="ca.pem", cert_file="regulator.pem",
                key_file="regulator.key.pem")) as gw:
            report = await gw.compliance_report()

    The gateway grants the admin role to the client certificate CNs in its
    ``[admin] client_cns``; a development gateway without TLS takes
    ``insecure=True`` (as the dev admin).

    Args:
        target: ``host:port`` of the gateway.
        tls: the CA to check the gateway and your client certificate.
        insecure: plaintext, for a development gateway only.
        max_message_bytes: the largest message accepted from the gateway.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTLS | None = None,
        insecure: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(
            target,
            tls=tls,
            insecure=insecure,
            dev_principal="admin" if insecure else None,
            max_message_bytes=max_message_bytes,
        )

    async def compliance_report(
        self,
        *,
        since: datetime | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ComplianceReport:
        """Per provider: notices acted on in time, late or never; unbind tickets.

        Args:
            since: only notices and tickets created at or after this
                (timezone-aware); everything when None.
            timeout: seconds the call may take.

        Raises:
            GatewayError: PERMISSION_DENIED (not an admin), UNAUTHENTICATED, ...
        """
        request = gateway_pb2.GetComplianceReportRequest()
        if since is not None:
            request.since.CopyFrom(_stamp(since, "since"))
        try:
            response = await self._stub.GetComplianceReport(
                request, timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError(exc.code(), exc.details() or "") from None
        return ComplianceReport(
            generated_at=_time(response, "generated_at"),
            providers=tuple(
                ProviderCompliance(
                    provider_id=p.provider_id,
                    provider_name=p.provider_name or p.provider_id,
                    notices_delivered=p.notices_delivered,
                    notices_acknowledged=p.notices_acknowledged,
                    acted_on_time=p.acted_on_time,
                    acted_late=p.acted_late,
                    never_acted=p.never_acted,
                    awaiting_action=p.awaiting_action,
                    unbinds_done=p.unbinds_done,
                    unbinds_rejected=p.unbinds_rejected,
                    unbinds_failed=p.unbinds_failed,
                    unbind_median_time=(
                        _delta(p.unbind_median_time) if p.HasField("unbind_median_time") else None
                    ),
                )
                for p in response.providers
            ),
        )
