"""Helpers of the unbinding tests: the federation of :mod:`onecert.gateway.testing`
with a real SDK carrier and real SDK providers on ports of their own (so a
provider can be stopped and started again), gateways on a SQLite file or a
PostgreSQL schema, and the ticket and audit queries an operator would run."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from onecert.gateway import GatewayServer
from onecert.gateway._config import GatewayConfig, StoreConfig
from onecert.gateway.store import Store, Ticket
from onecert.gateway.store._models import audit_log, unbind_tickets
from onecert.gateway.store.testing import Database
from onecert.gateway.testing import (
    CITIZEN_SUB,
    CURRENT,
    CURRENT_FROM,
    FAST_DELIVERY,
    FORMER,
    FORMER_FROM,
    FORMER_UNTIL,
    IDN,
    OTHER_IDN,
    OTHER_NUMBER,
    Federation,
    StoryNames,
    gateway_toml,
)
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
from onecert.sdk._keys import SigningKey, parse_jwks
from onecert.sdk._server import free_port
from onecert.v1 import gateway_pb2, gateway_pb2_grpc

FAST = FAST_DELIVERY


def _account(account_ref: str, kind: BindingKind, bound: datetime, name: str) -> Binding:
    """An account bound at ``bound``, shown as ``name`` when it is the citizen's."""
    return Binding(account_ref=account_ref, kind=kind, bound_at=bound, display_name=name)


def story_bindings(prefix: str = "pay") -> dict[str, list[Binding]]:
    """One left-behind account on the former number; on the current number one
    account of the citizen's and one of the previous holder's."""
    login, payment = BindingKind.LOGIN, BindingKind.PAYMENT
    return {
        FORMER: [
            _account(f"{prefix}-left-1", payment, datetime(2014, 5, 1, tzinfo=UTC), "zhangsan")
        ],
        CURRENT: [
            _account(f"{prefix}-mine-1", login, datetime(2021, 2, 1, tzinfo=UTC), "lisi"),
            _account(f"{prefix}-prev-1", login, datetime(2019, 2, 1, tzinfo=UTC), "wangwu"),
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


class UnbindWorld(StoryNames):
    """A carrier, SDK providers and gateways on one database, over the harness."""

    FAST = FAST
    story_bindings = staticmethod(story_bindings)
    free_port = staticmethod(free_port)

    def __init__(self, fed: Federation, database: Database) -> None:
        self.fed = fed
        self.dir = fed.directory
        self.database = database
        self.handle_key = fed.keys.handle
        self.providers: dict[str, ProviderSite] = {}
        self.carrier_port = 0
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

        self.carrier_port = (await self.fed.adapter(carrier)).port

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
        self.fed.add_provider(site.id, f"127.0.0.1:{site.port}", name=site.name)
        if start:
            await self.start_provider(provider_id)
        return accounts

    async def start_provider(self, provider_id: str) -> None:
        site = self.providers[provider_id]
        provider = Provider(
            provider_id=site.id, name=site.name, category="payment", implementation=site.accounts
        )
        options: dict[str, Any] = {}
        if site.trust is not None:
            options["gateway_keys"] = parse_jwks(site.trust.jwks())
        site.server = await self.fed.adapter(
            provider,
            listen=f"127.0.0.1:{site.port}",
            register=False,
            # On disk, so the answers survive a restart of the provider.
            idempotency=self.dir / f"{site.id}-answers.db",
            **options,
        )

    async def stop_provider(self, provider_id: str) -> None:
        site = self.providers[provider_id]
        if site.server is not None:
            await site.server.shutdown(0)
            site.server = None

    # ------------------------------------------------------------ gateways

    def config(self, **delivery: Any) -> GatewayConfig:
        store = StoreConfig(url=self.database.url, schema=self.database.schema, auto_migrate=True)
        return self.fed.config(
            store=store,
            delivery=dataclasses.replace(FAST, **delivery),
            carrier_prefixes=(),
            grace_period_s=1.0,
        )

    async def gateway(self, config: GatewayConfig | None = None, **delivery: Any) -> GatewayServer:
        return await self.fed.gateway(config or self.config(**delivery))

    def config_toml(self, *, listen_port: int = 0, **delivery: Any) -> str:
        """The same gateway as a TOML file's text (for ``onecert gateway serve``)."""
        d = dataclasses.replace(FAST, **delivery)
        carriers, providers = self.fed.upstream_tables()
        return gateway_toml(
            self.fed.keys,
            store_url=self.database.url,
            store_schema=self.database.schema,
            listen_port=listen_port,
            carriers=carriers,
            providers=providers,
            sections={
                "delivery": {
                    name: getattr(d, name)
                    for name in (
                        "workers",
                        "batch",
                        "lease_s",
                        "poll_interval_s",
                        "backoff_initial_s",
                        "backoff_max_s",
                        "ticket_ttl_s",
                        "unbind_deadline_s",
                        "pending_recheck_s",
                    )
                }
            },
        )

    def stub(self, target: GatewayServer | int) -> gateway_pb2_grpc.GatewayAsyncStub:
        return self.fed.stub(target)

    # ------------------------------------------------------------ citizen calls

    def assertion(self, sub: str = CITIZEN_SUB, idn: str = IDN, **options: Any) -> str:
        return self.fed.assertion(sub=sub, idn=idn, **options)

    def metadata(self, sub: str = CITIZEN_SUB, idn: str = IDN) -> tuple[tuple[str, str], ...]:
        return self.fed.bearer(self.assertion(sub, idn))

    async def lookup(
        self, target: GatewayServer | int, sub: str = CITIZEN_SUB, idn: str = IDN
    ) -> list[gateway_pb2.ProviderResult]:
        return self.fed.results(await self.fed.lookup(target, self.assertion(sub, idn)))

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
        return await self.fed.unbind(target, handle, self.assertion(sub))

    async def receipt(
        self, target: GatewayServer | int, ticket_id: str, sub: str = CITIZEN_SUB
    ) -> gateway_pb2.UnbindTicket:
        response = await self.stub(target).GetUnbind(
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

    async def _observer(self) -> Store:
        return self._stores[0] if self._stores else await self.store()

    async def ticket(self, ticket_id: str) -> Ticket:
        ticket = await (await self._observer()).tickets.get(ticket_id)
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
        async with (await self._observer()).engine.connect() as conn:
            count = await conn.scalar(select(func.count()).select_from(unbind_tickets))
        return int(count or 0)

    async def audit_rows(self) -> list[dict[str, Any]]:
        async with (await self._observer()).engine.connect() as conn:
            rows = (await conn.execute(select(audit_log).order_by(audit_log.c.seq))).mappings()
            return [dict(r) for r in rows]

    async def close(self) -> None:
        await self.fed.close()
        for store in self._stores:
            await store.close()
