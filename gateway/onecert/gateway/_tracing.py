"""OpenTelemetry tracing of lookups: a span per lookup, a child span per call it makes.

Only imported when ``tracing.enabled`` (the gateway runs without OpenTelemetry
installed otherwise). Each gateway has a tracer provider of its own, never the
global one, so two gateways in one process (tests) never mix their spans.

The lookup span is opened when the call starts and becomes the parent of
every carrier and provider call of that lookup through a context variable
(the fan-out's tasks inherit it). Call spans are recorded when the call has
ended, from its measured start and end, so the fan-out pays nothing extra
while a call is in flight. Attributes hold ids, counts and outcomes only:
never a phone number, an ``idn`` or a citizen's ``sub``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from onecert.gateway._config import ConfigError, TracingConfig

if TYPE_CHECKING:
    from onecert.gateway._observers import LookupCounts, ProviderAnswer, UpstreamOutcome

__all__ = ["Tracing"]

# The span of the lookup being served (None outside a lookup, or when it is
# not sampled): the parent of the spans of its calls.
_LOOKUP_SPAN: ContextVar[Context | None] = ContextVar("onecert_lookup_span", default=None)

# W3C trace context headers a caller (the portal) may send as gRPC metadata.
_TRACE_HEADERS = ("traceparent", "tracestate")
_GATEWAY_SERVICE = "onecert.v1.Gateway"
_PROVIDER_SERVICE = "onecert.v1.BindingProvider"
_CARRIER_SERVICE = "onecert.v1.NumberRegistry"


class Tracing:
    """Spans for lookups and their carrier and provider calls.

    Build it with :meth:`build`; :meth:`shutdown` flushes what is left.

    Args:
        provider: the tracer provider this gateway records into.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("onecert.gateway")
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def build(cls, config: TracingConfig, *, exporter: SpanExporter | None = None) -> Tracing:
        """A tracer provider for ``config``; ``exporter`` replaces the configured one (tests).

        Raises:
            ConfigError: the OTLP exporter is asked for but not installed.
        """
        provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            # A caller's sampling decision is followed; new traces by ratio.
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            # Flushed by the gateway's stop; an atexit hook per provider
            # would pile up in a process that starts many gateways.
            shutdown_on_exit=False,
        )
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif config.exporter == "console":
            # stderr, like the logs: stdout is the CLI's output.
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        else:
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(config)))
        return cls(provider)

    def start_lookup(
        self, query_id: str, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> Span:
        """Open the span of a lookup and make it the parent of its calls' spans.

        A ``traceparent`` in the call's metadata makes it a child of the caller's trace.
        """
        headers = {
            key: value
            for key, value in metadata or ()
            if key in _TRACE_HEADERS and isinstance(value, str)
        }
        parent = self._propagator.extract(headers) if headers else None
        span = self._tracer.start_span(
            "onecert.lookup",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={**_rpc(_GATEWAY_SERVICE, "Lookup"), "onecert.query_id": query_id},
        )
        _LOOKUP_SPAN.set(trace.set_span_in_context(span) if span.is_recording() else None)
        return span

    @staticmethod
    def end_lookup(span: Span, *, outcome: str, code: int, counts: LookupCounts) -> None:
        """Close a lookup's span with how it ended."""
        span.set_attributes(counts.attributes())
        span.set_attribute("onecert.outcome", outcome)
        span.set_attribute("rpc.grpc.status_code", code)
        if outcome == "error":
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def provider_call(self, answer: ProviderAnswer, seconds: float) -> None:
        """Record the span of one provider call, ended at ``answer.finished_at``."""
        attributes = {
            **_rpc(_PROVIDER_SERVICE, "ListBindings"),
            "onecert.provider_id": answer.call.provider.id,
            "onecert.bindings": len(answer.bindings),
        }
        self._call_span(
            "onecert.provider_call",
            attributes,
            answer.outcome,
            answer.attempts,
            seconds,
            ended=answer.finished_at,
        )

    def carrier_call(
        self, carrier_id: str, outcome: UpstreamOutcome, attempts: int, seconds: float
    ) -> None:
        """Record the span of one carrier call that has just ended."""
        attributes = {**_rpc(_CARRIER_SERVICE, "ListNumbers"), "onecert.carrier_id": carrier_id}
        self._call_span("onecert.carrier_call", attributes, outcome, attempts, seconds)

    def _call_span(
        self,
        name: str,
        attributes: dict[str, str | int],
        outcome: UpstreamOutcome,
        attempts: int,
        seconds: float,
        *,
        ended: float | None = None,
    ) -> None:
        """Record a call's span under its lookup's, when that is sampled, with how it
        ended; ``ended`` is the loop's clock at its end (None: it has just ended)."""
        parent = _LOOKUP_SPAN.get()
        if parent is None:
            return
        end = time.time_ns()
        if ended is not None:
            # Spans want the wall clock.
            end -= int((asyncio.get_running_loop().time() - ended) * 1e9)
        attributes["onecert.outcome"] = outcome.name.lower()
        attributes["onecert.attempts"] = attempts
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CLIENT,
            start_time=end - int(seconds * 1e9),
            attributes=attributes,
        )
        if outcome.name in ("FAILED", "TIMED_OUT"):
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)

    async def shutdown(self) -> None:
        """Export what is buffered and stop (the exporter may block: off the loop)."""
        await asyncio.to_thread(self._provider.shutdown)


def _rpc(service: str, method: str) -> dict[str, str | int]:
    """The OpenTelemetry RPC attributes of a gRPC call to ``service``'s ``method``."""
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _otlp_exporter(config: TracingConfig) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415 - optional
            OTLPSpanExporter,
        )
    except ImportError:
        raise ConfigError(
            'tracing.exporter = "otlp" needs the package opentelemetry-exporter-otlp-proto-grpc '
            "(pip install 'onecert[gateway]')"
        ) from None
    if config.endpoint is None:
        return OTLPSpanExporter()
    return OTLPSpanExporter(endpoint=config.endpoint)
