"""Fixtures for the conformance kit's tests: dev keys and plain-grpcio adapters."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from typing import Any

import grpc
import pytest

from onecert.sdk._keys import SigningKey
from onecert.sdk.devkeys import DevKeys, init_dev_keys
from tests.conformance.plain_adapters import (
    AsyncCarrier,
    AsyncProvider,
    BlockingProvider,
    ProviderCore,
    start_async,
    start_threaded,
)

# Start a plain adapter that breaks the rules named (docs/contract.md ids).
StartProvider = Callable[..., Awaitable[str]]
StartCarrier = Callable[..., Awaitable[str]]


@pytest.fixture(scope="session")
def dev_keys(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    """One dev keys directory for the session (made by the code under test)."""
    return init_dev_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def warrant_key(dev_keys: DevKeys) -> SigningKey:
    return SigningKey.load(dev_keys.warrant_key)


@pytest.fixture(scope="session")
def gateway_jwks(dev_keys: DevKeys) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dev_keys.gateway_jwks.read_text())
    return data


@pytest.fixture
async def start_provider(gateway_jwks: dict[str, Any]) -> AsyncIterator[StartProvider]:
    """Start a plain-grpcio provider breaking the rules named; returns its target."""
    servers: list[tuple[grpc.aio.Server, ProviderCore]] = []

    async def start(broken: Collection[str] = (), *, hang: bool = False) -> str:
        core = ProviderCore(gateway_jwks, broken)
        server, target = await start_async(AsyncProvider(core, hang=hang))
        servers.append((server, core))
        return target

    yield start
    for server, core in servers:
        core.release.set()
        await server.stop(None)
        core.pool.shutdown(wait=False)


@pytest.fixture
async def start_carrier(gateway_jwks: dict[str, Any]) -> AsyncIterator[StartCarrier]:
    """Start a plain-grpcio carrier breaking the rules named; returns its target."""
    servers: list[grpc.aio.Server] = []

    async def start(broken: Collection[str] = ()) -> str:
        server, target = await start_async(AsyncCarrier(gateway_jwks, broken))
        servers.append(server)
        return target

    yield start
    for server in servers:
        await server.stop(None)


@pytest.fixture
def blocking_provider(gateway_jwks: dict[str, Any]) -> Iterator[str]:
    """A provider on one worker thread whose ListBindings ignores deadlines (1 s)."""
    servicer = BlockingProvider(ProviderCore(gateway_jwks), latency=1.0)
    server, target = start_threaded(servicer)
    yield target
    servicer.core.release.set()
    server.stop(None).wait()


StartThreaded = Callable[..., str]


@pytest.fixture
def start_threaded_provider(gateway_jwks: dict[str, Any]) -> Iterator[StartThreaded]:
    """Start a plain provider on threads (its own loop-free server), for running the
    CLI in-process; ``credentials`` serves TLS."""
    servers: list[grpc.Server] = []

    def start(
        broken: Collection[str] = (), credentials: grpc.ServerCredentials | None = None
    ) -> str:
        servicer = BlockingProvider(ProviderCore(gateway_jwks, broken))
        server, target = start_threaded(servicer, workers=8, credentials=credentials)
        servers.append(server)
        return target

    yield start
    for server in servers:
        server.stop(None).wait()
