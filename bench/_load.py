"""Load generators: lookups through the gateway, and the bare-gRPC floor.

Both run in the benchmark's own process, on one event loop. The floor is
what a lookup cannot do with less: one ``grpc.aio`` channel per provider,
reused, and every provider's ``ListBindings`` called at once with a valid
warrant (minted per call as the gateway does, or pre-minted).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from bench._cluster import BenchSetup, new_query_id
from bench._procs import cpu_seconds
from onecert.sdk._channel import ChannelBuilder
from onecert.sdk._tls import ClientTLS
from onecert.v1 import gateway_pb2, gateway_pb2_grpc, provider_pb2, provider_pb2_grpc

_ANSWERED = gateway_pb2.CALL_OUTCOME_ANSWERED


def floor_channels(tls: ClientTLS | None) -> ChannelBuilder:
    """Channels built as the gateway's channel pool builds them, so the floor's are alike."""
    return ChannelBuilder(tls=tls, keepalive=True)


@dataclass
class Sample:
    """One lookup, timed from the client.

    ``first`` is when the first provider result arrived, ``last_answered``
    when the last ANSWERED one did (seconds from the start); ``messages``
    how many stream messages the lookup took (0 for the floor).
    """

    latency: float
    first: float | None
    last_answered: float | None
    answered: int
    asked: int
    messages: int = 0


LookupFn = Callable[[], Awaitable[Sample]]


class GatewayLoad:
    """Lookups of the citizen through a gateway (over ``channels`` connections)."""

    def __init__(
        self, env: BenchSetup, address: str, *, channels: int = 1, timeout: float = 30.0
    ) -> None:
        self._env = env
        self._timeout = timeout
        # Distinct connections (not one shared subchannel), so that a
        # SO_REUSEPORT listener can spread them over processes.
        builder = ChannelBuilder(tls=None, options=[("grpc.use_local_subchannel_pool", 1)])
        self._channels = [
            builder.open(address, plaintext=True, options=[("bench.channel", i)])
            for i in range(channels)
        ]
        self._stubs = [gateway_pb2_grpc.GatewayStub(c) for c in self._channels]
        self._next = 0

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    async def lookup(self) -> Sample:
        assertion = self._env.assertion()
        stub = self._stubs[self._next % len(self._stubs)]
        self._next += 1
        started = time.perf_counter()
        first: float | None = None
        last: float | None = None
        answered = asked = messages = 0
        call = stub.Lookup(
            # As the SDK's client (and so the portal) asks: routed-out providers
            # in one message per number, the results ready together in one
            # message (a gateway that predates batching sends one each).
            gateway_pb2.LookupRequest(group_routed_out=True, batch_results=True),
            timeout=self._timeout,
            metadata=(("authorization", f"Bearer {assertion}"),),
        )
        async for response in call:
            messages += 1
            kind = response.WhichOneof("update")
            if kind in {"result", "results"}:
                now = time.perf_counter() - started
                if first is None:
                    first = now
                batch = response.results.results if kind == "results" else (response.result,)
                if any(r.outcome == _ANSWERED for r in batch):
                    last = now
            elif kind == "summary":
                answered = response.summary.total.answered
                asked = response.summary.total.asked
        return Sample(time.perf_counter() - started, first, last, answered, asked, messages)


class FloorLoad:
    """The floor: every provider's ``ListBindings`` at once over bare channels.

    Args:
        env: keys and the citizen.
        addresses: provider id -> ``host:port``.
        premint: sign each provider's warrant once, up front, and reuse it
            (warrants are not single-use); otherwise sign one per call, as the
            gateway does.
        tls: mutual TLS towards the providers (plaintext when None).
        deadline: each call's deadline.
    """

    def __init__(
        self,
        env: BenchSetup,
        addresses: Mapping[str, str],
        *,
        premint: bool = False,
        tls: ClientTLS | None = None,
        deadline: float = 3.0,
    ) -> None:
        self._env = env
        self._premint = premint
        self._deadline = deadline
        self._request = provider_pb2.ListBindingsRequest(msisdn=env.msisdn)
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: dict[str, provider_pb2_grpc.BindingProviderAsyncStub] = {}
        builder = floor_channels(tls)
        for provider_id, address in addresses.items():
            channel = builder.open(address, plaintext=tls is None)
            self._channels.append(channel)
            self._stubs[provider_id] = provider_pb2_grpc.BindingProviderStub(channel)
        self._tokens: dict[str, str] = {}
        self._minted_at = -math.inf

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    def _token(self, provider_id: str, query_id: str) -> str:
        if not self._premint:
            return self._env.warrant(provider_id, query_id)
        return self._tokens[provider_id]

    def _refresh(self) -> None:
        # Pre-minted warrants live 30 s: sign a new set well before they expire.
        if self._premint and time.monotonic() - self._minted_at > 15:
            query_id = new_query_id()
            self._tokens = {p: self._env.warrant(p, query_id) for p in self._stubs}
            self._minted_at = time.monotonic()

    async def _call(self, provider_id: str, query_id: str) -> bool:
        stub = self._stubs[provider_id]
        token = self._token(provider_id, query_id)
        try:
            await stub.ListBindings(
                self._request,
                timeout=self._deadline,
                metadata=(("authorization", f"Bearer {token}"),),
            )
        except grpc.aio.AioRpcError:
            return False
        return True

    async def lookup(self) -> Sample:
        self._refresh()
        started = time.perf_counter()
        query_id = new_query_id()
        first: float | None = None
        last: float | None = None
        answered = 0
        tasks = [asyncio.create_task(self._call(p, query_id)) for p in self._stubs]
        for done in asyncio.as_completed(tasks):
            ok = await done
            now = time.perf_counter() - started
            if first is None:
                first = now
            if ok:
                answered += 1
                last = now
        return Sample(time.perf_counter() - started, first, last, answered, len(tasks))


# ------------------------------------------------------------------ runs


@dataclass
class Run:
    """Samples of one load generator, with the time and CPU they took."""

    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    # CPU seconds by process label ("gateway", "client", "providers").
    cpu_s: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, other: Run) -> None:
        self.samples += other.samples
        self.wall_s += other.wall_s
        for key, value in other.cpu_s.items():
            self.cpu_s[key] = self.cpu_s.get(key, 0.0) + value
        self.errors += other.errors

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def throughput(self) -> float:
        return self.count / self.wall_s if self.wall_s > 0 else 0.0

    def latencies(self) -> list[float]:
        return [s.latency for s in self.samples]

    def cpu_per_lookup_ms(self, label: str) -> float | None:
        if label not in self.cpu_s or not self.samples:
            return None
        return self.cpu_s[label] / self.count * 1000

    def incomplete(self) -> int:
        """Lookups in which some provider did not answer."""
        return sum(s.answered < s.asked for s in self.samples)


def _cpu(pids: Mapping[str, Sequence[int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, group in pids.items():
        out[label] = sum(cpu_seconds(pid) for pid in group)
    return out


async def closed_loop(
    fn: LookupFn,
    *,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
    pids: Mapping[str, Sequence[int]] | None = None,
) -> Run:
    """Run ``fn`` from ``concurrency`` workers, each starting its next lookup
    when its last ends, for ``duration`` seconds or ``count`` lookups in all.

    CPU time is read from ``/proc`` before and after for ``pids`` (label ->
    pids); the label "client" is always this process.
    """
    watched = {"client": [os.getpid()], **(pids or {})}
    run = Run()
    remaining = [count if count is not None else math.inf]
    stop_at = math.inf if duration is None else time.perf_counter() + duration

    async def worker() -> None:
        while remaining[0] > 0 and time.perf_counter() < stop_at:
            remaining[0] -= 1
            try:
                run.samples.append(await fn())
            except grpc.aio.AioRpcError as exc:
                run.errors.append(f"{exc.code().name}: {exc.details()}")

    before = _cpu(watched)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.wall_s = time.perf_counter() - started
    after = _cpu(watched)
    run.cpu_s = {label: after[label] - before[label] for label in watched}
    return run


async def interleaved(
    modes: Mapping[str, tuple[LookupFn, Mapping[str, Sequence[int]]]],
    *,
    rounds: int,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
) -> dict[str, Run]:
    """Run each mode in turn, ``rounds`` times, and pool each mode's runs.

    Alternating the modes spreads the noise of a shared machine over all of
    them, so their ratios stay fair.
    """
    pooled = {name: Run() for name in modes}
    for _ in range(rounds):
        for name, (fn, pids) in modes.items():
            pooled[name].add(
                await closed_loop(
                    fn, concurrency=concurrency, duration=duration, count=count, pids=pids
                )
            )
    return pooled


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
