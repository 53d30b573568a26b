"""Helpers of the notice tests: a test clock, SDK providers that record notices,
raw providers that refuse or count pushes, and callers in every role, over the
federation of :mod:`onecert.gateway.testing`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select

from onecert.gateway import GatewayServer
from onecert.gateway._config import (
    CheckRecycledConfig,
    DeliveryConfig,
    GatewayConfig,
    NoticesConfig,
)
from onecert.gateway._principals import DEV_PRINCIPAL_HEADER
from onecert.gateway.store import Delivery, DeliveryState, Store
from onecert.gateway.store._models import audit_log
from onecert.gateway.testing import ADMIN_CN, GATEWAY_ID, Federation
from onecert.sdk import Provider, RecycledNotice, Server, Unavailable
from onecert.sdk._keys import load_jwks
from onecert.sdk.client import ProviderGatewayClient
from onecert.sdk.devkeys import DevKeys
from onecert.v1 import gateway_pb2, gateway_pb2_grpc, provider_pb2, provider_pb2_grpc

# Carrier "cm" serves +86138... and +861390... to +861394...; "ct" serves +86180...
CM_NUMBER = "+8613800138000"
CM_RANGE_NUMBER = "+8613920000001"
CT_NUMBER = "+8618000180000"
# Roughly now, on a whole second (the tests' clock starts here).
T0 = datetime.now(UTC).replace(microsecond=0)


def stamp(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` holds (polling every 20 ms); fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    until = loop.time() + within
    while not await check():
        if loop.time() > until:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Clock:
    """The gateway's clock in a test: runs from ``start`` like a real one, and
    jumps ahead when told to (days pass in an instant)."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self._origin = time.monotonic()
        self._offset = timedelta()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._origin) + self._offset

    def advance(self, delta: timedelta) -> None:
        self._offset += delta


@dataclass
class SdkProvider:
    """A real SDK provider; its ``on_recycled`` records notices and answers ``acts``."""

    provider: Provider
    notices: list[RecycledNotice] = field(default_factory=list)
    # None: recorded only ("act later"); an int: bindings removed now.
    acts: int | None = 2
    # Answer UNAVAILABLE this many times first.
    fail_first: int = 0
    server: Server | None = None
    # Each notice takes this long to handle; started is set at the first.
    delay_s: float = 0.0
    started: asyncio.Event = field(default_factory=asyncio.Event)


def sdk_provider(
    provider_id: str, *, acts: int | None = 2, fail_first: int = 0, delay_s: float = 0.0
) -> SdkProvider:
    provider = Provider(provider_id=provider_id, name=provider_id.title(), category="payment")
    handle = SdkProvider(provider, acts=acts, fail_first=fail_first, delay_s=delay_s)

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Any]:
        return []

    @provider.unbind
    async def unbind(request: Any) -> Any:
        raise Unavailable("not in this test")

    @provider.on_recycled
    async def on_recycled(notice: RecycledNotice) -> int | None:
        if handle.fail_first > 0:
            handle.fail_first -= 1
            raise Unavailable("warming up")
        handle.started.set()
        await asyncio.sleep(handle.delay_s)
        handle.notices.append(notice)
        return handle.acts

    return handle


class RefusingProvider(provider_pb2_grpc.BindingProviderServicer):
    """A provider whose ReceiveEvent always ends with one status."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code
        self.calls = 0

    async def ReceiveEvent(  # noqa: N802 - the gRPC method name
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        self.calls += 1
        await context.abort(self.code, "refused by the test")

    async def _not_in_this_fake(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        # ReceiveEvents too: batches are optional, notices come one at a time.
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this fake")

    Describe = ListBindings = Unbind = ReceiveEvents = _not_in_this_fake


class CountingProvider(RefusingProvider):
    """A provider that acknowledges every SET and counts pushes per ``jti``."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNIMPLEMENTED)
        self.pushes: dict[str, int] = {}

    async def ReceiveEvent(  # noqa: N802 - the gRPC method name
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        claims = jwt.decode(request.set, options={"verify_signature": False})
        self.pushes[claims["jti"]] = self.pushes.get(claims["jti"], 0) + 1
        await asyncio.sleep(0.01)  # long enough for claims to overlap
        return provider_pb2.ReceiveEventResponse(acknowledged=True)


class BatchProvider(RefusingProvider):
    """A provider answering ReceiveEvents per notice: ``answers`` maps a number to the
    status its notices get (UNAVAILABLE as many times as ``fail_times`` says), any other
    number is acknowledged; every batch's numbers are kept in ``batches``."""

    def __init__(self, answers: dict[str, grpc.StatusCode], fail_times: int = 1) -> None:
        super().__init__(grpc.StatusCode.UNIMPLEMENTED)
        self.answers = answers
        self.fail_times = fail_times
        self.batches: list[list[str]] = []

    async def ReceiveEvents(  # noqa: N802 - the gRPC method name
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        results, numbers = [], []
        for token in request.sets:
            claims = jwt.decode(token, options={"verify_signature": False})
            (event,) = claims["events"].values()
            number = event["subject"]["phone_number"]
            numbers.append(number)
            code = self.answers.get(number)
            if code is grpc.StatusCode.UNAVAILABLE and self.fail_times <= 0:
                code = None
            if code is grpc.StatusCode.UNAVAILABLE:
                self.fail_times -= 1
            result = provider_pb2.EventResult(jti=claims["jti"])
            if code is None:
                result.response.acknowledged = True
            else:
                result.error_code, result.error_message = code.value[0], "by the test"
            results.append(result)
        self.batches.append(numbers)
        return provider_pb2.ReceiveEventsResponse(results=results)


class NoticeWorld:
    """Providers, a gateway configured for them, and callers in every role.

    With ``tls``, everything speaks mutual TLS with dev certificates whose
    CN names the caller; without, the gateway runs in development mode and
    callers name themselves with the dev principal header.
    """

    T0 = T0
    GATEWAY_ID = GATEWAY_ID
    CM_NUMBER = CM_NUMBER
    CM_RANGE_NUMBER = CM_RANGE_NUMBER
    CT_NUMBER = CT_NUMBER
    ADMIN_CN = ADMIN_CN
    stamp = staticmethod(stamp)
    eventually = staticmethod(eventually)
    sdk_provider = staticmethod(sdk_provider)

    def __init__(self, fed: Federation, store: Store, clock: Clock) -> None:
        self.fed = fed
        self.keys: DevKeys = fed.keys.dev
        self.store = store
        self.clock = clock
        self.tls = fed.tls
        self.sdk: dict[str, SdkProvider] = {}
        # Nobody listens at the carriers' address: these tests only hear from carriers.
        fed.add_carrier("cm", "127.0.0.1:9", prefixes=("+86138", "+861390-+861394"))
        fed.add_carrier("ct", "127.0.0.1:9", prefixes=("+86180",))

    async def push_provider(
        self, provider_id: str, *, acts: int | None = 2, fail_first: int = 0
    ) -> SdkProvider:
        handle = sdk_provider(provider_id, acts=acts, fail_first=fail_first)
        handle.server = await self.fed.adapter(handle.provider, register=False)
        self.fed.add_provider(provider_id, handle.server.address)
        self.sdk[provider_id] = handle
        return handle

    async def counting_provider(self, provider_id: str) -> CountingProvider:
        fake = CountingProvider()
        await self._serve_fake(provider_id, fake)
        return fake

    async def batch_provider(
        self, provider_id: str, answers: dict[str, grpc.StatusCode]
    ) -> BatchProvider:
        fake = BatchProvider(answers)
        await self._serve_fake(provider_id, fake)
        return fake

    async def refusing_provider(self, provider_id: str, code: grpc.StatusCode) -> RefusingProvider:
        fake = RefusingProvider(code)
        await self._serve_fake(provider_id, fake)
        return fake

    async def _serve_fake(
        self, provider_id: str, fake: provider_pb2_grpc.BindingProviderServicer
    ) -> None:
        add = provider_pb2_grpc.add_BindingProviderServicer_to_server
        self.fed.add_provider(provider_id, await self.fed.serve(add, fake))

    def poll_provider(self, provider_id: str, *, name: str = "") -> None:
        self.fed.add_provider(provider_id, "127.0.0.1:9", name=name, delivery="poll")

    def config(
        self,
        *,
        notices: NoticesConfig | None = None,
        check_recycled: CheckRecycledConfig | None = None,
    ) -> GatewayConfig:
        return self.fed.config(
            # Unbind delivery is not what these tests watch: its default pace.
            delivery=DeliveryConfig(),
            notices=notices
            or NoticesConfig(
                check_interval_s=0.05,
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
                push_deadline_s=2.0,
                poll_wait_s=2.0,
            ),
            check_recycled=check_recycled or CheckRecycledConfig(),
        )

    async def gateway(self, config: GatewayConfig | None = None, **overrides: Any) -> GatewayServer:
        config = config or self.config()
        if overrides:
            config = replace(config, **overrides)
        options = {"store": self.store, "clock": self.clock}
        return await self.fed.gateway(config, server_options=options)

    def caller(self, gateway: GatewayServer | int, who: str) -> Caller:
        """A stub calling as ``who``: "carrier:cm", "provider:pay", "admin" or "cn:portal"."""
        role, _, ident = who.partition(":")
        if self.tls:
            cn = {"admin": ADMIN_CN}.get(role, ident)
            return Caller(self.fed.stub(gateway, client=cn), ())
        metadata = () if role == "cn" else ((DEV_PRINCIPAL_HEADER, who),)
        return Caller(self.fed.stub(gateway), metadata)

    async def check_codes(
        self, gateway: GatewayServer, callers: list[str], msisdn: str, since: datetime
    ) -> dict[str, grpc.StatusCode]:
        """What CheckRecycled answers each of ``callers`` (OK, or the refusal's code)."""
        codes = {}
        for who in callers:
            try:
                await self.caller(gateway, who).check(msisdn, since)
            except grpc.aio.AioRpcError as err:
                codes[who] = err.code()
            else:
                codes[who] = grpc.StatusCode.OK
        return codes

    def provider_client(self, gateway: GatewayServer, provider_id: str) -> ProviderGatewayClient:
        target = f"127.0.0.1:{gateway.port}"
        if self.tls:
            return ProviderGatewayClient(target, tls=self.fed.client_tls(provider_id))
        return ProviderGatewayClient(target, insecure=True, dev_provider_id=provider_id)

    @property
    def gateway_keys(self) -> Any:
        return load_jwks(self.keys.gateway_jwks)

    async def deliveries(self, notice_id: str) -> dict[str, Delivery]:
        return {d.provider_id: d for d in await self.store.deliveries.for_notice(notice_id)}

    async def settled(
        self,
        notice_id: str,
        state: DeliveryState = DeliveryState.ACKNOWLEDGED,
        *,
        providers: Iterable[str] | None = None,
        what: str = "the deliveries",
    ) -> dict[str, Delivery]:
        """Wait until the notice's deliveries to ``providers`` (by default every one it
        has) are in ``state``; then its deliveries by provider."""

        async def reached() -> bool:
            found = await self.deliveries(notice_id)
            names = found if providers is None else providers
            return all(name in found and found[name].state is state for name in names)

        await self.eventually(reached, what=what)
        return await self.deliveries(notice_id)

    async def audit_rows(self) -> list[dict[str, Any]]:
        for gateway in self.fed.gateways:
            if gateway.auditor is not None:
                await gateway.auditor.drain()
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(select(audit_log).order_by(audit_log.c.seq))).mappings()
            return [dict(r) for r in rows]

    async def close(self) -> None:
        await self.fed.close()


@dataclass(frozen=True)
class Caller:
    """A Gateway stub and the metadata that names the caller (dev mode)."""

    stub: gateway_pb2_grpc.GatewayAsyncStub
    metadata: tuple[tuple[str, str], ...]

    async def report(
        self,
        event_id: str,
        msisdn: str,
        *,
        kind: gateway_pb2.NumberEventType.ValueType = gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED,
        effective_at: datetime | None = None,
        quiet_period_ends_at: datetime | None = None,
    ) -> gateway_pb2.ReportNumberEventResponse:
        request = gateway_pb2.ReportNumberEventRequest(event_id=event_id, msisdn=msisdn, type=kind)
        request.effective_at.CopyFrom(stamp(effective_at or T0 - timedelta(hours=1)))
        if quiet_period_ends_at is not None:
            request.quiet_period_ends_at.CopyFrom(stamp(quiet_period_ends_at))
        return await self.stub.ReportNumberEvent(request, metadata=self.metadata, timeout=10)

    async def check(self, msisdn: str, since: datetime) -> Any:
        request = gateway_pb2.CheckRecycledRequest(msisdn=msisdn)
        request.specified_date.CopyFrom(stamp(since))
        return await self.stub.CheckRecycled(request, metadata=self.metadata, timeout=10)

    async def compliance(self, since: datetime | None = None) -> Any:
        request = gateway_pb2.GetComplianceReportRequest()
        if since is not None:
            request.since.CopyFrom(stamp(since))
        return await self.stub.GetComplianceReport(request, metadata=self.metadata, timeout=10)
