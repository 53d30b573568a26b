"""What the gateway reports about its work: Prometheus metrics and, when on, traces.

The parts of the gateway report through an :class:`Observer` they are given
(a no-op by default): the fan-out reports every carrier and provider call,
the lookup every refused identity assertion, the delivery workers every
unbind attempt and notice push. :class:`Telemetry` is the gateway's
observer: it counts into a :class:`GatewayMetrics` (a registry of its own per
gateway, served on ``metrics.listen`` by prometheus_client's HTTP server) and
records spans with :mod:`onecert.gateway._tracing` when ``tracing.enabled``.

Reporting a call costs a dictionary lookup and a few additions: each
provider's and carrier's call counts and latency histogram are plain numbers
(``_PerTarget``), shown from the start and written out as counters and
histograms when Prometheus scrapes. What is not counted on the way is read
when Prometheus scrapes too:
breaker states, lookups in flight, and the outbox (tickets and notices the
store still holds), which is queried on the gateway's event loop with a
short timeout and cached for a few seconds so scrapes never pile queries on
the database.

Labels are bounded: provider and carrier ids come from the configuration,
outcomes and reasons from fixed lists; never a number, a citizen or a query.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TypeVar

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select

from onecert.gateway._breaker import BreakerState
from onecert.gateway._identity import Metadata
from onecert.gateway._observers import (
    NO_OBSERVER,
    ROUTING_DECISIONS,
    ActiveLookups,
    Breakers,
    LookupCounts,
    NullObserver,
    Observer,
    ProviderAnswer,
    UpstreamOutcome,
)
from onecert.gateway._refusal import Refusal
from onecert.gateway.store import AttemptOutcome
from onecert.gateway.store._models import deliveries, unbind_tickets

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.trace.export import SpanExporter

    from onecert.gateway._config import GatewayConfig
    from onecert.gateway._tracing import Tracing
    from onecert.gateway.store import Store
    from onecert.v1 import gateway_pb2

__all__ = [
    "IDENTITY_REASONS",
    "LOOKUP_OUTCOMES",
    "NOTICE_PUSH_OUTCOMES",
    "NO_OBSERVER",
    "GatewayMetrics",
    "LookupCounts",
    "NullObserver",
    "Observer",
    "Telemetry",
]

_log = structlog.get_logger("onecert.gateway.metrics")

_K = TypeVar("_K")

# How a lookup ended: with its summary, refused before any call (capacity,
# bad request, identity), failed (no carrier answered, a bug), or cut short
# by the caller.
LOOKUP_OUTCOMES: Final = ("ok", "refused", "error", "cancelled")
# Statuses of a lookup refused before it asked anyone.
_REFUSED: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# IdentityError.reason values (onecert.gateway._identity and the JWT checks);
# anything else is counted as "other" so the label set stays fixed.
IDENTITY_REASONS: Final = (
    "missing",
    "scheme",
    "oversized",
    "malformed",
    "typ",
    "crit",
    "kid",
    "alg",
    "signature",
    "iss",
    "aud",
    "expired",
    "nbf",
    "iat",
    "lifetime",
    "claims",
    "sub",
    "idn",
    "jti",
    "acr",
    "acr_unknown",
    "replayed",
    "replay_cache_full",
    "replay_cache_unavailable",
    "other",
)
NOTICE_PUSH_OUTCOMES: Final = ("acknowledged", "retry", "failed")
# Outbox kinds: unbind tickets not final yet, notice deliveries not
# acknowledged yet (pushed by the gateway, or waiting for the provider to poll).
_OUTBOX_KINDS: Final = ("unbind_ticket", "notice_push", "notice_poll")
_BREAKER_VALUES: Final = {
    BreakerState.CLOSED: 0.0,
    BreakerState.HALF_OPEN: 1.0,
    BreakerState.OPEN: 2.0,
}
# Seconds: provider and carrier deadlines are a few seconds, lookups ten.
_CALL_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The "le" labels, written as prometheus_client writes a Histogram's.
_CALL_BUCKET_LABELS: Final = (
    *(floatToGoString(b) for b in _CALL_BUCKETS),  # type: ignore[no-untyped-call]
    "+Inf",
)
_LOOKUP_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class _Outbox:
    # kind -> (items, created_at of the oldest)
    items: Mapping[str, tuple[int, datetime | None]]
    # (mode, state) -> deliveries
    deliveries: Mapping[tuple[str, str], int]


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own.

    Args:
        providers: the ids of every configured provider (labels are bound now).
        carriers: the ids of every configured carrier.
    """

    def __init__(self, *, providers: Sequence[str], carriers: Sequence[str]) -> None:

        self.registry = CollectorRegistry()
        registry = self.registry
        self._lookups = _counter_per(
            registry,
            "onecert_lookups",
            "Lookups by how they ended (ok, refused, error, cancelled).",
            "outcome",
            LOOKUP_OUTCOMES,
        )
        self._lookup_seconds = Histogram(
            "onecert_lookup_duration_seconds",
            "Time from the call to the summary of lookups that ended ok.",
            buckets=_LOOKUP_BUCKETS,
            registry=registry,
        )

        self._providers = _PerTarget(registry, "provider", providers)
        self._carriers = _PerTarget(registry, "carrier", carriers)
        self._rejections = _counter_per(
            registry,
            "onecert_identity_rejections",
            "Identity assertions refused, by reason.",
            "reason",
            IDENTITY_REASONS,
        )
        self._attempts = _counter_per(
            registry,
            "onecert_unbind_delivery_attempts",
            "Unbind ticket delivery attempts by outcome (done, rejected, pending, retry, fatal).",
            "outcome",
            AttemptOutcome,
            label_of=lambda outcome: outcome.value.lower(),
        )
        self._pushes = _counter_per(
            registry,
            "onecert_notice_pushes",
            "Notice pushes to providers by outcome (acknowledged, retry, failed).",
            "outcome",
            NOTICE_PUSH_OUTCOMES,
        )
        self._routing = _counter_per(
            registry,
            "onecert_routing_providers",
            "Providers per routing decision, summed over the numbers looked up: routed_out "
            "(not asked: the filter rules the number out), candidate (the filter may hold it), "
            "or asked whatever the filter says (no_filter, stale, opted_out, retired_key, "
            "incomplete).",
            "decision",
            ROUTING_DECISIONS,
        )
        self._outbox: _OutboxCollector | None = None

    def routing_decided(self, counts: Mapping[str, int]) -> None:
        routing = self._routing
        for decision, count in counts.items():
            if count:
                routing[decision].inc(count)

    def lookup_finished(self, outcome: str, seconds: float) -> None:
        """Count a lookup (one of :data:`LOOKUP_OUTCOMES`); time it if it ended ok."""
        self._lookups[outcome].inc()
        if outcome == "ok":
            self._lookup_seconds.observe(seconds)

    def carrier_answered(
        self, carrier_id: str, outcome: UpstreamOutcome, attempts: int, seconds: float
    ) -> None:
        self._carriers.record(carrier_id, outcome, seconds)

    def provider_answered(self, answer: ProviderAnswer, seconds: float) -> None:
        self._providers.record(answer.call.provider.id, answer.outcome, seconds)

    def add_providers(self, ids: Sequence[str]) -> None:
        """Show (at 0) the providers that joined since start (the live registry)."""
        self._providers.add(ids)

    def assertion_rejected(self, reason: str) -> None:
        (self._rejections.get(reason) or self._rejections["other"]).inc()

    def unbind_attempted(self, outcome: AttemptOutcome) -> None:
        self._attempts[outcome].inc()

    def notice_pushed(self, outcome: str) -> None:
        self._pushes[outcome].inc()

    def watch(
        self,
        *,
        fanout: Breakers | None = None,
        lookup: ActiveLookups | None = None,
        store: Store | None = None,
        cache_s: float = 5.0,
        timeout_s: float = 2.0,
    ) -> None:
        """Read breaker states, lookups in flight and the store's outbox at each scrape.

        The outbox is queried at most every ``cache_s`` seconds, waiting at
        most ``timeout_s`` for the store.
        """
        if fanout is not None or lookup is not None:
            self.registry.register(_LiveCollector(fanout, lookup))
        if store is not None:
            self._outbox = _OutboxCollector(store, cache_s=cache_s, timeout_s=timeout_s)
            self.registry.register(self._outbox)

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """The event loop the store is used from (None: the store is closing)."""
        if self._outbox is not None:
            self._outbox.loop = loop


def _counter_per(
    registry: CollectorRegistry,
    name: str,
    documentation: str,
    label: str,
    keys: Iterable[_K],
    *,
    label_of: Callable[[_K], str] = str,
) -> dict[_K, Counter]:
    """A counter with one label, its child for every key bound now (so each shows as 0)."""
    counter = Counter(name, documentation, [label], registry=registry)
    return {key: counter.labels(label_of(key)) for key in keys}


_OUTCOMES: Final = tuple(UpstreamOutcome)
_OUTCOME_INDEX: Final = {outcome: i for i, outcome in enumerate(_OUTCOMES)}


class _Calls:
    """One target's call counts by outcome and its latency histogram, as plain numbers."""

    __slots__ = ("buckets", "outcomes", "seconds")

    def __init__(self) -> None:
        self.outcomes = [0] * len(_OUTCOMES)
        # Per bucket of _CALL_BUCKETS, then +Inf: calls that took that long at most
        # and more than the bucket before (made cumulative when scraped).
        self.buckets = [0] * (len(_CALL_BUCKETS) + 1)
        self.seconds = 0.0


class _PerTarget:
    """The call counters and timers of one kind of upstream, per target.

    Kept as plain counts and exposed by a collector at each scrape, with the
    names and labels a labelled Counter and Histogram would have:
    prometheus_client's labelled children hold a lock per value, about 6 KiB
    a provider (``tracemalloc``), 120 MB at 20,000 providers. Every target
    shows from the start, at 0. Updates come from the event loop and scrapes
    from the HTTP server's thread, so both take one lock.
    """

    def __init__(self, registry: CollectorRegistry, kind: str, ids: Sequence[str]) -> None:
        self._kind = kind
        self._lock = threading.Lock()
        self._calls: dict[str, _Calls] = {}
        self.add(ids)
        registry.register(self)

    def add(self, ids: Sequence[str]) -> None:
        """Show ``ids`` (at 0) if they are not shown yet."""
        with self._lock:
            for target in ids:
                self._calls.setdefault(target, _Calls())

    def record(self, target: str, outcome: UpstreamOutcome, seconds: float) -> None:
        """Count a call of ``target``; time it unless it was SKIPPED (never made)."""
        calls = self._calls.get(target)
        if calls is None:
            return
        with self._lock:
            calls.outcomes[_OUTCOME_INDEX[outcome]] += 1
            if outcome is not UpstreamOutcome.SKIPPED:
                calls.buckets[bisect.bisect_left(_CALL_BUCKETS, seconds)] += 1
                calls.seconds += seconds

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snapshot = [
                (target, list(c.outcomes), list(c.buckets), c.seconds)
                for target, c in self._calls.items()
            ]
        calls, latency = self._families()
        for target, outcomes, buckets, seconds in snapshot:
            for outcome, count in zip(_OUTCOMES, outcomes, strict=True):
                calls.add_metric([target, outcome.name.lower()], count)
            cumulative = list(itertools.accumulate(buckets))
            latency.add_metric(
                [target],
                buckets=list(zip(_CALL_BUCKET_LABELS, cumulative, strict=True)),
                sum_value=seconds,
            )
        return [calls, latency]

    def _families(self) -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        kind = self._kind
        return (
            CounterMetricFamily(
                f"onecert_{kind}_calls",
                f"{kind.title()} calls of lookups by outcome (answered, timed_out, failed, "
                "skipped).",
                labels=[kind, "outcome"],
            ),
            HistogramMetricFamily(
                f"onecert_{kind}_call_duration_seconds",
                f"Time {kind} calls took, retries included (skipped calls are not timed).",
                labels=[kind],
            ),
        )


class _LiveCollector:
    """Breaker states and lookups in flight, read when scraped."""

    def __init__(self, fanout: Breakers | None, lookup: ActiveLookups | None) -> None:
        self._fanout = fanout
        self._lookup = lookup

    def collect(self) -> Iterable[Metric]:
        # Read at each scrape: providers join and leave while the gateway runs.
        self._breakers = [] if self._fanout is None else self._fanout.breakers()
        if self._breakers:
            breakers = GaugeMetricFamily(
                "onecert_provider_breaker_state",
                "Circuit breaker of each provider: 0 closed, 1 half-open, 2 open.",
                labels=["provider"],
            )
            for provider_id, breaker in self._breakers:
                breakers.add_metric([provider_id], _BREAKER_VALUES[breaker.state])
            yield breakers
        if self._lookup is not None:
            yield GaugeMetricFamily(
                "onecert_lookups_in_flight",
                "Lookups being served now.",
                value=self._lookup.active_lookups,
            )


class _OutboxCollector:
    """The work the store still holds: read on the loop at scrape time, cached.

    ``collect`` runs in the metrics server's thread; the query runs on the
    gateway's event loop (where the store lives) and is waited for at most
    ``timeout_s``. Within ``cache_s`` of the last answer, scrapes reuse it.
    When the store does not answer, the last answer is shown (ages still
    grow) and the failure is counted.
    """

    def __init__(self, store: Store, *, cache_s: float, timeout_s: float) -> None:
        self._store = store
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._cached: _Outbox | None = None
        self._cached_at = -math.inf
        self._failures = 0

    def collect(self) -> Iterable[Metric]:
        outbox = self._snapshot()
        failures = CounterMetricFamily(
            "onecert_outbox_query_failures",
            "Scrapes at which the store did not report its outbox in time.",
            value=self._failures,
        )
        if outbox is None:
            yield failures
            return
        now = datetime.now(UTC)
        items = GaugeMetricFamily(
            "onecert_outbox_items",
            "Work not finished yet: unbind tickets, notice pushes, notices awaiting a poll.",
            labels=["kind"],
        )
        oldest = GaugeMetricFamily(
            "onecert_outbox_oldest_age_seconds",
            "Age of the oldest unfinished item of each kind (0 when there is none).",
            labels=["kind"],
        )
        for kind in _OUTBOX_KINDS:
            count, created = outbox.items.get(kind, (0, None))
            items.add_metric([kind], count)
            age = 0.0 if created is None else max(0.0, (now - created).total_seconds())
            oldest.add_metric([kind], age)
        states = GaugeMetricFamily(
            "onecert_notice_deliveries",
            "Deliveries of recycled-number notices to providers, by mode and state.",
            labels=["mode", "state"],
        )
        for (mode, state), count in sorted(outbox.deliveries.items()):
            states.add_metric([mode, state.lower()], count)
        yield items
        yield oldest
        yield states
        yield failures

    def _snapshot(self) -> _Outbox | None:
        with self._lock:
            if time.monotonic() - self._cached_at < self._cache_s:
                return self._cached
            loop = self.loop
            if loop is None or loop.is_closed():
                return self._cached
            if _running_on(loop):
                # Scraped from the loop itself (a test calling the registry):
                # waiting for the loop here would only time out.
                return self._cached
            future = asyncio.run_coroutine_threadsafe(self._query(), loop)
            try:
                self._cached = future.result(timeout=self._timeout_s)
            except Exception as exc:  # noqa: BLE001 - a scrape must answer whatever the store does
                future.cancel()
                self._failures += 1
                _log.warning("metrics.outbox_unavailable", error=type(exc).__name__)
            # A failure waits for the next period too: a sick database is
            # not asked again by every scrape.
            self._cached_at = time.monotonic()
            return self._cached

    async def _query(self) -> _Outbox:
        tickets = unbind_tickets.c
        notices = deliveries.c
        async with self._store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.min(tickets.created_at)).where(
                        tickets.state.in_(("QUEUED", "PENDING"))
                    )
                )
            ).one()
            rows = (
                await conn.execute(
                    select(
                        notices.mode, notices.state, func.count(), func.min(notices.created_at)
                    ).group_by(notices.mode, notices.state)
                )
            ).all()
        items: dict[str, tuple[int, datetime | None]] = {"unbind_ticket": (row[0], row[1])}
        counts: dict[tuple[str, str], int] = {}
        for mode, state, count, created in rows:
            counts[(mode, state)] = count
            if state == "PENDING":
                items[f"notice_{mode}"] = (count, created)
        return _Outbox(items=items, deliveries=counts)


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class Telemetry:
    """The gateway's observer, and the background worker serving its metrics.

    Build it with :meth:`from_config`; the gateway starts and stops it with
    its other workers.

    Args:
        metrics: the Prometheus metrics (None: metrics off).
        tracing: the tracer (None: tracing off).
        listen: ``HOST:PORT`` of the metrics endpoint (port 0: any free port).
    """

    def __init__(
        self,
        *,
        metrics: GatewayMetrics | None,
        tracing: Tracing | None,
        listen: str | None = None,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self._listen = listen
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls, config: GatewayConfig, *, span_exporter: SpanExporter | None = None
    ) -> Telemetry | None:
        """The telemetry ``config`` asks for; None when metrics and tracing are both off.

        Args:
            config: ``metrics.listen`` turns metrics on, ``tracing.enabled`` tracing.
            span_exporter: replaces the configured exporter when tracing is on (tests).

        Raises:
            ConfigError: tracing needs a package that is not installed.
        """
        listen = config.metrics.listen
        metrics = None
        if listen:
            metrics = GatewayMetrics(
                providers=[p.id for p in config.providers],
                carriers=[c.id for c in config.carriers],
            )
        tracing = None
        if config.tracing.enabled:
            try:
                from onecert.gateway._tracing import Tracing  # noqa: PLC0415 - optional dependency
            except ImportError as exc:
                from onecert.gateway._config import ConfigError  # noqa: PLC0415 - lazy like the rest

                raise ConfigError(
                    "tracing.enabled needs opentelemetry-api and opentelemetry-sdk "
                    "(pip install 'onecert[gateway]')"
                ) from exc
            tracing = Tracing.build(config.tracing, exporter=span_exporter)
        if metrics is None and tracing is None:
            return None
        return cls(metrics=metrics, tracing=tracing, listen=listen)

    @property
    def observer(self) -> Observer:
        """What the gateway's parts report to: the metrics alone when tracing is off
        (one call less per report), else this object."""
        if self.tracing is None and self.metrics is not None:
            return self.metrics
        return self

    @property
    def metrics_port(self) -> int | None:
        """The port the metrics endpoint listens on (None when not serving)."""
        return None if self._http is None else int(self._http.server_port)

    # ------------------------------------------------------------ worker

    async def start(self) -> None:
        """Serve ``/metrics`` on the configured address (when metrics are on)."""
        if self.metrics is None or not self._listen:
            return
        if self._http is not None:
            raise RuntimeError("the metrics endpoint is already served")
        host, _, port = self._listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - an empty host means every interface
        self.metrics.bind_loop(asyncio.get_running_loop())
        try:
            self._http, self._thread = start_http_server(
                int(port), addr=host, registry=self.metrics.registry
            )
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {self._listen}: {exc.strerror}") from exc
        _log.info("metrics.listening", address=self._listen, port=self.metrics_port)

    async def stop(self) -> None:
        """Stop serving metrics and flush the spans still buffered."""
        http, self._http = self._http, None
        if http is not None:
            # shutdown() waits for the server's poll loop (up to half a second).
            await asyncio.to_thread(http.shutdown)
            http.server_close()
        if self.metrics is not None:
            self.metrics.bind_loop(None)
        if self.tracing is not None:
            await self.tracing.shutdown()

    # ------------------------------------------------------------ hooks

    def carrier_answered(
        self, carrier_id: str, outcome: UpstreamOutcome, attempts: int, seconds: float
    ) -> None:
        if self.metrics is not None:
            self.metrics.carrier_answered(carrier_id, outcome, attempts, seconds)
        if self.tracing is not None:
            self.tracing.carrier_call(carrier_id, outcome, attempts, seconds)

    def provider_answered(self, answer: ProviderAnswer, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.provider_answered(answer, seconds)
        if self.tracing is not None:
            self.tracing.provider_call(answer, seconds)

    def assertion_rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.assertion_rejected(reason)

    def unbind_attempted(self, outcome: AttemptOutcome) -> None:
        if self.metrics is not None:
            self.metrics.unbind_attempted(outcome)

    def notice_pushed(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.notice_pushed(outcome)

    def routing_decided(self, counts: Mapping[str, int]) -> None:
        if self.metrics is not None:
            self.metrics.routing_decided(counts)

    async def observe_lookup(
        self,
        responses: AsyncIterator[gateway_pb2.LookupResponse],
        *,
        query_id: str,
        metadata: Metadata | None = None,
    ) -> AsyncIterator[gateway_pb2.LookupResponse]:
        """Pass a lookup's messages through, counting and timing it (and its span).

        ``metadata`` is the call's, read for a W3C ``traceparent``; a
        :class:`~onecert.gateway._refusal.Refusal` passing through gives the
        lookup's status.
        """
        started = time.perf_counter()
        tracing = self.tracing
        span = None
        counts = None
        if tracing is not None:
            span = tracing.start_lookup(query_id, metadata)
            counts = LookupCounts()
        outcome = "error"
        code: grpc.StatusCode | None = None
        try:
            async for response in responses:
                if counts is not None:
                    counts.add(response)
                yield response
            outcome = "ok"
        except Refusal as refusal:
            code = refusal.code
            raise
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            if outcome == "error" and code in _REFUSED:
                outcome = "refused"
            if self.metrics is not None:
                self.metrics.lookup_finished(outcome, time.perf_counter() - started)
            if tracing is not None and span is not None and counts is not None:
                if code is None:
                    code = grpc.StatusCode.UNKNOWN if outcome == "error" else grpc.StatusCode.OK
                tracing.end_lookup(span, outcome=outcome, code=code.value[0], counts=counts)
