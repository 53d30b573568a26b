"""The live registry: every replica follows the providers in the store, without a restart.

At start the gateway seeds the registry from ``[[providers]]`` and
``[[carriers]]`` (:func:`seeds_from_config`), loads a snapshot and applies
it; then it polls the registry version every ``registry.poll_interval_s``
(at most 5 s) and applies each new snapshot. Applying means: the
:class:`~onecert.gateway._directory.ProviderDirectory` every part reads
gets the new active providers, then each listener (the fan-out's
upstreams and breakers, the channels, routing, the principal resolver,
the describe check, metrics) is told what changed. A change made on this
replica is applied here at once (:meth:`LiveRegistry.refresh`), on the
others within one poll interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from onecert.gateway._config import (
    CATEGORIES,
    CarrierConfig,
    GatewayConfig,
    ProviderConfig,
    category_name,
)
from onecert.gateway._directory import ProviderDirectory
from onecert.gateway._follow import Follower
from onecert.gateway.store import (
    DeliveryMode,
    EntryKind,
    RegistryEntry,
    RegistrySnapshot,
    RegistryStatus,
    SeedEntry,
    Store,
)
from onecert.sdk._csr import provider_dns_name

__all__ = ["LiveRegistry", "RegistryChange", "provider_of", "seeds_from_config"]

_log = structlog.get_logger("onecert.gateway.registry")


# What every [[providers]] and [[carriers]] block sets, under the same names and in
# the same form in the configuration and in the registry.
_SHARED = ("id", "name", "address", "plaintext", "client_cn", "deadline_s", "max_concurrency")


def _shared(source: ProviderConfig | CarrierConfig | RegistryEntry) -> dict[str, Any]:
    return {name: getattr(source, name) for name in _SHARED}


def seeds_from_config(config: GatewayConfig) -> list[SeedEntry]:
    """The registry entries ``[[providers]]`` and ``[[carriers]]`` stand for."""
    seeds = [
        SeedEntry(
            EntryKind.PROVIDER,
            **_shared(p),
            category=category_name(p.category),
            delivery=DeliveryMode(p.delivery),
        )
        for p in config.providers
    ]
    seeds.extend(
        SeedEntry(EntryKind.CARRIER, **_shared(c), prefixes=c.prefixes) for c in config.carriers
    )
    return seeds


def provider_of(entry: RegistryEntry) -> ProviderConfig:
    """The provider as the gateway's parts take it."""
    return ProviderConfig(
        **_shared(entry),
        category=CATEGORIES.get(entry.category or "", CATEGORIES["other"]),
        delivery=entry.delivery.value,
        # A provider the gateway issued a certificate to serves it: it names its id.
        server_name=None if entry.cert_serial is None else provider_dns_name(entry.id),
    )


@dataclass(frozen=True)
class RegistryChange:
    """A registry version applied: the active providers (configuration order first,
    then by id), those that became active and those that no longer are."""

    snapshot: RegistrySnapshot
    providers: tuple[ProviderConfig, ...]
    added: tuple[ProviderConfig, ...]
    gone: tuple[str, ...]


RegistryListener = Callable[[RegistryChange], None]


class LiveRegistry:
    """Follows ``store.registry`` and applies each new version to this gateway.

    A background worker of the gateway (``start``/``stop``); :meth:`load`
    runs before the gateway serves, so its first calls already see the
    registry.

    Args:
        store: where the registry lives.
        config: the configuration that seeds it (and orders its providers).
        directory: the live view it keeps up to date.
        poll_interval_s: how often to look for a new version.
    """

    def __init__(
        self,
        *,
        store: Store,
        config: GatewayConfig,
        directory: ProviderDirectory,
        poll_interval_s: float,
    ) -> None:
        self._store = store
        self._config = config
        self.directory = directory
        self._follower = Follower(self.refresh, interval_s=poll_interval_s, name="registry.follow")
        self._listeners: list[RegistryListener] = []
        self._snapshot: RegistrySnapshot | None = None
        self._order = {p.id: i for i, p in enumerate(config.providers)}
        self._lock = asyncio.Lock()
        # Refresh calls made so far, and how many of them the last applied
        # snapshot covers (it was read after they began).
        self._asked = 0
        self._covered = 0

    @property
    def snapshot(self) -> RegistrySnapshot | None:
        """The registry as last applied (None before :meth:`load`)."""
        return self._snapshot

    def subscribe(self, listener: RegistryListener) -> None:
        """Call ``listener`` with every change applied from now on (it must not block)."""
        self._listeners.append(listener)

    async def load(self) -> None:
        """Seed the registry from the configuration, then apply it (before serving)."""
        report = await self._store.registry.seed(seeds_from_config(self._config))
        if report.changed or report.skipped:
            _log.info(
                "registry.seeded",
                added=list(report.added),
                updated=list(report.updated),
                removed=list(report.removed),
                skipped=list(report.skipped),
            )
        for provider_id in report.skipped:
            _log.warning(
                "registry.seed_skipped",
                provider=provider_id,
                why="the id belongs to an enrolled entry; its [[providers]] block is ignored",
            )
        await self.refresh()

    async def refresh(self) -> bool:
        """Apply the registry's newest version if it moved; True if this call applied it.

        On return, every change committed before the call is applied. Calls that
        queue while a snapshot is read share the next one: a burst of changes
        (joins, gates) costs a snapshot per batch, not one per change.
        """
        self._asked += 1
        ticket = self._asked
        async with self._lock:
            if self._covered >= ticket:
                return False  # a snapshot read after this call began was applied
            covers = self._asked
            applied = await self._refresh_now()
            self._covered = covers
            return applied

    async def _refresh_now(self) -> bool:
        """Under the lock: read the version, and the snapshot if it moved; apply it."""
        current = None if self._snapshot is None else self._snapshot.version
        if current is not None and await self._store.registry.version() == current:
            return False
        snapshot = await self._store.registry.snapshot()
        if snapshot.version == current:
            return False
        self._apply(snapshot)
        return True

    def _apply(self, snapshot: RegistrySnapshot) -> None:
        active = sorted(
            snapshot.of(EntryKind.PROVIDER, RegistryStatus.ACTIVE),
            key=lambda e: (self._order.get(e.id, len(self._order)), e.id),
        )
        providers = tuple(provider_of(e) for e in active)
        before = dict(self.directory)
        statuses = {e.id: e.status for e in snapshot.of(EntryKind.PROVIDER)}
        statuses.update(
            {i: RegistryStatus.REMOVED for k, i in snapshot.removed if k is EntryKind.PROVIDER}
        )
        self.directory.replace(providers, statuses=statuses, version=snapshot.version)
        self._snapshot = snapshot
        change = RegistryChange(
            snapshot=snapshot,
            providers=providers,
            added=tuple(p for p in providers if before.get(p.id) != p),
            gone=tuple(sorted(set(before) - {p.id for p in providers})),
        )
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # noqa: BLE001 - one part failing to follow must not stop the rest
                _log.exception("registry.listener_failed", listener=repr(listener))
        _log.info(
            "registry.applied",
            version=snapshot.version,
            active=len(providers),
            added=[p.id for p in change.added],
            gone=list(change.gone),
        )

    async def start(self) -> None:
        """Poll for changes every ``poll_interval_s``."""
        self._follower.start()

    async def stop(self) -> None:
        """Stop polling."""
        await self._follower.stop()
