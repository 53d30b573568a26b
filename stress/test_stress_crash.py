"""Crash and nothing lost: SIGKILL the gateway again and again while unbind tickets and
recycled-number notices flow to providers that flap and die, then check the history.

On SQLite and on PostgreSQL, and with two replicas on a private PostgreSQL whose
connections are cut and which is crashed and restarted once. The gateway runs
as ``onecert gateway serve`` in a child process and is SIGKILLed at random
points (before it listens, too), then restarted on the same database. A run
lasts ``ONECERT_CRASH_SECONDS``, and on until it has seen
``ONECERT_CRASH_KILLS`` kills and ``ONECERT_CRASH_TICKETS`` acknowledged
tickets (at most ``ONECERT_CRASH_MAX_SECONDS``). Meanwhile:

* a portal opens unbind tickets with ``GatewayClient.unbind`` (handles sealed
  with the gateway's handle key), retries some failed calls and abandons the
  others, and sends some acknowledged bindings again with fresh handles;
* a carrier reports CANCELLED and RECYCLED events with ``CarrierGatewayClient``;
* three push providers on the SDK, each a process of its own
  (:mod:`stress.provider_process`), are stopped and started again on their
  ports, answer UNAVAILABLE at random, are sometimes as slow as the gateway's
  deadline, and SIGKILL themselves at random right after applying an unbind
  (before the SDK records the answer; restarted at once); each records every
  unbind it applies and every notice it acts on in a SQLite ledger of its own
  (not deduplicated: twice is two rows);
* a fourth provider fetches its notices with the SDK's ``NoticePoller``, and a
  fifth is configured but never up (its notices must end overdue).

After a last restart with every provider up and healthy, the checks: every
acknowledged ticket is final (FAILED ones with a reason); every notice was
acknowledged by every provider or is overdue in the compliance report; no
unbind applied twice, per request id and per account (counted at the
providers' ledgers, killed or not); every applied request id and every notice
acted on was asked for; the audit chain verifies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from onecert.gateway._attribution import Attribution
from onecert.gateway._handles import HandleClaims, HandleSealer, load_handle_key
from onecert.gateway._unbind import open_payload
from onecert.gateway.store import (
    AuditVerification,
    Delivery,
    DeliveryState,
    Notice,
    Store,
    StoredTicketState,
    Ticket,
)
from onecert.gateway.store._models import audit_log, unbind_tickets
from onecert.gateway.store._rows import (
    delivery_from_row,
    delivery_query,
    notice_from_row,
    notice_query,
    ticket_from_row,
)
from onecert.gateway.store.testing import Database, PrivatePostgres
from onecert.gateway.testing import ChildProcess
from onecert.sdk import (
    Binding,
    NoticePoller,
    Provider,
    RecycledNotice,
    Unavailable,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk.client import (
    AdminGatewayClient,
    CarrierGatewayClient,
    ComplianceReport,
    GatewayClient,
    GatewayError,
    ProviderGatewayClient,
)
from onecert.sdk.devkeys import DevKeys
from stress.provider_process import Rates
from stress.stress_support import (
    GATEWAY_ID,
    Citizen,
    GatewayProcess,
    Identity,
    Ledger,
    env_float,
    free_port,
    gateway_toml,
    record_result,
    seeded,
)
from tests.hardening.hardening_net import ResettingProxy

# Short by default (a smoke run); `make stress` sets the long values.
# A run lasts at least CRASH_SECONDS, and on until it has seen CRASH_KILLS
# gateway kills and CRASH_TICKETS acknowledged tickets, but never more than
# CRASH_MAX_SECONDS (then the minimums it missed fail the test).
CRASH_SECONDS = env_float("ONECERT_CRASH_SECONDS", 40.0)
CRASH_KILLS = int(env_float("ONECERT_CRASH_KILLS", 3))
CRASH_TICKETS = int(env_float("ONECERT_CRASH_TICKETS", 0))
CRASH_MAX_SECONDS = env_float("ONECERT_CRASH_MAX_SECONDS", 2 * CRASH_SECONDS)
# Fixed per run so that a failure can be replayed (it is in the results).
SEED = int(env_float("ONECERT_STRESS_SEED", float(int.from_bytes(os.urandom(4), "big"))))

PUSH = ("pay", "chat", "shop")
POLL = "forum"
GHOST = "ghost"
CARRIER = "cm"
NOTICE_DEADLINE_S = 30.0
MIN_ACTION_S = 20.0
# Acknowledged tickets whose receipt the citizen reads at the end.
RECEIPTS = 200
TICKET_TTL_S = 45.0
# The gateway's calls to providers; slow providers answer around it.
CALL_DEADLINE_S = 1.0
# Statuses a portal or carrier may see while the gateway dies and restarts.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        # The replay cache refuses an assertion it cannot record (database busy).
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def _transient(exc: GatewayError) -> bool:
    if exc.code in TRANSIENT:
        return True
    # A connection cut mid-call by the kill, as the client's transport reports it.
    return exc.code is grpc.StatusCode.INTERNAL and "RST_STREAM" in exc.details


async def _nap(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# ------------------------------------------------------------------ providers


CALM = Rates(fail=0.0, slow=0.0, crash_after_apply=0.0)


class Site:
    """A push provider in a process of its own (:mod:`stress.provider_process`) on a
    fixed port: stopped and started again at random, restarted at once when it
    kills itself between applying an unbind and recording its answer."""

    def __init__(self, provider_id: str, directory: Path, keys: DevKeys, seed: float) -> None:
        self.id = provider_id
        self.port = free_port()
        self.ledger = Ledger(directory / f"{provider_id}-ledger.db")
        self.rates = Rates()
        self._answers = directory / f"{provider_id}-answers.db"
        self._log = directory / f"{provider_id}.log"
        self._jwks = keys.gateway_jwks
        self._seed = seed
        self._process: ChildProcess | None = None
        self.starts = 0
        self.restarts = 0
        self.crashes_after_apply = 0
        self.unexpected_exits: list[int] = []

    async def up(self) -> None:
        if self._process is not None:
            if self._process.running:
                return
            self._exit(await self._process.wait(), graceful=False)
        self.starts += 1
        process = ChildProcess(
            (
                sys.executable,
                "-m",
                "stress.provider_process",
                f"--id={self.id}",
                f"--listen=127.0.0.1:{self.port}",
                f"--gateway-jwks={self._jwks}",
                f"--gateway-issuer={GATEWAY_ID}",
                f"--ledger={self.ledger.path}",
                f"--answers={self._answers}",
                f"--seed={self._seed + self.starts}",
                f"--fail-rate={self.rates.fail}",
                f"--slow-rate={self.rates.slow}",
                f"--crash-after-apply={self.rates.crash_after_apply}",
            ),
            self._log,
            name=f"provider {self.id}",
        )
        await process.spawn()
        self._process = process
        await process.wait_ready()

    async def down(self) -> None:
        """SIGTERM: a graceful stop (the SDK records what is still running)."""
        if self._process is None:
            return
        self._exit(await self._process.terminate(), graceful=True)

    def _exit(self, code: int, *, graceful: bool) -> None:
        self._process = None
        self.restarts += 1
        if code == -signal.SIGKILL:
            # Only the process itself sends it, after applying an unbind.
            self.crashes_after_apply += 1
        elif code != 0 or not graceful:
            self.unexpected_exits.append(code)

    async def _exited(self, stop: asyncio.Event, seconds: float) -> bool:
        """Wait ``seconds`` (or until ``stop``); True when the process died meanwhile,
        counted and restarted at once on the same port."""
        assert self._process is not None
        exited = asyncio.ensure_future(self._process.wait())
        napping = asyncio.ensure_future(_nap(stop, seconds))
        await asyncio.wait({exited, napping}, return_when=asyncio.FIRST_COMPLETED)
        napping.cancel()
        if not exited.done():
            exited.cancel()
            return False
        self._exit(exited.result(), graceful=False)
        await self.up()
        return True

    async def flap(self, stop: asyncio.Event, rng: random.Random) -> None:
        """Stop and start it every 3 to 10 s; restart it whenever it kills itself."""
        while not stop.is_set():
            if await self._exited(stop, rng.uniform(3.0, 10.0)) or stop.is_set():
                continue
            await self.down()
            await _nap(stop, rng.uniform(0.3, 2.5))
            await self.up()
        await self.up()

    async def calm(self) -> None:
        """Restart it healthy: no failures, no stalls, no deaths."""
        self.rates = CALM
        await self.down()
        await self.up()

    async def close(self) -> None:
        if self._process is not None:
            await self._process.terminate()
            self._process = None


# ------------------------------------------------------------------ portal


@dataclass(frozen=True)
class BindingKey:
    """One account a citizen asks to unbind."""

    sub: str
    provider_id: str
    msisdn: str
    account_ref: str
    attribution: Attribution


@dataclass
class Asked:
    """What the portal saw of its Unbind calls for one binding."""

    calls: int = 0
    tickets: set[str] = field(default_factory=set)
    created: int = 0
    abandoned: bool = False


# What a client retries: a binding, or an event id.
Key = TypeVar("Key")


class _Tally(Generic[Key]):
    """What a client of the gateway counts of its calls (answers and refusals by status,
    refusals no crash explains, answers naming another record than an earlier answer
    did), and its calls to retry, some of them drawn with the subclass's ``_rng``."""

    _rng: random.Random

    def __init__(self) -> None:
        self._retry: list[Key] = []
        self.statuses: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []
        self.mismatches = 0

    def _refused(
        self,
        exc: GatewayError,
        rpc: str,
        key: Key,
        record: Asked | Reported,
        answers: set[str],
        *,
        retry: bool,
        keep: float,
    ) -> bool:
        """Count a failed call; whether the gateway was reached. A failure a crash explains,
        of a call not answered before, is retried later (a retry always, a first call with
        probability ``keep``) or else given up."""
        self.statuses[exc.code.name] += 1
        if not _transient(exc):
            self.unexpected.append(f"{rpc}: {exc.code.name}: {exc.details}")
            return True
        if not answers:
            if retry or self._rng.random() < keep:
                self._retry.append(key)
            else:
                record.abandoned = True
        return False

    def _answered(self, record: Asked | Reported, answers: set[str], answer: str) -> None:
        """Count an answer naming ``answer``: another than an earlier one is a mismatch."""
        self.statuses["OK"] += 1
        if answers and answer not in answers:
            self.mismatches += 1
        answers.add(answer)
        record.abandoned = False


class Portal(_Tally[BindingKey]):
    """The citizens' portal: opens unbind tickets through the gateway, as long as told."""

    def __init__(
        self,
        *,
        target: str,
        identity: Identity,
        sealer: HandleSealer,
        rng: random.Random,
        ghost_until: float,
    ) -> None:
        self._target = target
        self._identity = identity
        self._sealer = sealer
        self._rng = rng
        self._ghost_until = ghost_until
        super().__init__()
        self._citizens = {c.sub: c for c in (Citizen.numbered(n) for n in range(3))}
        self.asked: dict[BindingKey, Asked] = {}
        self._acked: list[BindingKey] = []
        self._serial = 0

    def _new_binding(self) -> BindingKey:
        self._serial += 1
        provider = self._rng.choice(PUSH)
        if time.monotonic() < self._ghost_until and self._rng.random() < 0.03:
            provider = GHOST
        roll = self._rng.random()
        kind = "gone" if roll < 0.1 else "review" if roll < 0.2 else "acct"
        return BindingKey(
            sub=self._rng.choice(list(self._citizens)),
            provider_id=provider,
            msisdn=f"+86139{self._rng.randrange(10**8):08d}",
            account_ref=f"{kind}-{self._serial}",
            attribution=self._rng.choice(list(Attribution)),
        )

    def _handle(self, key: BindingKey) -> str:
        # A fresh handle (random nonce) every time, as every lookup gives.
        return self._sealer.seal(
            HandleClaims(
                sub=key.sub,
                provider_id=key.provider_id,
                msisdn=key.msisdn,
                account_ref=key.account_ref,
                attribution=key.attribution,
                expires_at=time.time() + 3600,
                query_id=f"q-stress-{self._serial}",
            )
        )

    def _next(self) -> BindingKey:
        roll = self._rng.random()
        if roll < 0.25 and self._retry:
            return self._retry.pop(self._rng.randrange(len(self._retry)))
        if roll < 0.4 and self._acked:
            return self._rng.choice(self._acked)
        key = self._new_binding()
        self.asked[key] = Asked()
        return key

    async def _call(self, client: GatewayClient, key: BindingKey, *, retry: bool) -> bool:
        """One Unbind call; False when the gateway could not be reached."""
        asked = self.asked[key]
        asked.calls += 1
        citizen = self._citizens[key.sub]
        try:
            info = await client.unbind(
                self._identity.assertion(citizen), self._handle(key), timeout=5.0
            )
        except GatewayError as exc:
            return self._refused(exc, "Unbind", key, asked, asked.tickets, retry=retry, keep=0.6)
        if not asked.tickets:
            self._acked.append(key)
        self._answered(asked, asked.tickets, info.ticket_id)
        asked.created += int(info.created)
        return True

    @property
    def acknowledged(self) -> int:
        """Bindings the gateway acknowledged a ticket for."""
        return len(self._acked)

    async def run(self, stop: asyncio.Event, workers: int = 5) -> None:
        async def worker() -> None:
            client = GatewayClient(self._target, insecure=True)
            try:
                while not stop.is_set():
                    if not await self._call(client, self._next(), retry=False):
                        # A new channel connects at once once the gateway is back,
                        # instead of waiting out the old one's reconnect backoff.
                        await client.close()
                        client = GatewayClient(self._target, insecure=True)
                        await _nap(stop, 0.5)
                    await _nap(stop, self._rng.uniform(0.02, 0.12))
            finally:
                await client.close()

        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())

    async def receipts(self, sample: int) -> dict[str, str]:
        """The citizens' receipts (GetUnbind) of up to ``sample`` acknowledged tickets."""
        owned = [(key.sub, t) for key, asked in self.asked.items() for t in asked.tickets]
        self._rng.shuffle(owned)
        states: dict[str, str] = {}
        async with GatewayClient(self._target, insecure=True) as client:
            for sub, ticket_id in owned[:sample]:
                assertion = self._identity.assertion(self._citizens[sub])
                receipt = await client.get_unbind(assertion, ticket_id)
                states[ticket_id] = receipt.state.value.upper()
        return states

    async def drain(self, within: float) -> None:
        """Retry every binding waiting for a retry until the gateway answers."""
        async with asyncio.timeout(within), GatewayClient(self._target, insecure=True) as client:
            while self._retry:
                key = self._retry.pop()
                if not await self._call(client, key, retry=True):
                    await asyncio.sleep(0.2)


# ------------------------------------------------------------------ carrier


@dataclass
class Reported:
    """One carrier event and what the gateway answered when it was reported."""

    msisdn: str
    kind: str
    effective_at: datetime
    quiet_until: datetime | None
    notice_ids: set[str] = field(default_factory=set)
    calls: int = 0
    abandoned: bool = False


class CarrierFeed(_Tally[str]):
    """A carrier reporting cancelled and recycled numbers, retrying some failed reports."""

    def __init__(self, *, target: str, rng: random.Random) -> None:
        self._target = target
        self._rng = rng
        super().__init__()
        self.events: dict[str, Reported] = {}

    def _client(self) -> CarrierGatewayClient:
        return CarrierGatewayClient(self._target, insecure=True, dev_carrier_id=CARRIER)

    def _new_event(self) -> str:
        event_id = f"ev-{len(self.events) + 1}"
        # Microseconds on purpose: a retry must match what was stored.
        effective = datetime.now(UTC) - timedelta(seconds=self._rng.uniform(1, 5))
        kind = "recycled" if self._rng.random() < 0.7 else "cancelled"
        quiet = None
        if kind == "cancelled" and self._rng.random() < 0.5:
            quiet = effective + timedelta(days=90)
        self.events[event_id] = Reported(
            msisdn=f"+86138{self._rng.randrange(10**8):08d}",
            kind=kind,
            effective_at=effective,
            quiet_until=quiet,
        )
        return event_id

    async def _report(self, client: CarrierGatewayClient, event_id: str, *, retry: bool) -> bool:
        event = self.events[event_id]
        event.calls += 1
        try:
            answer = await client.report_number_event(
                event_id=event_id,
                msisdn=event.msisdn,
                event_type=event.kind,
                effective_at=event.effective_at,
                quiet_period_ends_at=event.quiet_until,
                timeout=5.0,
            )
        except GatewayError as exc:
            rpc, notices = "ReportNumberEvent", event.notice_ids
            return self._refused(exc, rpc, event_id, event, notices, retry=retry, keep=0.7)
        self._answered(event, event.notice_ids, answer.notice_id)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        client = self._client()
        try:
            while not stop.is_set():
                if self._retry and self._rng.random() < 0.3:
                    event_id = self._retry.pop(0)
                else:
                    event_id = self._new_event()
                if not await self._report(client, event_id, retry=False):
                    await client.close()
                    client = self._client()
                    await _nap(stop, 0.5)
                await _nap(stop, self._rng.uniform(0.1, 0.4))
        finally:
            await client.close()

    async def drain(self, within: float) -> None:
        async with asyncio.timeout(within):
            client = self._client()
            try:
                while self._retry:
                    event_id = self._retry.pop()
                    if not await self._report(client, event_id, retry=True):
                        await asyncio.sleep(0.2)
            finally:
                await client.close()


# ------------------------------------------------------------------ the run


@dataclass
class Chaos:
    kills: int = 0
    kills_before_listening: int = 0
    starts: int = 0
    # Starts that exited before listening (the database was down).
    failed_starts: int = 0
    # Seconds from spawning the process to its listening.
    startups: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def over(self, acknowledged: int) -> bool:
        """Whether the run has lasted long enough and seen enough (or too long)."""
        elapsed = time.monotonic() - self.started
        return elapsed >= CRASH_MAX_SECONDS or (
            elapsed >= CRASH_SECONDS and self.kills >= CRASH_KILLS and acknowledged >= CRASH_TICKETS
        )


async def kill_loop(
    spawn: Callable[[], Awaitable[GatewayProcess]],
    stop: asyncio.Event,
    rng: random.Random,
    chaos: Chaos,
    *,
    acknowledged: Callable[[], int],
) -> None:
    """Start the gateway and SIGKILL it at a random point, again and again."""
    while not stop.is_set() and not chaos.over(acknowledged()):
        gateway = await spawn()
        chaos.starts += 1
        if rng.random() < 0.1:
            # Anywhere in start-up (importing, migrating, starting workers) or
            # just after it.
            await asyncio.sleep(rng.uniform(0.0, 1.5))
        else:
            spawned = time.monotonic()
            try:
                await gateway.wait_ready()
            except AssertionError:
                if gateway.running:
                    raise
                # It exited before listening: a gateway refuses to start
                # while its database cannot be reached (a supervisor starts
                # it again, as this loop does).
                chaos.failed_starts += 1
                await asyncio.sleep(0.5)
                continue
            startup = time.monotonic() - spawned
            chaos.startups.append(startup)
            # Up a while, longer when a loaded machine makes start-ups slow:
            # the gateway is up as large a share of the run either way.
            await asyncio.sleep(rng.uniform(0.3, 4.0) * max(1.0, startup / 1.5))
        if not gateway.ready:
            chaos.kills_before_listening += 1
        gateway.kill()
        await gateway.wait()
        chaos.kills += 1
    stop.set()


@dataclass
class State:
    """The database after the run, as an operator would read it."""

    tickets: list[Ticket]
    notices: list[Notice]
    deliveries: list[Delivery]
    # (kind, subject, detail) of every audit row.
    audit: list[tuple[str, str, dict[str, Any]]]


async def read_state(store: Store) -> State:
    async with store.engine.connect() as conn:
        tickets = [
            ticket_from_row(r) for r in (await conn.execute(select(unbind_tickets))).mappings()
        ]
        notices = [notice_from_row(r) for r in (await conn.execute(notice_query())).mappings()]
        deliveries = [
            delivery_from_row(r) for r in (await conn.execute(delivery_query())).mappings()
        ]
        audit = [
            (r.kind, r.subject, json.loads(r.detail))
            for r in await conn.execute(select(audit_log).order_by(audit_log.c.seq))
        ]
    return State(tickets, notices, deliveries, audit)


def _settled(state: State, now: datetime) -> bool:
    if any(not t.state.terminal for t in state.tickets):
        return False
    for d in state.deliveries:
        if d.provider_id == POLL:
            if d.acted_at is None and d.notice.deadline >= now:
                return False
        elif d.state is DeliveryState.PENDING:
            return False
    return True


async def wait_settled(store: Store, within: float) -> tuple[State, bool]:
    """Poll the database until every ticket and delivery is settled (or time is up)."""
    until = time.monotonic() + within
    while True:
        state = await read_state(store)
        if _settled(state, datetime.now(UTC)):
            return state, True
        if time.monotonic() > until:
            return state, False
        await asyncio.sleep(1.0)


def gateway_config(keys: DevKeys, database: Database, port: int, sites: Mapping[str, Site]) -> str:
    providers: list[dict[str, object]] = [
        {"id": s.id, "address": f"127.0.0.1:{s.port}"} for s in sites.values()
    ]
    providers.append({"id": POLL, "address": "127.0.0.1:9", "delivery": "poll"})
    # Configured, never up: every notice to it must end overdue.
    providers.append({"id": GHOST, "address": f"127.0.0.1:{free_port()}"})
    return gateway_toml(
        keys=keys,
        database=database,
        port=port,
        carriers=[{"id": CARRIER, "address": "127.0.0.1:9", "prefixes": ["+86138"]}],
        providers=providers,
        gateway={"log_level": "info"},
        sections={
            "delivery": {
                "workers": 2,
                "batch": 10,
                "lease_s": 2.5,
                "poll_interval_s": 0.2,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 1.0,
                "ticket_ttl_s": TICKET_TTL_S,
                "unbind_deadline_s": CALL_DEADLINE_S,
                "pending_recheck_s": 0.3,
            },
            "notices": {
                "deadline_s": NOTICE_DEADLINE_S,
                # A notice reported late (the carrier retried) still leaves time to act.
                "min_action_s": MIN_ACTION_S,
                "workers": 2,
                "batch": 10,
                "lease_s": 2.5,
                "check_interval_s": 0.2,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 1.0,
                "push_deadline_s": CALL_DEADLINE_S,
                "poll_wait_s": 2,
            },
        },
    )


class ForumAccounts:
    """The poll-mode provider: acts on every notice it fetches, and records it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def list_bindings(self, msisdn: str) -> list[Binding]:
        return []

    async def unbind(self, request: UnbindRequest) -> UnbindResult:
        raise Unavailable("not in this scenario")

    async def on_recycled(self, notice: RecycledNotice) -> int:
        self.ledger.act_on_notice(notice.jti, notice.msisdn)
        return 1


class CrashRun:
    """Everything one run needs: the gateway's configuration and processes,
    providers, the portal, the carrier, and the database seen from outside."""

    def __init__(
        self,
        database: Database,
        keys: DevKeys,
        directory: Path,
        *,
        replicas: int = 1,
        gateway_database: Database | None = None,
    ) -> None:
        self.rng = seeded(SEED)
        self.database = database
        self.sites = {p: Site(p, directory, keys, self.rng.random()) for p in PUSH}
        ports = [free_port() for _ in range(replicas)]
        # Several replicas: the clients fail over between them (pick_first).
        self.target = (
            f"127.0.0.1:{ports[0]}"
            if replicas == 1
            else "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
        )
        self.configs = []
        for index, port in enumerate(ports):
            config = directory / f"gateway-{index}.toml"
            config.write_text(gateway_config(keys, gateway_database or database, port, self.sites))
            self.configs.append(config)
        self.config = self.configs[0]
        self.log = directory / "gateway.log"
        self.live: list[GatewayProcess] = []
        self.sealer = HandleSealer(load_handle_key(keys.handle_key))
        self.portal = Portal(
            target=self.target,
            identity=Identity(keys),
            sealer=self.sealer,
            rng=seeded(self.rng.random()),
            ghost_until=time.monotonic() + CRASH_SECONDS / 3,
        )
        self.carrier = CarrierFeed(target=self.target, rng=seeded(self.rng.random()))
        self.forum = ForumAccounts(Ledger(directory / "forum-ledger.db"))
        self.poll_client = ProviderGatewayClient(self.target, insecure=True, dev_provider_id=POLL)
        self.poller = NoticePoller(
            Provider(provider_id=POLL, name="Forum", category="forum", implementation=self.forum),
            self.poll_client,
            gateway_keys=keys.gateway_jwks,
            idempotency=directory / "forum-answers.db",
            wait=2.0,
            retry_interval=0.3,
        )
        self._poll_task: asyncio.Future[None] | None = None
        self.store = database.open()
        self.chaos = Chaos()
        self.stop = asyncio.Event()
        self.receipts: dict[str, str] = {}

    async def spawn(self, replica: int = 0) -> GatewayProcess:
        gateway = GatewayProcess(self.configs[replica], self.log)
        await gateway.spawn()
        self.live.append(gateway)
        return gateway

    async def run_chaos(
        self, faults: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None
    ) -> None:
        """Kill every replica at random, independently, while providers flap and die
        between applying and answering, and ``faults`` (if any) hits the database."""
        for site in self.sites.values():
            await site.up()
        self._poll_task = asyncio.ensure_future(self.poller.run())
        stop_events = asyncio.Event()

        async def stop_events_early() -> None:
            # The last notices leave time to be acknowledged within their deadline.
            await _nap(self.stop, max(0.0, CRASH_SECONDS - NOTICE_DEADLINE_S / 2))
            stop_events.set()

        self.chaos.started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            for replica in range(len(self.configs)):
                group.create_task(
                    kill_loop(
                        functools.partial(self.spawn, replica),
                        self.stop,
                        seeded(self.rng.random()),
                        self.chaos,
                        acknowledged=lambda: self.portal.acknowledged,
                    )
                )
            if faults is not None:
                group.create_task(faults(self.stop))
            group.create_task(self.portal.run(self.stop))
            group.create_task(self.carrier.run(stop_events))
            group.create_task(stop_events_early())
            for site in self.sites.values():
                group.create_task(site.flap(self.stop, seeded(self.rng.random())))
            await self.stop.wait()
            stop_events.set()

    async def quiesce(self) -> Outcome:
        """One last start with every provider up and well; wait until all is settled."""
        for site in self.sites.values():
            await site.calm()
        final = await self.spawn()
        await final.wait_ready()
        await self.portal.drain(within=60)
        await self.carrier.drain(within=60)
        _, settled = await wait_settled(self.store, within=TICKET_TTL_S + NOTICE_DEADLINE_S + 30)
        async with AdminGatewayClient(self.target, insecure=True) as admin:
            report = await admin.compliance_report()
        self.receipts = await self.portal.receipts(RECEIPTS)
        self.poller.shutdown()
        if self._poll_task is not None:
            await asyncio.wait_for(self._poll_task, 15)
        await final.terminate()
        return Outcome(
            await read_state(self.store), settled, report, await self.store.audit.verify()
        )

    async def close(self) -> None:
        self.stop.set()
        self.poller.shutdown()
        if self._poll_task is not None and not self._poll_task.done():
            self._poll_task.cancel()
            with contextlib.suppress(BaseException):
                await self._poll_task
        for gateway in self.live:
            gateway.kill()
            await gateway.wait()
        for site in self.sites.values():
            await site.close()
        await self.poll_client.close()
        await self.store.close()


@dataclass(frozen=True)
class Outcome:
    """What a run left behind, read after its last quiet start."""

    state: State
    settled: bool
    report: ComplianceReport
    audit: AuditVerification


def provider_figures(sites: Mapping[str, Site]) -> dict[str, Any]:
    """How the provider processes were stopped, died and resumed."""
    return {
        "provider_starts": sum(s.starts for s in sites.values()),
        "provider_restarts": sum(s.restarts for s in sites.values()),
        "provider_kills_between_apply_and_record": sum(
            s.crashes_after_apply for s in sites.values()
        ),
        "provider_resumed_calls": sum(s.ledger.resumed() for s in sites.values()),
    }


def check_run(
    run: CrashRun, name: str, outcome: Outcome, times: tuple[float, float], **extra: Any
) -> None:
    """Judge a run against its history, record its figures as ``name``, and fail on
    any violation or on a run too short to mean what ``make stress`` says it means."""
    judge = Judge(sealer=run.sealer, state=outcome.state)
    judge.tickets(run.portal)
    judge.receipts(run.receipts)
    ledgers = {p: s.ledger for p, s in run.sites.items()}
    judge.applies(ledgers)
    judge.notices(run.carrier, outcome.report)
    judge.unbind_report(outcome.report)
    judge.actions({**ledgers, POLL: run.forum.ledger})
    judge.audit()
    judge.bad.extend(
        f"provider {s.id} exited with status {code}"
        for s in run.sites.values()
        for code in s.unexpected_exits
    )
    started, chaos_end = times
    figures = {
        **extra,
        "seed": SEED,
        "kills": run.chaos.kills,
        "kills_before_listening": run.chaos.kills_before_listening,
        "gateway_starts": run.chaos.starts + 1,
        "gateway_starts_refused_database_down": run.chaos.failed_starts,
        "gateway_startup_median_s": round(statistics.median(run.chaos.startups or [0.0]), 1),
        **provider_figures(run.sites),
        **judge.figures,
        "violations": len(judge.bad),
        "settled_before_timeout": outcome.settled,
        "audit_rows_verified": outcome.audit.rows_checked,
        "audit_chain_ok": outcome.audit.ok,
        "chaos_seconds": round(chaos_end - started, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    record_result(name, figures)
    assert outcome.audit.ok, outcome.audit
    assert outcome.settled, "tickets or deliveries still open after the quiet period"
    assert not judge.bad, "\n".join(judge.bad[:40]) + f"\n({len(judge.bad)} in all) {figures}"
    short = f"in {figures['chaos_seconds']} s: a run too short to mean much"
    assert run.chaos.kills >= CRASH_KILLS, f"only {run.chaos.kills} kills {short}"
    acknowledged = figures["tickets_acknowledged"]
    assert acknowledged >= CRASH_TICKETS, f"only {acknowledged} acknowledged tickets {short}"


@pytest.mark.timeout(int(CRASH_MAX_SECONDS) + 600)
async def test_sigkill_while_tickets_and_notices_flow_loses_nothing(
    database: Database, dev_keys: DevKeys, tmp_path: Path
) -> None:
    """A gateway SIGKILLed at random points many times, with providers flapping and
    killing themselves between applying an unbind and recording its answer, finishes
    every acknowledged ticket and notice after a restart, never makes a provider apply
    an unbind twice, and never delivers what nobody asked for."""
    started = time.monotonic()
    run = CrashRun(database, dev_keys, tmp_path)
    try:
        await run.run_chaos()
        chaos_end = time.monotonic()
        outcome = await run.quiesce()
    finally:
        await run.close()
    check_run(
        run, f"crash-{database.dialect}", outcome, (started, chaos_end), database=database.dialect
    )


class Judge:
    """Checks the history against the database and the providers' ledgers.

    Every method adds what it counted to :attr:`figures` and every violation
    to :attr:`bad` (empty when all is well).
    """

    def __init__(self, *, sealer: HandleSealer, state: State) -> None:
        self.sealer = sealer
        self.state = state
        self.now = datetime.now(UTC)
        self.bad: list[str] = []
        self.figures: dict[str, Any] = {}
        self.by_id = {t.ticket_id: t for t in state.tickets}
        # The (provider, account) each ticket names, read from its sealed payload.
        self.ticket_account: dict[str, tuple[str, str]] = {}
        self.notice_by_id = {n.notice_id: n for n in state.notices}
        self.deliveries = {(d.notice_id, d.provider_id): d for d in state.deliveries}
        self.jti_owner = {d.jti: (d.provider_id, d.notice_id) for d in state.deliveries}
        self.applied: collections.Counter[str] = collections.Counter()

    def tickets(self, portal: Portal) -> None:
        """Every acknowledged ticket final; none unasked for; one per binding."""
        per_binding: collections.Counter[tuple[str, str, str, int]] = collections.Counter()
        asked = {(k.provider_id, k.msisdn, k.account_ref) for k in portal.asked}
        acknowledged = {t for a in portal.asked.values() for t in a.tickets}
        unrequested = response_lost = 0
        for ticket in self.state.tickets:
            claims = open_payload(self.sealer, ticket)
            self.ticket_account[ticket.ticket_id] = (claims.provider_id, claims.account_ref)
            per_binding[(claims.provider_id, claims.msisdn, claims.account_ref, ticket.reason)] += 1
            if (claims.provider_id, claims.msisdn, claims.account_ref) not in asked:
                unrequested += 1
                self.bad.append(f"ticket {ticket.ticket_id} names a binding nobody asked for")
            elif ticket.ticket_id not in acknowledged:
                response_lost += 1
            self._final(ticket)
        duplicates = sum(n - 1 for n in per_binding.values())
        if duplicates:
            self.bad.append(f"{duplicates} bindings have more than one ticket")
        lost = [t for t in acknowledged if t not in self.by_id or not self.by_id[t].state.terminal]
        self.bad.extend(f"acknowledged ticket {t} lost or not final" for t in lost)
        if portal.mismatches:
            self.bad.append(f"{portal.mismatches} repeated Unbind calls got another ticket id")
        self.bad.extend(portal.unexpected)
        states = collections.Counter(t.state.value for t in self.state.tickets)
        self.figures.update(
            unbind_calls=dict(portal.statuses),
            bindings_asked=len(portal.asked),
            bindings_abandoned_without_ticket=sum(
                1 for a in portal.asked.values() if a.abandoned and not a.tickets
            ),
            tickets=len(self.state.tickets),
            tickets_acknowledged=len(acknowledged),
            tickets_response_lost=response_lost,
            tickets_done=states["DONE"],
            tickets_rejected=states["REJECTED"],
            tickets_failed=states["FAILED"],
            tickets_failed_by_provider=dict(
                collections.Counter(
                    t.provider_id for t in self.state.tickets if t.state is StoredTicketState.FAILED
                )
            ),
            tickets_unrequested=unrequested,
            tickets_duplicate=duplicates,
            tickets_lost=len(lost),
        )

    def receipts(self, receipts: Mapping[str, str]) -> None:
        """What the citizen reads with GetUnbind is the final state in the database."""
        for ticket_id, state in receipts.items():
            ticket = self.by_id.get(ticket_id)
            if ticket is None or state != ticket.state.value:
                self.bad.append(f"receipt of {ticket_id} says {state}")
        self.figures["receipts_read"] = len(receipts)

    def unbind_report(self, report: ComplianceReport) -> None:
        """The compliance report counts the tickets the database holds."""
        counts = collections.Counter((t.provider_id, t.state.value) for t in self.state.tickets)
        for row in report.providers:
            seen = (row.unbinds_done, row.unbinds_rejected, row.unbinds_failed)
            held = tuple(counts[(row.provider_id, s)] for s in ("DONE", "REJECTED", "FAILED"))
            if seen != held:
                self.bad.append(f"compliance report: {row.provider_id} tickets {seen} != {held}")

    def _final(self, ticket: Ticket) -> None:
        if not ticket.state.terminal:
            self.bad.append(f"ticket {ticket.ticket_id} is still {ticket.state.value}")
        if ticket.state is StoredTicketState.FAILED and not ticket.last_error:
            self.bad.append(f"ticket {ticket.ticket_id} FAILED without a reason")
        if ticket.state is StoredTicketState.REJECTED and not ticket.provider_reason:
            self.bad.append(f"ticket {ticket.ticket_id} REJECTED without the provider's reason")

    def applies(self, ledgers: Mapping[str, Ledger]) -> None:
        """No unbind applied twice, none applied that is no ticket, every DONE applied."""
        per_account: collections.Counter[tuple[str, str]] = collections.Counter()
        unknown = 0
        for provider_id, ledger in ledgers.items():
            for request_id, account_ref, _msisdn in ledger.applies():
                self.applied[request_id] += 1
                per_account[(provider_id, account_ref)] += 1
                if self.ticket_account.get(request_id) != (provider_id, account_ref):
                    unknown += 1
                    self.bad.append(f"{provider_id} applied {request_id}: no ticket for it")
        twice = sum(n - 1 for n in self.applied.values() if n > 1)
        twice_per_account = sum(n - 1 for n in per_account.values() if n > 1)
        if twice or twice_per_account:
            self.bad.append(
                f"unbinds applied twice: {twice} by request id, {twice_per_account} by account"
            )
        done_unapplied = [
            t.ticket_id
            for t in self.state.tickets
            if t.state is StoredTicketState.DONE and not self.applied[t.ticket_id]
        ]
        self.bad.extend(
            f"ticket {t} is DONE, its provider never applied it" for t in done_unapplied
        )
        self.figures.update(
            applies=sum(self.applied.values()),
            duplicates_applied=twice + twice_per_account,
            unknown_applies=unknown,
            done_without_apply=len(done_unapplied),
            applied_but_not_done=sum(
                1
                for t in self.state.tickets
                if self.applied[t.ticket_id] and t.state is not StoredTicketState.DONE
            ),
        )

    def notices(self, carrier: CarrierFeed, report: ComplianceReport) -> None:
        """Every notice acted on by every provider, or overdue in the compliance report."""
        reported = {n for e in carrier.events.values() for n in e.notice_ids}
        lost = [n for n in reported if n not in self.notice_by_id]
        self.bad.extend(f"acknowledged notice {n} is not in the database" for n in lost)
        if carrier.mismatches:
            self.bad.append(f"{carrier.mismatches} repeated reports got another notice id")
        self.bad.extend(carrier.unexpected)
        unrequested = response_lost = 0
        for notice in self.state.notices:
            event = carrier.events.get(notice.event_id)
            if event is None or event.msisdn != notice.msisdn:
                unrequested += 1
                self.bad.append(f"notice {notice.notice_id} records an event nobody reported")
            elif notice.notice_id not in reported:
                response_lost += 1
        acted = 0
        overdue: collections.Counter[str] = collections.Counter()
        for notice in self.state.notices:
            for provider_id in (*PUSH, POLL, GHOST):
                verdict = self._delivery(notice, provider_id)
                if verdict == "acted":
                    acted += 1
                elif verdict == "overdue":
                    overdue[provider_id] += 1
        self.bad.extend(
            f"compliance report: {row.provider_id} never acted {row.never_acted}, "
            f"the database says {overdue[row.provider_id]}"
            for row in report.providers
            if row.never_acted != overdue[row.provider_id]
        )
        self.figures.update(
            report_calls=dict(carrier.statuses),
            notices=len(self.state.notices),
            notices_acknowledged_to_carrier=len(reported),
            notices_response_lost=response_lost,
            notices_unrequested=unrequested,
            notices_lost=len(lost),
            deliveries_acted=acted,
            deliveries_overdue=sum(overdue.values()),
            deliveries_overdue_by_provider=dict(overdue),
        )
        self.figures["lost"] = self.figures.get("tickets_lost", 0) + len(lost)

    def _delivery(self, notice: Notice, provider_id: str) -> str:
        d = self.deliveries.get((notice.notice_id, provider_id))
        if d is None:
            self.bad.append(f"notice {notice.notice_id} has no delivery for {provider_id}")
            return "missing"
        if d.state is DeliveryState.ACKNOWLEDGED and d.acted_at is not None:
            if provider_id == GHOST:
                self.bad.append(f"notice {notice.notice_id} acted on by a provider never up")
            return "acted"
        if d.acted_at is None and notice.deadline < self.now:
            return "overdue"
        self.bad.append(
            f"notice {notice.notice_id} to {provider_id} neither acted on nor overdue "
            f"({d.state.value})"
        )
        return "open"

    def actions(self, ledgers: Mapping[str, Ledger]) -> None:
        """No notice acted on twice by a provider; none acted on that was not sent to it."""
        actions: collections.Counter[tuple[str, str]] = collections.Counter()
        unknown = 0
        for provider_id, ledger in ledgers.items():
            for jti, msisdn in ledger.actions():
                owner = self.jti_owner.get(jti)
                if (
                    owner is None
                    or owner[0] != provider_id
                    or self.notice_by_id[owner[1]].msisdn != msisdn
                ):
                    unknown += 1
                    self.bad.append(f"{provider_id} acted on {jti}: no notice for it")
                    continue
                actions[owner] += 1
        twice = sum(n - 1 for n in actions.values() if n > 1)
        if twice:
            self.bad.append(f"{twice} notices acted on twice by a provider")
        self.figures.update(
            notice_actions=sum(actions.values()),
            duplicate_notice_actions=twice,
            unknown_notice_actions=unknown,
        )

    def audit(self) -> None:
        """Every ticket and notice has the audit rows of what happened to it.

        They are written in the transaction of the change they record, so a
        crash keeps both or neither.
        """
        requested = {subject for kind, subject, _ in self.state.audit if kind == "unbind.requested"}
        closed = {subject for kind, subject, _ in self.state.audit if kind == "unbind.closed"}
        reported = {
            detail.get("notice_id")
            for kind, _, detail in self.state.audit
            if kind == "notice.reported"
        }
        gaps = {
            "audit_tickets_without_request_row": [
                t.ticket_id for t in self.state.tickets if t.ticket_id not in requested
            ],
            "audit_final_tickets_without_close_row": [
                t.ticket_id
                for t in self.state.tickets
                if t.state.terminal and t.ticket_id not in closed
            ],
            "audit_notices_without_report_row": [
                n.notice_id for n in self.state.notices if n.notice_id not in reported
            ],
        }
        for name, ids in gaps.items():
            self.figures[name] = len(ids)
            if ids:
                self.bad.append(f"{name.removeprefix('audit_')}: {ids[:5]}")


# ------------------------------------------------------------ two replicas


@dataclass
class DatabaseFaults:
    cuts: int = 0
    connections_cut: int = 0
    restarts: int = 0
    restart_down_s: float = 0.0


async def database_faults(
    stop: asyncio.Event,
    proxy: ResettingProxy,
    server: PrivatePostgres,
    rng: random.Random,
    faults: DatabaseFaults,
) -> None:
    """Cut every database connection every 15 to 25 s, and crash and restart the
    database once, 40% into the run, for 4 s."""
    # Early enough that a run ended by the kill cap (ONECERT_CRASH_KILLS) before
    # its time is up still has its restart.
    restart_at = time.monotonic() + min(CRASH_SECONDS, 60.0) * 0.4
    next_cut = time.monotonic() + rng.uniform(15.0, 25.0)
    while not stop.is_set():
        restart_due = faults.restarts == 0 and restart_at < next_cut
        await _nap(stop, max(0.0, (restart_at if restart_due else next_cut) - time.monotonic()))
        if stop.is_set():
            break
        if restart_due:
            down = time.monotonic()
            await asyncio.to_thread(server.stop, crash=True)
            await _nap(stop, 4.0)
            await asyncio.to_thread(server.start)
            faults.restart_down_s = round(time.monotonic() - down, 1)
            faults.restarts += 1
            continue
        before = proxy.connections
        proxy.reset()
        faults.cuts += 1
        faults.connections_cut += before
        next_cut = time.monotonic() + rng.uniform(15.0, 25.0)


@pytest.mark.timeout(int(CRASH_MAX_SECONDS) + 600)
async def test_two_replicas_through_database_faults_lose_nothing(
    private_pg: PrivatePostgres, dev_keys: DevKeys, tmp_path: Path
) -> None:
    """Two gateway replicas on one PostgreSQL, each SIGKILLed at random, every database
    connection cut every 15 to 25 s, the database crashed and restarted once, and providers
    dying between applying an unbind and recording its answer: every acknowledged ticket
    and notice ends final, nothing is applied twice or unasked, and the audit chain holds."""
    started = time.monotonic()
    async with Database.postgres(private_pg.url) as database:
        proxy = ResettingProxy(f"127.0.0.1:{private_pg.port}")
        proxied = make_url(database.url).set(port=int((await proxy.start()).rpartition(":")[2]))
        gateway_database = Database(proxied.render_as_string(hide_password=False), database.schema)
        faults = DatabaseFaults()
        run = CrashRun(database, dev_keys, tmp_path, replicas=2, gateway_database=gateway_database)
        try:
            await run.run_chaos(
                lambda stop: database_faults(
                    stop, proxy, private_pg, seeded(run.rng.random()), faults
                )
            )
            chaos_end = time.monotonic()
            outcome = await run.quiesce()
        finally:
            await run.close()
            await proxy.close()
    check_run(
        run,
        "crash-replicas-postgresql",
        outcome,
        (started, chaos_end),
        database="postgresql (private, 2 replicas)",
        database_cuts=faults.cuts,
        database_connections_cut=faults.connections_cut,
        database_restarts=faults.restarts,
        database_restart_down_s=faults.restart_down_s,
    )
    assert faults.restarts == 1, "the database was not restarted: too short a run"
