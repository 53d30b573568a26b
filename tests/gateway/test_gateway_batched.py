"""Several provider results per stream message (``LookupRequest.batch_results``).

A caller that sets the flag receives the results that ended together in one
``ProviderResults`` message, the same results a caller without it receives
one message each; the SDK's client asks for it and yields the results one by
one, so its callers see no difference, and it reads a gateway that predates
the flag as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from onecert.gateway import _lookup as lookup_module
from onecert.gateway._config import FanoutConfig
from onecert.sdk.client import GatewayClient, LookupUpdate, Result, Started, Summary
from onecert.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from onecert.gateway import GatewayServer
    from onecert.gateway.testing import Federation

BATCHED = gateway_pb2.LookupRequest(batch_results=True)
# Providers taken out of service: their calls end at once, all in the same
# turn of the event loop, so their results are ready together.
QUARANTINED = ("q1", "q2", "q3", "q4")
QUARANTINE_DETAIL = "misconfigured: its Describe names another provider"


async def _federation(fed: Federation, **options: Any) -> GatewayServer:
    """Two numbers; "pay" holds accounts on both, "quiet" none, and the four
    providers of QUARANTINED are quarantined (each asked about both numbers)."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures("cm")})
    b = fed.binding
    await fed.provider(
        "pay",
        {
            fed.FORMER: [b("old", "zhangsan", fed.at(2014)), b("next", "lisi", fed.at(2019))],
            fed.CURRENT: [b("mine", "zhang.san", fed.at(2021)), b("prev", "x", fed.at(2015))],
        },
        name="Example Pay",
        category=common_pb2.PROVIDER_CATEGORY_PAYMENT,
    )
    await fed.provider("quiet", {})
    for provider_id in QUARANTINED:
        await fed.provider(provider_id, {})
    gateway = await fed.gateway(store="sqlite", **options)
    for provider_id in QUARANTINED:
        gateway.fanout.quarantine(provider_id, QUARANTINE_DETAIL)
    return gateway


def _kinds(messages: list[gateway_pb2.LookupResponse]) -> list[str]:
    return [str(m.WhichOneof("update")) for m in messages]


def _unrolled(messages: list[gateway_pb2.LookupResponse]) -> list[gateway_pb2.ProviderResult]:
    """Every provider result, from ``result`` and ``ProviderResults`` messages alike."""
    out: list[gateway_pb2.ProviderResult] = []
    for message in messages:
        if message.HasField("results"):
            out.extend(message.results.results)
        elif message.HasField("result"):
            out.append(message.result)
    return out


def _comparable(results: list[gateway_pb2.ProviderResult]) -> list[bytes]:
    """The results as a sorted multiset, without what differs between two lookups
    (the time taken, handles sealed afresh): their number is kept."""
    out = []
    for result in results:
        copy = gateway_pb2.ProviderResult()
        copy.CopyFrom(result)
        copy.ClearField("elapsed")
        handles = len(copy.release_handles)
        del copy.release_handles[:]
        copy.release_handles.extend(["*"] * handles)
        for binding in copy.bindings:
            binding.handle = "*" if binding.handle else ""
        out.append(copy.SerializeToString(deterministic=True))
    return sorted(out)


def _without_elapsed(summary: gateway_pb2.LookupSummary) -> bytes:
    copy = gateway_pb2.LookupSummary()
    copy.CopyFrom(summary)
    copy.ClearField("elapsed")
    return copy.SerializeToString(deterministic=True)


async def test_batched_lookup_receives_the_same_results_as_a_plain_one(fed: Federation) -> None:
    """With batch_results every result comes inside a ProviderResults message (none
    alone), and the results, LookupStarted's count and the summary are exactly those
    of a caller without the flag; LookupStarted is first and the summary last."""
    gateway = await _federation(fed)
    plain = await fed.lookup(gateway)
    batched = await fed.lookup(gateway, request=BATCHED)
    kinds = _kinds(batched)
    assert kinds[0] == "started"
    assert kinds[-1] == "summary"
    assert set(kinds[1:-1]) == {"results"}
    assert set(_kinds(plain)[1:-1]) == {"result"}
    assert all(m.results.results for m in batched if m.HasField("results"))
    assert _comparable(_unrolled(batched)) == _comparable(fed.results(plain))
    assert len(_unrolled(batched)) == batched[0].started.provider_calls == 12
    assert plain[0].started.provider_calls == 12
    assert _without_elapsed(batched[-1].summary) == _without_elapsed(plain[-1].summary)
    assert {m.query_id for m in batched} == {batched[0].query_id}


async def test_results_that_end_together_share_one_message(fed: Federation) -> None:
    """The calls that ended in the same turn (the quarantined providers', SKIPPED at
    once) reach a batching caller in one ProviderResults message; a caller without
    the flag receives them one message each."""
    gateway = await _federation(fed)
    batched = await fed.lookup(gateway, request=BATCHED)
    holding = [
        m.results.results
        for m in batched
        if m.HasField("results") and any(r.provider_id in QUARANTINED for r in m.results.results)
    ]
    assert len(holding) == 1
    together = [r for r in holding[0] if r.provider_id in QUARANTINED]
    assert len(together) == 2 * len(QUARANTINED)
    assert {(r.outcome, r.detail) for r in together} == {
        (gateway_pb2.CALL_OUTCOME_SKIPPED, QUARANTINE_DETAIL)
    }
    plain = await fed.lookup(gateway)
    assert len([r for r in fed.results(plain) if r.provider_id in QUARANTINED]) == 8


async def test_the_batch_window_gathers_results_that_end_apart(fed: Federation) -> None:
    """With a window longer than the whole fan-out, the results that end apart (the
    quarantined providers' at once, the others' when they answer) all come in one
    message (ProviderAnswers' own tests hold the window's edges)."""
    gateway = await _federation(fed, fanout=FanoutConfig(batch_window_s=1.0))
    batched = await fed.lookup(gateway, request=BATCHED)
    assert _kinds(batched) == ["started", "results", "summary"]
    assert len(batched[1].results.results) == 12


async def test_a_message_holds_at_most_the_capped_number_of_results(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More results ready together than a message may hold are split over several
    messages, none above the cap, none lost."""
    gateway = await _federation(fed)
    monkeypatch.setattr(lookup_module, "MAX_BATCHED_RESULTS", 3)
    batched = await fed.lookup(gateway, request=BATCHED)
    sizes = [len(m.results.results) for m in batched if m.HasField("results")]
    assert max(sizes) == 3
    assert sum(sizes) == 12
    assert _kinds(batched)[-1] == "summary"


def _result(provider_id: str, accounts: int, handles: int = 0) -> gateway_pb2.ProviderResult:
    return gateway_pb2.ProviderResult(
        provider_id=provider_id,
        bindings=[gateway_pb2.ShownBinding(handle="h") for _ in range(accounts)],
        release_handles=["r"] * handles,
    )


def test_a_message_holds_at_most_the_capped_accounts_past_its_first_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message takes another result only while its shown bindings and release
    handles stay within the cap in all; a result over the cap goes alone, so
    nothing is held back or dropped."""
    monkeypatch.setattr(lookup_module, "MAX_BATCHED_ACCOUNTS", 10)
    results = [
        _result("a", 6),
        _result("b", 2, handles=2),
        _result("c", 1),
        _result("d", 14),
        _result("e", 0),
        _result("f", 3),
    ]
    messages = list(lookup_module._batches("q", results))
    assert [[r.provider_id for r in m.results.results] for m in messages] == [
        ["a", "b"],
        ["c"],
        ["d"],
        ["e", "f"],
    ]
    assert {m.query_id for m in messages} == {"q"}


async def test_the_sdk_client_asks_for_batches_and_yields_the_same_results(
    fed: Federation,
) -> None:
    """The SDK's client yields one Result per provider and number, the same a raw
    caller without the flag receives, between Started and Summary."""
    gateway = await _federation(fed)
    plain = await fed.lookup(gateway)
    async with fed.client(gateway) as client:
        updates = [u async for u in client.lookup(fed.assertion(), timeout=10)]
    started, *results, summary = updates
    assert isinstance(started, Started)
    assert isinstance(summary, Summary)
    assert all(isinstance(r, Result) for r in results)

    def key(r: Result | gateway_pb2.ProviderResult) -> tuple[object, ...]:
        accounts = r.accounts if isinstance(r, Result) else r.bindings
        return (r.provider_id, r.msisdn, r.detail, len(accounts), r.previous_holder_count)

    assert sorted(key(r) for r in results if isinstance(r, Result)) == sorted(
        key(r) for r in fed.results(plain)
    )
    assert started.provider_calls == summary.total.asked == len(results) == 12


class _OlderGateway(gateway_pb2_grpc.GatewayServicer):
    """A gateway that predates batch_results: one ``result`` message per result."""

    def __init__(self) -> None:
        self.requests: list[gateway_pb2.LookupRequest] = []

    async def Lookup(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.LookupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[gateway_pb2.LookupResponse]:
        self.requests.append(request)
        yield gateway_pb2.LookupResponse(
            query_id="q", started=gateway_pb2.LookupStarted(provider_calls=2)
        )
        for provider_id in ("a", "b"):
            result = gateway_pb2.ProviderResult(provider_id=provider_id, msisdn="+8613800138000")
            yield gateway_pb2.LookupResponse(query_id="q", result=result)
        total = gateway_pb2.Coverage(asked=2, answered=2)
        yield gateway_pb2.LookupResponse(
            query_id="q", summary=gateway_pb2.LookupSummary(total=total)
        )


async def test_the_sdk_client_reads_a_gateway_that_sends_one_result_a_message(
    fed: Federation,
) -> None:
    """Asked for batches, a gateway that does not know the flag answers one result a
    message, and the client yields the same updates it always did."""
    older = _OlderGateway()  # type: ignore[abstract]  # the stubs mark every RPC abstract
    address = await fed.serve(gateway_pb2_grpc.add_GatewayServicer_to_server, older)
    async with GatewayClient(address, insecure=True) as client:
        updates: list[LookupUpdate] = [u async for u in client.lookup("token", timeout=10)]
    assert [type(u).__name__ for u in updates] == ["Started", "Result", "Result", "Summary"]
    assert [u.provider_id for u in updates if isinstance(u, Result)] == ["a", "b"]
    assert [r.batch_results for r in older.requests] == [True]
