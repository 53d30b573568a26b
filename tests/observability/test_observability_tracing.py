"""Tracing: spans of a lookup and of its calls, recorded by a real gateway."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from onecert.gateway._config import MetricsConfig, TracingConfig

if TYPE_CHECKING:
    from tests.observability.observability_support import ObservedFederation

TRACED = TracingConfig(enabled=True, exporter="console")


def attribute_text(span: ReadableSpan) -> str:
    return " ".join(f"{key}={value!r}" for key, value in (span.attributes or {}).items())


async def test_a_lookup_is_one_span_with_a_child_per_call(fed: ObservedFederation) -> None:
    """One lookup span (query id, counts) parents one span per provider call (id, outcome,
    attempts) and per carrier call; no attribute holds a number, an idn or a sub."""
    await fed.start(["alpha", "beta", "gamma"])
    fed.providers["beta"].behaviour.abort = grpc.StatusCode.UNAVAILABLE
    exporter = InMemorySpanExporter()
    gateway = await fed.gateway(fed.config(tracing=TRACED), span_exporter=exporter)
    messages = await fed.lookup(gateway)
    query_id = messages[0].query_id

    spans = exporter.get_finished_spans()
    lookups = [s for s in spans if s.name == "onecert.lookup"]
    assert len(lookups) == 1
    lookup = lookups[0]
    assert lookup.kind is SpanKind.SERVER
    assert lookup.attributes is not None
    assert lookup.attributes["onecert.query_id"] == query_id
    assert lookup.attributes["onecert.outcome"] == "ok"
    assert lookup.attributes["onecert.numbers"] == 1
    assert lookup.attributes["onecert.provider_calls"] == 3
    assert lookup.attributes["onecert.answered"] == 2
    assert lookup.attributes["onecert.failed"] == 1
    assert lookup.parent is None
    assert lookup.context is not None
    trace_id, span_id = lookup.context.trace_id, lookup.context.span_id

    calls = [s for s in spans if s.name == "onecert.provider_call"]
    assert len(calls) == 3
    by_provider = {str((s.attributes or {})["onecert.provider_id"]): s for s in calls}
    assert set(by_provider) == {"alpha", "beta", "gamma"}
    for provider_id, span in by_provider.items():
        assert span.parent is not None
        assert span.parent.span_id == span_id
        assert span.context is not None
        assert span.context.trace_id == trace_id
        assert span.kind is SpanKind.CLIENT
        attributes = span.attributes or {}
        expected = "failed" if provider_id == "beta" else "answered"
        assert attributes["onecert.outcome"] == expected
        assert int(str(attributes["onecert.attempts"])) >= 1
        assert span.start_time is not None
        assert span.end_time is not None
        assert lookup.start_time is not None
        assert lookup.end_time is not None
        # Within the lookup (a millisecond of slack for the clock conversion).
        assert lookup.start_time - 1_000_000 <= span.start_time <= span.end_time
        assert span.end_time <= lookup.end_time + 1_000_000
    assert by_provider["beta"].status.status_code is StatusCode.ERROR
    assert by_provider["alpha"].status.status_code is StatusCode.UNSET

    carriers = [s for s in spans if s.name == "onecert.carrier_call"]
    assert len(carriers) == 1
    assert carriers[0].parent is not None
    assert carriers[0].parent.span_id == span_id
    assert (carriers[0].attributes or {})["onecert.carrier_id"] == "cm"

    texts = " ".join(attribute_text(s) for s in spans)
    for secret in (fed.NUMBER, fed.NUMBER.lstrip("+"), fed.IDN, fed.CITIZEN_SUB):
        assert secret not in texts
    assert len(spans) == 5


async def test_a_refused_lookup_span_says_so(fed: ObservedFederation) -> None:
    """A refused lookup is one span with outcome refused and its status code, and no calls."""
    await fed.start(["alpha"])
    exporter = InMemorySpanExporter()
    gateway = await fed.gateway(fed.config(tracing=TRACED), span_exporter=exporter)
    with pytest.raises(grpc.aio.AioRpcError):
        await fed.lookup(gateway, metadata=())
    (span,) = exporter.get_finished_spans()
    assert span.name == "onecert.lookup"
    assert (span.attributes or {})["onecert.outcome"] == "refused"
    assert (span.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[
        0
    ]


async def test_a_callers_trace_is_continued(fed: ObservedFederation) -> None:
    """A traceparent in the call's metadata makes the lookup span a child of the caller's."""
    await fed.start(["alpha"])
    exporter = InMemorySpanExporter()
    gateway = await fed.gateway(fed.config(tracing=TRACED), span_exporter=exporter)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    metadata = (*fed.metadata(), ("traceparent", f"00-{trace_id}-{parent}-01"))
    await fed.lookup(gateway, metadata=metadata)
    lookup = next(s for s in exporter.get_finished_spans() if s.name == "onecert.lookup")
    assert lookup.context is not None
    assert format(lookup.context.trace_id, "032x") == trace_id
    assert lookup.parent is not None
    assert format(lookup.parent.span_id, "016x") == parent


async def test_unsampled_lookups_record_nothing(fed: ObservedFederation) -> None:
    """With sample_ratio 0 no span is recorded, neither the lookup's nor its calls'."""
    await fed.start(["alpha"])
    exporter = InMemorySpanExporter()
    config = fed.config(tracing=TracingConfig(enabled=True, exporter="console", sample_ratio=0))
    gateway = await fed.gateway(config, span_exporter=exporter)
    await fed.lookup(gateway)
    assert exporter.get_finished_spans() == ()


async def test_tracing_alone_serves_no_metrics(fed: ObservedFederation) -> None:
    """Tracing on and metrics off: spans are recorded, no metrics port is opened."""
    await fed.start(["alpha"])
    exporter = InMemorySpanExporter()
    config = fed.config(tracing=TRACED, metrics=MetricsConfig())
    gateway = await fed.gateway(config, span_exporter=exporter)
    await fed.lookup(gateway)
    assert gateway.metrics_port is None
    assert gateway.telemetry is not None
    assert gateway.telemetry.metrics is None
    assert len(exporter.get_finished_spans()) == 3


def test_the_gateway_runs_without_opentelemetry_when_tracing_is_off() -> None:
    """With tracing off, building a gateway never imports OpenTelemetry."""
    script = textwrap.dedent(
        """
        import sys
        from onecert.gateway import GatewayServer, parse_config
        from onecert.gateway._metrics import Telemetry
        import onecert.gateway._fanout, onecert.gateway._lookup, onecert.gateway._delivery

        config = parse_config(
            {
                "gateway": {"dev_plaintext": True, "listen": "127.0.0.1:0"},
                "keys": {"warrant_key": "w.pem", "handle_key": "h.key"},
                "identity": {"issuers": [{"issuer": "i", "jwks": "j.json"}]},
                "carriers": [{"id": "cm", "address": "127.0.0.1:1", "plaintext": True}],
                "metrics": {"listen": "127.0.0.1:0"},
            },
            base_dir=".",
        )
        telemetry = Telemetry.from_config(config)
        assert telemetry is not None and telemetry.tracing is None
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
