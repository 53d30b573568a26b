"""A provider whose Describe claims another provider's id (or another contract) is found
out when the gateway asks, and is no longer asked: its calls end SKIPPED with the
reason, and the other providers are untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from onecert.gateway._channels import ChannelPool
from onecert.gateway._config import ProviderConfig
from onecert.gateway._describe import (
    DescribeCheck,
    DescribeStatus,
    check_providers,
    judge_describe,
    quarantine_misconfigured,
)
from onecert.gateway.testing import FakeProvider
from onecert.sdk._server import free_port
from onecert.v1 import gateway_pb2, provider_pb2, provider_pb2_grpc
from tests.hardening.hardening_net import JunkServer, ResettingProxy, SilentServer
from tests.hardening.hardening_support import Harness


@pytest.fixture
async def channels() -> AsyncIterator[ChannelPool]:
    pool = ChannelPool(upstream_tls=None, max_message_bytes=4 * 1024 * 1024)
    try:
        yield pool
    finally:
        await pool.close()


async def test_describe_verdicts(
    hz: Harness, channels: ChannelPool, network: list[ResettingProxy | JunkServer]
) -> None:
    """Describe naming the configured id is OK; another id, or another contract, is
    MISCONFIGURED with a reason naming what it claimed; no answer is UNREACHABLE."""
    good = await hz.provider("good")
    other = await hz.provider("other")
    other.contract_version = "onecert.v0"
    junk = JunkServer(b"not grpc")
    network.append(junk)
    junk_address = await junk.start()
    providers = [
        ProviderConfig(id="good", address=hz.address_of("good"), plaintext=True),
        # Configured at the good provider's address: it answers as "good".
        ProviderConfig(id="swapped", address=hz.address_of("good"), plaintext=True),
        ProviderConfig(id="other", address=hz.address_of("other"), plaintext=True),
        ProviderConfig(id="junk", address=junk_address, plaintext=True),
    ]
    verdicts = await check_providers(channels, providers, deadline=2.0)
    assert verdicts["good"].status is DescribeStatus.OK
    assert verdicts["swapped"].status is DescribeStatus.MISCONFIGURED
    assert "'good'" in verdicts["swapped"].reason
    assert verdicts["other"].status is DescribeStatus.MISCONFIGURED
    assert "'onecert.v0'" in verdicts["other"].reason
    assert verdicts["junk"].status is DescribeStatus.UNREACHABLE
    assert good.describe_calls == 2
    assert good.record.calls == 0


def test_claimed_text_is_quoted_only_when_plain() -> None:
    """What a provider claims is quoted only as a plain token: anything else (a phone
    number in a name, control characters) is never repeated."""
    config = ProviderConfig(id="pay", address="127.0.0.1:1", plaintext=True)
    for claimed in ("+8613800138001 call me", "pay\n", "PAY", "x" * 65, ""):
        verdict = judge_describe(
            config,
            provider_pb2.DescribeResponse(provider_id=claimed, contract_version="onecert.v1"),
        )
        assert verdict.status is DescribeStatus.MISCONFIGURED
        assert "an invalid value" in verdict.reason
        if claimed:
            assert claimed not in verdict.reason


async def test_misconfigured_provider_is_skipped_with_the_reason(
    hz: Harness, channels: ChannelPool
) -> None:
    """Once its Describe is found to name another provider, the lookup no longer asks
    the misconfigured provider: SKIPPED with the reason; the real one answers."""
    await hz.carrier()
    good = await hz.provider("good")
    hz.add_provider("swapped", hz.address_of("good"))
    gateway = await hz.gateway()
    verdicts = await check_providers(channels, gateway.config.providers)
    assert quarantine_misconfigured(gateway.fanout, verdicts) == 1
    messages = await hz.lookup(gateway)
    for number in (hz.FORMER, hz.CURRENT):
        skipped = hz.result_of(messages, "swapped", number)
        assert skipped.outcome == gateway_pb2.CALL_OUTCOME_SKIPPED
        assert skipped.detail.startswith("misconfigured: its Describe names provider 'good'")
        assert hz.result_of(messages, "good", number).outcome == gateway_pb2.CALL_OUTCOME_ANSWERED
    assert messages[-1].summary.total.skipped == 2
    # The misconfigured provider was never sent a warrant.
    assert good.record.refused_warrants == 0
    assert good.record.calls == 2


async def test_the_check_connects_the_lookups_channel(hz: Harness, channels: ChannelPool) -> None:
    """The check asks over the pooled channel lookups use: once it answered, that
    channel is connected, and the first lookup makes no second connection."""
    await hz.provider("good")
    address = hz.address_of("good")
    provider = ProviderConfig(id="good", address=address, plaintext=True)
    verdicts = await check_providers(channels, [provider], deadline=2.0)
    assert verdicts["good"].status is DescribeStatus.OK
    channel = channels.get(address, plaintext=True)
    assert channel.get_state() is grpc.ChannelConnectivity.READY


async def test_a_provider_down_at_the_check_is_answered_as_soon_as_it_is_up(
    hz: Harness, channels: ChannelPool
) -> None:
    """A channel the check found unreachable is closed, not left in gRPC's reconnect
    backoff: a provider that comes up right after answers the very next call."""
    address = f"127.0.0.1:{free_port()}"
    late = ProviderConfig(id="late", address=address, plaintext=True)
    verdicts = await check_providers(channels, [late], deadline=1.0)
    assert verdicts["late"].status is DescribeStatus.UNREACHABLE
    server = grpc.aio.server()
    provider_pb2_grpc.add_BindingProviderServicer_to_server(
        FakeProvider("late", hz.keys, {}), server
    )
    server.add_insecure_port(address)
    await server.start()
    try:
        stub = provider_pb2_grpc.BindingProviderStub(channels.get(address, plaintext=True))
        response = await stub.Describe(provider_pb2.DescribeRequest(), timeout=0.5)
    finally:
        await server.stop(0)
    assert response.provider_id == "late"


async def test_a_provider_that_left_while_waiting_for_its_check_is_not_asked(
    hz: Harness, channels: ChannelPool, network: list[ResettingProxy | JunkServer | SilentServer]
) -> None:
    """A provider that leaves the registry while its check waits for a turn is skipped
    when the turn comes: no verdict, and no channel to it left in the pool (the
    registry change has already retired its channel; one opened after would outlive
    it)."""
    hung = SilentServer()
    network.append(hung)
    hung_address = await hung.start()
    stays = ProviderConfig(id="stays", address=hung_address, plaintext=True)
    left = await hz.provider("leaves")  # up and answering: its channel would stay
    leaves = ProviderConfig(id="leaves", address=hz.address_of("leaves"), plaintext=True)
    registered = {"stays", "leaves"}

    async def leave_once_the_check_waits() -> None:
        await hung.accepted.wait()  # "stays" holds the only slot until its deadline
        registered.discard("leaves")
        assert channels.retire({(hung_address, True)}, grace=0) == 0

    leaving = asyncio.create_task(leave_once_the_check_waits())
    verdicts = await check_providers(
        channels,
        [stays, leaves],
        deadline=0.5,
        concurrency=1,
        current=lambda p: p.id in registered,
    )
    await leaving
    assert set(verdicts) == {"stays"}
    assert left.describe_calls == 0
    assert verdicts["stays"].status is DescribeStatus.UNREACHABLE
    # Nothing pooled for a departed provider: the next registry change retires nothing.
    assert channels.retire(set(), grace=0) == 0


async def test_the_gateways_check_skips_a_provider_that_left_before_its_turn(
    hz: Harness, channels: ChannelPool
) -> None:
    """The gateway's check follows the registry: of two providers that join, the one
    that leaves again before the background check runs is not asked, and no channel
    to it is opened; the one that stays is asked."""
    await hz.carrier()
    kept, left = await hz.provider("stays"), await hz.provider("leaves")
    gateway = await hz.gateway()
    await gateway.describe_check.idle()
    asked_before = (kept.describe_calls, left.describe_calls)
    stays, leaves = (
        ProviderConfig(id=p, address=hz.address_of(p), plaintext=True) for p in ("stays", "leaves")
    )
    check = DescribeCheck(channels=channels, providers=[], fanout=gateway.fanout, deadline=2.0)
    await check.start()
    check.providers_changed([stays, leaves], [stays, leaves])  # checked in the background
    check.providers_changed([stays], [])  # one leaves before that check's turn
    await check.idle()
    assert (kept.describe_calls, left.describe_calls) == (asked_before[0] + 1, asked_before[1])
    assert channels.retire({(hz.address_of("stays"), True)}, grace=0) == 0
