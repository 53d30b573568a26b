"""The portal's client: a citizen's lookup, unbind and receipt."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc

from onecert.sdk._convert import (
    BINDING_KINDS,
    CATEGORIES,
    TENURE_STATES,
    UNBIND_OUTCOMES,
    UNBIND_REASONS,
)
from onecert.sdk._types import (
    BindingKind,
    ProviderCategory,
    TenureState,
    UnbindOutcome,
    UnbindReason,
)
from onecert.sdk.client._base import (
    ClientBase,
    GatewayError,
    delta,
    enum_from_pb,
    time_of,
)
from onecert.v1 import gateway_pb2


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


def _outcome(value: gateway_pb2.CallOutcome.ValueType) -> CallOutcome:
    found = enum_from_pb(CallOutcome, gateway_pb2.CallOutcome, value, "CALL_OUTCOME_")
    return found if found is not None else CallOutcome.UNKNOWN


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


@dataclass(frozen=True)
class RoutedOut:
    """Providers not asked about one number: their routing filter says they do not hold it.

    One update per number, in place of one SKIPPED :class:`Result` per
    provider; they count as ``skipped`` (and ``asked``) in the summary's
    coverage, as those results would. ``provider_ids`` lists them when there
    are at most 1,000; past that it is empty and ``count`` alone says how many.
    """

    query_id: str
    msisdn: str
    count: int
    provider_ids: tuple[str, ...]
    detail: str
    elapsed: timedelta


LookupUpdate = Started | Result | RoutedOut | Summary


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
    found = enum_from_pb(TicketState, gateway_pb2.TicketState, value, "TICKET_STATE_")
    return found if found is not None else TicketState.UNKNOWN


def _receipt(pb: gateway_pb2.UnbindTicket) -> Receipt:
    return Receipt(
        ticket_id=pb.ticket_id,
        provider_id=pb.provider_id,
        provider_name=pb.provider_name,
        reason=UNBIND_REASONS.from_pb_or_none(pb.reason),
        state=_ticket_state(pb.state),
        attempts=pb.attempts,
        created_at=time_of(pb, "created_at"),
        provider_outcome=UNBIND_OUTCOMES.from_pb_or_none(pb.provider_outcome),
        provider_reason=pb.provider_reason,
        answered_at=time_of(pb, "answered_at"),
        last_error=pb.last_error,
        next_attempt_at=time_of(pb, "next_attempt_at"),
        expires_at=time_of(pb, "expires_at"),
    )


def _coverage(pb: gateway_pb2.Coverage) -> Coverage:
    return Coverage(pb.asked, pb.answered, pb.timed_out, pb.failed, pb.skipped)


def _carrier_list(items: object) -> tuple[CarrierStatus, ...]:
    return tuple(
        CarrierStatus(c.carrier_id, _outcome(c.outcome), c.detail)
        for c in items  # type: ignore[attr-defined]  # a repeated CarrierOutcome field
    )


def _account(pb: gateway_pb2.ShownBinding) -> Account:
    attribution = enum_from_pb(
        Attribution,
        gateway_pb2.Attribution,
        pb.attribution,
        "ATTRIBUTION_",
        Attribution.PREVIOUS_HOLDER,
    )
    assert attribution is not None
    return Account(
        attribution=attribution,
        display_name_masked=pb.display_name_masked,
        kind=BINDING_KINDS.from_pb_or_none(pb.kind),
        bound_at=time_of(pb, "bound_at"),
        last_used_at=time_of(pb, "last_used_at"),
        unbindable=pb.unbindable,
        handle=pb.handle,
        dangerous=pb.dangerous,
    )


def _result(query_id: str, r: gateway_pb2.ProviderResult) -> Result:
    return Result(
        query_id=query_id,
        provider_id=r.provider_id,
        provider_name=r.provider_name,
        category=CATEGORIES.from_pb_or_none(r.category),
        msisdn=r.msisdn,
        outcome=_outcome(r.outcome),
        detail=r.detail,
        accounts=tuple(_account(b) for b in r.bindings),
        previous_holder_count=r.previous_holder_count,
        release_handles=tuple(r.release_handles),
        elapsed=delta(r.elapsed),
    )


def _updates(pb: gateway_pb2.LookupResponse) -> Iterator[LookupUpdate]:
    """The updates one message carries: several for a ``ProviderResults``, else one
    (none for a kind this client does not know)."""
    if pb.WhichOneof("update") == "results":
        for r in pb.results.results:
            yield _result(pb.query_id, r)
        return
    update = _update(pb)
    if update is not None:
        yield update


def _update(pb: gateway_pb2.LookupResponse) -> LookupUpdate | None:
    kind = pb.WhichOneof("update")
    if kind == "started":
        s = pb.started
        numbers = tuple(
            NumberStatus(
                msisdn=n.msisdn,
                carrier_id=n.carrier_id,
                held_from=time_of(n, "held_from"),
                held_until=time_of(n, "held_until"),
                state=TENURE_STATES.from_pb_or_none(n.state),
                current=n.current,
            )
            for n in s.numbers
        )
        return Started(pb.query_id, numbers, _carrier_list(s.carriers), s.provider_calls)
    if kind == "result":
        return _result(pb.query_id, pb.result)
    if kind == "routed_out":
        o = pb.routed_out
        return RoutedOut(
            query_id=pb.query_id,
            msisdn=o.msisdn,
            count=o.count,
            provider_ids=tuple(o.provider_ids),
            detail=o.detail,
            elapsed=delta(o.elapsed),
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
            elapsed=delta(m.elapsed),
        )
    # An update kind this client does not know (a newer gateway): skip it.
    return None


def _bearer(assertion: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {assertion.strip()}"),)


class GatewayClient(ClientBase):
    """An async client of the gateway for the portal.

    Args:
        target: ``host:port`` of the gateway.
        tls: the CA to check the gateway and the portal's client certificate
            (mutual TLS, required by a production gateway).
        insecure: plaintext, for a development gateway only. Exactly one of
            ``tls`` and ``insecure`` must be given.
        max_message_bytes: the largest message accepted from the gateway.
    """

    async def lookup(
        self,
        assertion: str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline, enforced by the gateway too
        client_request_id: str = "",
        group_routed_out: bool = True,
    ) -> AsyncIterator[LookupUpdate]:
        """Look up the numbers and accounts of the citizen the assertion names.

        Yields a :class:`Started`, then one :class:`RoutedOut` per number for
        the providers routing ruled out, then one :class:`Result` per provider
        and number as each arrives, then a :class:`Summary`. Stopping the
        iteration early cancels the lookup at the gateway. The client asks
        the gateway to send the results that are ready together in one
        message (``LookupRequest.batch_results``) and yields them one by one,
        in the order they came; a gateway that predates batching sends one
        message each, and the updates are the same.

        Args:
            assertion: the citizen's identity assertion (a JWT, used once).
            timeout: seconds the whole lookup may take.
            client_request_id: an id of yours to find in the gateway's logs
                (at most 64 characters).
            group_routed_out: False to receive one SKIPPED :class:`Result` per
                routed-out provider instead of :class:`RoutedOut` (what a
                gateway without routing groups sends anyway).

        Raises:
            GatewayError: the gateway refused or failed the lookup.
        """
        call = self._stub.Lookup(
            gateway_pb2.LookupRequest(
                client_request_id=client_request_id,
                group_routed_out=group_routed_out,
                batch_results=True,
            ),
            timeout=timeout,
            metadata=_bearer(assertion),
        )
        try:
            async for response in call:
                for update in _updates(response):
                    yield update
        except grpc.aio.AioRpcError as exc:
            raise GatewayError.of(exc) from None
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
        response = await self._unary(
            self._stub.Unbind,
            gateway_pb2.GatewayUnbindRequest(handle=handle.strip()),
            timeout=timeout,
            metadata=_bearer(assertion),
        )
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
        response = await self._unary(
            self._stub.GetUnbind,
            gateway_pb2.GetUnbindRequest(ticket_id=ticket_id.strip()),
            timeout=timeout,
            metadata=_bearer(assertion),
        )
        return _receipt(response.ticket)
