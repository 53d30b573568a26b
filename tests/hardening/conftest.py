"""Fixtures for hardening: real keys, fakes on the generated stubs that count every
call and misbehave on demand, a gateway with a SQLite store, bad certificates made
with ``cryptography``, and an attacker's key server that counts its visitors."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select

from onecert.gateway import GatewayServer
from onecert.gateway._config import (
    CarrierConfig,
    CheckRecycledConfig,
    DeliveryConfig,
    FanoutConfig,
    GatewayConfig,
    IdentityConfig,
    IssuerConfig,
    KeysConfig,
    ListenTLS,
    NoticesConfig,
    ProviderConfig,
    StoreConfig,
    UpstreamTLS,
)
from onecert.gateway._identity import AssertionIssuer
from onecert.gateway.store._models import (
    audit_log,
    deliveries,
    number_events,
    replay_cache,
    unbind_tickets,
)
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey, parse_jwks
from onecert.sdk._tls import ServerTLS
from onecert.sdk._warrant import WarrantError, WarrantVerifier
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

# pytest puts this folder on sys.path (no __init__.py files in tests/), so the
# module is `hardening_net` at run time; mypy names it by its path.
if TYPE_CHECKING:
    from tests.hardening.hardening_net import JunkServer, ResettingProxy
else:
    from hardening_net import JunkServer, ResettingProxy

ISSUER = "https://id.example.test"
GATEWAY_ID = "onecert-gateway"
IDN_KEY = bytes(range(32))
DOCUMENT = "110101199003070011"
OTHER_DOCUMENT = "110101198512120022"
CITIZEN_SUB = "citizen-7f3a"
OTHER_SUB = "citizen-0b9c"
IDN = compute_idn(IDN_KEY, DOCUMENT)
OTHER_IDN = compute_idn(IDN_KEY, OTHER_DOCUMENT)

# A number held 2012-2017 and recycled since, the current number held since
# mid-2020 (it came with a previous holder's account), and the other
# citizen's number.
CURRENT = "+8613800138001"
FORMER = "+8613900139002"
OTHER_NUMBER = "+8613700137003"
CURRENT_FROM = datetime(2020, 6, 1, tzinfo=UTC)
FORMER_FROM = datetime(2012, 3, 1, tzinfo=UTC)
FORMER_UNTIL = datetime(2017, 9, 1, tzinfo=UTC)
# Display names that must never reach the citizen: a previous holder's
# account on her current number, and the next holder's on her former one.
PREVIOUS_HOLDER_NAME = "gaojun_1987"
NEXT_HOLDER_NAME = "zhoupeng_runs"

# Short everything, so delivery and notices happen within a test.
FAST_DELIVERY = DeliveryConfig(
    workers=1,
    batch=10,
    lease_s=3.0,
    poll_interval_s=0.1,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    ticket_ttl_s=30.0,
    unbind_deadline_s=1.0,
    pending_recheck_s=0.1,
)
FAST_NOTICES = NoticesConfig(
    workers=1, check_interval_s=0.1, backoff_initial_s=0.05, backoff_max_s=0.2, poll_wait_s=0.1
)


def at(year: int, month: int = 1, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def stamp(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def tenure(
    msisdn: str, carrier_id: str, held_from: datetime, held_until: datetime | None = None
) -> registry_pb2.Tenure:
    state = (
        common_pb2.TENURE_STATE_ACTIVE if held_until is None else common_pb2.TENURE_STATE_RECYCLED
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
    kind: int = common_pb2.BINDING_KIND_LOGIN,
    unbindable: bool = True,
) -> provider_pb2.Binding:
    out = provider_pb2.Binding(
        account_ref=account_ref,
        display_name=display_name,
        kind=common_pb2.BindingKind.ValueType(kind),
        unbindable=unbindable,
    )
    if bound_at is not None:
        out.bound_at.CopyFrom(stamp(bound_at))
    return out


def story_tenures(carrier_id: str = "cm") -> dict[str, list[registry_pb2.Tenure]]:
    """The citizen's two numbers, and the other citizen's one."""
    return {
        IDN: [
            tenure(CURRENT, carrier_id, CURRENT_FROM),
            tenure(FORMER, carrier_id, FORMER_FROM, FORMER_UNTIL),
        ],
        OTHER_IDN: [tenure(OTHER_NUMBER, carrier_id, CURRENT_FROM)],
    }


def story_bindings(prefix: str) -> dict[str, list[provider_pb2.Binding]]:
    """One left-behind account, one of hers and one of a previous holder's; on the
    former number also the next holder's; one account of the other citizen's."""
    return {
        FORMER: [
            binding(f"{prefix}-left", "linxiaoyu", at(2014, 5)),
            binding(f"{prefix}-next", NEXT_HOLDER_NAME, at(2019, 2)),
        ],
        CURRENT: [
            binding(f"{prefix}-mine", "xiaoyu.lin", at(2021, 2)),
            binding(f"{prefix}-prev", PREVIOUS_HOLDER_NAME, at(2019, 2)),
        ],
        OTHER_NUMBER: [binding(f"{prefix}-other", "someone_else", at(2021, 3))],
    }


@dataclass(frozen=True)
class Keys:
    """The federation's keys, also written to files the way ``onecert keys init`` does."""

    identity: SigningKey
    warrant: SigningKey
    handle: bytes
    identity_jwks: Path
    warrant_key: Path
    handle_key: Path


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> Iterator[None]:
    """Logs go to stderr, as in production; the previous setup is put back after."""
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


# ---------------------------------------------------------------- the fakes


def _token(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return ""


class FakeCarrier(registry_pb2_grpc.NumberRegistryServicer):
    """A carrier answering fixed tenures per idn; it checks every warrant and counts calls."""

    def __init__(
        self, carrier_id: str, keys: Keys, tenures: Mapping[str, Sequence[registry_pb2.Tenure]]
    ) -> None:
        self.id = carrier_id
        self.tenures = {k: list(v) for k, v in tenures.items()}
        self.calls = 0
        self._verifier = WarrantVerifier(
            keys=parse_jwks(keys.warrant.jwks()), issuer=GATEWAY_ID, audience=carrier_id
        )

    async def ListNumbers(  # noqa: N802 - the gRPC method name
        self,
        request: registry_pb2.ListNumbersRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.ListNumbersResponse:
        self.calls += 1
        try:
            self._verifier.verify(_token(context), target=request.idn)
        except WarrantError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        return registry_pb2.ListNumbersResponse(tenures=self.tenures.get(request.idn, []))


class FakeProvider(provider_pb2_grpc.BindingProviderServicer):
    """A provider on the generated stubs, with call counters and misbehaviour knobs.

    ``answer`` replaces the fixed bindings with any response (oversized,
    malformed...), ``on_call`` runs when a ListBindings starts (to reset the
    connection under it), ``hang`` never answers, ``describe_id`` is the id
    its Describe claims.
    """

    def __init__(
        self,
        provider_id: str,
        keys: Keys,
        bindings: Mapping[str, Sequence[provider_pb2.Binding]],
        *,
        name: str = "",
    ) -> None:
        self.id = provider_id
        self.name = name or provider_id.title()
        self.bindings = {k: list(v) for k, v in bindings.items()}
        self.describe_id = provider_id
        self.contract_version = "onecert.v1"
        self.hang = False
        self.answer: Callable[[str], provider_pb2.ListBindingsResponse] | None = None
        self.on_call: Callable[[], None] | None = None
        self.list_calls = 0
        self.unbind_calls = 0
        self.describe_calls = 0
        self.event_calls = 0
        self.refused_warrants = 0
        self.started = asyncio.Event()
        self._verifier = WarrantVerifier(
            keys=parse_jwks(keys.warrant.jwks()), issuer=GATEWAY_ID, audience=provider_id
        )

    @property
    def calls(self) -> int:
        # Calls about someone. Describe is the gateway's own start-up check
        # (who are you?), made whatever any caller does; it is counted apart.
        return self.list_calls + self.unbind_calls + self.event_calls

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any], target: str) -> None:
        try:
            self._verifier.verify(_token(context), target=target)
        except WarrantError as exc:
            self.refused_warrants += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)

    async def Describe(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.DescribeResponse:
        self.describe_calls += 1
        return provider_pb2.DescribeResponse(
            provider_id=self.describe_id,
            name=self.name,
            category=common_pb2.PROVIDER_CATEGORY_SOCIAL,
            contract_version=self.contract_version,
            implementation="hardening-fake",
        )

    async def ListBindings(  # noqa: N802 - the gRPC method name
        self,
        request: provider_pb2.ListBindingsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> provider_pb2.ListBindingsResponse:
        self.list_calls += 1
        await self._check(context, request.msisdn)
        self.started.set()
        if self.on_call is not None:
            self.on_call()
        if self.hang:
            await asyncio.Event().wait()
        if self.answer is not None:
            return self.answer(request.msisdn)
        return provider_pb2.ListBindingsResponse(bindings=self.bindings.get(request.msisdn, []))

    async def Unbind(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.UnbindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.UnbindResponse:
        self.unbind_calls += 1
        await self._check(context, request.msisdn)
        return provider_pb2.UnbindResponse(outcome=common_pb2.UNBIND_OUTCOME_DONE)

    async def ReceiveEvent(  # noqa: N802 - the gRPC method name
        self,
        request: provider_pb2.ReceiveEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> provider_pb2.ReceiveEventResponse:
        self.event_calls += 1
        return provider_pb2.ReceiveEventResponse(acknowledged=True)


# ---------------------------------------------------------------- the harness

Snapshot = dict[str, list[tuple[Any, ...]]]
_TABLES = {
    "unbind_tickets": unbind_tickets,
    "number_events": number_events,
    "deliveries": deliveries,
    "audit_log": audit_log,
    "replay_cache": replay_cache,
}


class Harness:
    """Fake carriers and providers on real servers, and gateways (with a SQLite
    store by default) that use them.

    Test modules cannot import this conftest at run time, so the story's
    constants and helpers are reachable from the fixture too.
    """

    ISSUER = ISSUER
    GATEWAY_ID = GATEWAY_ID
    CITIZEN_SUB = CITIZEN_SUB
    OTHER_SUB = OTHER_SUB
    IDN = IDN
    OTHER_IDN = OTHER_IDN
    DOCUMENT = DOCUMENT
    CURRENT = CURRENT
    FORMER = FORMER
    OTHER_NUMBER = OTHER_NUMBER
    CURRENT_FROM = CURRENT_FROM
    PREVIOUS_HOLDER_NAME = PREVIOUS_HOLDER_NAME
    NEXT_HOLDER_NAME = NEXT_HOLDER_NAME
    at = staticmethod(at)
    stamp = staticmethod(stamp)
    tenure = staticmethod(tenure)
    binding = staticmethod(binding)
    story_tenures = staticmethod(story_tenures)
    story_bindings = staticmethod(story_bindings)

    def __init__(self, keys: Keys, directory: Path, tls: DevKeys | None = None) -> None:
        self.keys = keys
        self.dir = directory
        self.tls = tls
        self.carriers: list[tuple[FakeCarrier, str]] = []
        self.providers: list[tuple[FakeProvider, str]] = []
        self.extra_providers: list[ProviderConfig] = []
        self.issuer = AssertionIssuer(key=keys.identity, issuer=ISSUER)
        self._servers: list[grpc.aio.Server] = []
        self._gateways: list[GatewayServer] = []
        self._channels: list[grpc.aio.Channel] = []

    async def serve(self, add: Callable[[Any, grpc.aio.Server], None], servicer: Any) -> int:
        """Serve ``servicer`` on a port of its own (mutual TLS when the harness has TLS)."""
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
        fake = FakeCarrier(
            carrier_id, self.keys, story_tenures(carrier_id) if tenures is None else tenures
        )
        port = await self.serve(registry_pb2_grpc.add_NumberRegistryServicer_to_server, fake)
        self.carriers.append((fake, f"127.0.0.1:{port}"))
        return fake

    async def provider(
        self,
        provider_id: str,
        bindings: Mapping[str, Sequence[provider_pb2.Binding]] | None = None,
        *,
        name: str = "",
    ) -> FakeProvider:
        fake = FakeProvider(
            provider_id,
            self.keys,
            story_bindings(provider_id) if bindings is None else bindings,
            name=name,
        )
        port = await self.serve(provider_pb2_grpc.add_BindingProviderServicer_to_server, fake)
        self.providers.append((fake, f"127.0.0.1:{port}"))
        return fake

    def address_of(self, provider_id: str) -> str:
        return next(address for p, address in self.providers if p.id == provider_id)

    def reroute(self, provider_id: str, address: str) -> None:
        """Configure a fake provider at another address (a proxy in front of it)."""
        self.providers = [(p, address if p.id == provider_id else old) for p, old in self.providers]

    def provider_at(self, provider_id: str, address: str) -> None:
        """Configure a provider whose address is served by something else (or nothing)."""
        self.extra_providers.append(
            ProviderConfig(id=provider_id, address=address, plaintext=self.tls is None)
        )

    def config(
        self,
        *,
        store: bool = True,
        fanout: FanoutConfig | None = None,
        poll_providers: Sequence[str] = (),
        **overrides: Any,
    ) -> GatewayConfig:
        plaintext = self.tls is None
        providers = tuple(
            ProviderConfig(
                id=p.id,
                name=p.name,
                address=address,
                plaintext=plaintext,
                delivery="poll" if p.id in poll_providers else "push",
            )
            for p, address in self.providers
        ) + tuple(self.extra_providers)
        options: dict[str, Any] = {
            "id": GATEWAY_ID,
            "listen": "127.0.0.1:0",
            "dev_plaintext": plaintext,
            "tls": None
            if self.tls is None
            else ListenTLS(self.tls.server_cert, self.tls.server_key, self.tls.ca_cert),
            "upstream_tls": None
            if self.tls is None
            else UpstreamTLS(
                ca=self.tls.ca_cert,
                cert=self.tls.client_cert("gateway"),
                key=self.tls.client_key("gateway"),
            ),
            "keys": KeysConfig(warrant_key=self.keys.warrant_key, handle_key=self.keys.handle_key),
            "identity": IdentityConfig(
                audience=GATEWAY_ID,
                issuers=(IssuerConfig(issuer=ISSUER, jwks=self.keys.identity_jwks),),
            ),
            "carriers": tuple(
                CarrierConfig(
                    id=c.id, address=address, plaintext=plaintext, prefixes=("+86138", "+86139")
                )
                for c, address in self.carriers
            ),
            "providers": providers,
            "fanout": fanout
            or FanoutConfig(provider_deadline_s=2.0, carrier_deadline_s=2.0, retry_max_attempts=2),
            "grace_period_s": 1.0,
            "store": StoreConfig(url=f"sqlite+aiosqlite:///{self.dir / 'gateway.db'}")
            if store
            else None,
            "delivery": FAST_DELIVERY,
            "notices": FAST_NOTICES,
            "check_recycled": CheckRecycledConfig(rate_per_s=10_000.0, burst=10_000),
        }
        options.update(overrides)
        return GatewayConfig(**options)

    async def gateway(self, config: GatewayConfig | None = None, **overrides: Any) -> GatewayServer:
        server = GatewayServer(config or self.config(**overrides))
        await server.start()
        self._gateways.append(server)
        return server

    # ------------------------------------------------------------ calls

    def assertion(self, **overrides: Any) -> str:
        options: dict[str, Any] = {"sub": CITIZEN_SUB, "idn": IDN, "audience": GATEWAY_ID}
        options.update(overrides)
        return self.issuer.mint(**options)

    @staticmethod
    def bearer(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    def channel(
        self, gateway: GatewayServer, credentials: grpc.ChannelCredentials | None = None
    ) -> grpc.aio.Channel:
        target = f"127.0.0.1:{gateway.port}"
        channel = (
            grpc.aio.insecure_channel(target)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials)
        )
        self._channels.append(channel)
        return channel

    def stub(
        self, gateway: GatewayServer, credentials: grpc.ChannelCredentials | None = None
    ) -> gateway_pb2_grpc.GatewayAsyncStub:
        return gateway_pb2_grpc.GatewayStub(self.channel(gateway, credentials))

    async def lookup(
        self,
        gateway: GatewayServer,
        token: str | None = None,
        *,
        request: gateway_pb2.LookupRequest | None = None,
        deadline: float = 10.0,
        stub: gateway_pb2_grpc.GatewayAsyncStub | None = None,
    ) -> list[gateway_pb2.LookupResponse]:
        """Run one lookup and return every message (AioRpcError on failure)."""
        stub = stub or self.stub(gateway)
        call = stub.Lookup(
            request or gateway_pb2.LookupRequest(),
            metadata=self.bearer(self.assertion() if token is None else token),
            timeout=deadline,
        )
        return [message async for message in call]

    async def unbind(
        self, gateway: GatewayServer, handle: str, token: str | None = None
    ) -> gateway_pb2.GatewayUnbindResponse:
        return await self.stub(gateway).Unbind(
            gateway_pb2.GatewayUnbindRequest(handle=handle),
            metadata=self.bearer(self.assertion() if token is None else token),
            timeout=10,
        )

    async def handle_of(
        self, gateway: GatewayServer, provider_id: str, sub: str = CITIZEN_SUB
    ) -> str:
        """The handle of the citizen's left-behind account at a provider (a fresh lookup)."""
        idn = IDN if sub == CITIZEN_SUB else OTHER_IDN
        messages = await self.lookup(gateway, self.assertion(sub=sub, idn=idn))
        number = FORMER if sub == CITIZEN_SUB else OTHER_NUMBER
        result = self.result_of(messages, provider_id, number)
        assert result.outcome == gateway_pb2.CALL_OUTCOME_ANSWERED, result.detail
        handles = [b.handle for b in result.bindings if b.handle]
        assert handles
        return handles[0]

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
        """Every call any fake carrier or provider received."""
        return sum(c.calls for c, _ in self.carriers) + sum(p.calls for p, _ in self.providers)

    async def snapshot(self, gateway: GatewayServer) -> Snapshot:
        """Every row of the durable state (after pending audit rows are written)."""
        assert gateway.store is not None
        if gateway.auditor is not None:
            await gateway.auditor.drain()
        out: Snapshot = {}
        async with gateway.store.engine.connect() as conn:
            for name, table in _TABLES.items():
                rows = (await conn.execute(select(table))).all()
                out[name] = sorted((tuple(r) for r in rows), key=repr)
        return out

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        for gateway in self._gateways:
            await gateway.stop(0)
        await asyncio.gather(*(s.stop(0) for s in self._servers))


@pytest.fixture
async def hz(keys: Keys, tmp_path: Path) -> AsyncIterator[Harness]:
    """A harness in development mode (plaintext), no fakes yet."""
    harness = Harness(keys, tmp_path)
    try:
        yield harness
    finally:
        await harness.close()


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    """The federation's dev CA and certificates, plus bad client certificates."""

    dev: DevKeys
    other: DevKeys
    bad: Mapping[str, tuple[Path, Path]] = field(default_factory=dict)

    def client(self, name: str) -> tuple[Path, Path]:
        """(cert, key) of a client: a dev one by CN, or a bad one by its label."""
        if name in self.bad:
            return self.bad[name]
        return self.dev.client_cert(name), self.dev.client_key(name)

    def credentials(self, name: str | None) -> grpc.ChannelCredentials:
        """Channel credentials trusting the dev CA, presenting client ``name`` (None: none)."""
        ca = self.dev.ca_cert.read_bytes()
        if name is None:
            return grpc.ssl_channel_credentials(ca)
        cert, key = self.client(name)
        return grpc.ssl_channel_credentials(ca, key.read_bytes(), cert.read_bytes())


def _issue_client_cert(
    directory: Path,
    label: str,
    *,
    ca: DevKeys,
    common_name: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
) -> tuple[Path, Path]:
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{label}.pem", directory / f"{label}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The dev CA (clients gateway, portal, cm, intruder), a foreign CA, and bad
    client certificates: expired, not yet valid, and server-only, all signed by the
    dev CA."""
    dev = init_dev_keys(
        tmp_path_factory.mktemp("pki"), clients=("gateway", "portal", "cm", "intruder")
    )
    other = init_dev_keys(tmp_path_factory.mktemp("pki-other"), clients=("gateway", "portal"))
    bad_dir = tmp_path_factory.mktemp("pki-bad")
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    bad = {
        "expired": _issue_client_cert(
            bad_dir, "expired", ca=dev, common_name="portal", not_before=now - 30 * day,
            not_after=now - day,
        ),
        "not-yet-valid": _issue_client_cert(
            bad_dir, "not-yet-valid", ca=dev, common_name="portal", not_before=now + day,
            not_after=now + 30 * day,
        ),
        "server-only": _issue_client_cert(
            bad_dir, "server-only", ca=dev, common_name="portal", not_before=now - day,
            not_after=now + 30 * day, usage=ExtendedKeyUsageOID.SERVER_AUTH,
        ),
        "foreign": (other.client_cert("portal"), other.client_key("portal")),
    }  # fmt: skip
    return Pki(dev=dev, other=other, bad=bad)


@pytest.fixture
async def tls_hz(keys: Keys, tmp_path: Path, pki: Pki) -> AsyncIterator[Harness]:
    """A harness in production mode: mutual TLS everywhere on the dev CA."""
    harness = Harness(keys, tmp_path, tls=pki.dev)
    try:
        yield harness
    finally:
        await harness.close()


# ---------------------------------------------------------------- attacker's key server


@dataclass
class KeyServer:
    """An HTTP server on 127.0.0.1 that would hand out the attacker's JWKS (and
    certificate) to anyone who asked; ``requests`` counts who did."""

    url: str
    key: SigningKey
    requests: list[str]


@pytest.fixture
def attacker_keys() -> Iterator[KeyServer]:
    """The attacker's key, served at ``KeyServer.url`` + ``/jwks.json``."""
    key = SigningKey.generate("ES256")
    body = json.dumps(key.jwks()).encode()
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield KeyServer(url=f"http://127.0.0.1:{server.server_address[1]}", key=key, requests=seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------- raw network misbehaviour


@pytest.fixture
async def network() -> AsyncIterator[list[ResettingProxy | JunkServer]]:
    """Raw servers a test starts; all closed after it."""
    started: list[ResettingProxy | JunkServer] = []
    try:
        yield started
    finally:
        for server in started:
            await server.close()
