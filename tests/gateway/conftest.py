"""Fixtures for the gateway: real keys, fake carriers and providers on real
servers (port 0) with behaviour knobs, and a gateway configured to use them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from onecert.gateway import GatewayServer
from onecert.gateway._config import (
    CarrierConfig,
    FanoutConfig,
    GatewayConfig,
    IdentityConfig,
    IssuerConfig,
    KeysConfig,
    ListenTLS,
    ProviderConfig,
    UpstreamTLS,
)
from onecert.gateway._identity import AssertionIssuer
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey, VerificationKey, parse_jwks
from onecert.sdk._tls import ClientTLS, ServerTLS, peer_common_name
from onecert.sdk._warrant import Warrant, WarrantError, WarrantVerifier
from onecert.sdk.devkeys import DevKeys, init_dev_keys
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
IDN_KEY = bytes(range(32))
CITIZEN_SUB = "citizen-7f3a"
IDN = compute_idn(IDN_KEY, "110101199003070011")
OTHER_IDN = compute_idn(IDN_KEY, "110101198512120022")

# The classic story: a number held 2012-2017 and recycled since, and a
# current number held since mid-2020 that came with a previous holder's accounts.
CURRENT = "+8613800138001"
FORMER = "+8613900139002"
CURRENT_FROM = datetime(2020, 6, 1, tzinfo=UTC)
FORMER_FROM = datetime(2012, 3, 1, tzinfo=UTC)
FORMER_UNTIL = datetime(2017, 9, 1, tzinfo=UTC)


def at(year: int, month: int = 1, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def stamp(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def tenure(
    msisdn: str,
    carrier_id: str,
    held_from: datetime,
    held_until: datetime | None = None,
    state: common_pb2.TenureState.ValueType | None = None,
) -> registry_pb2.Tenure:
    if state is None:
        state = (
            common_pb2.TENURE_STATE_ACTIVE
            if held_until is None
            else common_pb2.TENURE_STATE_RECYCLED
        )
    out = registry_pb2.Tenure(msisdn=msisdn, carrier_id=carrier_id, state=state)
    out.held_from.CopyFrom(stamp(held_from))
    if held_until is not None:
        out.held_until.CopyFrom(stamp(held_until))
    return out


def binding(
    account_ref: str,
    display_name: str,
    bound_at: datetime | None,
    *,
    kind: common_pb2.BindingKind.ValueType = common_pb2.BINDING_KIND_LOGIN,
    unbindable: bool = True,
) -> provider_pb2.Binding:
    out = provider_pb2.Binding(
        account_ref=account_ref, display_name=display_name, kind=kind, unbindable=unbindable
    )
    if bound_at is not None:
        out.bound_at.CopyFrom(stamp(bound_at))
    return out


def story_tenures(carrier_id: str = "cm") -> list[registry_pb2.Tenure]:
    return [
        tenure(CURRENT, carrier_id, CURRENT_FROM),
        tenure(FORMER, carrier_id, FORMER_FROM, FORMER_UNTIL),
    ]


@dataclass(frozen=True)
class Keys:
    """The federation's keys, also written to files the way ``onecert keys init`` does."""

    identity: SigningKey
    warrant: SigningKey
    handle: bytes
    identity_jwks: Path
    warrant_key: Path
    handle_key: Path

    @property
    def gateway_keys(self) -> dict[str, VerificationKey]:
        return parse_jwks(self.warrant.jwks())


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Gateway logs go to stderr, as in production (stdout is the CLI's output); tests
    that run the CLI configure structlog, so the previous setup is put back after."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def signing_keys() -> tuple[SigningKey, SigningKey]:
    return SigningKey.generate("ES256"), SigningKey.generate("EdDSA")


@pytest.fixture
def keys(tmp_path: Path, signing_keys: tuple[SigningKey, SigningKey]) -> Keys:
    identity, warrant = signing_keys
    handle = os.urandom(32)
    (tmp_path / "identity.jwks.json").write_text(json.dumps(identity.jwks()))
    (tmp_path / "warrant.key.pem").write_bytes(warrant.to_pem())
    (tmp_path / "handle.key").write_text(handle.hex())
    return Keys(
        identity=identity,
        warrant=warrant,
        handle=handle,
        identity_jwks=tmp_path / "identity.jwks.json",
        warrant_key=tmp_path / "warrant.key.pem",
        handle_key=tmp_path / "handle.key",
    )


@dataclass
class Behaviour:
    """How a fake misbehaves; change it between lookups to change the fake."""

    latency: float = 0.0
    hang: bool = False
    crash: str | None = None
    abort: grpc.StatusCode | None = None
    abort_details: str = ""
    fail_first: int = 0


@dataclass
class Record:
    """What a fake saw."""

    calls: int = 0
    warrants: list[Warrant] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    refused_warrants: int = 0
    in_flight: int = 0
    peers: list[str | None] = field(default_factory=list)
    peak: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


async def _behave(
    behaviour: Behaviour, record: Record, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    record.started.set()
    record.in_flight += 1
    record.peak = max(record.peak, record.in_flight)
    try:
        await _misbehave(behaviour, record, context)
    finally:
        record.in_flight -= 1


async def _misbehave(
    behaviour: Behaviour, record: Record, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    if behaviour.fail_first > 0:
        behaviour.fail_first -= 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
    if behaviour.abort is not None:
        await context.abort(behaviour.abort, behaviour.abort_details)
    if behaviour.crash is not None:
        raise RuntimeError(behaviour.crash)
    try:
        if behaviour.hang:
            await asyncio.Event().wait()
        if behaviour.latency:
            await asyncio.sleep(behaviour.latency)
    except asyncio.CancelledError:
        record.cancelled.set()
        raise


def _token(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return ""


async def _check_warrant(
    verifier: WarrantVerifier,
    record: Record,
    context: grpc.aio.ServicerContext[Any, Any],
    target: str,
) -> None:
    token = _token(context)
    try:
        warrant = verifier.verify(token, target=target)
    except WarrantError as exc:
        record.refused_warrants += 1
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
    record.warrants.append(warrant)
    record.tokens.append(token)
    record.peers.append(peer_common_name(context))


class FakeCarrier(registry_pb2_grpc.NumberRegistryServicer):
    """A carrier answering fixed tenures per idn; it checks every warrant."""

    def __init__(
        self,
        carrier_id: str,
        keys: Keys,
        tenures: Mapping[str, Sequence[registry_pb2.Tenure]],
    ) -> None:
        self.id = carrier_id
        self.tenures = {k: list(v) for k, v in tenures.items()}
        self.behaviour = Behaviour()
        self.record = Record()
        self._verifier = WarrantVerifier(
            keys=keys.gateway_keys, issuer=GATEWAY_ID, audience=carrier_id
        )

    async def ListNumbers(  # noqa: N802 - the gRPC method name
        self,
        request: registry_pb2.ListNumbersRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.ListNumbersResponse:
        self.record.calls += 1
        self.record.targets.append(request.idn)
        await _check_warrant(self._verifier, self.record, context, request.idn)
        await _behave(self.behaviour, self.record, context)
        return registry_pb2.ListNumbersResponse(tenures=self.tenures.get(request.idn, []))


class FakeProvider(provider_pb2_grpc.BindingProviderServicer):
    """A provider answering fixed bindings per msisdn; it checks every warrant."""

    def __init__(
        self,
        provider_id: str,
        keys: Keys,
        bindings: Mapping[str, Sequence[provider_pb2.Binding]],
        *,
        name: str = "",
        category: common_pb2.ProviderCategory.ValueType = common_pb2.PROVIDER_CATEGORY_SOCIAL,
    ) -> None:
        self.id = provider_id
        self.name = name or provider_id.title()
        self.category = category
        self.bindings = {k: list(v) for k, v in bindings.items()}
        self.behaviour = Behaviour()
        self.record = Record()
        self._verifier = WarrantVerifier(
            keys=keys.gateway_keys, issuer=GATEWAY_ID, audience=provider_id
        )

    async def Describe(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.DescribeResponse:
        return provider_pb2.DescribeResponse(
            provider_id=self.id,
            name=self.name,
            category=self.category,
            contract_version="onecert.v1",
            implementation="tests-fake",
        )

    async def ListBindings(  # noqa: N802 - the gRPC method name
        self,
        request: provider_pb2.ListBindingsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> provider_pb2.ListBindingsResponse:
        self.record.calls += 1
        self.record.targets.append(request.msisdn)
        await _check_warrant(self._verifier, self.record, context, request.msisdn)
        await _behave(self.behaviour, self.record, context)
        return provider_pb2.ListBindingsResponse(bindings=self.bindings.get(request.msisdn, []))

    async def Unbind(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.UnbindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.UnbindResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this fake")

    async def ReceiveEvent(  # noqa: N802 - the gRPC method name
        self,
        request: provider_pb2.ReceiveEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> provider_pb2.ReceiveEventResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this fake")


class Federation:
    """Fake carriers and providers on real servers, and gateways that use them.

    Test modules cannot import this conftest at run time, so the story's
    constants and the message helpers are reachable from the fixture too.
    """

    ISSUER = ISSUER
    GATEWAY_ID = GATEWAY_ID
    CITIZEN_SUB = CITIZEN_SUB
    IDN = IDN
    OTHER_IDN = OTHER_IDN
    CURRENT = CURRENT
    FORMER = FORMER
    CURRENT_FROM = CURRENT_FROM
    FORMER_FROM = FORMER_FROM
    FORMER_UNTIL = FORMER_UNTIL
    at = staticmethod(at)
    stamp = staticmethod(stamp)
    tenure = staticmethod(tenure)
    binding = staticmethod(binding)
    story_tenures = staticmethod(story_tenures)

    def __init__(self, keys: Keys, tls: DevKeys | None = None) -> None:
        self.keys = keys
        # With dev TLS keys: fakes serve mutual TLS, the gateway runs in production mode.
        self.tls = tls
        self.carriers: list[tuple[FakeCarrier, int]] = []
        self.providers: list[tuple[FakeProvider, int]] = []
        self._servers: list[grpc.aio.Server] = []
        self._gateways: list[GatewayServer] = []
        self._channels: list[grpc.aio.Channel] = []
        self.issuer = AssertionIssuer(key=keys.identity, issuer=ISSUER)

    async def _serve(self, add: Any, servicer: Any) -> int:
        server = grpc.aio.server()
        add(servicer, server)
        if self.tls is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            credentials = ServerTLS(
                self.tls.server_cert, self.tls.server_key, self.tls.ca_cert
            ).credentials()
            port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        self._servers.append(server)
        return port

    async def carrier(
        self,
        carrier_id: str = "cm",
        tenures: Mapping[str, Sequence[registry_pb2.Tenure]] | None = None,
    ) -> FakeCarrier:
        fake = FakeCarrier(carrier_id, self.keys, tenures if tenures is not None else {})
        port = await self._serve(registry_pb2_grpc.add_NumberRegistryServicer_to_server, fake)
        self.carriers.append((fake, port))
        return fake

    async def provider(
        self,
        provider_id: str,
        bindings: Mapping[str, Sequence[provider_pb2.Binding]] | None = None,
        *,
        name: str = "",
        category: common_pb2.ProviderCategory.ValueType = common_pb2.PROVIDER_CATEGORY_SOCIAL,
    ) -> FakeProvider:
        fake = FakeProvider(provider_id, self.keys, bindings or {}, name=name, category=category)
        port = await self._serve(provider_pb2_grpc.add_BindingProviderServicer_to_server, fake)
        self.providers.append((fake, port))
        return fake

    def config(
        self,
        *,
        fanout: FanoutConfig | None = None,
        provider_deadlines: Mapping[str, float] | None = None,
        **overrides: Any,
    ) -> GatewayConfig:
        deadlines = provider_deadlines or {}
        plaintext = self.tls is None
        config = GatewayConfig(
            id=GATEWAY_ID,
            listen="127.0.0.1:0",
            dev_plaintext=plaintext,
            tls=None
            if self.tls is None
            else ListenTLS(self.tls.server_cert, self.tls.server_key, self.tls.ca_cert),
            upstream_tls=None
            if self.tls is None
            else UpstreamTLS(
                ca=self.tls.ca_cert,
                cert=self.tls.client_cert("gateway"),
                key=self.tls.client_key("gateway"),
            ),
            keys=KeysConfig(warrant_key=self.keys.warrant_key, handle_key=self.keys.handle_key),
            identity=IdentityConfig(
                audience=GATEWAY_ID,
                issuers=(IssuerConfig(issuer=ISSUER, jwks=self.keys.identity_jwks),),
            ),
            carriers=tuple(
                CarrierConfig(id=c.id, address=f"127.0.0.1:{port}", plaintext=plaintext)
                for c, port in self.carriers
            ),
            providers=tuple(
                ProviderConfig(
                    id=p.id,
                    name=p.name,
                    category=p.category,
                    address=f"127.0.0.1:{port}",
                    deadline_s=deadlines.get(p.id),
                    plaintext=plaintext,
                )
                for p, port in self.providers
            ),
            fanout=fanout or FanoutConfig(provider_deadline_s=2.0, carrier_deadline_s=2.0),
            grace_period_s=1.0,
        )
        return dataclasses.replace(config, **overrides)

    async def gateway(self, config: GatewayConfig | None = None, **overrides: Any) -> GatewayServer:
        server = GatewayServer(config or self.config(**overrides))
        await server.start()
        self._gateways.append(server)
        return server

    def assertion(self, **overrides: Any) -> str:
        options: dict[str, Any] = {"sub": CITIZEN_SUB, "idn": IDN, "audience": GATEWAY_ID}
        options.update(overrides)
        return self.issuer.mint(**options)

    def client_tls(self, name: str = "portal") -> ClientTLS:
        assert self.tls is not None
        return ClientTLS(self.tls.ca_cert, self.tls.client_cert(name), self.tls.client_key(name))

    def channel(self, gateway: GatewayServer) -> grpc.aio.Channel:
        target = f"127.0.0.1:{gateway.port}"
        if self.tls is None:
            channel = grpc.aio.insecure_channel(target)
        else:
            channel = grpc.aio.secure_channel(target, self.client_tls().credentials())
        self._channels.append(channel)
        return channel

    def stub(self, gateway: GatewayServer) -> gateway_pb2_grpc.GatewayAsyncStub:
        channel = self.channel(gateway)
        return gateway_pb2_grpc.GatewayStub(channel)

    async def lookup(
        self,
        gateway: GatewayServer,
        *,
        assertion: str | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        deadline: float = 10.0,
    ) -> list[gateway_pb2.LookupResponse]:
        """Run one lookup and return every message (AioRpcError on failure)."""
        if metadata is None:
            token = assertion if assertion is not None else self.assertion()
            metadata = (("authorization", f"Bearer {token}"),)
        call = self.stub(gateway).Lookup(
            gateway_pb2.LookupRequest(), metadata=tuple(metadata), timeout=deadline
        )
        return [message async for message in call]

    @staticmethod
    def results(
        messages: Sequence[gateway_pb2.LookupResponse],
    ) -> list[gateway_pb2.ProviderResult]:
        return [m.result for m in messages if m.WhichOneof("update") == "result"]

    @staticmethod
    def result_of(
        messages: Sequence[gateway_pb2.LookupResponse], provider_id: str, msisdn: str
    ) -> gateway_pb2.ProviderResult:
        found = [
            m.result
            for m in messages
            if m.WhichOneof("update") == "result"
            and m.result.provider_id == provider_id
            and m.result.msisdn == msisdn
        ]
        assert len(found) == 1, (provider_id, len(found))
        return found[0]

    def upstream_calls(self) -> int:
        return sum(c.record.calls for c, _ in self.carriers) + sum(
            p.record.calls for p, _ in self.providers
        )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        for gateway in self._gateways:
            await gateway.stop(0)
        await asyncio.gather(*(s.stop(0) for s in self._servers))


@pytest.fixture
async def fed(keys: Keys) -> AsyncIterator[Federation]:
    federation = Federation(keys)
    try:
        yield federation
    finally:
        await federation.close()


@pytest.fixture(scope="session")
def dev_tls(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    return init_dev_keys(tmp_path_factory.mktemp("devkeys"), clients=("gateway", "portal"))


@pytest.fixture
async def tls_fed(keys: Keys, dev_tls: DevKeys) -> AsyncIterator[Federation]:
    federation = Federation(keys, tls=dev_tls)
    try:
        yield federation
    finally:
        await federation.close()
