"""The server around Lookup: health, reflection, shutdown, logs, TLS."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from onecert.gateway._server import serve
from onecert.sdk._logging import configure_logging
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from onecert.gateway import GatewayServer
    from onecert.gateway.testing import Federation

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_serving_then_not_serving_on_shutdown(fed: Federation) -> None:
    """Health reports SERVING for the Gateway service, and a watcher sees NOT_SERVING
    when the gateway begins to shut down."""
    await fed.carrier("cm", {})
    gateway = await fed.gateway()
    health = health_pb2_grpc.HealthStub(fed.channel(gateway))
    check = await health.Check(health_pb2.HealthCheckRequest(service="onecert.v1.Gateway"))
    assert check.status == SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await watch.read()
    assert isinstance(first, health_pb2.HealthCheckResponse)
    assert first.status == SERVING
    stopping = asyncio.create_task(gateway.stop(grace=0.5))
    second = await watch.read()
    assert isinstance(second, health_pb2.HealthCheckResponse)
    assert second.status == NOT_SERVING
    await stopping


async def test_reflection_lists_the_gateway(fed: Federation) -> None:
    """Server reflection is on, so grpcurl can list and describe the Gateway service."""
    await fed.carrier("cm", {})
    gateway = await fed.gateway()
    stub = reflection_pb2_grpc.ServerReflectionStub(fed.channel(gateway))
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    names = {s.name for s in response.list_services_response.service}
    assert {"onecert.v1.Gateway", "grpc.health.v1.Health"} <= names


async def test_other_gateway_rpcs_answer_unimplemented(fed: Federation) -> None:
    """RPCs this gateway does not serve yet say so with UNIMPLEMENTED."""
    await fed.carrier("cm", {})
    gateway = await fed.gateway()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fed.stub(gateway).GetUnbind(gateway_pb2.GetUnbindRequest(ticket_id="t"))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_graceful_shutdown_lets_running_lookups_finish(fed: Federation) -> None:
    """A lookup in progress when shutdown begins still gets its results and summary;
    a lookup started after is refused."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    slow = await fed.provider("slow", {})
    slow.behaviour.latency = 0.4
    gateway = await fed.gateway()
    call = fed.lookup_call(gateway)
    first = await call.read()
    assert isinstance(first, gateway_pb2.LookupResponse)
    await asyncio.wait_for(slow.record.started.wait(), 5)
    stopping = asyncio.create_task(gateway.stop(grace=5))
    rest = []
    while (message := await call.read()) is not grpc.aio.EOF:
        assert isinstance(message, gateway_pb2.LookupResponse)
        rest.append(message)
    assert [m.WhichOneof("update") for m in rest] == ["result", "result", "summary"]
    assert rest[-1].summary.total.answered == 2
    await stopping
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fed.lookup(gateway, deadline=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_every_log_line_of_a_lookup_has_its_query_id_and_no_number(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    """With JSON logs, every line a lookup causes carries the lookup's query id,
    and no line holds a raw msisdn, the idn or the citizen's sub."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    await fed.provider("pay", {fed.CURRENT: [fed.binding("a", "zhangsan", fed.at(2021))]})
    broken = await fed.provider("broken", {})
    broken.behaviour.abort = grpc.StatusCode.INTERNAL
    broken.behaviour.abort_details = f"no row for {fed.CURRENT}"
    gateway = await fed.gateway()
    capsys.readouterr()
    configure_logging(json=True, level="debug")
    messages = await fed.lookup(gateway)
    await gateway.stop(0)
    err = capsys.readouterr().err
    lines: list[dict[str, Any]] = [json.loads(line) for line in err.splitlines() if line]
    in_call = [line for line in lines if "rpc" in line]
    events = {line["event"] for line in in_call}
    assert {"lookup.identified", "lookup.started", "lookup.finished", "rpc.finished"} <= events
    assert "provider.unanswered" in events
    assert {line["query_id"] for line in in_call} == {messages[0].query_id}
    for secret in (fed.CURRENT, fed.FORMER, fed.CURRENT[1:], fed.IDN, fed.CITIZEN_SUB):
        assert secret not in err


async def test_a_refused_call_is_logged_once_at_the_boundary(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lookup refused by the service (no assertion) is answered by the boundary: one
    ``rpc.refused`` line with the status and the reason, then ``rpc.finished`` with
    the same status, both under the call's query id."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    gateway = await fed.gateway()
    capsys.readouterr()
    configure_logging(json=True, level="info")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fed.lookup(gateway, metadata=())
    await gateway.stop(0)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    in_call = [line for line in lines if line.get("rpc") == "Lookup"]
    assert [(line["event"], line.get("code"), line.get("reason")) for line in in_call] == [
        ("rpc.refused", "UNAUTHENTICATED", "missing"),
        ("rpc.finished", "UNAUTHENTICATED", None),
    ]
    assert len({line["query_id"] for line in in_call}) == 1


async def test_production_gateway_with_mutual_tls_end_to_end(tls_fed: Federation) -> None:
    """In production mode the gateway serves mutual TLS, reaches carriers and
    providers over mutual TLS with its client certificate, and answers."""
    fed = tls_fed
    carrier = await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    provider = await fed.provider("pay", {fed.FORMER: [fed.binding("a", "me", fed.at(2014))]})
    gateway = await fed.gateway()
    assert not gateway.config.dev_plaintext
    assert gateway.tls
    messages = await fed.lookup(gateway)
    assert messages[-1].summary.total.answered == 2
    assert carrier.record.peers == ["gateway"]
    assert provider.record.peers == ["gateway", "gateway"]


async def test_production_gateway_refuses_callers_without_certificate(
    tls_fed: Federation,
) -> None:
    """A TLS caller without a client certificate, or a plaintext one, cannot call."""
    fed = tls_fed
    carrier = await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    gateway = await fed.gateway()
    target = f"127.0.0.1:{gateway.port}"
    anonymous = grpc.ssl_channel_credentials(fed.keys.dev.ca_cert.read_bytes())
    for channel in (
        grpc.aio.secure_channel(target, anonymous),
        grpc.aio.insecure_channel(target),
    ):
        async with channel:
            health = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert carrier.record.calls == 0


async def test_serve_leaves_what_it_loaded_out_of_full_collections(fed: Federation) -> None:
    """``serve`` freezes the heap it built before it reports ready, so the cyclic
    collector's full passes skip it; the gateway still answers and stops on SIGTERM."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    frozen: list[int] = []
    ready = asyncio.Event()

    def on_ready(server: GatewayServer) -> None:
        frozen.append(gc.get_freeze_count())
        ready.set()

    gc.unfreeze()
    task = asyncio.create_task(serve(fed.config(), ready=on_ready))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        assert frozen[0] > 0
    finally:
        # serve's own signal handler takes it: the graceful stop a real SIGTERM starts.
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 20)
        gc.unfreeze()
