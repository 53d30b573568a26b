"""Routed-out providers in one message per number (``RoutedOut``), for callers that ask for it.

A caller that sets ``LookupRequest.group_routed_out`` receives one
``RoutedOut`` per number instead of one SKIPPED result per routed-out
provider; a caller that does not receives exactly what it always did. The
summary accounts for every provider either way.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from onecert.gateway import GatewayServer
from onecert.gateway import _lookup as lookup_module
from onecert.gateway._config import MetricsConfig
from onecert.gateway.testing import CURRENT, FORMER, Federation, at, binding
from onecert.portal._i18n import translator
from onecert.portal._lookups import LookupState
from onecert.portal._sessions import Session
from onecert.portal._views import results_view
from onecert.sdk.client import Result, RoutedOut, Started, Summary
from onecert.v1 import gateway_pb2
from tests.routing.routing_support import (
    ELSEWHERE,
    ROUTED_OUT,
    audit_details,
    provider_client,
    publish,
    summary,
)

GROUPED = gateway_pb2.LookupRequest(group_routed_out=True)


async def _routed_federation(fed: Federation) -> GatewayServer:
    """The story's carrier; "holder" holds and publishes the current number, "other"
    publishes other numbers, "silent" publishes nothing."""
    await fed.carrier("cm")
    await fed.provider("holder", {CURRENT: [binding("h1", "lin", at(2021))]})
    await fed.provider("other", {})
    await fed.provider("silent", {})
    gateway = await fed.gateway(store="sqlite", metrics=MetricsConfig(listen="127.0.0.1:0"))
    async with provider_client(fed, gateway, "other") as other:
        await publish(other, ELSEWHERE)
    async with provider_client(fed, gateway, "holder") as holder:
        await publish(holder, [*ELSEWHERE[:50], CURRENT])
    return gateway


def _kinds(messages: list[gateway_pb2.LookupResponse]) -> list[str]:
    return [str(m.WhichOneof("update")) for m in messages]


def _coverage(s: gateway_pb2.LookupSummary) -> list[object]:
    """The summary without its timings."""
    copy = gateway_pb2.LookupSummary()
    copy.CopyFrom(s)
    copy.ClearField("elapsed")
    return [copy.SerializeToString(deterministic=True)]


async def test_grouped_lookup_sends_one_routed_out_per_number_and_the_same_summary(
    fed: Federation,
) -> None:
    """With group_routed_out, each number's routed-out providers come in one RoutedOut
    (ids, count, the routing detail), no SKIPPED result is sent for them, and the
    started count and the summary are those of a caller without the flag."""
    gateway = await _routed_federation(fed)
    plain = await fed.lookup(gateway)
    grouped = await fed.lookup(gateway, request=GROUPED)
    routed = {m.routed_out.msisdn: m.routed_out for m in grouped if m.HasField("routed_out")}
    assert set(routed) == {CURRENT, FORMER}
    assert sorted(routed[CURRENT].provider_ids) == ["other"]
    assert sorted(routed[FORMER].provider_ids) == ["holder", "other"]
    assert [o.count for o in (routed[CURRENT], routed[FORMER])] == [1, 2]
    assert {o.detail for o in routed.values()} == {ROUTED_OUT}
    assert not [r for r in fed.results(grouped) if r.detail == ROUTED_OUT]
    assert len([r for r in fed.results(plain) if r.detail == ROUTED_OUT]) == 3
    # Routed out is known at once: it comes right after LookupStarted.
    assert _kinds(grouped)[:3] == ["started", "routed_out", "routed_out"]
    assert grouped[0].started.provider_calls == plain[0].started.provider_calls == 6
    assert _coverage(summary(grouped)) == _coverage(summary(plain))
    total = summary(grouped).total
    assert (total.asked, total.answered, total.skipped) == (6, 3, 3)


async def test_past_the_listing_cap_only_the_count_is_sent(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A number with more routed-out providers than the gateway lists gets their count
    and no ids (the message stays small however many providers there are); one under
    the cap still lists them."""
    gateway = await _routed_federation(fed)
    monkeypatch.setattr(lookup_module, "MAX_LISTED_ROUTED_OUT", 1)
    grouped = await fed.lookup(gateway, request=GROUPED)
    routed = {m.routed_out.msisdn: m.routed_out for m in grouped if m.HasField("routed_out")}
    assert (routed[FORMER].count, list(routed[FORMER].provider_ids)) == (2, [])
    assert (routed[CURRENT].count, list(routed[CURRENT].provider_ids)) == (1, ["other"])
    assert summary(grouped).total.skipped == 3


async def test_grouped_lookup_is_audited_and_counted_like_the_plain_one(fed: Federation) -> None:
    """The lookup's audit row counts routed-out providers from RoutedOut as it did from
    SKIPPED results, and the metrics count routing decisions by reason, not by provider."""
    gateway = await _routed_federation(fed)
    await fed.lookup(gateway)
    await fed.lookup(gateway, request=GROUPED)
    lookups = await audit_details(gateway, "lookup")
    assert [(row["routed_out"], row["asked"]) for row in lookups[-2:]] == [(3, 3), (3, 3)]
    registry = _registry(gateway)
    value = registry.get_sample_value
    # Two lookups of two numbers: "other" ruled out 4 times, "holder" twice; "holder"
    # a candidate twice; "silent" asked 4 times for want of a filter.
    assert value("onecert_routing_providers_total", {"decision": "routed_out"}) == 6
    assert value("onecert_routing_providers_total", {"decision": "candidate"}) == 2
    assert value("onecert_routing_providers_total", {"decision": "no_filter"}) == 4
    assert value("onecert_routing_providers_total", {"decision": "stale"}) == 0


def _registry(gateway: GatewayServer) -> CollectorRegistry:
    telemetry = gateway.telemetry
    assert telemetry is not None
    assert telemetry.metrics is not None
    return telemetry.metrics.registry


async def test_the_sdk_client_and_the_portal_show_the_same_coverage(fed: Federation) -> None:
    """The SDK's portal client asks for the grouped form and yields RoutedOut; the
    portal counts those providers as accounted for, says how many were not asked,
    and lists none of them as a provider that could not be reached."""
    gateway = await _routed_federation(fed)
    state = LookupState()
    async with fed.client(gateway) as client:
        async for update in client.lookup(fed.assertion(), timeout=10):
            if isinstance(update, RoutedOut):
                state.routed_out.append(update)
            elif isinstance(update, Summary):
                state.summary = update
            elif isinstance(update, Started):
                state.started = update
            elif isinstance(update, Result):
                state.results.append(update)
    assert state.summary is not None
    assert state.started is not None
    assert state.routed_out_count() == 3
    assert state.accounted() == state.started.provider_calls == state.summary.total.asked
    t = translator("en")
    session = Session(id="s", csrf="c", created=0.0, last_seen=0.0)
    view = results_view(session, state, t)
    assert view.routed_out == 3
    assert not view.providers
    assert "Finished: 3 answers to 6 questions." in view.progress
    assert results_view(session, state, t, msisdn=FORMER).routed_out == 2


async def test_batched_results_combine_with_grouped_routed_out(fed: Federation) -> None:
    """With batch_results and group_routed_out, the RoutedOut messages still come right
    after LookupStarted, every result comes in a ProviderResults message, none for a
    routed-out provider, and the summary (last) is the plain caller's."""
    gateway = await _routed_federation(fed)
    plain = await fed.lookup(gateway)
    both = await fed.lookup(
        gateway, request=gateway_pb2.LookupRequest(group_routed_out=True, batch_results=True)
    )
    kinds = _kinds(both)
    assert kinds[:3] == ["started", "routed_out", "routed_out"]
    assert set(kinds[3:-1]) == {"results"}
    assert kinds[-1] == "summary"
    results = [r for m in both if m.HasField("results") for r in m.results.results]
    assert sorted((r.provider_id, r.msisdn) for r in results) == sorted(
        (r.provider_id, r.msisdn) for r in fed.results(plain) if r.detail != ROUTED_OUT
    )
    routed = sum(m.routed_out.count for m in both if m.HasField("routed_out"))
    assert both[0].started.provider_calls == len(results) + routed == 6
    assert _coverage(summary(both)) == _coverage(summary(plain))


async def test_batched_results_without_grouping_send_routed_out_results_together(
    fed: Federation,
) -> None:
    """With batch_results alone, the routed-out providers' SKIPPED results, all known at
    once, come in one ProviderResults message right after LookupStarted; the audit row
    counts them as routed out, as for a plain caller."""
    gateway = await _routed_federation(fed)
    await fed.lookup(gateway)
    batched = await fed.lookup(gateway, request=gateway_pb2.LookupRequest(batch_results=True))
    assert _kinds(batched)[:2] == ["started", "results"]
    first = batched[1].results.results
    assert sorted((r.provider_id, r.msisdn) for r in first) == sorted(
        [("other", CURRENT), ("holder", FORMER), ("other", FORMER)]
    )
    assert {r.detail for r in first} == {ROUTED_OUT}
    assert summary(batched).total.skipped == 3
    lookups = await audit_details(gateway, "lookup")
    assert [(row["routed_out"], row["asked"]) for row in lookups[-2:]] == [(3, 3), (3, 3)]
