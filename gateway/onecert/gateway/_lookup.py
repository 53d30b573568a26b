"""``Gateway.Lookup``: identity first, then carriers, then providers, streamed.

The order of one lookup:

1. take a lookup slot (RESOURCE_EXHAUSTED beyond the cap) and check the
   request, before the assertion is checked so that a refused call does not
   use up its ``jti``;
2. verify the identity assertion; any failure ends the call with its status
   before anything else happens;
3. spend the assertion's ``jti`` in the replay cache while asking every
   carrier for the citizen's tenures; a replay ends the call UNAUTHENTICATED
   before anything is sent or any provider is asked, and no carrier answer
   is used (UNAVAILABLE if no carrier answers);
4. start the provider calls (their deadline counts from here), send
   ``LookupStarted``, then the providers routing rules out (one
   ``RoutedOut`` per number when the caller understands it, else one SKIPPED
   ``ProviderResult`` each), then one ``ProviderResult`` per provider and
   number as each call ends, attributed by tenure (when the caller asks,
   those that end together in one ``ProviderResults`` message), and last a
   ``LookupSummary`` (after the lookup's audit row is committed).

The replay cache's write is durable before anything derived from the
assertion leaves the gateway, so a replay is refused across restarts and
replicas; overlapping it with the carrier call takes the write off the
critical path. A replay this process has seen is refused before any carrier
call; one only another replica (or an earlier run) saw costs at most one
carrier call, whose answer is dropped (docs/architecture.md, "Lookup").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import grpc
import structlog
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from onecert.gateway._attribution import (
    Attribution,
    TenureView,
    classify,
    proto_binding_when,
    proto_bound_at,
)
from onecert.gateway._fanout import (
    ROUTED_OUT_DETAIL,
    CarrierAnswer,
    FanOut,
    Plan,
    ProviderAnswer,
    ProviderCall,
    UpstreamOutcome,
)
from onecert.gateway._handles import HandleClaims, HandleSealer
from onecert.gateway._identity import (
    AssertionVerifier,
    Citizen,
    IdentityError,
    Metadata,
    bearer_token,
)
from onecert.gateway._masking import mask_display_name
from onecert.gateway._observers import NO_OBSERVER, Observer
from onecert.gateway._refusal import Refusal, store_call
from onecert.sdk._msisdn import mask_numbers_in_text
from onecert.v1 import common_pb2, gateway_pb2, provider_pb2

if TYPE_CHECKING:
    from onecert.gateway._audit import Auditor

__all__ = ["QUERY_ID", "LookupService", "ResultMerger", "current_query_id", "new_query_id"]

_log = structlog.get_logger("onecert.gateway.lookup")

# The query id of the call being served; set by the server's interceptor so
# that the servicer, the fan-out and every log line agree on it.
QUERY_ID: ContextVar[str] = ContextVar("onecert_query_id", default="")

MAX_CLIENT_REQUEST_ID = 64
# A RoutedOut lists the routed-out providers' ids only up to this many; past it
# only their count. Ids of up to 64 characters would outgrow the largest
# message (4 MiB) past about 60,000 providers, and a citizen's page shows the
# count anyway: listing 20,000 ids cost more CPU than the rest of the lookup.
MAX_LISTED_ROUTED_OUT = 1000
# A ProviderResults message (LookupRequest.batch_results) holds at most 64
# results: by then the per-message cost it saves (about 0.1 ms of the
# gateway's CPU, each message written and completed through gRPC's poller) is
# spread thin, and 64 results without accounts take 3 to 23 KB. Past its first
# result, it takes at most 1,000 accounts (shown bindings and release handles)
# in all, as many as one answer holds by default (max_bindings_per_answer): an
# account takes up to 1.3 KB (its handle seals a 256-character account ref),
# so a batch is never larger than one full answer plus 23 KB, about 1.3 MB,
# which a single result may already be: far below the 4 MiB message limit.
MAX_BATCHED_RESULTS = 64
MAX_BATCHED_ACCOUNTS = 1000
# The contract caps account_ref at 256 characters; a longer one cannot be
# passed back to the provider, so it gets no handle.
_MAX_ACCOUNT_REF = 256

# Logs mask every run of 8 or more digits (it could be a phone number), and a
# hex uuid has such runs now and then; spelling its digits as letters keeps
# query ids intact in every log line.
_DIGITS_AS_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def new_query_id() -> str:
    """A fresh query id: a random uuid4 as 32 letters ``a`` to ``p``, no digits."""
    return uuid.uuid4().hex.translate(_DIGITS_AS_LETTERS)


def current_query_id() -> str:
    """The query id of the call being served, or a fresh one outside a call."""
    return QUERY_ID.get() or new_query_id()


@dataclass
class _Tally:
    asked: int = 0
    answered: int = 0
    timed_out: int = 0
    failed: int = 0
    skipped: int = 0
    mine: int = 0
    left_behind: int = 0
    previous_holder: int = 0

    def add(self, outcome: UpstreamOutcome) -> None:
        self.asked += 1
        if outcome is UpstreamOutcome.ANSWERED:
            self.answered += 1
        elif outcome is UpstreamOutcome.TIMED_OUT:
            self.timed_out += 1
        elif outcome is UpstreamOutcome.FAILED:
            self.failed += 1
        else:
            self.skipped += 1

    def add_routed_out(self, count: int) -> None:
        self.asked += count
        self.skipped += count

    def add_result(self, outcome: UpstreamOutcome, result: gateway_pb2.ProviderResult) -> None:
        self.add(outcome)
        left_behind = sum(b.dangerous for b in result.bindings)
        self.left_behind += left_behind
        self.mine += len(result.bindings) - left_behind
        self.previous_holder += result.previous_holder_count

    def coverage(self) -> gateway_pb2.Coverage:
        return gateway_pb2.Coverage(
            asked=self.asked,
            answered=self.answered,
            timed_out=self.timed_out,
            failed=self.failed,
            skipped=self.skipped,
        )


@dataclass
class _Totals:
    by_number: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))

    def total(self) -> _Tally:
        out = _Tally()
        for tally in self.by_number.values():
            for name in vars(out):
                setattr(out, name, getattr(out, name) + getattr(tally, name))
        return out


def _duration(seconds: float) -> Duration:
    # Not negative, so these are Duration's normalised fields (as FromNanoseconds sets them).
    nanos = max(0, round(seconds * 1e9))
    return Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def _carrier_outcomes(answers: Sequence[CarrierAnswer]) -> list[gateway_pb2.CarrierOutcome]:
    return [
        gateway_pb2.CarrierOutcome(
            carrier_id=a.carrier.id, outcome=a.outcome.proto, detail=a.detail
        )
        for a in answers
    ]


def _number_infos(tenures: Sequence[TenureView]) -> list[gateway_pb2.NumberInfo]:
    # Current numbers first, then former ones, most recently held first.
    ordered = sorted(
        tenures,
        key=lambda t: (not t.current, -(t.held_until or t.held_from).timestamp(), t.msisdn),
    )
    infos = []
    for tenure in ordered:
        info = gateway_pb2.NumberInfo(
            msisdn=tenure.msisdn,
            carrier_id=tenure.carrier_id,
            state=common_pb2.TenureState.ValueType(tenure.state),
            current=tenure.current,
        )
        info.held_from.FromDatetime(tenure.held_from)
        if tenure.held_until is not None:
            info.held_until.FromDatetime(tenure.held_until)
        infos.append(info)
    return infos


class ResultMerger:
    """Turns one provider's answer into the ``ProviderResult`` a citizen is shown.

    Attribution by tenure decides what is shown, counted or dropped; every
    shown binding the provider can unbind gets a handle sealed for the citizen.

    Args:
        sealer: seals the handles of shown bindings.
        handle_ttl: seconds a handle stays valid.
        clock: the wall clock (seconds since the epoch), for handle expiry.
    """

    def __init__(
        self, *, sealer: HandleSealer, handle_ttl: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._sealer = sealer
        self._handle_ttl = handle_ttl
        self._clock = clock

    def merge(
        self,
        answer: ProviderAnswer,
        tenures: Sequence[TenureView],
        *,
        sub: str,
        query_id: str,
        start: float,
    ) -> gateway_pb2.ProviderResult:
        """The result for ``answer`` on a number the citizen ``sub`` held for ``tenures``.

        ``start`` is the lookup's start on the loop's clock (``elapsed`` runs from it).
        """
        provider = answer.call.provider
        result = gateway_pb2.ProviderResult(
            provider_id=provider.id,
            provider_name=provider.display_name,
            category=provider.category,
            msisdn=answer.call.msisdn,
            outcome=answer.outcome.proto,
            detail=answer.detail,
            elapsed=_duration(answer.finished_at - start),
        )
        if answer.outcome is not UpstreamOutcome.ANSWERED:
            return result
        attributed = classify(tenures, answer.bindings, bound_at=proto_binding_when)
        expires_at = self._clock() + self._handle_ttl

        def handle(binding: provider_pb2.Binding, attribution: Attribution) -> str:
            ref = binding.account_ref
            if not binding.unbindable or not ref or len(ref) > _MAX_ACCOUNT_REF:
                return ""
            claims = HandleClaims(
                sub=sub,
                provider_id=provider.id,
                msisdn=answer.call.msisdn,
                account_ref=binding.account_ref,
                attribution=attribution,
                expires_at=expires_at,
                query_id=query_id,
            )
            try:
                return self._sealer.seal(claims)
            except ValueError:
                # An account ref the handle format cannot carry: shown, not actionable.
                _log.warning("lookup.unsealable_binding", provider=provider.id)
                return ""

        for shown in attributed.shown:
            result.bindings.append(_shown_binding(shown.binding, shown.attribution, handle))
        result.previous_holder_count = attributed.previous_holder_count
        for binding in attributed.previous_holder:
            sealed = handle(binding, Attribution.PREVIOUS_HOLDER)
            if sealed:
                result.release_handles.append(sealed)
        # No log line per result: the summary's line counts them, and even a
        # debug line filtered out costs a logger bind (about 13 us) per provider.
        return result


def _shown_binding(
    binding: provider_pb2.Binding,
    attribution: Attribution,
    handle: Callable[[provider_pb2.Binding, Attribution], str],
) -> gateway_pb2.ShownBinding:
    sealed = handle(binding, attribution)
    item = gateway_pb2.ShownBinding(
        attribution=gateway_pb2.Attribution.ValueType(attribution.proto),
        display_name_masked=mask_display_name(binding.display_name),
        kind=binding.kind,
        unbindable=bool(sealed),
        handle=sealed,
        dangerous=attribution.dangerous,
    )
    _copy_bound_at(binding, item.bound_at)
    if binding.HasField("last_used_at") and binding.last_used_at.seconds > 0:
        item.last_used_at.CopyFrom(binding.last_used_at)
    return item


# The last whole second a datetime holds, as a Timestamp's seconds.
_LAST_DATETIME_SECOND = int(datetime.max.replace(microsecond=0, tzinfo=UTC).timestamp())


def _copy_bound_at(binding: provider_pb2.Binding, out: Timestamp) -> None:
    """Set ``out`` to :func:`proto_bound_at` of ``binding`` (left unset when None).

    A timestamp in range is copied field by field, to the microsecond as the
    datetime would have it, without building the datetime.
    """
    stamp = binding.bound_at
    if 0 < stamp.seconds <= _LAST_DATETIME_SECOND and 0 <= stamp.nanos < 1_000_000_000:
        out.seconds = stamp.seconds
        out.nanos = stamp.nanos - stamp.nanos % 1000
        return
    bound_at = proto_bound_at(binding)
    if bound_at is not None:
        out.FromDatetime(bound_at)


class LookupService:
    """``Gateway.Lookup``, without the server: the caller's assertion in, messages out.

    Refusals (capacity, a bad request, the assertion, no carrier answering)
    are raised as :class:`~onecert.gateway._refusal.Refusal`.

    Args:
        verifier: checks the citizens' identity assertions.
        fanout: asks carriers and providers.
        sealer: seals the handles of shown bindings.
        handle_ttl: seconds a handle stays valid.
        lookup_deadline: seconds a lookup may take when the caller sets no
            shorter deadline.
        summary_margin: seconds kept back from the deadline to send the summary.
        batch_window: for callers that ask for ``batch_results``, seconds the
            first result of a message waits for others to join it (never the last).
        max_concurrent_lookups: lookups served at once; more are refused with
            RESOURCE_EXHAUSTED.
        clock: the wall clock (seconds since the epoch), for handle expiry.
        auditor: records every identified lookup in the audit log (None: no audit).
        observer: told of every refused identity assertion (metrics).
    """

    def __init__(
        self,
        *,
        verifier: AssertionVerifier,
        fanout: FanOut,
        sealer: HandleSealer,
        handle_ttl: float,
        lookup_deadline: float,
        summary_margin: float,
        max_concurrent_lookups: int,
        batch_window: float = 0.01,
        clock: Callable[[], float] = time.time,
        auditor: Auditor | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._auditor = auditor
        self._observer = observer
        self._verifier = verifier
        self._fanout = fanout
        self.merger = ResultMerger(sealer=sealer, handle_ttl=handle_ttl, clock=clock)
        self._lookup_deadline = lookup_deadline
        self._margin = summary_margin
        self._batch_window = batch_window
        self._max_lookups = max_concurrent_lookups
        self._active = 0

    @property
    def active_lookups(self) -> int:
        """Lookups being served now."""
        return self._active

    async def lookup(
        self,
        *,
        metadata: Metadata,
        client_request_id: str = "",
        time_remaining: float | None = None,
        group_routed_out: bool = False,
        batch_results: bool = False,
    ) -> AsyncIterator[gateway_pb2.LookupResponse]:
        """Serve one lookup (see the module docstring for the steps).

        Args:
            metadata: the call's metadata, holding the citizen's identity assertion
                (``authorization: Bearer <JWT>``); read only after the request's checks.
            client_request_id: the portal's own id for the lookup, for logs.
            time_remaining: seconds left before the caller's deadline (None: none set).
            group_routed_out: the caller understands ``RoutedOut`` (one message
                per number for the providers routing rules out).
            batch_results: the caller understands ``ProviderResults`` (the
                results ready together in one message).
        """
        query_id = current_query_id()
        if self._active >= self._max_lookups:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the gateway is serving {self._max_lookups} lookups already; try again shortly",
                reason="capacity",
            )
        # Checked before the assertion too, so a malformed request does not use it up.
        if len(client_request_id) > MAX_CLIENT_REQUEST_ID:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"client_request_id must be at most {MAX_CLIENT_REQUEST_ID} characters",
            )
        self._active += 1
        try:
            citizen, spent = await self._identify(metadata)
            if client_request_id:
                # The caller's own id, so the portal can find its lookup in these logs.
                structlog.contextvars.bind_contextvars(
                    client_request_id=mask_numbers_in_text(client_request_id)
                )
            start = asyncio.get_running_loop().time()
            deadline = self._deadline(time_remaining, start)
            carriers = await self._ask_carriers(citizen, query_id, deadline, spent)
            audit = None
            if self._auditor is not None:
                audit = _LookupAudit(self._auditor, citizen, query_id)
            responses = self._lookup(
                citizen,
                query_id,
                start,
                deadline,
                carriers,
                group_routed_out=group_routed_out,
                batch_results=batch_results,
                on_final=None if audit is None else audit.queue,
            )
            if audit is not None:
                responses = audit.audited(responses)
            async for response in responses:
                yield response
        finally:
            self._active -= 1

    def _refusal(self, exc: IdentityError) -> Refusal:
        self._observer.assertion_rejected(exc.reason)
        return Refusal(exc.code, exc.message, reason=exc.reason)

    async def _identify(self, metadata: Metadata) -> tuple[Citizen, asyncio.Task[None]]:
        """The checked citizen, and the task spending its ``jti`` (still running)."""
        try:
            citizen = self._verifier.check(bearer_token(metadata))
        except IdentityError as exc:
            raise self._refusal(exc) from None
        spent = asyncio.create_task(self._verifier.spend(citizen), name="lookup-replay-check")
        # A lookup cancelled before it reads the outcome leaves it unread.
        spent.add_done_callback(_read_outcome)
        # One step for the task: a replay the cache's in-process front holds
        # (or a cache without a database) is answered now, before a carrier
        # is asked.
        await asyncio.sleep(0)
        if spent.done():
            await self._spent(spent)
        _log.info("lookup.identified", issuer=citizen.issuer, acr=citizen.acr)
        return citizen, spent

    async def _spent(self, spent: asyncio.Task[None]) -> None:
        try:
            # Shielded: a lookup cancelled meanwhile leaves the write to finish.
            await asyncio.shield(spent)
        except IdentityError as exc:
            raise self._refusal(exc) from None

    async def _ask_carriers(
        self, citizen: Citizen, query_id: str, deadline: float, spent: asyncio.Task[None]
    ) -> tuple[CarrierAnswer, ...]:
        """The carriers' answers, once the replay cache has spent the assertion."""
        try:
            carriers = await self._fanout.list_numbers(
                citizen.idn, query_id=query_id, deadline=deadline
            )
        finally:
            # Whatever the carriers did, a replay is what the caller hears.
            await self._spent(spent)
        return carriers

    def _deadline(self, time_remaining: float | None, start: float) -> float:
        budget = self._lookup_deadline
        if time_remaining is not None and math.isfinite(time_remaining):
            budget = min(budget, time_remaining)
        return start + budget - self._margin

    async def _lookup(
        self,
        citizen: Citizen,
        query_id: str,
        start: float,
        deadline: float,
        carriers: Sequence[CarrierAnswer],
        *,
        group_routed_out: bool,
        batch_results: bool = False,
        on_final: Callable[[gateway_pb2.LookupResponse], None] | None = None,
    ) -> AsyncIterator[gateway_pb2.LookupResponse]:
        """The lookup's messages; ``on_final`` gets the summary as soon as it is
        final, before the last results are sent (it is sent after them)."""
        loop = asyncio.get_running_loop()
        if not any(c.outcome is UpstreamOutcome.ANSWERED for c in carriers):
            reasons = "; ".join(f"{c.carrier.id}: {c.detail or c.outcome.name}" for c in carriers)
            _log.warning("lookup.no_carrier", carriers=len(carriers))
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"no carrier answered, so no number can be looked up ({reasons})",
                reason="no_carrier",
            )
        tenures = [t for c in carriers for t in c.tenures]
        by_number: dict[str, list[TenureView]] = defaultdict(list)
        for tenure in tenures:
            by_number[tenure.msisdn].append(tenure)
        plan = await self._fanout.plan(sorted(by_number))
        carrier_outcomes = _carrier_outcomes(carriers)
        # The calls start before LookupStarted is written: their deadline
        # counts from here, and the write need not come first.
        answers = self._fanout.ask_providers(plan.calls, query_id=query_id, deadline=deadline)
        async with contextlib.aclosing(answers):
            _log.info(
                "lookup.started",
                numbers=len(by_number),
                carriers_answered=sum(c.outcome is UpstreamOutcome.ANSWERED for c in carriers),
                carriers=len(carriers),
                provider_calls=plan.provider_calls,
            )
            yield gateway_pb2.LookupResponse(
                query_id=query_id,
                started=gateway_pb2.LookupStarted(
                    numbers=_number_infos(tenures),
                    carriers=carrier_outcomes,
                    provider_calls=plan.provider_calls,
                ),
            )
            totals = _Totals()
            for msisdn in sorted(by_number):
                totals.by_number[msisdn] = _Tally()
            for msisdn, out in plan.routed_out.items():
                totals.by_number[msisdn].add_routed_out(out.count)
            for response in self._routed_out(
                plan, query_id, start, group=group_routed_out, batch=batch_results
            ):
                yield response
            summary = None
            gather = self._batch_window if batch_results else 0.0
            while summary is None:
                results = []
                for answer in await answers.ready(gather=gather, most=MAX_BATCHED_RESULTS):
                    msisdn = answer.call.msisdn
                    result = self.merger.merge(
                        answer, by_number[msisdn], sub=citizen.sub, query_id=query_id, start=start
                    )
                    totals.by_number[msisdn].add_result(answer.outcome, result)
                    results.append(result)
                if not answers.remaining:
                    # Final before the last results are written, so the audit
                    # row's commit overlaps their writes.
                    summary = _summary(query_id, totals, carrier_outcomes, loop.time() - start)
                    if on_final is not None:
                        on_final(summary)
                # What ended together (within the batch window) goes together.
                for response in _responses(query_id, results, batch=batch_results):
                    yield response
        yield summary

    def _routed_out(
        self, plan: Plan, query_id: str, start: float, *, group: bool, batch: bool
    ) -> Iterator[gateway_pb2.LookupResponse]:
        """The providers routing rules out, before any call ends (they are known at once).

        Grouped: one ``RoutedOut`` per number. Otherwise one SKIPPED result
        per provider, in configuration order, as callers that predate
        ``RoutedOut`` have always received (all ready at once, so in as few
        ``ProviderResults`` as the caps allow when ``batch``).
        """
        now = asyncio.get_running_loop().time()
        if not group:
            yield from _responses(query_id, self._skipped(plan, query_id, start, now), batch=batch)
            return
        for msisdn, out in plan.routed_out.items():
            listed = out.ids() if out.count <= MAX_LISTED_ROUTED_OUT else ()
            yield gateway_pb2.LookupResponse(
                query_id=query_id,
                routed_out=gateway_pb2.RoutedOut(
                    msisdn=msisdn,
                    count=out.count,
                    provider_ids=listed,
                    detail=ROUTED_OUT_DETAIL,
                    elapsed=_duration(now - start),
                ),
            )

    def _skipped(
        self, plan: Plan, query_id: str, start: float, now: float
    ) -> Iterator[gateway_pb2.ProviderResult]:
        """One SKIPPED result per provider routing rules out, in configuration order."""
        for msisdn, out in plan.routed_out.items():
            ids = out.ids()
            for provider in (p for p in self._fanout.providers if p.id in ids):
                answer = ProviderAnswer(
                    ProviderCall(provider, msisdn),
                    UpstreamOutcome.SKIPPED,
                    ROUTED_OUT_DETAIL,
                    (),
                    0,
                    now,
                )
                yield self.merger.merge(answer, (), sub="", query_id=query_id, start=start)


def _responses(
    query_id: str, results: Iterable[gateway_pb2.ProviderResult], *, batch: bool
) -> Iterator[gateway_pb2.LookupResponse]:
    """``results`` as stream messages: batched (``LookupRequest.batch_results``),
    else one ``ProviderResult`` each, as callers that predate batching receive."""
    if batch:
        yield from _batches(query_id, results)
        return
    for result in results:
        yield gateway_pb2.LookupResponse(query_id=query_id, result=result)


def _batches(
    query_id: str, results: Iterable[gateway_pb2.ProviderResult]
) -> Iterator[gateway_pb2.LookupResponse]:
    """``results`` in as few ``ProviderResults`` messages as the caps allow
    (:data:`MAX_BATCHED_RESULTS`, :data:`MAX_BATCHED_ACCOUNTS`), in order."""
    batch: list[gateway_pb2.ProviderResult] = []
    accounts = 0
    for result in results:
        size = len(result.bindings) + len(result.release_handles)
        if batch and (len(batch) == MAX_BATCHED_RESULTS or accounts + size > MAX_BATCHED_ACCOUNTS):
            yield _results_message(query_id, batch)
            batch, accounts = [], 0
        batch.append(result)
        accounts += size
    if batch:
        yield _results_message(query_id, batch)


def _results_message(
    query_id: str, batch: list[gateway_pb2.ProviderResult]
) -> gateway_pb2.LookupResponse:
    message = gateway_pb2.LookupResponse(query_id=query_id)
    # Copied in once: through a ProviderResults constructor they would be copied twice.
    message.results.results.extend(batch)
    return message


class _LookupAudit:
    """The audit row of one lookup: what the citizen was shown, in counts only.

    Numbers, provider calls (made and routed out) and how they ended. The
    row is queued as soon as the summary is final (:meth:`queue`, while the
    last results are still being written) and committed before the summary
    is sent, so a lookup the citizen saw complete always has its row; a
    lookup that ends otherwise is written in the background once it ends.
    """

    def __init__(self, auditor: Auditor, citizen: Citizen, query_id: str) -> None:
        self._auditor = auditor
        self._citizen = citizen
        self._query_id = query_id
        self.detail: dict[str, str | int | bool] = {"outcome": "error"}
        self._routed_out = 0
        # The row's commit, once queued: the writer commits it even if the
        # call is cancelled meanwhile, so no second row is written then.
        self._record: asyncio.Task[None] | None = None

    def _routing(self) -> None:
        # Routing is audited with the lookup it serves: calls made, calls routed out.
        if "provider_calls" in self.detail:
            self.detail["routed_out"] = self._routed_out
            self.detail["asked"] = int(self.detail["provider_calls"]) - self._routed_out

    def queue(self, summary: gateway_pb2.LookupResponse) -> None:
        """Queue the row of a lookup whose ``summary`` is final (its commit starts now)."""
        total = summary.summary.total
        self.detail.update(
            answered=total.answered,
            timed_out=total.timed_out,
            failed=total.failed,
            skipped=total.skipped,
            outcome="ok",
        )
        self._routing()
        self._record = asyncio.create_task(
            store_call(
                self._auditor.record(
                    "lookup",
                    actor=self._auditor.citizen(self._citizen.sub),
                    subject=f"query:{self._query_id}",
                    detail=dict(self.detail),
                ),
                "audit_lookup",
            ),
            name="lookup-audit-row",
        )
        # A call cancelled before it waits for the row leaves its outcome unread.
        self._record.add_done_callback(_read_outcome)

    async def audited(
        self, responses: AsyncIterator[gateway_pb2.LookupResponse]
    ) -> AsyncIterator[gateway_pb2.LookupResponse]:
        """``responses``, with the summary held back until the row is committed."""
        try:
            async for response in responses:
                update = response.WhichOneof("update")
                if update == "result":
                    self._routed_out += response.result.detail == ROUTED_OUT_DETAIL
                elif update == "results":
                    self._routed_out += sum(
                        r.detail == ROUTED_OUT_DETAIL for r in response.results.results
                    )
                elif update == "routed_out":
                    self._routed_out += response.routed_out.count
                elif update == "started":
                    self.detail["numbers"] = len({n.msisdn for n in response.started.numbers})
                    self.detail["provider_calls"] = response.started.provider_calls
                elif update == "summary":
                    if self._record is None:
                        self.queue(response)
                    try:
                        # Shielded: cancelling this call must not unqueue the row.
                        await asyncio.shield(cast("asyncio.Task[None]", self._record))
                    except Refusal:
                        self._record = None
                        raise
                yield response
            self.detail["outcome"] = "ok"
        except Refusal as refusal:
            self.detail["outcome"] = refusal.code.name
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self.detail["outcome"] = "cancelled"
            raise
        finally:
            if self._record is None:
                self._routing()
                self._auditor.spawn(
                    "lookup",
                    actor=self._auditor.citizen(self._citizen.sub),
                    subject=f"query:{self._query_id}",
                    detail=self.detail,
                )


def _read_outcome(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _summary(
    query_id: str,
    totals: _Totals,
    carrier_outcomes: list[gateway_pb2.CarrierOutcome],
    elapsed: float,
) -> gateway_pb2.LookupResponse:
    total = totals.total()
    _log.info(
        "lookup.finished",
        asked=total.asked,
        answered=total.answered,
        timed_out=total.timed_out,
        failed=total.failed,
        skipped=total.skipped,
        elapsed_ms=round(elapsed * 1000),
    )
    return gateway_pb2.LookupResponse(
        query_id=query_id,
        summary=gateway_pb2.LookupSummary(
            total=total.coverage(),
            numbers=[
                gateway_pb2.NumberSummary(
                    msisdn=msisdn,
                    coverage=tally.coverage(),
                    mine=tally.mine,
                    left_behind=tally.left_behind,
                    previous_holder=tally.previous_holder,
                )
                for msisdn, tally in totals.by_number.items()
            ],
            carriers=carrier_outcomes,
            elapsed=_duration(elapsed),
        ),
    )
