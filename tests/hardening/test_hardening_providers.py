"""Misbehaving providers (fakes on the generated stubs, real servers, raw sockets): each
is contained. The lookup completes, the provider is reported with its reason, the
well-behaved provider beside it gets exactly its usual result, and nothing of a previous
or next holder leaks."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onecert.gateway._config import FanoutConfig
from onecert.gateway._fanout import MAX_BINDINGS_PER_ANSWER
from onecert.gateway._masking import mask_display_name
from onecert.gateway.testing import FakeProvider
from onecert.sdk.client._portal import _update
from onecert.v1 import common_pb2, gateway_pb2, provider_pb2
from tests.hardening.hardening_net import JunkServer, ResettingProxy
from tests.hardening.hardening_support import Harness

ANSWERED = gateway_pb2.CALL_OUTCOME_ANSWERED
FAILED = gateway_pb2.CALL_OUTCOME_FAILED
SKIPPED = gateway_pb2.CALL_OUTCOME_SKIPPED
TIMED_OUT = gateway_pb2.CALL_OUTCOME_TIMED_OUT
LEFT_BEHIND = gateway_pb2.ATTRIBUTION_LEFT_BEHIND
MINE = gateway_pb2.ATTRIBUTION_MINE


async def _federation(hz: Harness, **config: Any) -> tuple[FakeProvider, FakeProvider]:
    """A carrier, the well-behaved provider "good" and the provider "bad" to break."""
    await hz.carrier()
    good = await hz.provider("good")
    bad = await hz.provider("bad")
    return good, bad


def _good_is_untouched(hz: Harness, messages: Sequence[gateway_pb2.LookupResponse]) -> None:
    former = hz.result_of(messages, "good", hz.FORMER)
    current = hz.result_of(messages, "good", hz.CURRENT)
    assert (former.outcome, former.detail) == (ANSWERED, "")
    assert (current.outcome, current.detail) == (ANSWERED, "")
    assert [(b.attribution, b.display_name_masked) for b in former.bindings] == [
        (LEFT_BEHIND, mask_display_name("linxiaoyu"))
    ]
    assert former.previous_holder_count == 0
    assert [(b.attribution, b.display_name_masked) for b in current.bindings] == [
        (MINE, mask_display_name("xiaoyu.lin"))
    ]
    assert current.previous_holder_count == 1
    assert all(b.handle for b in (*former.bindings, *current.bindings))


def _nothing_leaks(hz: Harness, messages: Sequence[gateway_pb2.LookupResponse]) -> None:
    wire = b"".join(m.SerializeToString() for m in messages)
    hidden = (hz.PREVIOUS_HOLDER_NAME, hz.NEXT_HOLDER_NAME, "someone_else", hz.OTHER_NUMBER)
    for secret in hidden:
        assert secret.encode() not in wire, secret
    masks = {mask_display_name(hz.PREVIOUS_HOLDER_NAME), mask_display_name(hz.NEXT_HOLDER_NAME)}
    shown = {b.display_name_masked for r in hz.results(messages) for b in r.bindings}
    assert not shown & masks
    for result in hz.results(messages):
        # Reasons reach the citizen: never a phone number in them.
        assert not re.search(r"\d{8,}", result.detail), result.detail


def _summary(messages: Sequence[gateway_pb2.LookupResponse]) -> gateway_pb2.LookupSummary:
    assert messages[-1].WhichOneof("update") == "summary"
    return messages[-1].summary


def _bad(
    hz: Harness, messages: Sequence[gateway_pb2.LookupResponse], provider: str = "bad"
) -> list[gateway_pb2.ProviderResult]:
    return [hz.result_of(messages, provider, n) for n in (hz.FORMER, hz.CURRENT)]


async def test_hanging_provider_times_out_alone(hz: Harness) -> None:
    """A provider that never answers is TIMED_OUT at its deadline with the reason;
    the other provider's results arrive first, unchanged."""
    _good, bad = await _federation(hz)
    bad.behaviour.hang = True
    gateway = await hz.gateway(fanout=FanoutConfig(provider_deadline_s=0.5, carrier_deadline_s=2.0))
    messages = await hz.lookup(gateway)
    _good_is_untouched(hz, messages)
    for result in _bad(hz, messages):
        assert result.outcome == TIMED_OUT
        assert "deadline" in result.detail
    kinds = [(r.provider_id, r.outcome) for r in hz.results(messages)]
    assert kinds[:2] == [("good", ANSWERED), ("good", ANSWERED)]
    assert _summary(messages).total.timed_out == 2
    _nothing_leaks(hz, messages)


async def test_connection_reset_mid_call_fails_alone(
    hz: Harness, network: list[ResettingProxy | JunkServer]
) -> None:
    """A provider whose connection is reset (TCP RST) while the call runs is FAILED
    with UNAVAILABLE after its retry; the other provider is untouched."""
    _good, bad = await _federation(hz)
    proxy = ResettingProxy(hz.address_of("bad"))
    network.append(proxy)
    hz.reroute("bad", await proxy.start())
    bad.behaviour.hang = True
    bad.on_call = proxy.reset
    gateway = await hz.gateway()
    messages = await hz.lookup(gateway)
    _good_is_untouched(hz, messages)
    for result in _bad(hz, messages):
        assert result.outcome == FAILED
        assert result.detail.startswith("UNAVAILABLE"), result.detail
    assert proxy.resets >= 1
    assert bad.record.calls >= 2
    _nothing_leaks(hz, messages)


JUNK = {
    "garbage bytes": b"\x00\xff\xfe garbage +8613800138001 \r\n\x1b[2J" * 40,
    "an HTTP/1.1 server": (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 28\r\n"
        b"Connection: close\r\n\r\ncall me on +8613900139002 !!"
    ),
    "silence, then a hang-up": b"",
}


@pytest.mark.parametrize("reply", list(JUNK), ids=list(JUNK))
async def test_non_grpc_server_on_the_port_fails_alone(
    hz: Harness, network: list[ResettingProxy | JunkServer], reply: str
) -> None:
    """A port answered by something that is not gRPC fails that provider with a
    short reason holding none of the junk (no number); the lookup completes."""
    await hz.carrier()
    await hz.provider("good")
    junk = JunkServer(JUNK[reply])
    network.append(junk)
    hz.add_provider("bad", await junk.start())
    gateway = await hz.gateway()
    messages = await hz.lookup(gateway)
    _good_is_untouched(hz, messages)
    for result in _bad(hz, messages):
        assert result.outcome in (FAILED, TIMED_OUT)
        assert result.detail
        assert "garbage" not in result.detail
        assert "call me" not in result.detail
    assert junk.connections >= 1
    _nothing_leaks(hz, messages)


async def test_answer_over_the_size_limit_fails_alone(hz: Harness) -> None:
    """An answer larger than the gateway's message limit is refused on receipt:
    FAILED with RESOURCE_EXHAUSTED; the other provider is untouched."""
    _good, bad = await _federation(hz)
    big = [hz.binding(f"acct-{i}", "x" * 200, hz.at(2021, 3)) for i in range(400)]
    bad.answer = lambda msisdn: provider_pb2.ListBindingsResponse(bindings=big)
    gateway = await hz.gateway(max_message_bytes=64 * 1024)
    messages = await hz.lookup(gateway)
    _good_is_untouched(hz, messages)
    for result in _bad(hz, messages):
        assert result.outcome == FAILED
        assert result.detail.startswith("RESOURCE_EXHAUSTED"), result.detail
        assert not result.bindings
    _nothing_leaks(hz, messages)


async def test_unknown_enum_values_are_contained(hz: Harness) -> None:
    """A binding kind the contract does not define (99) neither breaks the lookup nor
    the SDK client reading it; the binding is shown, its kind unknown."""
    _good, bad = await _federation(hz)
    bad.bindings = {
        hz.CURRENT: [
            hz.binding(
                "odd", "xiaoyu.lin", hz.at(2021, 3), kind=common_pb2.BindingKind.ValueType(99)
            )
        ]
    }
    gateway = await hz.gateway()
    messages = await hz.lookup(gateway)
    _good_is_untouched(hz, messages)
    current = hz.result_of(messages, "bad", hz.CURRENT)
    assert current.outcome == ANSWERED
    (shown,) = current.bindings
    assert shown.attribution == MINE
    assert shown.handle
    # The SDK's client turns every message into its own types without error.
    updates = [_update(m) for m in messages]
    assert all(u is not None for u in updates)
    _nothing_leaks(hz, messages)


async def test_bound_at_in_the_future_reveals_nothing(hz: Harness) -> None:
    """``bound_at`` in the future, or beyond what a timestamp can hold, proves nothing:
    on the current number the account is a previous holder's (counted, never named);
    on the former number it is neither shown nor counted."""
    _good, bad = await _federation(hz)
    future = datetime.now(UTC) + timedelta(days=365)
    absurd = provider_pb2.Binding(account_ref="absurd", display_name=hz.PREVIOUS_HOLDER_NAME)
    absurd.bound_at.seconds = 2**40  # past year 9999: no datetime can hold it
    bad.bindings = {
        hz.CURRENT: [hz.binding("fut", hz.PREVIOUS_HOLDER_NAME, future), absurd],
        hz.FORMER: [hz.binding("fut2", hz.NEXT_HOLDER_NAME, future)],
    }
    gateway = await hz.gateway()
    messages = await hz.lookup(gateway)
    _good_is_untouched(hz, messages)
    former, current = _bad(hz, messages)
    assert (current.outcome, len(current.bindings), current.previous_holder_count) == (
        ANSWERED,
        0,
        2,
    )
    assert (former.outcome, len(former.bindings), former.previous_holder_count) == (ANSWERED, 0, 0)
    _nothing_leaks(hz, messages)


async def test_duplicated_account_refs_are_merged_and_reported(hz: Harness) -> None:
    """The same account listed several times is shown once; copies that disagree
    about when it was bound prove nothing, so its details are hidden (a previous
    holder's on the current number, dropped on the former one); the reason says so."""
    _good, bad = await _federation(hz)
    mine = hz.binding("dup-mine", "xiaoyu.lin", hz.at(2021, 3))
    bad.bindings = {
        hz.CURRENT: [
            mine,
            mine,
            mine,
            hz.binding("dup-conflict", "xiaoyu.lin", hz.at(2021, 4)),
            hz.binding("dup-conflict", hz.PREVIOUS_HOLDER_NAME, hz.at(2019, 4)),
        ],
        hz.FORMER: [
            hz.binding("dup-former", "linxiaoyu", hz.at(2014, 4)),
            hz.binding("dup-former", hz.NEXT_HOLDER_NAME, hz.at(2019, 4)),
        ],
    }
    gateway = await hz.gateway()
    messages = await hz.lookup(gateway)
    _good_is_untouched(hz, messages)
    former, current = _bad(hz, messages)
    assert current.outcome == ANSWERED
    assert [b.display_name_masked for b in current.bindings] == [mask_display_name("xiaoyu.lin")]
    assert current.previous_holder_count == 1
    assert "duplicate" in current.detail
    assert (len(former.bindings), former.previous_holder_count) == (0, 0)
    assert "duplicate" in former.detail
    summary = _summary(messages)
    assert summary.total.answered == 4
    _nothing_leaks(hz, messages)


async def test_tens_of_thousands_of_bindings_are_capped_and_reported(hz: Harness) -> None:
    """20,000 bindings on one number are cut to the gateway's cap, reported as
    truncated; the lookup completes and the other provider is untouched."""
    _good, bad = await _federation(hz)
    many = 20_000
    bad.bindings = {
        hz.CURRENT: [hz.binding(f"m-{i}", f"user{i}", hz.at(2021, 3)) for i in range(many)],
        hz.FORMER: [hz.binding(f"n-{i}", hz.NEXT_HOLDER_NAME, hz.at(2019, 3)) for i in range(many)],
    }
    gateway = await hz.gateway()
    messages = await asyncio.wait_for(hz.lookup(gateway, deadline=30), 45)
    _good_is_untouched(hz, messages)
    former, current = _bad(hz, messages)
    assert current.outcome == ANSWERED
    assert len(current.bindings) == MAX_BINDINGS_PER_ANSWER
    assert "truncated" in current.detail
    assert f"{many}" in current.detail.replace(",", "")
    assert (former.outcome, len(former.bindings), former.previous_holder_count) == (ANSWERED, 0, 0)
    assert "truncated" in former.detail
    assert _summary(messages).numbers
    _nothing_leaks(hz, messages)


async def test_provider_at_another_providers_address_is_quarantined(
    hz: Harness,
) -> None:
    """A provider configured at another provider's address (a swapped port) is caught by
    the gateway's start-up Describe check: its calls end SKIPPED as misconfigured, no
    warrant for it reaches the other provider, and the other provider's accounts are
    never shown under its name."""
    await hz.carrier()
    good = await hz.provider("good")
    hz.add_provider("misrouted", hz.address_of("good"))
    gateway = await hz.gateway()
    assert await gateway.describe_check.wait() == 1
    messages = await hz.lookup(gateway)
    _good_is_untouched(hz, messages)
    for result in _bad(hz, messages, "misrouted"):
        assert result.outcome == SKIPPED
        assert result.detail == "misconfigured: its Describe names provider 'good'"
        assert not result.bindings
        assert result.previous_holder_count == 0
    assert good.record.refused_warrants == 0
    _nothing_leaks(hz, messages)


async def test_carrier_with_unknown_states_is_contained(hz: Harness) -> None:
    """A carrier tenure with an unknown state (99) is ignored; the other tenure is used."""
    odd = hz.tenure(hz.FORMER, "cm", hz.at(2012, 3), hz.at(2017, 9))
    odd.state = common_pb2.TenureState.ValueType(99)
    await hz.carrier("cm", {hz.IDN: [hz.tenure(hz.CURRENT, "cm", hz.CURRENT_FROM), odd]})
    await hz.provider("good")
    gateway = await hz.gateway()
    messages = await hz.lookup(gateway)
    assert [n.msisdn for n in messages[0].started.numbers] == [hz.CURRENT]
    assert _summary(messages).total.answered == 1
    _nothing_leaks(hz, messages)
