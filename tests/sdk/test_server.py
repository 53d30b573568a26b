"""The runner: start, run, graceful shutdown, addresses and limits."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onecert.sdk import MemoryIdempotencyStore, Provider, Server
from onecert.sdk._server import listen_address
from onecert.sdk.testing import FakeGateway, InProcessServer, serve_in_process
from onecert.v1 import provider_pb2, provider_pb2_grpc
from tests.sdk.sdk_fakes import NUMBER, FakeForum, unbind_pb


async def test_graceful_shutdown_drains_in_flight_calls(
    provider: Provider, forum: FakeForum, gateway: FakeGateway
) -> None:
    """On shutdown health turns NOT_SERVING, the call in flight completes, new calls fail."""
    forum.delay = 0.5
    server = Server(provider, gateway_keys=gateway.keys, insecure=True, grace=5.0)
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="onecert.v1.BindingProvider")
        )
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stub = provider_pb2_grpc.BindingProviderStub(channel)
        in_flight = stub.ListBindings(
            provider_pb2.ListBindingsRequest(msisdn=NUMBER),
            metadata=gateway.metadata(NUMBER),
            timeout=10,
        )
        await asyncio.wait_for(forum.started.wait(), 5)
        stopping = asyncio.create_task(server.shutdown())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        response = await in_flight
        assert len(response.bindings) == 2
        await asyncio.wait_for(stopping, 5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Describe(provider_pb2.DescribeRequest(), timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not forum.cancelled.is_set()


async def test_shutdown_records_the_answer_of_an_unbind_whose_caller_left(
    provider: Provider, forum: FakeForum, gateway: FakeGateway
) -> None:
    """An unbind still running in the adapter after its caller gave up is finished and its
    answer recorded before shutdown returns, even with no grace for calls: a process that
    exits then keeps the answer, and a redelivery is answered without applying it again."""
    forum.delay = 0.6
    store = MemoryIdempotencyStore()
    server = Server(provider, gateway_keys=gateway.keys, insecure=True, idempotency=store)
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = provider_pb2_grpc.BindingProviderStub(channel)
        call = stub.Unbind(
            unbind_pb("t-left"), metadata=gateway.metadata(NUMBER, purpose="unbind"), timeout=10
        )
        await asyncio.wait_for(forum.started.wait(), 5)
        call.cancel()  # the gateway hung up (a dropped connection, a replica killed)
    await server.shutdown(0)
    assert not forum.cancelled.is_set()
    assert json.loads(await store.get("unbind:t-left") or "{}")["outcome"] == "done"


async def test_run_returns_after_shutdown(provider: Provider, gateway: FakeGateway) -> None:
    """run() serves until shutdown() is called elsewhere, then returns; shutdown is idempotent."""
    server = Server(provider, gateway_keys=gateway.keys, insecure=True, grace=0.1)
    runner = asyncio.create_task(server.run())
    while True:
        try:
            port = server.port
            break
        except RuntimeError:
            await asyncio.sleep(0.01)
    assert port > 0
    assert server.address == f"127.0.0.1:{port}"
    await asyncio.gather(server.shutdown(), server.shutdown())
    await asyncio.wait_for(runner, 5)
    await server.shutdown()


async def test_cancelling_run_shuts_down(provider: Provider, gateway: FakeGateway) -> None:
    """Cancelling the task that runs the server stops it gracefully."""
    server = Server(provider, gateway_keys=gateway.keys, insecure=True, grace=0.1)
    await server.start()
    runner = asyncio.create_task(server.run())
    await asyncio.sleep(0.05)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await provider_pb2_grpc.BindingProviderStub(channel).Describe(
                provider_pb2.DescribeRequest(), timeout=1
            )


def test_port_is_known_only_once_started(provider: Provider, gateway: FakeGateway) -> None:
    """Asking for the port of a server not started yet is an error, not 0."""
    server = Server(provider, gateway_keys=gateway.keys, insecure=True)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port


@pytest.mark.parametrize(
    ("listen", "expected"),
    [(50061, "[::]:50061"), ("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:7000", "[::1]:7000")],
)
def test_listen_address(listen: str | int, expected: str) -> None:
    """A port listens on every interface; an address is taken as given."""
    assert listen_address(listen) == expected


@pytest.mark.parametrize("listen", ["localhost", ":50061", "host:port", 70000, -1])
def test_bad_listen_address(listen: str | int) -> None:
    """A listen value that is neither a port nor host:port is refused."""
    with pytest.raises(ValueError, match=r"listen|port"):
        listen_address(listen)


async def test_address_in_use_is_a_clear_error(provider: Provider, gateway: FakeGateway) -> None:
    """Starting on a port that is taken fails with the address in the message."""
    async with serve_in_process(provider, gateway=gateway) as running:
        second = Server(provider, gateway_keys=gateway.keys, insecure=True, listen=running.address)
        with pytest.raises(ValueError, match="cannot listen"):
            await second.start()


async def test_oversized_request_is_refused(running: InProcessServer, forum: FakeForum) -> None:
    """A request larger than the limit is refused before it reaches the adapter."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.provider_stub().ReceiveEvent(
            provider_pb2.ReceiveEventRequest(set="x" * 100_000), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert forum.calls == []
