"""Fixtures for unbinding: real keys, a real carrier and real SDK providers on
ports of their own, gateways on a SQLite file or a PostgreSQL schema."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from sqlalchemy import func, select

from onecert.gateway import GatewayServer
from onecert.gateway._config import (
    CarrierConfig,
    DeliveryConfig,
    FanoutConfig,
    GatewayConfig,
    IdentityConfig,
    IssuerConfig,
    KeysConfig,
    ProviderConfig,
    StoreConfig,
)
from onecert.gateway._identity import AssertionIssuer
from onecert.gateway.store import Store, Ticket
from onecert.gateway.store._models import audit_log, unbind_tickets
from onecert.gateway.store.testing import Database
from onecert.sdk import (
    Binding,
    BindingKind,
    CallInfo,
    Carrier,
    Provider,
    Server,
    Tenure,
    TenureState,
    Unavailable,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey
from onecert.v1 import gateway_pb2, gateway_pb2_grpc

ISSUER = "https://id.example.test"
GATEWAY_ID = "onecert-gateway"
IDN_KEY = bytes(range(32))
CITIZEN_SUB = "citizen-7f3a"
OTHER_SUB = "citizen-0b9c"
IDN = compute_idn(IDN_KEY, "110101199003070011")
OTHER_IDN = compute_idn(IDN_KEY, "110101198512120022")

# A number held 2012-2017 and recycled since, and the current number, held
# since mid-2020, that came with a previous holder's account.
CURRENT = "+8613800138001"
FORMER = "+8613900139002"
OTHER_NUMBER = "+8613700137003"
CURRENT_FROM = datetime(2020, 6, 1, tzinfo=UTC)
FORMER_FROM = datetime(2012, 3, 1, tzinfo=UTC)
FORMER_UNTIL = datetime(2017, 9, 1, tzinfo=UTC)

# Short everything, so retries, leases and expiry happen within a test.
FAST = DeliveryConfig(
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


def story_bindings(prefix: str = "pay") -> dict[str, list[Binding]]:
    """One left-behind account on the former number; on the current number one
    account of the citizen's and one of the previous holder's."""
    return {
        FORMER: [
            Binding(
                account_ref=f"{prefix}-left-1",
                kind=BindingKind.PAYMENT,
                bound_at=datetime(2014, 5, 1, tzinfo=UTC),
                display_name="zhangsan",
            )
        ],
        CURRENT: [
            Binding(
                account_ref=f"{prefix}-mine-1",
                kind=BindingKind.LOGIN,
                bound_at=datetime(2021, 2, 1, tzinfo=UTC),
                display_name="lisi",
            ),
            Binding(
                account_ref=f"{prefix}-prev-1",
                kind=BindingKind.LOGIN,
                bound_at=datetime(2019, 2, 1, tzinfo=UTC),
                display_name="wangwu",
            ),
        ],
    }


@dataclass
class Accounts:
    """A provider's implementation: accounts by number, and knobs to misbehave.

    It counts what it applies per request id, so a test can tell an unbind
    applied once from one applied twice.
    """

    bindings: dict[str, list[Binding]]
    latency: float = 0.0
    # Apply first and answer slowly (the answer may be lost), rather than the reverse.
    apply_first: bool = False
    unavailable_first: int = 0
    pending_first: int = 0
    reject: str | None = None
    calls: list[UnbindRequest] = field(default_factory=list)
    infos: list[CallInfo] = field(default_factory=list)
    applied: collections.Counter[str] = field(default_factory=collections.Counter)
    detached: set[str] = field(default_factory=set)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def list_bindings(self, msisdn: str, info: CallInfo) -> list[Binding]:
        return [b for b in self.bindings.get(msisdn, []) if b.account_ref not in self.detached]

    async def unbind(self, request: UnbindRequest, info: CallInfo) -> UnbindResult:
        self.calls.append(request)
        self.infos.append(info)
        self.started.set()
        if self.apply_first:
            self.applied[request.request_id] += 1
            self.detached.add(request.account_ref)
            await asyncio.sleep(self.latency)
            return UnbindResult.done()
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.unavailable_first > 0:
            self.unavailable_first -= 1
            raise Unavailable("down for maintenance")
        if self.pending_first > 0:
            self.pending_first -= 1
            return UnbindResult.pending("manual review")
        if self.reject is not None:
            return UnbindResult.rejected(self.reject)
        self.applied[request.request_id] += 1
        self.detached.add(request.account_ref)
        return UnbindResult.done()


@dataclass
class ProviderSite:
    """One provider: its implementation, its port, and its server while it runs."""

    id: str
    name: str
    accounts: Accounts
    port: int
    server: Server | None = None
    trust: SigningKey | None = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Env:
    """Keys, a carrier and providers, and gateways on one database.

    Test modules cannot import this conftest, so constants are reachable
    from the fixture too.
    """

    CITIZEN_SUB = CITIZEN_SUB
    OTHER_SUB = OTHER_SUB
    IDN = IDN
    OTHER_IDN = OTHER_IDN
    CURRENT = CURRENT
    FORMER = FORMER
    FAST = FAST
    GATEWAY_ID = GATEWAY_ID
    story_bindings = staticmethod(story_bindings)
    free_port = staticmethod(free_port)

    def __init__(self, directory: Path, database: Database) -> None:
        self.dir = directory
        self.database = database
        self.identity = SigningKey.generate("ES256")
        self.warrant = SigningKey.generate("EdDSA")
        self.handle_key = os.urandom(32)
        self.identity_jwks = directory / "identity.jwks.json"
        self.identity_jwks.write_text(json.dumps(self.identity.jwks()))
        self.warrant_key = directory / "warrant.key.pem"
        self.warrant_key.write_bytes(self.warrant.to_pem())
        self.gateway_jwks = directory / "gateway.jwks.json"
        self.gateway_jwks.write_text(json.dumps(self.warrant.jwks()))
        self.handle_key_file = directory / "handle.key"
        self.handle_key_file.write_text(self.handle_key.hex())
        self.issuer = AssertionIssuer(key=self.identity, issuer=ISSUER)
        self.providers: dict[str, ProviderSite] = {}
        self.carrier_server: Server | None = None
        self.carrier_port = 0
        self.gateways: list[GatewayServer] = []
        self._channels: list[grpc.aio.Channel] = []
        self._stores: list[Store] = []

    # ------------------------------------------------------------ upstreams

    async def carrier(self) -> None:
        """The carrier: the citizen's two numbers, and the other citizen's one."""
        tenures = {
            IDN: [
                Tenure(msisdn=CURRENT, held_from=CURRENT_FROM),
                Tenure(
                    msisdn=FORMER,
                    held_from=FORMER_FROM,
                    held_until=FORMER_UNTIL,
                    state=TenureState.RECYCLED,
                ),
            ],
            OTHER_IDN: [Tenure(msisdn=OTHER_NUMBER, held_from=CURRENT_FROM)],
        }
        carrier = Carrier(carrier_id="cm")

        @carrier.list_numbers
        async def list_numbers(idn: str) -> list[Tenure]:
            return tenures.get(idn, [])

        server = Server(
            carrier,
            gateway_keys=self.gateway_jwks,
            gateway_issuer=GATEWAY_ID,
            listen="127.0.0.1:0",
            insecure=True,
        )
        await server.start()
        self.carrier_server, self.carrier_port = server, server.port

    async def provider(
        self,
        provider_id: str = "pay",
        bindings: Mapping[str, Sequence[Binding]] | None = None,
        *,
        start: bool = True,
        trust: SigningKey | None = None,
        **knobs: Any,
    ) -> Accounts:
        """A provider on a port of its own (started now, or later with :meth:`start_provider`).

        ``trust``: the gateway key it trusts, when not the real one (its
        warrants are then refused).
        """
        accounts = Accounts(
            bindings={k: list(v) for k, v in (bindings or story_bindings(provider_id)).items()},
            **knobs,
        )
        site = ProviderSite(
            id=provider_id,
            name=f"{provider_id.title()} Inc",
            accounts=accounts,
            port=free_port(),
            trust=trust,
        )
        self.providers[provider_id] = site
        if start:
            await self.start_provider(provider_id)
        return accounts

    async def start_provider(self, provider_id: str) -> None:
        site = self.providers[provider_id]
        provider = Provider(
            provider_id=site.id, name=site.name, category="payment", implementation=site.accounts
        )
        keys: Any = self.gateway_jwks
        if site.trust is not None:
            from onecert.sdk._keys import parse_jwks

            keys = parse_jwks(site.trust.jwks())
        server = Server(
            provider,
            gateway_keys=keys,
            gateway_issuer=GATEWAY_ID,
            listen=f"127.0.0.1:{site.port}",
            insecure=True,
            # On disk, so the answers survive a restart of the provider.
            idempotency=self.dir / f"{site.id}-answers.db",
            grace=0.5,
        )
        await server.start()
        site.server = server

    async def stop_provider(self, provider_id: str) -> None:
        site = self.providers[provider_id]
        if site.server is not None:
            await site.server.shutdown(0)
            site.server = None

    # ------------------------------------------------------------ gateways

    def store_config(self) -> StoreConfig:
        return StoreConfig(url=self.database.url, schema=self.database.schema, auto_migrate=True)

    def config(self, **delivery: Any) -> GatewayConfig:
        return GatewayConfig(
            id=GATEWAY_ID,
            listen="127.0.0.1:0",
            dev_plaintext=True,
            keys=KeysConfig(warrant_key=self.warrant_key, handle_key=self.handle_key_file),
            identity=IdentityConfig(
                audience=GATEWAY_ID,
                issuers=(IssuerConfig(issuer=ISSUER, jwks=self.identity_jwks),),
            ),
            carriers=(
                CarrierConfig(id="cm", address=f"127.0.0.1:{self.carrier_port}", plaintext=True),
            ),
            providers=tuple(
                ProviderConfig(
                    id=site.id,
                    name=site.name,
                    address=f"127.0.0.1:{site.port}",
                    plaintext=True,
                )
                for site in self.providers.values()
            ),
            fanout=FanoutConfig(provider_deadline_s=2.0, carrier_deadline_s=2.0),
            grace_period_s=1.0,
            store=self.store_config(),
            delivery=dataclasses.replace(FAST, **delivery),
        )

    async def gateway(self, config: GatewayConfig | None = None, **delivery: Any) -> GatewayServer:
        server = GatewayServer(config or self.config(**delivery))
        await server.start()
        self.gateways.append(server)
        return server

    def config_toml(self, *, listen_port: int = 0, **delivery: Any) -> str:
        """The same gateway as a TOML file's text (for ``onecert gateway serve``)."""
        d = dataclasses.replace(FAST, **delivery)
        providers = "".join(
            f'\n[[providers]]\nid = "{s.id}"\nname = "{s.name}"\n'
            f'address = "127.0.0.1:{s.port}"\nplaintext = true\n'
            for s in self.providers.values()
        )
        schema = f'schema = "{self.database.schema}"\n' if self.database.schema else ""
        return (
            f'[gateway]\nid = "{GATEWAY_ID}"\nlisten = "127.0.0.1:{listen_port}"\n'
            f"dev_plaintext = true\ngrace_period_s = 1\n\n"
            f'[keys]\nwarrant_key = "{self.warrant_key}"\nhandle_key = "{self.handle_key_file}"\n\n'
            f'[[identity.issuers]]\nissuer = "{ISSUER}"\njwks = "{self.identity_jwks}"\n\n'
            f'[store]\nurl = "{self.database.url}"\nauto_migrate = true\n{schema}\n'
            f"[delivery]\nworkers = {d.workers}\nbatch = {d.batch}\nlease_s = {d.lease_s}\n"
            f"poll_interval_s = {d.poll_interval_s}\nbackoff_initial_s = {d.backoff_initial_s}\n"
            f"backoff_max_s = {d.backoff_max_s}\nticket_ttl_s = {d.ticket_ttl_s}\n"
            f"unbind_deadline_s = {d.unbind_deadline_s}\n"
            f"pending_recheck_s = {d.pending_recheck_s}\n\n"
            f'[[carriers]]\nid = "cm"\naddress = "127.0.0.1:{self.carrier_port}"\n'
            f"plaintext = true\n{providers}"
        )

    def stub_at(self, port: int) -> gateway_pb2_grpc.GatewayAsyncStub:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self._channels.append(channel)
        return gateway_pb2_grpc.GatewayStub(channel)

    def stub(self, gateway: GatewayServer) -> gateway_pb2_grpc.GatewayAsyncStub:
        return self.stub_at(gateway.port)

    # ------------------------------------------------------------ citizen calls

    def assertion(self, sub: str = CITIZEN_SUB, idn: str = IDN, **options: Any) -> str:
        return self.issuer.mint(sub=sub, idn=idn, audience=GATEWAY_ID, **options)

    def metadata(self, sub: str = CITIZEN_SUB, idn: str = IDN) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.assertion(sub, idn)}"),)

    async def lookup(
        self, target: GatewayServer | int, sub: str = CITIZEN_SUB, idn: str = IDN
    ) -> list[gateway_pb2.ProviderResult]:
        stub = self.stub_at(target if isinstance(target, int) else target.port)
        call = stub.Lookup(
            gateway_pb2.LookupRequest(), metadata=self.metadata(sub, idn), timeout=10
        )
        return [m.result async for m in call if m.WhichOneof("update") == "result"]

    @staticmethod
    def result(
        results: Sequence[gateway_pb2.ProviderResult], provider_id: str, msisdn: str
    ) -> gateway_pb2.ProviderResult:
        found = [r for r in results if r.provider_id == provider_id and r.msisdn == msisdn]
        assert len(found) == 1, (provider_id, len(found))
        return found[0]

    async def left_behind_handle(
        self, target: GatewayServer | int, provider_id: str = "pay"
    ) -> str:
        """The handle of the citizen's left-behind account at the provider (a fresh lookup)."""
        result = self.result(await self.lookup(target), provider_id, FORMER)
        assert result.outcome == gateway_pb2.CALL_OUTCOME_ANSWERED, result.detail
        (account,) = result.bindings
        assert account.handle
        return account.handle

    async def unbind(
        self, target: GatewayServer | int, handle: str, sub: str = CITIZEN_SUB
    ) -> gateway_pb2.GatewayUnbindResponse:
        stub = self.stub_at(target if isinstance(target, int) else target.port)
        return await stub.Unbind(
            gateway_pb2.GatewayUnbindRequest(handle=handle),
            metadata=self.metadata(sub),
            timeout=10,
        )

    async def receipt(
        self, target: GatewayServer | int, ticket_id: str, sub: str = CITIZEN_SUB
    ) -> gateway_pb2.UnbindTicket:
        stub = self.stub_at(target if isinstance(target, int) else target.port)
        response = await stub.GetUnbind(
            gateway_pb2.GetUnbindRequest(ticket_id=ticket_id),
            metadata=self.metadata(sub),
            timeout=10,
        )
        return response.ticket

    # ------------------------------------------------------------ the database

    async def store(self) -> Store:
        """A store on the database, as an observer (an operator's view)."""
        store = self.database.open()
        self._stores.append(store)
        return store

    async def ticket(self, ticket_id: str) -> Ticket:
        store = self._stores[0] if self._stores else await self.store()
        ticket = await store.tickets.get(ticket_id)
        assert ticket is not None
        return ticket

    async def wait_ticket(
        self, ticket_id: str, until: Callable[[Ticket], bool], *, within: float = 10.0
    ) -> Ticket:
        """Poll the database until the ticket satisfies ``until``; return it."""
        async with asyncio.timeout(within):
            while True:
                ticket = await self.ticket(ticket_id)
                if until(ticket):
                    return ticket
                await asyncio.sleep(0.02)

    async def wait_final(self, ticket_id: str, *, within: float = 10.0) -> Ticket:
        """Wait for the ticket to reach DONE, REJECTED or FAILED."""
        return await self.wait_ticket(ticket_id, lambda t: t.state.terminal, within=within)

    async def wait_audit(self, kind: str, *, within: float = 5.0) -> list[dict[str, Any]]:
        """Poll the audit log until it holds a row of ``kind``; return those rows."""
        async with asyncio.timeout(within):
            while True:
                rows = [r for r in await self.audit_rows() if r["kind"] == kind]
                if rows:
                    return rows
                await asyncio.sleep(0.05)

    async def ticket_count(self) -> int:
        store = self._stores[0] if self._stores else await self.store()
        async with store.engine.connect() as conn:
            count = await conn.scalar(select(func.count()).select_from(unbind_tickets))
        return int(count or 0)

    async def audit_rows(self) -> list[dict[str, Any]]:
        store = self._stores[0] if self._stores else await self.store()
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(audit_log).order_by(audit_log.c.seq))).mappings()
            return [dict(r) for r in rows]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        for gateway in self.gateways:
            await gateway.stop(0)
        for site in self.providers.values():
            if site.server is not None:
                await site.server.shutdown(0)
        if self.carrier_server is not None:
            await self.carrier_server.shutdown(0)
        for store in self._stores:
            await store.close()


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> Iterator[None]:
    """Logs go to stderr, as in production; the previous setup is put back after."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    yield
    structlog.configure(**saved)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database: a SQLite file, or a private schema on PostgreSQL."""
    if request.param == "sqlite":
        yield Database.sqlite(tmp_path / "gateway.db")
        return
    pg_url: str = request.getfixturevalue("pg_url")
    async with Database.postgres(pg_url) as db:
        yield db


@pytest.fixture
async def env(tmp_path: Path, database: Database) -> AsyncIterator[Env]:
    """A carrier, no providers yet, and no gateway yet, on ``database``."""
    environment = Env(tmp_path, database)
    await environment.carrier()
    try:
        yield environment
    finally:
        await environment.close()
