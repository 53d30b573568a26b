"""Gateway.Lookup end to end: real gateway, real fakes, real keys."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from onecert.gateway._attribution import Attribution
from onecert.gateway._handles import HandleSealer
from onecert.v1 import common_pb2, gateway_pb2

if TYPE_CHECKING:
    from onecert.gateway import GatewayServer
    from onecert.gateway.testing import Federation

ANSWERED = gateway_pb2.CALL_OUTCOME_ANSWERED
TIMED_OUT = gateway_pb2.CALL_OUTCOME_TIMED_OUT
FAILED = gateway_pb2.CALL_OUTCOME_FAILED
SKIPPED = gateway_pb2.CALL_OUTCOME_SKIPPED


async def story(fed: Federation) -> None:
    """The classic case at one payment provider, plus a quiet social provider."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures("cm")})
    await fed.carrier("cu", {})
    b = fed.binding
    await fed.provider(
        "pay",
        {
            fed.FORMER: [
                b(
                    "acct-old-mine",
                    "zhangsan",
                    fed.at(2014, 5, 1),
                    kind=common_pb2.BINDING_KIND_PAYMENT,
                ),
                b("acct-next-holder", "lisi-secret", fed.at(2019, 2, 1)),
                b("acct-unknown-former", "wangwu-hidden", None),
            ],
            fed.CURRENT: [
                b("acct-mine", "zhang.san@example.com", fed.at(2021, 1, 1)),
                b("acct-prev-1", "previous-owner", fed.at(2016, 1, 1)),
                b("acct-prev-2", "unknown-when", None),
                b("acct-prev-3", "not-releasable", fed.at(2015, 1, 1), unbindable=False),
            ],
        },
        name="Example Pay",
        category=common_pb2.PROVIDER_CATEGORY_PAYMENT,
    )
    await fed.provider("social", {})


async def test_four_attribution_classes_end_to_end(fed: Federation) -> None:
    """MINE and LEFT_BEHIND are shown masked with handles, previous holders only
    counted with release handles, the next holder's bindings dropped."""
    await story(fed)
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)

    kinds = [m.WhichOneof("update") for m in messages]
    assert kinds[0] == "started"
    assert kinds[-1] == "summary"
    assert kinds[1:-1] == ["result"] * 4
    query_ids = {m.query_id for m in messages}
    assert len(query_ids) == 1
    assert len(query_ids.pop()) >= 16

    started = messages[0].started
    assert started.provider_calls == 4
    assert [(n.msisdn, n.current) for n in started.numbers] == [
        (fed.CURRENT, True),
        (fed.FORMER, False),
    ]
    assert {(c.carrier_id, c.outcome) for c in started.carriers} == {
        ("cm", ANSWERED),
        ("cu", ANSWERED),
    }

    former = fed.result_of(messages, "pay", fed.FORMER)
    assert former.outcome == ANSWERED
    assert former.provider_name == "Example Pay"
    assert former.category == common_pb2.PROVIDER_CATEGORY_PAYMENT
    assert [b.attribution for b in former.bindings] == [gateway_pb2.ATTRIBUTION_LEFT_BEHIND]
    left = former.bindings[0]
    assert left.dangerous
    assert left.display_name_masked == "zh***an"
    assert left.kind == common_pb2.BINDING_KIND_PAYMENT
    assert left.bound_at.ToDatetime().year == 2014
    assert left.unbindable
    assert left.handle
    assert former.previous_holder_count == 0
    assert not former.release_handles

    current = fed.result_of(messages, "pay", fed.CURRENT)
    assert [b.attribution for b in current.bindings] == [gateway_pb2.ATTRIBUTION_MINE]
    mine = current.bindings[0]
    assert not mine.dangerous
    assert mine.display_name_masked == "zh***an@e***.com"
    assert current.previous_holder_count == 3
    # One release handle per previous-holder account that can be released.
    assert len(current.release_handles) == 2

    sealer = HandleSealer(fed.keys.handle)
    claims = sealer.open(left.handle, sub=fed.CITIZEN_SUB)
    assert (claims.provider_id, claims.msisdn, claims.account_ref, claims.attribution) == (
        "pay",
        fed.FORMER,
        "acct-old-mine",
        Attribution.LEFT_BEHIND,
    )
    assert claims.query_id == messages[0].query_id
    assert sealer.open(mine.handle, sub=fed.CITIZEN_SUB).attribution is Attribution.MINE
    released = {sealer.open(h, sub=fed.CITIZEN_SUB).account_ref for h in current.release_handles}
    assert released == {"acct-prev-1", "acct-prev-2"}
    assert all(
        sealer.open(h, sub=fed.CITIZEN_SUB).attribution is Attribution.PREVIOUS_HOLDER
        for h in current.release_handles
    )

    summary = messages[-1].summary
    assert (summary.total.asked, summary.total.answered) == (4, 4)
    per_number = {n.msisdn: n for n in summary.numbers}
    assert (per_number[fed.FORMER].left_behind, per_number[fed.FORMER].mine) == (1, 0)
    assert per_number[fed.FORMER].previous_holder == 0
    assert (per_number[fed.CURRENT].mine, per_number[fed.CURRENT].previous_holder) == (1, 3)
    assert summary.elapsed.ToTimedelta().total_seconds() > 0


async def test_next_holders_accounts_never_appear(fed: Federation) -> None:
    """Nothing of a former number's later holder (name, ref, count) reaches the citizen,
    nor any previous holder's name."""
    await story(fed)
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    wire = b"".join(m.SerializeToString() for m in messages)
    for secret in (
        b"lisi",
        b"acct-next-holder",
        b"wangwu",
        b"acct-unknown-former",
        b"previous-owner",
        b"acct-prev",
        b"unknown-when",
    ):
        assert secret not in wire
    former = fed.result_of(messages, "pay", fed.FORMER)
    assert len(former.bindings) == 1
    assert former.previous_holder_count == 0


async def test_handles_open_only_for_the_citizen(fed: Federation) -> None:
    """A handle from a lookup is refused when opened for another citizen."""
    await story(fed)
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    handle = fed.result_of(messages, "pay", fed.FORMER).bindings[0].handle
    with pytest.raises(Exception, match="not issued to you"):
        HandleSealer(fed.keys.handle).open(handle, sub="someone-else")


async def test_every_call_carries_a_fresh_warrant_for_its_callee_and_number(
    fed: Federation,
) -> None:
    """Each carrier and provider call had its own verified warrant naming that callee,
    that number (or idn), purpose lookup, and the lookup's query id."""
    await story(fed)
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    query_id = messages[0].query_id
    for carrier, _ in fed.carriers:
        assert carrier.record.refused_warrants == 0
        assert [w.audience for w in carrier.record.warrants] == [carrier.id]
        assert carrier.record.targets == [fed.IDN]
        assert all(w.query_id == query_id for w in carrier.record.warrants)
    jtis: set[str] = set()
    for provider, _ in fed.providers:
        record = provider.record
        assert record.refused_warrants == 0
        assert sorted(record.targets) == sorted([fed.CURRENT, fed.FORMER])
        assert len(record.warrants) == 2
        for warrant in record.warrants:
            assert warrant.audience == provider.id
            assert warrant.purpose == "lookup"
            assert warrant.query_id == query_id
            assert warrant.expires_at - warrant.issued_at <= 60
            jtis.add(warrant.jti)
    assert len(jtis) == 4


async def test_hanging_provider_times_out_while_others_arrive_first(fed: Federation) -> None:
    """A provider that never answers ends TIMED_OUT after its deadline; the others'
    results arrive before it and the summary still comes last."""
    await story(fed)
    slow = await fed.provider("slow", {})
    slow.behaviour.hang = True
    gateway = await fed.gateway(provider_deadlines={"slow": 0.5})
    messages = await fed.lookup(gateway)
    order = [(r.provider_id, r.outcome) for r in fed.results(messages)]
    assert len(order) == 6
    assert [p for p, _ in order[-2:]] == ["slow", "slow"]
    assert all(outcome == ANSWERED for p, outcome in order[:-2])
    timed_out = fed.result_of(messages, "slow", fed.CURRENT)
    assert timed_out.outcome == TIMED_OUT
    assert "deadline" in timed_out.detail
    assert timed_out.elapsed.ToTimedelta().total_seconds() >= 0.4
    summary = messages[-1].summary
    assert (summary.total.asked, summary.total.answered, summary.total.timed_out) == (6, 4, 2)


async def test_callers_shorter_deadline_is_honoured(fed: Federation) -> None:
    """With a caller deadline shorter than the provider's, the hanging call is cut
    short in time for the summary to arrive before the caller gives up."""
    await story(fed)
    slow = await fed.provider("slow", {})
    slow.behaviour.hang = True
    gateway = await fed.gateway(provider_deadlines={"slow": 30.0})
    messages = await fed.lookup(gateway, deadline=1.5)
    assert messages[-1].WhichOneof("update") == "summary"
    assert fed.result_of(messages, "slow", fed.FORMER).outcome == TIMED_OUT


async def test_crashing_provider_fails_with_its_reason(fed: Federation) -> None:
    """A provider that raises or answers INTERNAL ends FAILED, with the status and reason."""
    await story(fed)
    crash = await fed.provider("crash", {})
    crash.behaviour.crash = "database exploded"
    broken = await fed.provider("broken", {})
    broken.behaviour.abort = grpc.StatusCode.INTERNAL
    broken.behaviour.abort_details = "index corrupted"
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    crashed = fed.result_of(messages, "crash", fed.CURRENT)
    assert crashed.outcome == FAILED
    assert crashed.detail.startswith("UNKNOWN")
    assert "database exploded" in crashed.detail
    internal = fed.result_of(messages, "broken", fed.FORMER)
    assert internal.outcome == FAILED
    assert internal.detail == "INTERNAL: index corrupted"
    assert messages[-1].summary.total.failed == 4


async def test_provider_error_details_never_carry_a_number(fed: Federation) -> None:
    """A provider that quotes a phone number in its error has it masked."""
    await story(fed)
    leaky = await fed.provider("leaky", {})
    leaky.behaviour.abort = grpc.StatusCode.INTERNAL
    leaky.behaviour.abort_details = f"no row for {fed.CURRENT}\nstack trace..."
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    detail = fed.result_of(messages, "leaky", fed.CURRENT).detail
    assert fed.CURRENT not in detail
    assert "stack trace" not in detail


async def test_unavailable_provider_is_retried_once_then_answers(fed: Federation) -> None:
    """UNAVAILABLE is retried within the budget, each attempt with a new warrant."""
    await story(fed)
    flaky = await fed.provider("flaky", {fed.CURRENT: [fed.binding("a1", "me", fed.at(2022))]})
    flaky.behaviour.fail_first = 1
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    assert all(r.outcome == ANSWERED for r in fed.results(messages) if r.provider_id == "flaky")
    assert flaky.record.calls == 3
    assert len({w.jti for w in flaky.record.warrants}) == 3


async def test_other_errors_are_not_retried(fed: Federation) -> None:
    """Only UNAVAILABLE is retried: INTERNAL and INVALID_ARGUMENT are asked once."""
    await story(fed)
    internal = await fed.provider("internal", {})
    internal.behaviour.abort = grpc.StatusCode.INTERNAL
    invalid = await fed.provider("invalid", {})
    invalid.behaviour.abort = grpc.StatusCode.INVALID_ARGUMENT
    gateway = await fed.gateway()
    await fed.lookup(gateway)
    assert internal.record.calls == 2
    assert invalid.record.calls == 2


async def test_down_provider_fails_as_unavailable(fed: Federation) -> None:
    """A provider nobody listens for ends FAILED with UNAVAILABLE, others unaffected."""
    await story(fed)
    gateway = await fed.gateway(
        providers=(
            *fed.config().providers,
            fed.config()
            .providers[0]
            .__class__(id="gone", address="127.0.0.1:1", plaintext=True, name="Gone"),
        )
    )
    messages = await fed.lookup(gateway)
    gone = fed.result_of(messages, "gone", fed.CURRENT)
    assert gone.outcome == FAILED
    assert gone.detail == "UNAVAILABLE: cannot connect (connection refused)"
    assert fed.result_of(messages, "pay", fed.CURRENT).outcome == ANSWERED


async def test_no_carrier_answering_is_unavailable(fed: Federation) -> None:
    """When no carrier answers, the lookup fails UNAVAILABLE and no provider is asked."""
    carrier = await fed.carrier("cm", {fed.IDN: fed.story_tenures("cm")})
    carrier.behaviour.abort = grpc.StatusCode.UNAVAILABLE
    provider = await fed.provider("pay", {})
    gateway = await fed.gateway()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fed.lookup(gateway)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no carrier answered" in (info.value.details() or "")
    assert provider.record.calls == 0


async def test_one_carrier_down_is_reported_and_others_used(fed: Federation) -> None:
    """A failing carrier is reported in LookupStarted and the summary; the lookup goes on."""
    await story(fed)
    down = await fed.carrier("ct", {})
    down.behaviour.abort = grpc.StatusCode.INTERNAL
    down.behaviour.abort_details = "maintenance"
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    carriers = {c.carrier_id: c for c in messages[0].started.carriers}
    assert carriers["ct"].outcome == FAILED
    assert carriers["ct"].detail == "INTERNAL: maintenance"
    assert {c.carrier_id for c in messages[-1].summary.carriers} == {"cm", "cu", "ct"}


async def test_carrier_cannot_speak_for_other_carriers_or_bad_numbers(fed: Federation) -> None:
    """Tenures naming another carrier, or a number that is not E.164, or a former
    state without an end, are ignored."""
    t = fed.tenure
    await fed.carrier(
        "cm",
        {
            fed.IDN: [
                t(fed.CURRENT, "cm", fed.CURRENT_FROM),
                t("+8613700137003", "other", fed.at(2019)),
                t("13700137004", "cm", fed.at(2019)),
                t(
                    "+8613700137005",
                    "cm",
                    fed.at(2019),
                    state=common_pb2.TENURE_STATE_RECYCLED,
                ),
            ]
        },
    )
    provider = await fed.provider("pay", {})
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    assert [n.msisdn for n in messages[0].started.numbers] == [fed.CURRENT]
    assert provider.record.targets == [fed.CURRENT]


async def test_citizen_without_numbers_gets_an_empty_lookup(fed: Federation) -> None:
    """No tenures: LookupStarted with no numbers and zero calls, then the summary."""
    await fed.carrier("cm", {})
    provider = await fed.provider("pay", {})
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway)
    assert [m.WhichOneof("update") for m in messages] == ["started", "summary"]
    assert messages[0].started.provider_calls == 0
    assert provider.record.calls == 0


async def test_cancelled_lookup_cancels_provider_calls(fed: Federation) -> None:
    """When the citizen cancels, the hanging provider sees its call cancelled."""
    await story(fed)
    slow = await fed.provider("slow", {})
    slow.behaviour.hang = True
    gateway = await fed.gateway(provider_deadlines={"slow": 30.0})
    call = fed.lookup_call(gateway, deadline=30)
    first = await call.read()
    assert isinstance(first, gateway_pb2.LookupResponse)
    assert first.WhichOneof("update") == "started"
    await asyncio.wait_for(slow.record.started.wait(), 5)
    call.cancel()
    await asyncio.wait_for(slow.record.cancelled.wait(), 5)
    # The gateway's slot is given back once the lookup is torn down.
    await _until_no_lookup_runs(gateway)


async def test_lookups_beyond_the_cap_are_resource_exhausted(fed: Federation) -> None:
    """With the cap reached, another lookup is refused RESOURCE_EXHAUSTED at once,
    without consuming its assertion."""
    await story(fed)
    slow = await fed.provider("slow", {})
    slow.behaviour.hang = True
    gateway = await fed.gateway(max_concurrent_lookups=1, provider_deadlines={"slow": 30.0})
    first = fed.lookup_call(gateway, deadline=30)
    await first.read()
    token = fed.assertion()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fed.lookup(gateway, assertion=token)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.cancel()
    await _until_no_lookup_runs(gateway)
    slow.behaviour.hang = False
    messages = await fed.lookup(gateway, assertion=token)
    assert messages[-1].WhichOneof("update") == "summary"


async def test_long_client_request_id_is_invalid(fed: Federation) -> None:
    """A client_request_id over 64 characters is INVALID_ARGUMENT, before any fan-out
    and without using up the assertion."""
    await story(fed)
    gateway = await fed.gateway()
    token = fed.assertion()
    call = fed.lookup_call(
        gateway, token, request=gateway_pb2.LookupRequest(client_request_id="x" * 65), deadline=5
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [m async for m in call]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fed.upstream_calls() == 0
    messages = await fed.lookup(gateway, assertion=token)
    assert messages[-1].WhichOneof("update") == "summary"


async def test_gateway_deadline_applies_when_the_caller_sets_none(fed: Federation) -> None:
    """Without a caller deadline, lookup_deadline_s bounds the lookup: a hanging
    provider is cut short and the summary still arrives."""
    await story(fed)
    slow = await fed.provider("slow", {})
    slow.behaviour.hang = True
    gateway = await fed.gateway(lookup_deadline_s=0.8, provider_deadlines={"slow": 30.0})
    messages = [m async for m in fed.lookup_call(gateway, deadline=None)]
    assert messages[-1].WhichOneof("update") == "summary"
    assert fed.result_of(messages, "slow", fed.CURRENT).outcome == TIMED_OUT
    assert messages[-1].summary.elapsed.ToTimedelta().total_seconds() < 5


async def _until_no_lookup_runs(gateway: GatewayServer) -> None:
    """Wait (a second at most) until the gateway has given back every lookup's slot."""
    for _ in range(100):
        if gateway.lookup.active_lookups == 0:
            return
        await asyncio.sleep(0.01)
    assert gateway.lookup.active_lookups == 0
