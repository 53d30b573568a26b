"""Fan-out: ask every carrier, then every provider for every number, in parallel.

Every call is supervised: it has its own deadline, takes a slot from its
upstream's concurrency cap, passes its circuit breaker, carries a fresh
warrant, and retries only UNAVAILABLE within the upstream's retry budget.
Whatever happens (an error status, a timeout, a bug), a call ends as one
:class:`UpstreamOutcome`; only cancellation propagates, and cancelling the
lookup cancels every call still in flight.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, NamedTuple, Protocol, TypeVar, cast

import grpc
import structlog

from onecert.gateway._attribution import TenureView
from onecert.gateway._breaker import CircuitBreaker, RetryBudget, backoff
from onecert.gateway._channels import ChannelPool
from onecert.gateway._config import CarrierConfig, FanoutConfig, ProviderConfig
from onecert.gateway._observers import (
    NO_OBSERVER,
    Observer,
    ProviderAnswer,
    ProviderCall,
    UpstreamOutcome,
)
from onecert.sdk._msisdn import is_e164, mask_msisdn, mask_numbers_in_text
from onecert.sdk._warrant import WarrantIssuer
from onecert.v1 import (
    common_pb2,
    provider_pb2,
    provider_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

__all__ = [
    "MAX_BINDINGS_PER_ANSWER",
    "ROUTED_OUT_DETAIL",
    "AllProviders",
    "CarrierAnswer",
    "FanOut",
    "Plan",
    "ProviderAnswer",
    "ProviderAnswers",
    "ProviderCall",
    "RoutedOutSet",
    "Router",
    "RoutingTable",
    "UpstreamOutcome",
]

_log = structlog.get_logger("onecert.gateway.fanout")

T = TypeVar("T")
S = TypeVar("S")

# Statuses that say the upstream is unwell; they count towards its breaker.
# Any other status is an answer (the upstream is alive, if unhappy).
_UNHEALTHY = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.CANCELLED,
    }
)
_MAX_DETAIL = 160
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 1.0
# A retry is pointless with less time than this left after its backoff.
_MIN_ATTEMPT_TIME = 0.05
# A number is bound to a handful of accounts at one provider. Past this many
# an answer is cut short, and says so: attributing and sealing tens of
# thousands of bindings would stall every other call of the gateway, and the
# result would outgrow the largest message the gateway may send.
MAX_BINDINGS_PER_ANSWER = 1000
ROUTED_OUT_DETAIL = "routing: its filter says it does not hold this number"
NOT_ACTIVE_DETAIL = "no longer active in the registry"


@dataclass(frozen=True)
class CarrierAnswer:
    """How one carrier call ended, with the tenures it reported.

    ``ignored`` counts tenures dropped as invalid (another carrier's id, a
    number that is not E.164, an impossible interval, a state that
    contradicts the interval).
    """

    carrier: CarrierConfig
    outcome: UpstreamOutcome
    detail: str
    tenures: tuple[TenureView, ...]
    ignored: int = 0


@dataclass(frozen=True)
class RoutedOutSet:
    """The providers routing rules out of one number, kept as two id sets.

    ``ruled`` holds every configured provider routing has a say on and
    ``kept`` those of them asked anyway, so the count costs nothing and the
    ids are one set difference, taken only when they are sent.
    """

    ruled: frozenset[str]
    kept: frozenset[str]

    @property
    def count(self) -> int:
        """How many providers are routed out."""
        return len(self.ruled) - len(self.kept)

    def ids(self) -> frozenset[str]:
        """Their ids."""
        return self.ruled.difference(self.kept)


@dataclass(frozen=True)
class Plan:
    """A lookup's provider calls: those to make, and per number those routing rules out.

    Attributes:
        calls: the calls to make.
        routed_out: per number, the providers routing rules out (never
            called, reported SKIPPED with :data:`ROUTED_OUT_DETAIL`).
    """

    calls: tuple[ProviderCall, ...]
    routed_out: Mapping[str, RoutedOutSet]

    @property
    def provider_calls(self) -> int:
        """Every provider and number accounted for: calls made and providers routed out."""
        return len(self.calls) + sum(out.count for out in self.routed_out.values())


class Router(Protocol):
    """Chooses which providers to ask about a number.

    The default asks every provider. With thousands of providers a router
    narrows this to those that may hold the number, so a lookup's cost grows
    with the providers that hold it, not with the providers registered.
    Providers left out are neither asked nor reported.
    """

    async def route(
        self, msisdn: str, providers: Sequence[ProviderConfig]
    ) -> Sequence[ProviderConfig]:
        """The providers to ask about ``msisdn``, out of ``providers``."""
        ...


class RoutingTable(Protocol):
    """Which providers' published filters rule a number out (``[routing]``).

    Unlike a :class:`Router`, what it rules out is still reported: each such
    provider ends SKIPPED with a detail that says routing, so coverage
    accounts for every provider.
    """

    def route(self, msisdn: str) -> tuple[frozenset[str], frozenset[str]]:
        """``(asked, known)`` for ``msisdn``: the providers routing has a say on
        (``known``, the same object while they do not change) and those of them
        to ask; a known provider not asked is routed out, one routing does not
        know is asked."""
        ...


class AllProviders:
    """The default :class:`Router`: every provider may hold every number."""

    async def route(
        self, msisdn: str, providers: Sequence[ProviderConfig]
    ) -> Sequence[ProviderConfig]:
        return providers


class _Result(NamedTuple, Generic[T]):
    outcome: UpstreamOutcome
    detail: str
    response: T | None
    attempts: int


class _Slots:
    """An upstream's cap on calls in flight.

    A free slot is taken at once, without awaiting (:meth:`take`); when none
    is free a caller queues (:meth:`wait`) and :meth:`release` hands the
    slot to the first in the queue.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        """Slots free now."""
        return self._free

    def take(self) -> bool:
        """Take a free slot if there is one.

        Nobody queues while one is free: :meth:`release` hands a slot to a
        queued caller before it frees one.
        """
        if self._free:
            self._free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Queue until a slot is handed over; cancelled, the caller holds none."""
        if self.take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled():
                # Handed over just as the caller was cancelled: pass it on.
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the first caller queued, else to the free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class _Upstream:
    """What the gateway keeps per carrier or provider across lookups."""

    def __init__(
        self,
        *,
        target_id: str,
        address: str,
        plaintext: bool,
        deadline: float,
        max_concurrency: int,
        fanout: FanoutConfig,
        server_name: str | None = None,
    ) -> None:
        self.id = target_id
        self.address = address
        self.plaintext = plaintext
        self.server_name = server_name
        self.deadline = deadline
        self.max_concurrency = max_concurrency
        self.slots = _Slots(max_concurrency)
        self.breaker = CircuitBreaker(
            failure_threshold=fanout.breaker_failure_threshold, cooldown=fanout.breaker_cooldown_s
        )
        self.budget = RetryBudget(
            ratio=fanout.retry_budget_ratio,
            min_retries=fanout.retry_budget_min_retries,
            window=fanout.retry_budget_window_s,
        )
        self.max_attempts = fanout.retry_max_attempts
        self._stub: object = None
        self._stub_channel: grpc.aio.Channel | None = None

    def channel(self, pool: ChannelPool) -> grpc.aio.Channel:
        """The pooled channel to this target."""
        return pool.get(self.address, plaintext=self.plaintext, server_name=self.server_name)

    def stub(self, pool: ChannelPool, make: Callable[[grpc.aio.Channel], S]) -> S:
        """A stub on the pooled channel, made once per channel (a stub builds a
        callable per method, which costs more than the call's own Python part)."""
        channel = self.channel(pool)
        if channel is not self._stub_channel:
            self._stub, self._stub_channel = make(channel), channel
        return cast("S", self._stub)

    def same_as(self, other: _Upstream) -> bool:
        """Whether ``other`` dials the same target with the same limits."""
        mine = (self.address, self.plaintext, self.server_name, self.deadline, self.max_concurrency)
        return mine == (
            other.address,
            other.plaintext,
            other.server_name,
            other.deadline,
            other.max_concurrency,
        )


def _sanitise(text: str) -> str:
    # Upstream error details reach the citizen: first line only, no digit
    # runs that could be a phone number, bounded length.
    line = text.strip().splitlines()[0] if text.strip() else ""
    if line.startswith("failed to connect to all addresses"):
        # gRPC's connect failure names internal addresses; say what happened.
        refused = "connection refused" in line.lower()
        return "cannot connect (connection refused)" if refused else "cannot connect"
    line = mask_numbers_in_text(line)
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 3] + "..."


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class FanOut:
    """Calls carriers and providers for lookups; shared by every lookup of a gateway.

    Args:
        carriers: the carriers to ask, in order.
        providers: the providers that may be asked.
        fanout: deadlines, caps, breaker and retry settings.
        channels: where channels to the upstreams come from.
        warrants: signs the warrant of every call.
        router: chooses providers per number; all of them by default.
        routing: rules providers out per number by their filters (reported
            SKIPPED); None: no routing. May be set after construction.
        observer: told how every call ended (metrics, tracing); nothing by default.
    """

    def __init__(
        self,
        *,
        carriers: Sequence[CarrierConfig],
        providers: Sequence[ProviderConfig],
        fanout: FanoutConfig,
        channels: ChannelPool,
        warrants: WarrantIssuer,
        router: Router | None = None,
        routing: RoutingTable | None = None,
        max_bindings: int = MAX_BINDINGS_PER_ANSWER,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._fanout = fanout
        self._observer = observer
        self._max_bindings = max_bindings
        # Providers not to ask, with the reason reported instead (see quarantine).
        self._quarantined: dict[str, str] = {}
        self._channels = channels
        self._warrants = warrants
        self._router: Router = router or AllProviders()
        self.routing = routing
        self.carriers = tuple(carriers)
        self._carrier_upstreams = {
            c.id: _Upstream(
                target_id=c.id,
                address=c.address,
                plaintext=c.plaintext,
                deadline=c.deadline_s or fanout.carrier_deadline_s,
                max_concurrency=c.max_concurrency or fanout.max_concurrency_per_provider,
                fanout=fanout,
            )
            for c in self.carriers
        }
        self.providers: tuple[ProviderConfig, ...] = ()
        self._provider_upstreams: dict[str, _Upstream] = {}
        # Routing's view of self.providers, rebuilt when apply_providers replaces it.
        self._indexed: (
            tuple[
                tuple[ProviderConfig, ...],
                frozenset[str],
                dict[str, ProviderConfig],
                dict[str, int],
                frozenset[str],
                tuple[str, ...],
            ]
            | None
        ) = None
        self.apply_providers(providers)

    def apply_providers(self, providers: Sequence[ProviderConfig]) -> None:
        """Ask ``providers`` from now on (the live registry calls this on every change).

        Providers without an address (poll-only) are never asked. A new
        provider gets its own upstream (slots, breaker, retry budget); one
        whose address or limits changed gets a fresh one; one no longer
        listed is never asked again, while calls already in flight keep
        their upstream and end as they would have.
        """
        upstreams: dict[str, _Upstream] = {}
        dialable: list[ProviderConfig] = []
        for provider in providers:
            if provider.address is None:
                continue
            fresh = _Upstream(
                target_id=provider.id,
                address=provider.address,
                plaintext=provider.plaintext,
                server_name=provider.server_name,
                deadline=provider.deadline_s or self._fanout.provider_deadline_s,
                max_concurrency=provider.max_concurrency
                or self._fanout.max_concurrency_per_provider,
                fanout=self._fanout,
            )
            old = self._provider_upstreams.get(provider.id)
            upstreams[provider.id] = old if old is not None and old.same_as(fresh) else fresh
            dialable.append(provider)
        self._provider_upstreams = upstreams
        self.providers = tuple(dialable)
        for provider_id in set(self._quarantined) - set(upstreams):
            del self._quarantined[provider_id]

    def quarantine(self, provider_id: str, reason: str) -> None:
        """Stop asking a provider: its calls end SKIPPED with ``reason`` (no personal data).

        For a provider found misconfigured (its Describe names another
        provider); lifted by a restart once the configuration is fixed, or
        when the provider leaves the registry.
        """
        if provider_id not in self._provider_upstreams:
            raise KeyError(provider_id)
        self._quarantined[provider_id] = reason

    def breaker(self, provider_id: str) -> CircuitBreaker:
        """The circuit breaker of a provider (for health reports and tests)."""
        return self._provider_upstreams[provider_id].breaker

    def breakers(self) -> list[tuple[str, CircuitBreaker]]:
        """Each provider asked now with its breaker (safe from another thread: the
        upstreams are replaced whole, never changed in place)."""
        return [(provider_id, u.breaker) for provider_id, u in self._provider_upstreams.items()]

    # ------------------------------------------------------------ carriers

    async def list_numbers(
        self, idn: str, *, query_id: str, deadline: float
    ) -> tuple[CarrierAnswer, ...]:
        """Ask every carrier, in parallel, for the tenures of ``idn``.

        Args:
            idn: the citizen's keyed document hash (the warrants' target).
            query_id: the lookup's id, carried in every warrant.
            deadline: ``loop.time()`` by which every carrier call must end.

        Returns:
            One answer per carrier, in configuration order.
        """
        # Every carrier's deadline counts from now, not from when its task runs.
        anchor = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    self._ask_carrier(c, idn, query_id=query_id, deadline=deadline, anchor=anchor)
                )
                for c in self.carriers
            ]
        return tuple(t.result() for t in tasks)

    async def _ask_carrier(
        self, carrier: CarrierConfig, idn: str, *, query_id: str, deadline: float, anchor: float
    ) -> CarrierAnswer:
        upstream = self._carrier_upstreams[carrier.id]
        stub = upstream.stub(self._channels, registry_pb2_grpc.NumberRegistryStub)
        request = registry_pb2.ListNumbersRequest(idn=idn)

        def warrant() -> str:
            return self._warrants.issue(
                audience=carrier.id, target=idn, purpose="lookup", query_id=query_id
            )

        started = time.monotonic()
        result = await _supervise(
            upstream, stub.ListNumbers, request, warrant, deadline=deadline, anchor=anchor
        )
        self._observer.carrier_answered(
            carrier.id, result.outcome, result.attempts, time.monotonic() - started
        )
        if result.response is None:
            _log.info(
                "carrier.unanswered",
                carrier=carrier.id,
                outcome=result.outcome.name,
                detail=result.detail,
            )
            return CarrierAnswer(carrier, result.outcome, result.detail, ())
        tenures, ignored = _valid_tenures(carrier.id, result.response.tenures)
        if ignored:
            _log.warning("carrier.tenures_ignored", carrier=carrier.id, ignored=ignored)
        return CarrierAnswer(carrier, UpstreamOutcome.ANSWERED, "", tenures, ignored)

    # ----------------------------------------------------------- providers

    async def plan(self, msisdns: Sequence[str]) -> Plan:
        """The provider calls for ``msisdns``, as the router chooses them.

        With :attr:`routing`, the providers it rules out are not called: the
        plan lists them per number (:attr:`Plan.routed_out`), to be reported
        SKIPPED. Their cost must stay far below a call's: no object and no
        pass over the providers per routed-out provider, only over those asked.
        """
        calls: list[ProviderCall] = []
        routed_out: dict[str, RoutedOutSet] = {}
        routing = self.routing
        for msisdn in msisdns:
            routed = await self._router.route(msisdn, self.providers)
            if routing is None:
                calls.extend(ProviderCall(p, msisdn) for p in routed)
                continue
            asked, known = routing.route(msisdn)
            if routed is self.providers:
                by_id, order, ruled, unruled = self._indexed_for(known)
                kept = sorted([*(i for i in asked if i in by_id), *unruled], key=order.__getitem__)
                calls.extend(ProviderCall(by_id[i], msisdn) for i in kept)
                out = RoutedOutSet(ruled, frozenset(kept).intersection(ruled))
            else:
                ask = [p for p in routed if p.id in asked or p.id not in known]
                calls.extend(ProviderCall(p, msisdn) for p in ask)
                out = RoutedOutSet(
                    frozenset(p.id for p in routed if p.id in known),
                    frozenset(p.id for p in ask if p.id in known),
                )
            if out.count:
                routed_out[msisdn] = out
        return Plan(tuple(calls), routed_out)

    def _indexed_for(
        self, known: frozenset[str]
    ) -> tuple[dict[str, ProviderConfig], dict[str, int], frozenset[str], tuple[str, ...]]:
        """By id, configuration order, the ids routing rules on and those it does not.

        Built once per provider set and routing's set of providers.
        """
        providers = self.providers
        cached = self._indexed
        if cached is None or cached[0] is not providers or cached[1] is not known:
            by_id = {p.id: p for p in providers}
            order = {p.id: i for i, p in enumerate(providers)}
            ruled = known.intersection(by_id)
            unruled = tuple(p.id for p in providers if p.id not in ruled)
            cached = (providers, known, by_id, order, ruled, unruled)
            self._indexed = cached
        return cached[2], cached[3], cached[4], cached[5]

    def ask_providers(
        self, calls: Sequence[ProviderCall], *, query_id: str, deadline: float
    ) -> ProviderAnswers:
        """Start ``calls`` in parallel now; their answers come from the result.

        The calls start before the caller sends anything else, so the
        fan-out's start is not held back by the lookup's own messages.
        Exactly one answer per call comes out. Closing the result early (or
        cancelling its reader) cancels every call in flight: use it inside
        ``contextlib.aclosing``.

        Every call's own deadline counts from this method's call (not from
        when its task first runs), so the last call ends within the longest
        provider deadline of the fan-out's start however many calls there are.

        Args:
            calls: :attr:`Plan.calls`.
            query_id: the lookup's id, carried in every warrant.
            deadline: ``loop.time()`` by which every call must end.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        expiry = _Expiry(loop)
        # One request per number, shared by every call about it.
        requests = {
            msisdn: provider_pb2.ListBindingsRequest(msisdn=msisdn)
            for msisdn in {call.msisdn for call in calls}
        }
        tasks = [
            asyncio.create_task(
                self._ask_provider(
                    call,
                    requests[call.msisdn],
                    query_id=query_id,
                    deadline=deadline,
                    anchor=started,
                    expiry=expiry,
                ),
                name=f"lookup {query_id} {call.provider.id}",
            )
            for call in calls
        ]
        return ProviderAnswers(tasks, expiry, started, self._observer)

    async def _ask_provider(
        self,
        call: ProviderCall,
        request: provider_pb2.ListBindingsRequest,
        *,
        query_id: str,
        deadline: float,
        anchor: float,
        expiry: _Expiry,
    ) -> ProviderAnswer:
        provider = call.provider
        quarantined = self._quarantined.get(provider.id)
        if quarantined is not None:
            now = asyncio.get_running_loop().time()
            return ProviderAnswer(call, UpstreamOutcome.SKIPPED, quarantined, (), 0, now)
        upstream = self._provider_upstreams.get(provider.id)
        if upstream is None:
            # Suspended or removed since the lookup planned its calls.
            now = asyncio.get_running_loop().time()
            return ProviderAnswer(call, UpstreamOutcome.SKIPPED, NOT_ACTIVE_DETAIL, (), 0, now)
        stub = upstream.stub(self._channels, provider_pb2_grpc.BindingProviderStub)

        def warrant() -> str:
            return self._warrants.issue(
                audience=provider.id, target=call.msisdn, purpose="lookup", query_id=query_id
            )

        result = await _supervise(
            upstream,
            stub.ListBindings,
            request,
            warrant,
            deadline=deadline,
            anchor=anchor,
            expiry=expiry,
        )
        loop = asyncio.get_running_loop()
        bindings: tuple[provider_pb2.Binding, ...] = ()
        detail = result.detail
        if result.response is not None:
            bindings, detail = _tidy(result.response.bindings, self._max_bindings)
            if detail:
                _log.warning(
                    "provider.answer_tidied",
                    provider=provider.id,
                    msisdn=mask_msisdn(call.msisdn),
                    detail=detail,
                )
        if result.outcome is not UpstreamOutcome.ANSWERED:
            _log.info(
                "provider.unanswered",
                provider=provider.id,
                msisdn=mask_msisdn(call.msisdn),
                outcome=result.outcome.name,
                detail=result.detail,
                attempts=result.attempts,
            )
        return ProviderAnswer(call, result.outcome, detail, bindings, result.attempts, loop.time())


# -------------------------------------------------------------- supervision


class ProviderAnswers:
    """The answers of one fan-out's calls as they end (:meth:`FanOut.ask_providers`).

    :meth:`ready` hands out every answer that has ended, waiting only when
    none has; :attr:`remaining` says how many are still to come, so a
    caller knows its totals are final while it still holds the last batch.
    """

    def __init__(
        self,
        tasks: Sequence[asyncio.Task[ProviderAnswer]],
        expiry: _Expiry,
        started: float,
        observer: Observer,
    ) -> None:
        self._tasks = tasks
        self._expiry = expiry
        self._started = started
        self._observer = observer
        self._ended: list[asyncio.Task[ProviderAnswer]] = []
        # When the first of self._ended ended (loop.time()).
        self._first_ended = 0.0
        self._wakeup: asyncio.Future[None] | None = None
        self.remaining = len(tasks)
        for task in tasks:
            task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[ProviderAnswer]) -> None:
        if not self._ended:
            self._first_ended = task.get_loop().time()
        self._ended.append(task)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _next_end(self) -> None:
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await self._wakeup
        finally:
            self._wakeup = None

    async def ready(self, *, gather: float = 0.0, most: int = 0) -> list[ProviderAnswer]:
        """The answers ended since the last call (at least one; none once all are out).

        With ``gather`` (seconds), the answers that end within that long of
        the first of them join it, up to ``most`` in all (0: no limit); the
        batch goes at once when every call has ended. Fewer, fuller batches
        for a caller that sends each batch as one message: the lookup's end
        is never delayed, only results before it, by at most ``gather``.
        """
        if not self.remaining:
            return []
        while not self._ended:
            await self._next_end()
        until = self._first_ended + gather
        if gather > 0 and self._gathering(most) and asyncio.get_running_loop().time() < until:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(until):
                    while self._gathering(most):
                        await self._next_end()
        ended, self._ended = self._ended, []
        self.remaining -= len(ended)
        answers = []
        for task in ended:
            # A call never raises but CancelledError, which only closing sends.
            answer = task.result()
            self._observer.provider_answered(answer, answer.finished_at - self._started)
            answers.append(answer)
        return answers

    def _gathering(self, most: int) -> bool:
        # Calls are still out, and the batch has room for more of them.
        ended = len(self._ended)
        return ended < self.remaining and (not most or ended < most)

    async def aclose(self) -> None:
        """Cancel every call still in flight and wait until each has ended."""
        self._expiry.close()
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            # Wait for the cancellations so no call outlives the lookup.
            await asyncio.gather(*pending, return_exceptions=True)


class _Expiry:
    """One timer per deadline of a fan-out, not one per call.

    Each call's own gRPC deadline surfaces on the loop about 3 ms after it
    passes (the timeout is seen by gRPC's core, then handed to the loop
    through its poller), while a loop timer is late by well under a
    millisecond. So the calls still in flight when their deadline comes are
    cancelled by this timer, all at once, and end exactly as their gRPC
    deadline would have ended them; that deadline stays set as a backstop.
    Calls register only while supervised, so a call is never cut short:
    the timer fires at the deadline, not before.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Deadline (loop.time()) -> the calls in flight until it, and its timer.
        self._watched: dict[float, set[asyncio.Task[object]]] = {}
        self._timers: dict[float, asyncio.TimerHandle] = {}
        self._fired: set[asyncio.Task[object]] = set()

    def watch(self, end: float, task: asyncio.Task[object]) -> None:
        """Cancel ``task`` at ``end`` unless :meth:`forget` comes first."""
        watched = self._watched.get(end)
        if watched is None:
            watched = self._watched[end] = set()
            self._timers[end] = self._loop.call_at(end, self._fire, end)
        watched.add(task)

    def forget(self, end: float, task: asyncio.Task[object]) -> None:
        """``task`` no longer needs cancelling at ``end``."""
        watched = self._watched.get(end)
        if watched is not None:
            watched.discard(task)

    def claim(self, task: asyncio.Task[object]) -> bool:
        """Whether ``task``'s cancellation was this timer's alone (then it is undone)."""
        if task not in self._fired:
            return False
        self._fired.discard(task)
        # Another cancellation (the lookup's) still pending wins.
        return task.uncancel() == 0

    def close(self) -> None:
        """Disarm every timer (the fan-out has ended)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._watched.clear()

    def _fire(self, end: float) -> None:
        self._timers.pop(end, None)
        for task in self._watched.pop(end, ()):
            if not task.done():
                self._fired.add(task)
                task.cancel()


class _Call:
    """Where one supervised call is, and the breaker's verdict on it.

    The fan-out's expiry may cancel a call anywhere; what the call then
    reports depends on where it was: waiting for a slot, in an attempt, or
    between attempts.
    """

    __slots__ = ("attempts", "breaker", "judged", "timeout", "waiting_for_slot")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.attempts = 0
        # The running attempt's timeout; None between attempts.
        self.timeout: float | None = None
        self.waiting_for_slot = False
        self.judged = False

    def judge(self, healthy: bool | None) -> None:
        """Tell the breaker how the call went: healthy, unhealthy, or no verdict (None)."""
        self.judged = True
        if healthy is None:
            self.breaker.record_abandoned()
        elif healthy:
            self.breaker.record_success()
        else:
            self.breaker.record_failure()

    def abandon(self) -> None:
        """No verdict, unless the call was judged already."""
        if not self.judged:
            self.judge(None)


async def _supervise(
    upstream: _Upstream,
    method: Callable[..., Awaitable[T]],
    request: object,
    warrant: Callable[[], str],
    *,
    deadline: float,
    anchor: float,
    expiry: _Expiry | None = None,
) -> _Result[T]:
    """One logical call of ``method(request)``: breaker, slot, attempts with
    retries; never raises anything but CancelledError.

    ``anchor`` is when the fan-out began (``loop.time()``): the upstream's
    deadline counts from it, cut short by the lookup's ``deadline``. With
    ``expiry``, the call is cancelled at that end by the fan-out's shared
    timer, and ends as its gRPC deadline would have ended it. The usual call
    (a free slot, one attempt) runs in this one coroutine: a lookup makes one
    per provider, and every layer of coroutines costs each of them.
    """
    loop = asyncio.get_running_loop()
    end = min(deadline, anchor + upstream.deadline)
    if end - loop.time() <= 0:
        return _Result(UpstreamOutcome.TIMED_OUT, "no time left in the lookup's deadline", None, 0)
    if not upstream.breaker.allow():
        return _Result(UpstreamOutcome.SKIPPED, "breaker open", None, 0)
    call = _Call(upstream.breaker)
    task = cast("asyncio.Task[object]", asyncio.current_task()) if expiry is not None else None
    if expiry is not None and task is not None:
        expiry.watch(end, task)
    try:
        if not upstream.slots.take() and not await _wait_slot(upstream, end, call):
            call.judge(None)
            return _no_slot(upstream)
        try:
            upstream.budget.record_call()
            while True:
                timeout = end - loop.time()
                if timeout <= 0:
                    call.judge(None)
                    return _Result(
                        UpstreamOutcome.TIMED_OUT, "deadline exceeded", None, call.attempts
                    )
                call.attempts += 1
                call.timeout = timeout
                try:
                    response = await method(request, timeout=timeout, metadata=_bearer(warrant()))
                except grpc.aio.AioRpcError as exc:
                    call.timeout = None
                    wait = _retry_wait(upstream, exc.code(), call.attempts, end - loop.time())
                    if wait is None:
                        details = exc.details() or ""
                        return _failed(upstream, exc.code(), details, timeout=timeout, call=call)
                    await asyncio.sleep(wait)
                    continue
                call.judge(True)
                return _Result(UpstreamOutcome.ANSWERED, "", response, call.attempts)
        finally:
            upstream.slots.release()
    except asyncio.CancelledError:
        if expiry is None or task is None or not expiry.claim(task):
            call.abandon()
            raise
        return _expired(upstream, call)
    except Exception as exc:  # noqa: BLE001 - any bug must end as this call's outcome, not the lookup's
        call.abandon()
        _log.exception("upstream.call_error", upstream=upstream.id)
        return _Result(UpstreamOutcome.FAILED, f"gateway error ({type(exc).__name__})", None, 0)
    finally:
        if expiry is not None and task is not None:
            expiry.forget(end, task)


def _no_slot(upstream: _Upstream) -> _Result[T]:
    return _Result(
        UpstreamOutcome.TIMED_OUT,
        f"no free slot before the deadline ({upstream.max_concurrency} calls already in flight)",
        None,
        0,
    )


def _expired(upstream: _Upstream, call: _Call) -> _Result[T]:
    """The outcome of a call the fan-out's deadline timer cancelled."""
    if call.timeout is not None:
        # Mid-attempt: what the attempt's own gRPC deadline would have said.
        return _failed(
            upstream, grpc.StatusCode.DEADLINE_EXCEEDED, "", timeout=call.timeout, call=call
        )
    call.judge(None)
    if call.waiting_for_slot:
        return _no_slot(upstream)
    return _Result(UpstreamOutcome.TIMED_OUT, "deadline exceeded", None, call.attempts)


async def _wait_slot(upstream: _Upstream, end: float, call: _Call) -> bool:
    """Whether a slot of ``upstream`` came free before ``end`` (``loop.time()``)."""
    call.waiting_for_slot = True
    try:
        async with asyncio.timeout_at(end):
            await upstream.slots.wait()
    except TimeoutError:
        return False
    call.waiting_for_slot = False
    return True


def _retry_wait(
    upstream: _Upstream, code: grpc.StatusCode, attempts: int, left: float
) -> float | None:
    """Seconds to wait before the next attempt after ``code``; None: no retry.

    Only UNAVAILABLE is retried, within the upstream's attempts and retry
    budget, and only with time left for an attempt after the wait.
    """
    if code is not grpc.StatusCode.UNAVAILABLE or attempts >= upstream.max_attempts:
        return None
    if left <= _MIN_ATTEMPT_TIME or not upstream.budget.try_spend():
        return None
    # At least half a step: the retries of many lookups hitting the same
    # restart spread out, and none comes at once.
    wait = backoff(attempts, initial=_BACKOFF_BASE, maximum=_BACKOFF_CAP, least=0.5)
    return wait if left > wait + _MIN_ATTEMPT_TIME else None


def _failed(
    upstream: _Upstream,
    code: grpc.StatusCode,
    details: str,
    *,
    timeout: float,
    call: _Call,
) -> _Result[T]:
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        # A timeout counts against the upstream only when it had a fair
        # share of its own deadline: a caller with a tiny deadline must
        # not be able to open every breaker.
        call.judge(False if timeout >= upstream.deadline / 2 else None)
        return _Result(
            UpstreamOutcome.TIMED_OUT, f"deadline {_seconds(timeout)} exceeded", None, call.attempts
        )
    call.judge(code not in _UNHEALTHY)
    text = _sanitise(details)
    detail = f"{code.name}: {text}" if text else code.name
    return _Result(UpstreamOutcome.FAILED, detail, None, call.attempts)


def _tidy(
    bindings: Sequence[provider_pb2.Binding], limit: int
) -> tuple[tuple[provider_pb2.Binding, ...], str]:
    """The bindings one answer may contribute, and what was done to them ("" if nothing).

    An account listed more than once is kept once. Copies that disagree on
    the binding time (``bound_at`` and its bounds) or the name prove nothing
    about whose account it is: it is kept with the binding time cleared, so
    its details are never shown. Past
    ``limit`` accounts, the rest are dropped.
    """
    if len(bindings) == 1 and limit >= 1:
        # The usual answer: nothing to merge, nothing to cut.
        return tuple(bindings), ""
    kept: list[provider_pb2.Binding] = []
    first: dict[str, int] = {}
    duplicates = 0
    for binding in bindings:
        ref = binding.account_ref
        index = first.get(ref) if ref else None
        if index is None:
            if ref:
                first[ref] = len(kept)
            kept.append(binding)
            continue
        duplicates += 1
        earlier = kept[index]
        if _claim(earlier) != _claim(binding) and any(
            earlier.HasField(name) for name in _BINDING_TIME
        ):
            merged = provider_pb2.Binding()
            merged.CopyFrom(earlier)
            for name in _BINDING_TIME:
                merged.ClearField(name)
            kept[index] = merged
    notes = []
    if duplicates:
        notes.append(f"{duplicates} duplicate account entries merged")
    if len(kept) > limit:
        notes.append(f"answer truncated to the first {limit} of {len(kept)} accounts")
        kept = kept[:limit]
    return tuple(kept), "; ".join(notes)


_BINDING_TIME: Final = ("bound_at", "bound_not_before", "bound_not_after")


def _claim(binding: provider_pb2.Binding) -> tuple[object, ...]:
    # What decides whose account a binding is, and what the citizen would see.
    times = tuple(
        (binding.HasField(name), getattr(binding, name).seconds, getattr(binding, name).nanos)
        for name in _BINDING_TIME
    )
    return (*times, binding.display_name)


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"


_HELD_STATES = frozenset({common_pb2.TENURE_STATE_ACTIVE, common_pb2.TENURE_STATE_SUSPENDED})
_FORMER_STATES = frozenset({common_pb2.TENURE_STATE_CANCELLED, common_pb2.TENURE_STATE_RECYCLED})


def _valid_tenures(
    carrier_id: str, tenures: Sequence[registry_pb2.Tenure]
) -> tuple[tuple[TenureView, ...], int]:
    """The tenures a carrier may report, deduplicated, and how many were not."""
    kept: dict[tuple[str, object, object], TenureView] = {}
    ignored = 0
    now = time.time()
    for tenure in tenures:
        # A carrier speaks only for its own numbers.
        if tenure.carrier_id != carrier_id or not is_e164(tenure.msisdn):
            ignored += 1
            continue
        # A former state without an end would make the number look current,
        # and its next holder's accounts look like the citizen's: refuse it.
        if tenure.state in _FORMER_STATES and not tenure.HasField("held_until"):
            ignored += 1
            continue
        if tenure.state not in _HELD_STATES | _FORMER_STATES:
            ignored += 1
            continue
        try:
            view = TenureView.from_proto(tenure)
        except ValueError:
            ignored += 1
            continue
        if view.held_from.timestamp() > now + 300:
            ignored += 1
            continue
        kept.setdefault((view.msisdn, view.held_from, view.held_until), view)
    return tuple(kept.values()), ignored
