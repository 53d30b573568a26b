"""Fixtures for observability: a small federation of fakes on real servers (port 0),
a gateway with its metrics endpoint on a free port and a SQLite store, and a
scraper that reads the endpoint over HTTP like Prometheus does."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from onecert.gateway import GatewayServer
from onecert.gateway._config import (
    CarrierConfig,
    DeliveryConfig,
    FanoutConfig,
    GatewayConfig,
    IdentityConfig,
    IssuerConfig,
    KeysConfig,
    MetricsConfig,
    NoticesConfig,
    ProviderConfig,
    StoreConfig,
)
from onecert.gateway._identity import AssertionIssuer
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey
from onecert.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

ISSUER = "https://id.example.test"
GATEWAY_ID = "onecert-gateway"
CITIZEN_SUB = "citizen-7f3a"
IDN = compute_idn(bytes(range(32)), "110101199003070011")
NUMBER = "+8613800138001"
HELD_FROM = datetime(2020, 6, 1, tzinfo=UTC)
BOUND_AT = datetime(2021, 3, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> Iterator[None]:
    """Gateway logs go to stderr as in production; the previous setup is put back after."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    yield
    structlog.configure(**saved)


class Carrier(registry_pb2_grpc.NumberRegistryServicer):
    """Holds one number for the citizen, since mid-2020."""

    async def ListNumbers(  # noqa: N802 - the gRPC method name
        self, request: registry_pb2.ListNumbersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.ListNumbersResponse:
        if request.idn != IDN:
            return registry_pb2.ListNumbersResponse()
        tenure = registry_pb2.Tenure(
            msisdn=NUMBER, carrier_id="cm", state=common_pb2.TENURE_STATE_ACTIVE
        )
        tenure.held_from.FromDatetime(HELD_FROM)
        return registry_pb2.ListNumbersResponse(tenures=[tenure])


class Provider(provider_pb2_grpc.BindingProviderServicer):
    """One account bound to the number since 2021; ``down`` and ``hang`` are knobs."""

    def __init__(self, provider_id: str) -> None:
        self.id = provider_id
        self.down = False
        self.hang = False
        self.unbind_down = False

    async def Describe(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.DescribeResponse:
        return provider_pb2.DescribeResponse(
            provider_id=self.id,
            name=self.id.title(),
            category=common_pb2.PROVIDER_CATEGORY_SOCIAL,
            contract_version="onecert.v1",
            implementation="tests-fake",
        )

    async def ListBindings(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.ListBindingsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.ListBindingsResponse:
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down for maintenance")
        if self.hang:
            await asyncio.Event().wait()
        binding = provider_pb2.Binding(
            account_ref=f"{self.id}-acct-1",
            display_name="zhang.wei",
            kind=common_pb2.BINDING_KIND_LOGIN,
            unbindable=True,
        )
        binding.bound_at.FromDatetime(BOUND_AT)
        return provider_pb2.ListBindingsResponse(bindings=[binding])

    async def Unbind(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.UnbindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.UnbindResponse:
        if self.unbind_down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down for maintenance")
        return provider_pb2.UnbindResponse(outcome=common_pb2.UNBIND_OUTCOME_DONE)

    async def ReceiveEvent(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.ReceiveEventRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.ReceiveEventResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this fake takes no notices")


class Federation:
    """The fakes, gateways configured to use them, and a Prometheus-like scraper.

    Test modules cannot import this conftest at run time, so the constants are
    reachable from the fixture too.
    """

    NUMBER = NUMBER
    IDN = IDN
    CITIZEN_SUB = CITIZEN_SUB
    GATEWAY_ID = GATEWAY_ID

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        identity = SigningKey.generate("ES256")
        warrant = SigningKey.generate("EdDSA")
        (directory / "identity.jwks.json").write_text(json.dumps(identity.jwks()))
        (directory / "warrant.key.pem").write_bytes(warrant.to_pem())
        (directory / "handle.key").write_text(os.urandom(32).hex())
        self.issuer = AssertionIssuer(key=identity, issuer=ISSUER)
        self.providers: dict[str, Provider] = {}
        self._ports: dict[str, int] = {}
        self._carrier_port = 0
        self._servers: list[grpc.aio.Server] = []
        self._gateways: list[GatewayServer] = []
        self._channels: list[grpc.aio.Channel] = []

    async def _serve(self, add: Any, servicer: Any) -> int:
        server = grpc.aio.server()
        add(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._servers.append(server)
        return port

    async def start(self, provider_ids: Sequence[str]) -> None:
        """Serve the carrier ``cm`` and one fake per provider id."""
        self._carrier_port = await self._serve(
            registry_pb2_grpc.add_NumberRegistryServicer_to_server, Carrier()
        )
        for provider_id in provider_ids:
            fake = Provider(provider_id)
            self.providers[provider_id] = fake
            self._ports[provider_id] = await self._serve(
                provider_pb2_grpc.add_BindingProviderServicer_to_server, fake
            )

    def config(self, *, store: bool = False, **overrides: Any) -> GatewayConfig:
        """Development mode, metrics on a free port, fast delivery; ``overrides`` replace fields."""
        config = GatewayConfig(
            id=GATEWAY_ID,
            listen="127.0.0.1:0",
            dev_plaintext=True,
            keys=KeysConfig(
                warrant_key=self.directory / "warrant.key.pem",
                handle_key=self.directory / "handle.key",
            ),
            identity=IdentityConfig(
                audience=GATEWAY_ID,
                issuers=(IssuerConfig(issuer=ISSUER, jwks=self.directory / "identity.jwks.json"),),
            ),
            carriers=(
                CarrierConfig(
                    id="cm",
                    address=f"127.0.0.1:{self._carrier_port}",
                    plaintext=True,
                    prefixes=("+86138",),
                ),
            ),
            providers=tuple(
                ProviderConfig(
                    id=provider_id,
                    name=provider_id.title(),
                    address=f"127.0.0.1:{port}",
                    plaintext=True,
                )
                for provider_id, port in self._ports.items()
            ),
            fanout=FanoutConfig(provider_deadline_s=2.0, carrier_deadline_s=2.0),
            grace_period_s=0.5,
            metrics=MetricsConfig(listen="127.0.0.1:0"),
            store=StoreConfig(url=f"sqlite:///{self.directory / 'onecert.db'}") if store else None,
            delivery=DeliveryConfig(
                workers=1,
                lease_s=3.0,
                poll_interval_s=0.05,
                backoff_initial_s=0.05,
                backoff_max_s=0.1,
                unbind_deadline_s=1.0,
            ),
            notices=NoticesConfig(
                workers=1,
                lease_s=3.0,
                check_interval_s=0.05,
                backoff_initial_s=0.05,
                backoff_max_s=0.1,
                push_deadline_s=1.0,
            ),
        )
        return dataclasses.replace(config, **overrides)

    async def gateway(self, config: GatewayConfig | None = None, **options: Any) -> GatewayServer:
        """A started gateway (stopped by the fixture)."""
        server = GatewayServer(config or self.config(), **options)
        await server.start()
        self._gateways.append(server)
        return server

    def stub(self, gateway: GatewayServer) -> gateway_pb2_grpc.GatewayAsyncStub:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
        self._channels.append(channel)
        return gateway_pb2_grpc.GatewayStub(channel)

    def metadata(self, **claims: Any) -> tuple[tuple[str, str], ...]:
        options: dict[str, Any] = {"sub": CITIZEN_SUB, "idn": IDN, "audience": GATEWAY_ID}
        options.update(claims)
        return (("authorization", f"Bearer {self.issuer.mint(**options)}"),)

    async def lookup(
        self,
        gateway: GatewayServer,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> list[gateway_pb2.LookupResponse]:
        """One lookup's messages (AioRpcError when it is refused)."""
        call = self.stub(gateway).Lookup(
            gateway_pb2.LookupRequest(),
            metadata=tuple(metadata) if metadata is not None else self.metadata(),
            timeout=10,
        )
        return [message async for message in call]

    @staticmethod
    async def scrape(gateway: GatewayServer) -> Scrape:
        """GET /metrics over HTTP, from another thread (the store is read on this loop)."""
        port = gateway.metrics_port
        assert port is not None

        def get() -> str:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                body: bytes = response.read()
                return body.decode()

        return Scrape(await asyncio.to_thread(get))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        for gateway in self._gateways:
            await gateway.stop(0)
        await asyncio.gather(*(s.stop(0) for s in self._servers))


class Scrape:
    """One scrape, parsed the way Prometheus reads it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        """The value of the sample named ``sample`` with exactly ``labels``; KeyError if absent."""
        for family in self.families.values():
            for found in family.samples:
                if found.name == sample and found.labels == labels:
                    return float(found.value)
        raise KeyError(f"{sample}{labels}")

    def samples(self, sample: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample named ``sample``, by its sorted labels."""
        return {
            tuple(sorted(found.labels.items())): float(found.value)
            for family in self.families.values()
            for found in family.samples
            if found.name == sample
        }


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    federation = Federation(tmp_path)
    try:
        yield federation
    finally:
        await federation.close()
