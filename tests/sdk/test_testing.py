"""onecert.sdk.testing runs an adapter through the SDK's checks without a network."""

from __future__ import annotations

import time

import grpc
import pytest

from onecert.sdk import Provider, UnbindOutcome
from onecert.sdk.testing import CallError, FakeGateway, ProviderEnvironment, serve_in_process
from onecert.v1 import provider_pb2
from tests.sdk.sdk_fakes import NUMBER, FakeForum


async def test_environment_applies_the_same_checks(provider: Provider, forum: FakeForum) -> None:
    """Without a network: bad numbers, missing and foreign warrants get the gateway's statuses."""
    env = ProviderEnvironment(provider)
    assert [b.account_ref for b in await env.list_bindings(NUMBER)] == ["u1", "u2"]
    with pytest.raises(CallError) as err:
        await env.list_bindings("+86 138")
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    for warrant in ("", FakeGateway(audience="example-forum").warrant(NUMBER)):
        with pytest.raises(CallError) as err:
            await env.list_bindings(NUMBER, warrant=warrant)
        assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    expired = env.gateway.warrant(NUMBER, now=time.time() - 300)
    with pytest.raises(CallError):
        await env.list_bindings(NUMBER, warrant=expired)
    assert forum.calls == ["list_bindings"]


async def test_environment_enforces_the_time_limit(provider: Provider, forum: FakeForum) -> None:
    """A time limit is the deadline: a slow adapter gets DEADLINE_EXCEEDED and is cancelled."""
    forum.delay = 5.0
    env = ProviderEnvironment(provider)
    with pytest.raises(CallError) as err:
        await env.list_bindings(NUMBER, time_limit=0.1)
    assert err.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert forum.cancelled.is_set()


async def test_environment_unbind(provider: Provider, forum: FakeForum) -> None:
    """unbind goes through the request checks and returns the adapter's result as a value."""
    env = ProviderEnvironment(provider)
    result = await env.unbind(NUMBER, "u1", reason="previous_holder_release")
    assert result.outcome is UnbindOutcome.DONE
    assert result.decided_at is not None
    assert forum.unbinds[0].reason.value == "previous_holder_release"
    with pytest.raises(CallError) as err:
        await env.unbind(NUMBER, "")
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_serve_in_process_gives_a_channel_and_warrants(provider: Provider) -> None:
    """serve_in_process serves on a free local port with a gateway whose warrants it trusts."""
    async with serve_in_process(provider) as running:
        assert running.address.startswith("127.0.0.1:")
        response = await running.provider_stub().ListBindings(
            provider_pb2.ListBindingsRequest(msisdn=NUMBER),
            metadata=running.metadata(NUMBER),
            timeout=5,
        )
        assert len(response.bindings) == 2
