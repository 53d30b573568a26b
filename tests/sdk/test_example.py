"""The README's provider example runs as a program and answers the gateway."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onecert.sdk.testing import FakeGateway
from onecert.v1 import common_pb2, provider_pb2, provider_pb2_grpc
from tests.sdk.sdk_fakes import unbind_pb

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "provider_example.py"
NUMBER = "+8613800138000"


class Running:
    def __init__(self, process: asyncio.subprocess.Process, address: str) -> None:
        self.process = process
        self.address = address
        self.log: list[str] = []


async def _read_until(
    stream: asyncio.StreamReader, pattern: re.Pattern[str]
) -> tuple[str, list[str]]:
    lines: list[str] = []
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError("the example exited early:\n" + "".join(lines))
        line = raw.decode()
        lines.append(line)
        match = pattern.search(line)
        if match:
            return match.group(1), lines


@pytest.fixture
async def example(tmp_path: Path) -> AsyncIterator[tuple[Running, FakeGateway]]:
    """The example started as `python examples/provider_example.py ... --insecure`."""
    gateway = FakeGateway(audience="example-forum")
    jwks = gateway.write_jwks(tmp_path / "gateway.jwks.json")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--listen",
        "127.0.0.1:0",
        "--gateway-jwks",
        str(jwks),
        "--insecure",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        address, lines = await asyncio.wait_for(
            _read_until(process.stderr, re.compile(r"adapter.listening.*address=(\S+)")), 20
        )
        running = Running(process, address)
        running.log.extend(lines)
        yield running, gateway
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_example_is_readme_sized() -> None:
    """The complete adapter stays small enough to read in a README."""
    assert len(EXAMPLE.read_text().splitlines()) <= 32


async def test_example_answers_and_stops_on_sigterm(
    example: tuple[Running, FakeGateway],
) -> None:
    """The example lists, unbinds once per request id, refuses strangers, exits 0 on SIGTERM."""
    running, gateway = example
    async with grpc.aio.insecure_channel(running.address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = provider_pb2_grpc.BindingProviderStub(channel)
        listed = await stub.ListBindings(
            provider_pb2.ListBindingsRequest(msisdn=NUMBER),
            metadata=gateway.metadata(NUMBER),
            timeout=5,
        )
        assert sorted((b.account_ref, b.display_name) for b in listed.bindings) == [
            ("u1", "zhangsan"),
            ("u2", "lisi"),
        ]
        unbind = unbind_pb(
            "ticket-1", "u2", msisdn=NUMBER, reason=common_pb2.UNBIND_REASON_PREVIOUS_HOLDER_RELEASE
        )
        answers = [
            await stub.Unbind(
                unbind, metadata=gateway.metadata(NUMBER, purpose="unbind"), timeout=5
            )
            for _ in range(2)
        ]
        assert answers[0] == answers[1]
        assert answers[0].outcome == common_pb2.UNBIND_OUTCOME_DONE
        unknown = await stub.Unbind(
            unbind_pb("ticket-2", "nobody", msisdn=NUMBER),
            metadata=gateway.metadata(NUMBER, purpose="unbind"),
            timeout=5,
        )
        assert unknown.outcome == common_pb2.UNBIND_OUTCOME_REJECTED
        listed = await stub.ListBindings(
            provider_pb2.ListBindingsRequest(msisdn=NUMBER),
            metadata=gateway.metadata(NUMBER),
            timeout=5,
        )
        assert [b.account_ref for b in listed.bindings] == ["u1"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListBindings(provider_pb2.ListBindingsRequest(msisdn=NUMBER), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    running.process.send_signal(signal.SIGTERM)
    assert running.process.stderr is not None
    rest = await asyncio.wait_for(running.process.stderr.read(), 20)
    assert await asyncio.wait_for(running.process.wait(), 20) == 0
    log = "".join(running.log) + rest.decode()
    assert "stopped" in log
    assert NUMBER not in log
