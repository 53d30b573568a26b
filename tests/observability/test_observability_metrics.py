"""The Prometheus endpoint: a real gateway, real fakes, scraped over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
import pytest

from onecert.gateway import GatewayServer
from onecert.gateway._config import FanoutConfig, MetricsConfig
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from tests.observability.observability_support import ObservedFederation, Scrape

OUTCOMES = {
    gateway_pb2.CALL_OUTCOME_ANSWERED: "answered",
    gateway_pb2.CALL_OUTCOME_TIMED_OUT: "timed_out",
    gateway_pb2.CALL_OUTCOME_FAILED: "failed",
    gateway_pb2.CALL_OUTCOME_SKIPPED: "skipped",
}


def provider_outcomes(scrape: Scrape, provider_id: str) -> dict[str, float]:
    return {
        outcome: scrape.value("onecert_provider_calls_total", provider=provider_id, outcome=outcome)
        for outcome in OUTCOMES.values()
    }


async def test_a_lookup_shows_in_the_scrape(fed: ObservedFederation) -> None:
    """One lookup: counted ok and timed once, and each provider's outcome matches its result."""
    await fed.start(["alpha", "beta", "gamma"])
    fed.providers["beta"].behaviour.abort = grpc.StatusCode.UNAVAILABLE
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    summary = messages[-1].summary
    results = {m.result.provider_id: m.result for m in messages if m.HasField("result")}
    assert summary.total.asked == 3

    scrape = await fed.scrape(gateway)
    for outcome in ("ok", "refused", "error", "cancelled"):
        expected = 1.0 if outcome == "ok" else 0.0
        assert scrape.value("onecert_lookups_total", outcome=outcome) == expected
    assert scrape.value("onecert_lookup_duration_seconds_count") == 1
    assert 0 < scrape.value("onecert_lookup_duration_seconds_sum") < 10
    for provider_id, result in results.items():
        counts = provider_outcomes(scrape, provider_id)
        assert counts == {o: float(o == OUTCOMES[result.outcome]) for o in OUTCOMES.values()}
        assert (
            scrape.value("onecert_provider_call_duration_seconds_count", provider=provider_id) == 1
        )
    totals = {
        outcome: sum(provider_outcomes(scrape, p)[outcome] for p in results)
        for outcome in OUTCOMES.values()
    }
    assert totals == {
        "answered": summary.total.answered,
        "timed_out": summary.total.timed_out,
        "failed": summary.total.failed,
        "skipped": summary.total.skipped,
    }
    assert totals["failed"] == 1
    assert scrape.value("onecert_carrier_calls_total", carrier="cm", outcome="answered") == 1
    assert scrape.value("onecert_lookups_in_flight") == 0
    for provider_id in results:
        assert scrape.value("onecert_provider_breaker_state", provider=provider_id) == 0
    # Nothing personal in any label or value name.
    assert fed.NUMBER not in scrape.text
    assert fed.NUMBER.lstrip("+") not in scrape.text
    assert fed.CITIZEN_SUB not in scrape.text
    assert messages[0].query_id not in scrape.text


async def test_an_open_breaker_shows_and_its_calls_count_as_skipped(
    fed: ObservedFederation,
) -> None:
    """A provider whose breaker opened reads 2; its next call is skipped and not timed."""
    await fed.start(["alpha", "beta"])
    fed.providers["beta"].behaviour.abort = grpc.StatusCode.UNAVAILABLE
    gateway = await fed.gateway(
        fed.config(
            fanout=FanoutConfig(
                provider_deadline_s=2.0, breaker_failure_threshold=1, retry_max_attempts=1
            )
        )
    )
    await fed.lookup(gateway)
    scrape = await fed.scrape(gateway)
    assert scrape.value("onecert_provider_breaker_state", provider="beta") == 2
    assert scrape.value("onecert_provider_breaker_state", provider="alpha") == 0

    await fed.lookup(gateway)
    scrape = await fed.scrape(gateway)
    assert provider_outcomes(scrape, "beta") == {
        "answered": 0,
        "timed_out": 0,
        "failed": 1,
        "skipped": 1,
    }
    assert scrape.value("onecert_provider_call_duration_seconds_count", provider="beta") == 1
    assert scrape.value("onecert_provider_calls_total", provider="alpha", outcome="answered") == 2
    assert scrape.value("onecert_lookups_total", outcome="ok") == 2


async def test_refused_assertions_are_counted_by_reason(fed: ObservedFederation) -> None:
    """An expired assertion and a call without one: each counted under its reason, and the
    lookups as refused, not as errors."""
    await fed.start(["alpha"])
    gateway = await fed.gateway()
    expired = fed.metadata(now=time.time() - 600, lifetime=60)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fed.lookup(gateway, metadata=expired)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError):
        await fed.lookup(gateway, metadata=())

    scrape = await fed.scrape(gateway)
    assert scrape.value("onecert_identity_rejections_total", reason="expired") == 1
    assert scrape.value("onecert_identity_rejections_total", reason="missing") == 1
    assert scrape.value("onecert_identity_rejections_total", reason="replayed") == 0
    assert scrape.value("onecert_lookups_total", outcome="refused") == 2
    assert scrape.value("onecert_lookups_total", outcome="error") == 0
    # Refusals are not timed: the histogram is the latency of lookups that answered.
    assert scrape.value("onecert_lookup_duration_seconds_count") == 0
    assert scrape.value("onecert_provider_calls_total", provider="alpha", outcome="answered") == 0


async def test_a_lookup_without_any_carrier_is_an_error(fed: ObservedFederation) -> None:
    """A lookup no carrier answers ends UNAVAILABLE and is counted as an error."""
    await fed.start(["alpha"])
    config = fed.config()
    carrier = dataclasses.replace(config.carriers[0], address="127.0.0.1:1")
    gateway = await fed.gateway(dataclasses.replace(config, carriers=(carrier,)))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fed.lookup(gateway)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    scrape = await fed.scrape(gateway)
    assert scrape.value("onecert_lookups_total", outcome="error") == 1
    assert scrape.value("onecert_carrier_calls_total", carrier="cm", outcome="failed") == 1


async def test_a_lookup_the_caller_abandons_is_cancelled(fed: ObservedFederation) -> None:
    """A caller that cancels mid-lookup leaves it counted as cancelled, none in flight."""
    await fed.start(["alpha", "slow"])
    fed.providers["slow"].behaviour.hang = True
    gateway = await fed.gateway()
    call = fed.stub(gateway).Lookup(
        gateway_pb2.LookupRequest(), metadata=fed.metadata(), timeout=10
    )
    async for message in call:
        if message.HasField("result"):
            break
    call.cancel()
    for _ in range(100):
        scrape = await fed.scrape(gateway)
        if scrape.value("onecert_lookups_total", outcome="cancelled") == 1:
            break
        await asyncio.sleep(0.02)
    assert scrape.value("onecert_lookups_total", outcome="cancelled") == 1
    assert scrape.value("onecert_lookups_in_flight") == 0
    assert scrape.value("onecert_lookups_total", outcome="ok") == 0


async def test_outbox_shows_a_committed_ticket_its_provider_never_took(
    fed: ObservedFederation,
) -> None:
    """A ticket committed for a provider that is down is in the outbox, and its failed
    attempts are counted as retries."""
    await fed.start(["alpha"])
    fed.providers["alpha"].unbind_outcome = None
    gateway = await fed.gateway(fed.config(store=True))
    messages = await fed.lookup(gateway)
    handle = next(m.result for m in messages if m.HasField("result")).bindings[0].handle
    committed = datetime.now(UTC)
    answer = await fed.stub(gateway).Unbind(
        gateway_pb2.GatewayUnbindRequest(handle=handle), metadata=fed.metadata()
    )
    assert answer.created
    assert gateway.telemetry is not None
    assert gateway.telemetry.metrics is not None
    registry = gateway.telemetry.metrics.registry
    # Waited for on the registry itself (a scrape would read the outbox now, and cache it).
    for _ in range(200):
        retries = registry.get_sample_value(
            "onecert_unbind_delivery_attempts_total", {"outcome": "retry"}
        )
        if retries is not None and retries >= 2:
            break
        await asyncio.sleep(0.02)
    # The first scrape: the outbox is read now (later ones within seconds reuse it).
    scrape = await fed.scrape(gateway)
    assert scrape.value("onecert_outbox_items", kind="unbind_ticket") == 1
    age = scrape.value("onecert_outbox_oldest_age_seconds", kind="unbind_ticket")
    assert 0 <= age <= (datetime.now(UTC) - committed).total_seconds() + 1
    assert scrape.value("onecert_unbind_delivery_attempts_total", outcome="retry") >= 2
    assert scrape.value("onecert_unbind_delivery_attempts_total", outcome="done") == 0
    assert scrape.value("onecert_outbox_query_failures_total") == 0
    assert scrape.value("onecert_outbox_items", kind="notice_push") == 0
    assert scrape.value("onecert_outbox_oldest_age_seconds", kind="notice_push") == 0


async def test_notices_by_delivery_state(fed: ObservedFederation) -> None:
    """A notice pushed to providers that refuse it: its deliveries read as failed push
    deliveries, and the pushes are counted as failed."""
    await fed.start(["alpha", "beta"])
    gateway = await fed.gateway(fed.config(store=True))
    request = gateway_pb2.ReportNumberEventRequest(
        event_id="ev-1", msisdn=fed.NUMBER, type=gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED
    )
    request.effective_at.FromDatetime(datetime.now(UTC))
    answer = await fed.stub(gateway).ReportNumberEvent(
        request, metadata=(("x-onecert-dev-principal", "carrier:cm"),)
    )
    assert answer.providers == 2
    assert gateway.telemetry is not None
    assert gateway.telemetry.metrics is not None
    registry = gateway.telemetry.metrics.registry
    # Waited for on the registry itself (a scrape now would cache the outbox too early).
    for _ in range(200):
        if registry.get_sample_value("onecert_notice_pushes_total", {"outcome": "failed"}) == 2:
            break
        await asyncio.sleep(0.02)
    scrape = await fed.scrape(gateway)
    assert scrape.value("onecert_notice_pushes_total", outcome="failed") == 2
    assert scrape.value("onecert_notice_pushes_total", outcome="acknowledged") == 0
    assert scrape.value("onecert_notice_deliveries", mode="push", state="failed") == 2
    assert scrape.value("onecert_outbox_items", kind="notice_push") == 0


async def test_metrics_are_off_without_metrics_listen(fed: ObservedFederation) -> None:
    """Without metrics.listen the gateway serves no metrics and builds none."""
    await fed.start(["alpha"])
    gateway = await fed.gateway(fed.config(metrics=MetricsConfig()))
    assert gateway.metrics_port is None
    assert gateway.telemetry is None
    assert len(await fed.lookup(gateway)) == 3


async def test_a_taken_metrics_port_stops_the_start(fed: ObservedFederation) -> None:
    """A metrics port already in use fails the start, and the gRPC port is released."""
    await fed.start(["alpha"])
    first = await fed.gateway()
    taken = MetricsConfig(listen=f"127.0.0.1:{first.metrics_port}")
    second = GatewayServer(fed.config(metrics=taken))
    with pytest.raises(OSError, match="cannot serve metrics"):
        await second.start()
    with pytest.raises(RuntimeError):
        _ = second.port


async def test_each_gateway_has_its_own_registry(fed: ObservedFederation) -> None:
    """Two gateways in one process count their own lookups only."""
    await fed.start(["alpha"])
    one = await fed.gateway()
    two = await fed.gateway()
    await fed.lookup(one)
    assert (await fed.scrape(one)).value("onecert_lookups_total", outcome="ok") == 1
    assert (await fed.scrape(two)).value("onecert_lookups_total", outcome="ok") == 0
