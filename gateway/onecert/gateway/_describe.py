"""Checking each provider's ``Describe`` against the configuration.

Every warrant names the provider id of the configuration, and a provider on
the SDK refuses warrants meant for another id. A server that does not check
would answer about its own accounts under another provider's name (a swapped
address, a copied configuration). ``Describe`` needs no warrant, so the
gateway can ask every provider who it is when it starts, and stop asking one
that claims another id or contract: its calls then end SKIPPED with the
reason (:meth:`~onecert.gateway._fanout.FanOut.quarantine`). A provider that
does not answer ``Describe`` is left alone: its calls fail on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import structlog

from onecert.gateway._channels import ChannelPool
from onecert.gateway._config import ProviderConfig
from onecert.gateway._fanout import FanOut
from onecert.v1 import provider_pb2, provider_pb2_grpc

__all__ = [
    "CONTRACT_VERSION",
    "DESCRIBE_CONCURRENCY",
    "DescribeCheck",
    "DescribeStatus",
    "DescribeVerdict",
    "check_providers",
    "describe_provider",
    "judge_describe",
    "quarantine_misconfigured",
]

_log = structlog.get_logger("onecert.gateway.describe")

CONTRACT_VERSION = "onecert.v1"
# Providers asked at once by the start-up check.
DESCRIBE_CONCURRENCY = 32
_ID = re.compile(r"[a-z0-9._-]{1,64}")
_SHOWN_TEXT = re.compile(r"[A-Za-z0-9._-]{1,32}")


class DescribeStatus(enum.Enum):
    """What a provider's ``Describe`` showed."""

    OK = "ok"
    # It answered, as someone else or for another contract: do not ask it.
    MISCONFIGURED = "misconfigured"
    # It did not answer; its calls will tell.
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class DescribeVerdict:
    """One provider's ``Describe``, judged.

    Attributes:
        provider_id: the configured id.
        status: OK, MISCONFIGURED or UNREACHABLE.
        reason: why, when not OK; safe to show (it quotes only well-formed ids).
    """

    provider_id: str
    status: DescribeStatus
    reason: str = ""


def _quoted(text: str, pattern: re.Pattern[str]) -> str:
    # The provider chose this text: quote it only when it is a plain token.
    return repr(text) if pattern.fullmatch(text) else "an invalid value"


def judge_describe(
    provider: ProviderConfig, response: provider_pb2.DescribeResponse
) -> DescribeVerdict:
    """Whether ``response`` is the ``Describe`` of the configured ``provider``."""
    if response.provider_id != provider.id:
        return DescribeVerdict(
            provider.id,
            DescribeStatus.MISCONFIGURED,
            f"misconfigured: its Describe names provider {_quoted(response.provider_id, _ID)}",
        )
    if response.contract_version != CONTRACT_VERSION:
        version = _quoted(response.contract_version, _SHOWN_TEXT)
        return DescribeVerdict(
            provider.id,
            DescribeStatus.MISCONFIGURED,
            f"misconfigured: it implements contract {version}, not {CONTRACT_VERSION!r}",
        )
    return DescribeVerdict(provider.id, DescribeStatus.OK)


async def describe_provider(
    channel: grpc.aio.Channel, provider: ProviderConfig, *, deadline: float = 2.0
) -> DescribeVerdict:
    """Ask ``provider`` (over ``channel``) who it is, within ``deadline`` seconds, and
    judge the answer."""
    stub = provider_pb2_grpc.BindingProviderStub(channel)
    try:
        response = await stub.Describe(provider_pb2.DescribeRequest(), timeout=deadline)
    except grpc.aio.AioRpcError as exc:
        return DescribeVerdict(
            provider.id, DescribeStatus.UNREACHABLE, f"Describe failed: {exc.code().name}"
        )
    return judge_describe(provider, response)


# Lookup calls already on a channel a failed check closes get this long to end.
_DISCARD_GRACE_S = 10.0


async def check_providers(
    channels: ChannelPool,
    providers: Sequence[ProviderConfig],
    *,
    deadline: float = 2.0,
    concurrency: int = DESCRIBE_CONCURRENCY,
    current: Callable[[ProviderConfig], bool] = lambda _: True,
) -> dict[str, DescribeVerdict]:
    """Every provider's verdict, asked in parallel, by configured id.

    Each is asked over the pooled channel its lookups use, so they find it
    connected; one a provider did not answer on is closed (the next lookup
    opens a new one), so a provider down now does not leave the lookups'
    channel in reconnect backoff. A channel of its own per check, closed
    afterwards, would cost each provider a second TLS connection: with a
    thousand providers, about 10 KiB more of the gateway's memory per
    provider (freed, but not given back). At most ``concurrency`` are asked
    at once; ``deadline`` counts from each provider's own turn. A provider
    for which ``current`` no longer holds when its turn comes (it left the
    registry, or moved, meanwhile) is not asked and has no verdict: its
    channel, opened after the registry change retired the old one, would
    outlive it.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    # A thousand providers connecting at once (each a TLS handshake on a
    # fresh channel) starve one another past the deadline; a bounded number
    # in flight finishes them all sooner.
    slots = asyncio.Semaphore(concurrency)

    async def one(provider: ProviderConfig) -> DescribeVerdict | None:
        async with slots:
            assert provider.address is not None  # poll-only providers are left out below
            if not current(provider):
                return None
            address, plaintext, name = provider.address, provider.plaintext, provider.server_name
            channel = channels.get(address, plaintext=plaintext, server_name=name)
            verdict = await describe_provider(channel, provider, deadline=deadline)
            if verdict.status is DescribeStatus.UNREACHABLE:
                channels.discard(
                    address, plaintext=plaintext, server_name=name, grace=_DISCARD_GRACE_S
                )
            return verdict

    verdicts = await asyncio.gather(*(one(p) for p in providers if p.address is not None))
    return {v.provider_id: v for v in verdicts if v is not None}


def quarantine_misconfigured(fanout: FanOut, verdicts: Mapping[str, DescribeVerdict]) -> int:
    """Stop asking every MISCONFIGURED provider; return how many were stopped."""
    stopped = 0
    for verdict in verdicts.values():
        if verdict.status is DescribeStatus.MISCONFIGURED:
            _log.error(
                "provider.misconfigured", provider=verdict.provider_id, reason=verdict.reason
            )
            with contextlib.suppress(KeyError):  # it left the registry meanwhile
                fanout.quarantine(verdict.provider_id, verdict.reason)
                stopped += 1
        elif verdict.status is DescribeStatus.UNREACHABLE:
            _log.warning(
                "provider.describe_failed", provider=verdict.provider_id, reason=verdict.reason
            )
    return stopped


class DescribeCheck:
    """A gateway background worker: checks every provider's ``Describe`` once,
    right after the gateway starts, and quarantines the misconfigured ones.

    It runs beside serving rather than before it, so a provider that hangs on
    ``Describe`` never delays the gateway's start.
    """

    def __init__(
        self,
        *,
        channels: ChannelPool,
        providers: Sequence[ProviderConfig],
        fanout: FanOut,
        deadline: float = 2.0,
    ) -> None:
        self._channels = channels
        self._providers = tuple(providers)
        self._live = _targets(providers)
        self._fanout = fanout
        self._deadline = deadline
        self._task: asyncio.Task[int] | None = None
        self._later: set[asyncio.Task[int]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run_once(), name="describe-check")

    def providers_changed(
        self, providers: Sequence[ProviderConfig], added: Sequence[ProviderConfig]
    ) -> None:
        """The registry changed: before :meth:`start`, the check covers ``providers``;
        after it, ``added`` (those that became active) are checked now; a check
        still waiting for its turn skips those that left."""
        self._live = _targets(providers)
        if self._task is None:
            self._providers = tuple(providers)
        else:
            self.check(added)

    def check(self, providers: Sequence[ProviderConfig]) -> None:
        """Check, in the background, providers that became active while the gateway runs."""
        if not providers:
            return
        task = asyncio.create_task(self._check(tuple(providers)), name="describe-check")
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _check(self, providers: Sequence[ProviderConfig]) -> int:
        verdicts = await check_providers(
            self._channels, providers, deadline=self._deadline, current=self._is_live
        )
        return quarantine_misconfigured(self._fanout, verdicts)

    def _is_live(self, provider: ProviderConfig) -> bool:
        return (provider.id, provider.address, provider.plaintext) in self._live

    async def run_once(self) -> int:
        """Check every provider now; return how many were quarantined."""
        return await self._check(self._providers)

    async def wait(self) -> int:
        """Wait for the check started by :meth:`start`; return how many were quarantined."""
        if self._task is None:
            raise RuntimeError("the describe check was not started")
        return await asyncio.shield(self._task)

    async def idle(self) -> None:
        """Wait until no check runs: the start-up one and those of providers that joined."""
        tasks = [t for t in (self._task, *self._later) if t is not None]
        await asyncio.gather(*(asyncio.shield(t) for t in tasks))

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._later) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _targets(providers: Iterable[ProviderConfig]) -> frozenset[tuple[str, str | None, bool]]:
    """Each provider as the check sees it: id, address and whether plaintext."""
    return frozenset((p.id, p.address, p.plaintext) for p in providers)
