"""A whole federation on one machine, for tests, stress runs and benchmarks.

A gateway, carriers and providers on port 0, with real keys, real warrants and
(when asked) mutual TLS with a development CA, the way
:mod:`onecert.sdk.testing` serves adapter authors. The fakes answer fixed data
and can be told to misbehave (latency, hang, crash, refuse); SDK adapters can
join as they are. Nothing is mocked: every call crosses a real gRPC server.

::

    from onecert.gateway.testing import CURRENT, Federation, FederationKeys, binding, at

    async def test_lookup(tmp_path):
        keys = FederationKeys.create(tmp_path / "keys")
        async with Federation(keys, tmp_path, tls=True) as fed:
            await fed.carrier("cm")                       # the citizen's two numbers
            pay = await fed.provider("pay", {CURRENT: [binding("a1", "lin", at(2021))]})
            pay.behaviour.latency = 0.2                   # a slow provider
            gateway = await fed.gateway(store="sqlite")   # or a PostgreSQL URL, or None
            messages = await fed.lookup(gateway)
            assert fed.result_of(messages, "pay", CURRENT).bindings

``tls=False`` runs everything in plaintext development mode instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from onecert.gateway import GatewayServer
from onecert.gateway._config import (
    AdminConfig,
    CarrierConfig,
    CheckRecycledConfig,
    DeliveryConfig,
    EnrollmentConfig,
    FanoutConfig,
    GatewayConfig,
    IdentityConfig,
    IssuerConfig,
    KeysConfig,
    NoticesConfig,
    ProviderConfig,
    StoreConfig,
    UpstreamTLS,
)
from onecert.gateway._identity import AssertionIssuer
from onecert.sdk import Carrier, Provider, Server
from onecert.sdk._channel import ChannelBuilder
from onecert.sdk._convert import timestamp
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey, VerificationKey, parse_jwks
from onecert.sdk._lifecycle import AsyncResource
from onecert.sdk._tls import ClientTLS, ServerTLS, TLSFiles, peer_common_name
from onecert.sdk._warrant import Warrant, WarrantError, WarrantVerifier
from onecert.sdk.client import GatewayClient
from onecert.sdk.devkeys import DevKeys, init_dev_keys, read_hex_key
from onecert.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

__all__ = [
    "ADMIN_CN",
    "CITIZEN_SUB",
    "CURRENT",
    "CURRENT_FROM",
    "FAST_DELIVERY",
    "FAST_NOTICES",
    "FORMER",
    "FORMER_FROM",
    "FORMER_UNTIL",
    "GATEWAY_ID",
    "IDN",
    "IDN_KEY",
    "ISSUER",
    "OTHER_IDN",
    "OTHER_NUMBER",
    "OTHER_SUB",
    "Behaviour",
    "ChildProcess",
    "FakeCarrier",
    "FakeProvider",
    "Federation",
    "FederationKeys",
    "GatewayProcess",
    "Record",
    "StoryNames",
    "at",
    "binding",
    "enrollment_config",
    "gateway_toml",
    "stamp",
    "story_registry",
    "story_tenures",
    "tenure",
    "timed_binding",
]

# ---------------------------------------------------------------- the story

ISSUER = "https://id.example.test"
GATEWAY_ID = "onecert-gateway"
ADMIN_CN = "regulator"
IDN_KEY = bytes(range(32))
DOCUMENT = "110101199003070011"
OTHER_DOCUMENT = "110101198512120022"
CITIZEN_SUB = "citizen-7f3a"
OTHER_SUB = "citizen-0b9c"
IDN = compute_idn(IDN_KEY, DOCUMENT)
OTHER_IDN = compute_idn(IDN_KEY, OTHER_DOCUMENT)
# The classic story: a number held 2012-2017 and recycled since, a current
# number held since mid-2020 that came with a previous holder's accounts, and
# the other citizen's number.
CURRENT = "+8613800138001"
FORMER = "+8613900139002"
OTHER_NUMBER = "+8613700137003"
CURRENT_FROM = datetime(2020, 6, 1, tzinfo=UTC)
FORMER_FROM = datetime(2012, 3, 1, tzinfo=UTC)
FORMER_UNTIL = datetime(2017, 9, 1, tzinfo=UTC)

# Short everything, so retries, leases, expiry and notices happen within a test.
FAST_DELIVERY = DeliveryConfig(
    workers=2,
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
    workers=1,
    check_interval_s=0.05,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    push_deadline_s=2.0,
    poll_wait_s=0.1,
)


def enrollment_config(keys: FederationKeys, **overrides: Any) -> EnrollmentConfig:
    """``[enrollment]`` with the dev CA as the federation CA, the join listener on port 0,
    and a gate with short deadlines; ``overrides`` replace any field."""
    values: dict[str, Any] = {
        "ca_cert": keys.dev.ca_cert,
        "ca_key": keys.dev.ca_key,
        "listen": "127.0.0.1:0",
        "gate_timeout_s": 30.0,
        "gate_call_timeout_s": 2.0,
        **overrides,
    }
    return EnrollmentConfig(**values)


def at(year: int, month: int = 1, day: int = 1) -> datetime:
    """Midnight UTC of a day."""
    return datetime(year, month, day, tzinfo=UTC)


def stamp(when: datetime) -> Any:
    """A protobuf Timestamp."""
    return timestamp(when)


def tenure(
    msisdn: str,
    carrier_id: str,
    held_from: datetime,
    held_until: datetime | None = None,
    state: common_pb2.TenureState.ValueType | None = None,
) -> registry_pb2.Tenure:
    """A tenure: ACTIVE while held, RECYCLED once ``held_until`` is given."""
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
    """A binding as a provider answers it (``bound_at`` None: unknown)."""
    out = provider_pb2.Binding(
        account_ref=account_ref, display_name=display_name, kind=kind, unbindable=unbindable
    )
    if bound_at is not None:
        out.bound_at.CopyFrom(stamp(bound_at))
    return out


def timed_binding(**times: datetime) -> provider_pb2.Binding:
    """Login account "a1" with only the times given (``bound_at``, ``bound_not_before``,
    ``bound_not_after``): how a provider says what it knows of a binding's date."""
    out = provider_pb2.Binding(account_ref="a1", kind=common_pb2.BINDING_KIND_LOGIN)
    for name, value in times.items():
        getattr(out, name).FromDatetime(value)
    return out


def story_tenures(carrier_id: str = "cm") -> list[registry_pb2.Tenure]:
    """The citizen's current and former numbers."""
    return [
        tenure(CURRENT, carrier_id, CURRENT_FROM),
        tenure(FORMER, carrier_id, FORMER_FROM, FORMER_UNTIL),
    ]


def story_registry(carrier_id: str = "cm") -> dict[str, list[registry_pb2.Tenure]]:
    """A carrier's answers by idn: the citizen's two numbers, the other citizen's one."""
    return {
        IDN: story_tenures(carrier_id),
        OTHER_IDN: [tenure(OTHER_NUMBER, carrier_id, CURRENT_FROM)],
    }


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class FederationKeys:
    """Every key of a federation: the dev keys directory (``onecert keys init``)
    and the keys read from it.

    Build it once per test session with :meth:`create`; it is only read.
    """

    dev: DevKeys
    identity: SigningKey
    warrant: SigningKey
    handle: bytes

    @classmethod
    def create(
        cls, directory: str | Path, *, clients: Sequence[str] = (), force: bool = False
    ) -> FederationKeys:
        """Write a dev keys directory (the CA, the server certificate and client
        certificates for the gateway, the portal, the regulator and ``clients``;
        ``force`` replaces existing files)."""
        names = ("gateway", "portal", ADMIN_CN, *clients)
        return cls.load(init_dev_keys(directory, clients=names, force=force))

    @classmethod
    def load(cls, dev: DevKeys) -> FederationKeys:
        """The keys of an existing dev keys directory."""
        return cls(
            dev=dev,
            identity=SigningKey.load(dev.identity_key),
            warrant=SigningKey.load(dev.warrant_key),
            handle=read_hex_key(dev.handle_key),
        )

    @property
    def gateway_keys(self) -> dict[str, VerificationKey]:
        """The gateway's public keys, as carriers and providers trust them."""
        return parse_jwks(self.warrant.jwks())

    def client_tls(self, name: str = "portal") -> ClientTLS:
        """Mutual TLS as client ``name`` (its certificate's CN)."""
        return ClientTLS(self.dev.ca_cert, self.dev.client_cert(name), self.dev.client_key(name))

    def server_tls(self) -> ServerTLS:
        """The dev server certificate, requiring client certificates of the dev CA."""
        return ServerTLS(self.dev.server_cert, self.dev.server_key, self.dev.ca_cert)


# ---------------------------------------------------------------- a gateway process


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _toml_table(name: str, values: Mapping[str, object]) -> str:
    body = "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items() if v is not None)
    return f"{name}\n{body}\n"


def gateway_toml(
    keys: FederationKeys | DevKeys,
    *,
    store_url: str,
    store_schema: str | None = None,
    listen_port: int = 0,
    carriers: Sequence[Mapping[str, object]] = (),
    providers: Sequence[Mapping[str, object]] = (),
    issuer: str = ISSUER,
    upstream_tls: bool = False,
    gateway: Mapping[str, object] | None = None,
    sections: Mapping[str, Mapping[str, object]] | None = None,
) -> str:
    """A development gateway's configuration file (``onecert gateway serve
    --config``): plaintext to its callers on loopback, these keys and store.

    Carriers and providers are plaintext unless ``upstream_tls`` (mutual TLS
    with the dev CA as client "gateway"); ``gateway`` adds keys of ``[gateway]``,
    ``sections`` whole tables such as ``delivery`` or ``fanout``.
    """
    dev = keys.dev if isinstance(keys, FederationKeys) else keys
    gateway_id = (gateway or {}).get("id", GATEWAY_ID)
    text = _toml_table(
        "[gateway]",
        {
            "id": gateway_id,
            "listen": f"127.0.0.1:{listen_port}",
            "dev_plaintext": True,
            "grace_period_s": 1,
            **(gateway or {}),
        },
    )
    text += _toml_table("[keys]", {"warrant_key": dev.warrant_key, "handle_key": dev.handle_key})
    text += _toml_table("[identity]", {"audience": gateway_id})
    text += _toml_table("[[identity.issuers]]", {"issuer": issuer, "jwks": dev.identity_jwks})
    if upstream_tls:
        text += _toml_table(
            "[upstream_tls]",
            {
                "ca": dev.ca_cert,
                "cert": dev.client_cert("gateway"),
                "key": dev.client_key("gateway"),
            },
        )
    text += _toml_table("[store]", {"url": store_url, "schema": store_schema, "auto_migrate": True})
    for name, values in (sections or {}).items():
        text += _toml_table(f"[{name}]", values)
    for carrier in carriers:
        text += _toml_table("[[carriers]]", {"plaintext": not upstream_tls, **carrier})
    for provider in providers:
        text += _toml_table("[[providers]]", {"plaintext": not upstream_tls, **provider})
    return text


class ChildProcess(AsyncResource):
    """A program in a child process that prints one line with ``port N`` on stdout
    once it listens: spawned, awaited, killed (for crash tests, stress runs and
    benchmarks). :class:`GatewayProcess` is the gateway's.

    Its log (stderr) is appended to ``log``. ``async with`` spawns it, waits
    until it listens, and stops it gracefully (SIGKILL if it takes too long) at
    the end.

    Args:
        argv: the program and its arguments (``sys.executable`` first for Python).
        log: the file its stderr is appended to.
        name: what the failure messages call it.
    """

    def __init__(self, argv: Sequence[str], log: Path, *, name: str = "the child process") -> None:
        self._argv = tuple(argv)
        self._log = log
        self._name = name
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Future[None] | None = None
        self._port: int | None = None
        self._listening = asyncio.Event()

    async def _enter(self) -> None:
        await self.spawn()
        await self.wait_ready()

    async def _exit(self) -> None:
        await self.terminate()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("not spawned")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def ready(self) -> bool:
        """Whether it has said it listens."""
        return self._port is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("not listening (yet)")
        return self._port

    async def spawn(self) -> None:
        """Start the process (it listens a little later: :meth:`wait_ready`)."""
        self._port = None
        self._listening.clear()
        with self._log.open("ab") as stderr:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv, stdout=asyncio.subprocess.PIPE, stderr=stderr
            )
        self._reader = asyncio.ensure_future(self._read(self._process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        line = await process.stdout.readline()
        words = line.decode(errors="replace").split()
        if "port" in words:
            self._port = int(words[words.index("port") + 1])
            self._listening.set()
        # Read on to the end, so the pipe is closed when the process ends.
        await process.stdout.read()

    async def wait_ready(self, timeout: float = 90.0) -> None:  # noqa: ASYNC109 - start-up takes seconds on a busy machine
        """Wait until it listens; fail with the log's tail if it exits first."""
        assert self._process is not None
        listening = asyncio.ensure_future(self._listening.wait())
        exited = asyncio.ensure_future(self._process.wait())
        await asyncio.wait({listening, exited}, timeout=timeout, return_when="FIRST_COMPLETED")
        listening.cancel()
        exited.cancel()
        if self.ready:
            return
        raise AssertionError(
            f"{self._name} did not listen within {timeout:g}s; log tail:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        """The end of its log."""
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no graceful anything."""
        if self.running:
            assert self._process is not None
            self._process.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        """Wait for it to exit; its exit status."""
        assert self._process is not None
        code = await self._process.wait()
        if self._reader is not None:
            # The pipe is at its end once the process is gone.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 5)
            if not self._reader.done():
                self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        return code

    async def terminate(self, timeout: float = 20.0) -> int:  # noqa: ASYNC109 - a bounded graceful stop
        """SIGTERM (a graceful stop), SIGKILL if it takes longer than ``timeout``."""
        if self.running:
            assert self._process is not None
            self._process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self._process.wait()
            except TimeoutError:
                self.kill()
        return await self.wait()


class GatewayProcess(ChildProcess):
    """``onecert gateway serve --config CONFIG`` in a child process."""

    def __init__(self, config: Path, log: Path) -> None:
        super().__init__(
            (sys.executable, "-m", "onecert.cli", "gateway", "serve", "--config", str(config)),
            log,
            name="the gateway",
        )


# ---------------------------------------------------------------- the fakes


@dataclass
class Behaviour:
    """How a fake misbehaves; change it between calls to change the fake.

    ``latency`` seconds before answering; ``hang`` never answers; ``crash``
    raises (an INTERNAL error); ``abort`` ends with that status;
    ``fail_first`` calls end UNAVAILABLE before it answers.
    """

    latency: float = 0.0
    hang: bool = False
    crash: str | None = None
    abort: grpc.StatusCode | None = None
    abort_details: str = ""
    fail_first: int = 0


@dataclass
class Record:
    """What a fake saw: its data calls, the warrants, who called, how many at once."""

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


Context = grpc.aio.ServicerContext[Any, Any]


def _token(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return ""


class _Fake:
    """Warrant checks and misbehaviour shared by the fake carrier and provider;
    ``on_call`` runs when a data call has passed its warrant check."""

    def __init__(self, upstream_id: str, keys: FederationKeys) -> None:
        self.id = upstream_id
        self.behaviour = Behaviour()
        self.record = Record()
        self.on_call: Callable[[], None] | None = None
        self._verifier = WarrantVerifier(
            keys=keys.gateway_keys, issuer=GATEWAY_ID, audience=upstream_id
        )

    async def _check(self, context: Context, target: str) -> None:
        token = _token(context)
        try:
            warrant = self._verifier.verify(token, target=target)
        except WarrantError as exc:
            self.record.refused_warrants += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        self.record.warrants.append(warrant)
        self.record.tokens.append(token)
        self.record.peers.append(peer_common_name(context))

    async def _call(self, context: Context, target: str) -> None:
        """Count the call, check its warrant, then behave as told."""
        self.record.calls += 1
        self.record.targets.append(target)
        await self._check(context, target)
        self.record.started.set()
        if self.on_call is not None:
            self.on_call()
        self.record.in_flight += 1
        self.record.peak = max(self.record.peak, self.record.in_flight)
        try:
            await self._misbehave(context)
        finally:
            self.record.in_flight -= 1

    async def _misbehave(self, context: Context) -> None:
        behaviour = self.behaviour
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
            self.record.cancelled.set()
            raise


class FakeCarrier(_Fake, registry_pb2_grpc.NumberRegistryServicer):
    """A carrier answering fixed tenures per idn; it checks every warrant."""

    def __init__(
        self,
        carrier_id: str,
        keys: FederationKeys,
        tenures: Mapping[str, Sequence[registry_pb2.Tenure]],
    ) -> None:
        super().__init__(carrier_id, keys)
        self.tenures = {k: list(v) for k, v in tenures.items()}

    async def ListNumbers(  # noqa: N802 - the gRPC method name
        self, request: registry_pb2.ListNumbersRequest, context: Context
    ) -> registry_pb2.ListNumbersResponse:
        await self._call(context, request.idn)
        return registry_pb2.ListNumbersResponse(tenures=self.tenures.get(request.idn, []))


class FakeProvider(_Fake, provider_pb2_grpc.BindingProviderServicer):
    """A provider answering fixed bindings per msisdn; it checks every warrant.

    ``answer`` replaces the fixed bindings with any response (oversized,
    malformed...); ``describe_id`` and ``contract_version`` are what its
    Describe claims. Unbinds are kept in ``unbinds`` (``unbind_asked`` is set
    at the first) and answered ``unbind_outcome`` (DONE; None: UNAVAILABLE);
    notices are kept in ``events`` and acknowledged, or refused with the
    status in ``refuse_events``.
    """

    def __init__(
        self,
        provider_id: str,
        keys: FederationKeys,
        bindings: Mapping[str, Sequence[provider_pb2.Binding]],
        *,
        name: str = "",
        category: common_pb2.ProviderCategory.ValueType = common_pb2.PROVIDER_CATEGORY_SOCIAL,
    ) -> None:
        super().__init__(provider_id, keys)
        self.name = name or provider_id.title()
        self.category = category
        self.bindings = {k: list(v) for k, v in bindings.items()}
        self.describe_id = provider_id
        self.contract_version = "onecert.v1"
        self.answer: Callable[[str], provider_pb2.ListBindingsResponse] | None = None
        self.unbind_outcome: common_pb2.UnbindOutcome.ValueType | None = (
            common_pb2.UNBIND_OUTCOME_DONE
        )
        self.unbinds: list[provider_pb2.UnbindRequest] = []
        self.unbind_asked = asyncio.Event()
        self.events: list[provider_pb2.ReceiveEventRequest] = []
        self.refuse_events: grpc.StatusCode | None = None
        self.describe_calls = 0

    async def Describe(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.DescribeRequest, context: Context
    ) -> provider_pb2.DescribeResponse:
        self.describe_calls += 1
        return provider_pb2.DescribeResponse(
            provider_id=self.describe_id,
            name=self.name,
            category=self.category,
            contract_version=self.contract_version,
            implementation="onecert.gateway.testing",
        )

    async def ListBindings(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.ListBindingsRequest, context: Context
    ) -> provider_pb2.ListBindingsResponse:
        await self._call(context, request.msisdn)
        if self.answer is not None:
            return self.answer(request.msisdn)
        return provider_pb2.ListBindingsResponse(bindings=self.bindings.get(request.msisdn, []))

    async def Unbind(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.UnbindRequest, context: Context
    ) -> provider_pb2.UnbindResponse:
        self.unbinds.append(request)
        self.unbind_asked.set()
        await self._check(context, request.msisdn)
        if self.unbind_outcome is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "unbinding is down for maintenance")
        return provider_pb2.UnbindResponse(outcome=self.unbind_outcome)

    async def ReceiveEvent(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.ReceiveEventRequest, context: Context
    ) -> provider_pb2.ReceiveEventResponse:
        self.events.append(request)
        if self.refuse_events is not None:
            await context.abort(self.refuse_events, "this fake refuses notices")
        return provider_pb2.ReceiveEventResponse(acknowledged=True)

    async def ReceiveEvents(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.ReceiveEventsRequest, context: Context
    ) -> provider_pb2.ReceiveEventsResponse:
        # Batches are optional (E-13): this fake takes notices one at a time,
        # as a provider written before ReceiveEvents would.
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "one notice at a time")


# ---------------------------------------------------------------- the federation


class StoryNames:
    """The story's names and helpers as attributes, for harnesses that tests reach
    through a fixture (``fed.CITIZEN_SUB``, ``fed.at(2020)``)."""

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
    FORMER_FROM = FORMER_FROM
    FORMER_UNTIL = FORMER_UNTIL
    at = staticmethod(at)
    stamp = staticmethod(stamp)
    tenure = staticmethod(tenure)
    binding = staticmethod(binding)
    story_tenures = staticmethod(story_tenures)


class Federation(StoryNames, AsyncResource):
    """Carriers and providers on real servers, and gateways configured to use them.

    Args:
        keys: the federation's keys (:meth:`FederationKeys.create`).
        directory: where gateways keep a SQLite store.
        tls: mutual TLS everywhere with the dev CA, the gateway in production
            mode; False: plaintext, the gateway in development mode.
    """

    def __init__(self, keys: FederationKeys, directory: str | Path, *, tls: bool = False) -> None:
        self.keys = keys
        self.directory = Path(directory)
        self.tls = tls
        self.issuer = AssertionIssuer(key=keys.identity, issuer=ISSUER)
        self.carriers: list[tuple[FakeCarrier, str]] = []
        self.providers: list[tuple[FakeProvider, str]] = []
        self.upstream_carriers: list[CarrierConfig] = []
        self.upstream_providers: list[ProviderConfig] = []
        self.gateways: list[GatewayServer] = []
        self._servers: list[grpc.aio.Server] = []
        self._adapters: list[Server] = []
        self._channels: list[grpc.aio.Channel] = []
        self._builders: dict[str, ChannelBuilder] = {}

    async def _exit(self) -> None:
        await self.close()

    # ------------------------------------------------------------ upstreams

    async def serve(self, add: Callable[[Any, grpc.aio.Server], None], servicer: Any) -> str:
        """Serve any servicer on a port of its own (mutual TLS with ``tls``); its address."""
        server = grpc.aio.server()
        add(servicer, server)
        if self.tls:
            port = server.add_secure_port("127.0.0.1:0", self.keys.server_tls().credentials())
        else:
            port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._servers.append(server)
        return f"127.0.0.1:{port}"

    async def carrier(
        self,
        carrier_id: str = "cm",
        tenures: Mapping[str, Sequence[registry_pb2.Tenure]] | None = None,
    ) -> FakeCarrier:
        """A fake carrier (:func:`story_registry` by default), configured in every gateway."""
        fake = FakeCarrier(
            carrier_id, self.keys, story_registry(carrier_id) if tenures is None else tenures
        )
        address = await self.serve(registry_pb2_grpc.add_NumberRegistryServicer_to_server, fake)
        self.carriers.append((fake, address))
        return fake

    async def provider(
        self,
        provider_id: str,
        bindings: Mapping[str, Sequence[provider_pb2.Binding]] | None = None,
        *,
        name: str = "",
        category: common_pb2.ProviderCategory.ValueType = common_pb2.PROVIDER_CATEGORY_SOCIAL,
    ) -> FakeProvider:
        """A fake provider, configured in every gateway."""
        fake = FakeProvider(provider_id, self.keys, bindings or {}, name=name, category=category)
        address = await self.serve(provider_pb2_grpc.add_BindingProviderServicer_to_server, fake)
        self.providers.append((fake, address))
        return fake

    async def adapter(
        self,
        adapter: Provider | Carrier,
        *,
        listen: str = "127.0.0.1:0",
        register: bool = True,
        **server_options: Any,
    ) -> Server:
        """Serve an SDK provider or carrier (mutual TLS with ``tls``) and configure
        it in every gateway (unless ``register`` is False). ``server_options`` go
        to :class:`onecert.sdk.Server` (``idempotency``, ``grace``, ``gateway_keys``...)."""
        options: dict[str, Any] = {
            "gateway_keys": self.keys.dev.gateway_jwks,
            "gateway_issuer": GATEWAY_ID,
            "tls": self.keys.server_tls() if self.tls else None,
            "insecure": not self.tls,
            "grace": 0.5,
            **server_options,
        }
        server = Server(adapter, listen=listen, **options)
        await server.start()
        self._adapters.append(server)
        if register and isinstance(adapter, Provider):
            self.add_provider(adapter.id, server.address, name=adapter.name)
        elif register:
            self.add_carrier(adapter.id, server.address)
        return server

    def add_carrier(self, carrier_id: str, address: str, *, prefixes: Sequence[str] = ()) -> None:
        """Configure a carrier served by something else (or by nothing)."""
        self.upstream_carriers.append(
            CarrierConfig(
                id=carrier_id, address=address, plaintext=not self.tls, prefixes=tuple(prefixes)
            )
        )

    def add_provider(
        self, provider_id: str, address: str, *, name: str = "", delivery: str = "push"
    ) -> None:
        """Configure a provider served by something else (or by nothing)."""
        self.upstream_providers.append(
            ProviderConfig(
                id=provider_id,
                name=name,
                address=address,
                plaintext=not self.tls,
                delivery=delivery,
            )
        )

    def upstream_tables(self) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        """The SDK adapters and other upstreams added with :meth:`adapter`,
        :meth:`add_carrier` and :meth:`add_provider`, as :func:`gateway_toml`
        takes them: (carriers, providers)."""
        carriers: list[dict[str, object]] = [
            {"id": c.id, "address": c.address, "prefixes": list(c.prefixes)}
            for c in self.upstream_carriers
        ]
        providers: list[dict[str, object]] = [
            {"id": p.id, "address": p.address, "delivery": p.delivery}
            for p in self.upstream_providers
        ]
        return carriers, providers

    def upstream_calls(self) -> int:
        """Every call about someone the fakes received (lookups, unbinds, notices)."""
        return sum(c.record.calls for c, _ in self.carriers) + sum(
            p.record.calls + len(p.unbinds) + len(p.events) for p, _ in self.providers
        )

    # ------------------------------------------------------------ gateways

    def store_config(self, store: str | StoreConfig | None) -> StoreConfig | None:
        """``"sqlite"``: a file in ``directory``; a URL: that database (migrated at
        start-up); a :class:`StoreConfig` as it is; None: no store."""
        if store is None or isinstance(store, StoreConfig):
            return store
        if store == "sqlite":
            return StoreConfig(url=f"sqlite+aiosqlite:///{self.directory / 'gateway.db'}")
        return StoreConfig(url=store, auto_migrate=True)

    def config(
        self,
        *,
        store: str | StoreConfig | None = None,
        fanout: FanoutConfig | None = None,
        provider_deadlines: Mapping[str, float] | None = None,
        carrier_prefixes: Sequence[str] = ("+86138", "+86139"),
        poll_providers: Sequence[str] = (),
        **overrides: Any,
    ) -> GatewayConfig:
        """A gateway for every upstream, fast workers and no rate limits;
        ``overrides`` replace any :class:`GatewayConfig` field.

        Args:
            store: see :meth:`store_config`.
            fanout: deadlines and retries (2 s deadlines by default).
            provider_deadlines: a deadline per provider id.
            carrier_prefixes: the numbers the fake carriers may report.
            poll_providers: fake providers that poll for notices.
        """
        deadlines = provider_deadlines or {}
        plaintext = not self.tls
        dev = self.keys.dev
        config = GatewayConfig(
            id=GATEWAY_ID,
            listen="127.0.0.1:0",
            dev_plaintext=plaintext,
            tls=TLSFiles(dev.server_cert, dev.server_key, dev.ca_cert) if self.tls else None,
            upstream_tls=UpstreamTLS(
                ca=dev.ca_cert, cert=dev.client_cert("gateway"), key=dev.client_key("gateway")
            )
            if self.tls
            else None,
            keys=KeysConfig(
                warrant_key=self.keys.dev.warrant_key, handle_key=self.keys.dev.handle_key
            ),
            identity=IdentityConfig(
                audience=GATEWAY_ID,
                issuers=(IssuerConfig(issuer=ISSUER, jwks=self.keys.dev.identity_jwks),),
            ),
            carriers=tuple(
                CarrierConfig(
                    id=c.id,
                    address=address,
                    plaintext=plaintext,
                    prefixes=tuple(carrier_prefixes),
                )
                for c, address in self.carriers
            )
            + tuple(self.upstream_carriers),
            providers=tuple(
                ProviderConfig(
                    id=p.id,
                    name=p.name,
                    category=p.category,
                    address=address,
                    deadline_s=deadlines.get(p.id),
                    plaintext=plaintext,
                    delivery="poll" if p.id in poll_providers else "push",
                )
                for p, address in self.providers
            )
            + tuple(self.upstream_providers),
            fanout=fanout or FanoutConfig(provider_deadline_s=2.0, carrier_deadline_s=2.0),
            grace_period_s=0.5,
            store=self.store_config(store),
            delivery=FAST_DELIVERY,
            notices=FAST_NOTICES,
            check_recycled=CheckRecycledConfig(rate_per_s=10_000.0, burst=10_000),
            admin=AdminConfig(client_cns=(ADMIN_CN,)),
        )
        return dataclasses.replace(config, **overrides)

    async def gateway(
        self,
        config: GatewayConfig | None = None,
        *,
        server_options: Mapping[str, Any] | None = None,
        **config_options: Any,
    ) -> GatewayServer:
        """A started gateway (``config``, or :meth:`config` with ``config_options``),
        stopped by :meth:`close`; ``server_options`` go to :class:`GatewayServer`
        (``store``, ``clock``, ``router``...)."""
        server = GatewayServer(config or self.config(**config_options), **(server_options or {}))
        await server.start()
        self.gateways.append(server)
        return server

    # ------------------------------------------------------------ callers

    def assertion(self, **claims: Any) -> str:
        """A fresh identity assertion for the citizen (``claims`` override)."""
        options: dict[str, Any] = {"sub": CITIZEN_SUB, "idn": IDN, "audience": GATEWAY_ID}
        options.update(claims)
        return self.issuer.mint(**options)

    @staticmethod
    def bearer(token: str) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying ``token``."""
        return (("authorization", f"Bearer {token}"),)

    def metadata(self, **claims: Any) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying a fresh assertion."""
        return self.bearer(self.assertion(**claims))

    def client_tls(self, name: str = "portal") -> ClientTLS:
        """Mutual TLS as client ``name``."""
        return self.keys.client_tls(name)

    def channel(self, gateway: GatewayServer | int, *, client: str = "portal") -> grpc.aio.Channel:
        """A channel to a gateway (or a port) as client ``client``; closed by :meth:`close`."""
        port = gateway if isinstance(gateway, int) else gateway.port
        builder = self._builders.get(client)
        if builder is None:
            builder = ChannelBuilder(tls=self.client_tls(client) if self.tls else None)
            self._builders[client] = builder
        channel = builder.open(f"127.0.0.1:{port}", plaintext=not self.tls)
        self._channels.append(channel)
        return channel

    def stub(
        self, gateway: GatewayServer | int, *, client: str = "portal"
    ) -> gateway_pb2_grpc.GatewayAsyncStub:
        """A Gateway stub over :meth:`channel`."""
        return gateway_pb2_grpc.GatewayStub(self.channel(gateway, client=client))

    def client(self, gateway: GatewayServer) -> GatewayClient:
        """The SDK's portal client of a gateway; the caller closes it."""
        target = f"127.0.0.1:{gateway.port}"
        if self.tls:
            return GatewayClient(target, tls=self.client_tls())
        return GatewayClient(target, insecure=True)

    def lookup_call(
        self,
        gateway: GatewayServer | int,
        assertion: str | None = None,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        request: gateway_pb2.LookupRequest | None = None,
        deadline: float | None = 10.0,
        stub: gateway_pb2_grpc.GatewayAsyncStub | None = None,
    ) -> grpc.aio.UnaryStreamCall[gateway_pb2.LookupRequest, gateway_pb2.LookupResponse]:
        """Start one lookup and return the call, to read at the test's pace or cancel.

        ``assertion`` (a fresh one by default) or else ``metadata`` identify
        the citizen; ``deadline`` None sets none; ``stub`` calls over another
        channel.
        """
        if metadata is None:
            metadata = self.bearer(assertion if assertion is not None else self.assertion())
        return (stub or self.stub(gateway)).Lookup(
            request or gateway_pb2.LookupRequest(), metadata=tuple(metadata), timeout=deadline
        )

    async def lookup(
        self,
        gateway: GatewayServer | int,
        assertion: str | None = None,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        request: gateway_pb2.LookupRequest | None = None,
        deadline: float = 10.0,
        stub: gateway_pb2_grpc.GatewayAsyncStub | None = None,
    ) -> list[gateway_pb2.LookupResponse]:
        """Run one lookup (as :meth:`lookup_call`) and return every message
        (AioRpcError on failure)."""
        call = self.lookup_call(
            gateway, assertion, metadata=metadata, request=request, deadline=deadline, stub=stub
        )
        return [message async for message in call]

    async def unbind(
        self, gateway: GatewayServer | int, handle: str, assertion: str | None = None
    ) -> gateway_pb2.GatewayUnbindResponse:
        """Ask for the account behind ``handle`` to be unbound."""
        return await self.stub(gateway).Unbind(
            gateway_pb2.GatewayUnbindRequest(handle=handle),
            metadata=self.bearer(assertion if assertion is not None else self.assertion()),
            timeout=10,
        )

    @staticmethod
    def results(messages: Sequence[gateway_pb2.LookupResponse]) -> list[gateway_pb2.ProviderResult]:
        """The provider results of a lookup."""
        return [m.result for m in messages if m.WhichOneof("update") == "result"]

    @staticmethod
    def result_of(
        messages: Sequence[gateway_pb2.LookupResponse], provider_id: str, msisdn: str
    ) -> gateway_pb2.ProviderResult:
        """The one result of ``provider_id`` for ``msisdn`` (asserts there is one)."""
        found = [
            r
            for r in Federation.results(messages)
            if r.provider_id == provider_id and r.msisdn == msisdn
        ]
        assert len(found) == 1, (provider_id, len(found))
        return found[0]

    async def close(self) -> None:
        """Close every channel, stop every gateway, then every upstream."""
        for channel in self._channels:
            await channel.close()
        for gateway in self.gateways:
            await gateway.stop(0)
        for adapter in self._adapters:
            await adapter.shutdown(0)
        await asyncio.gather(*(s.stop(0) for s in self._servers))
