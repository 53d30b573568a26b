"""The providers the gateway calls right now: one live view, read by every part.

A :class:`ProviderDirectory` is a read-only mapping, provider id ->
:class:`~onecert.gateway._config.ProviderConfig`, of the *active* providers,
and knows the registry status of the others (pending, suspended, removed).
The gateway builds one from its configuration; with a store, the live
registry (:mod:`onecert.gateway._registry`) replaces its content whenever
the registry changes. Parts that look a provider up (notices, unbind
delivery) hold the directory itself and read it at each use, so a change
reaches them without a restart; parts that keep state per provider (the
fan-out's breakers, channels, routing) are told by the live registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from onecert.gateway._config import ProviderConfig
from onecert.gateway.store._registry_types import RegistryStatus

__all__ = ["ProviderDirectory", "by_id", "status_of"]


class ProviderDirectory(Mapping[str, ProviderConfig]):
    """Active providers by id, in a stable order, and every known provider's status.

    Args:
        providers: the active providers (the configuration's, at first).
        statuses: the status of providers that are not active (active ones
            need not be listed).
        version: the registry version this view reflects (0: the configuration).
    """

    def __init__(
        self,
        providers: Iterable[ProviderConfig] = (),
        *,
        statuses: Mapping[str, RegistryStatus] | None = None,
        version: int = 0,
    ) -> None:
        self._active: dict[str, ProviderConfig] = {}
        self._statuses: dict[str, RegistryStatus] = {}
        self._dialable: tuple[ProviderConfig, ...] = ()
        self.version = 0
        self.replace(providers, statuses=statuses, version=version)

    def replace(
        self,
        providers: Iterable[ProviderConfig],
        *,
        statuses: Mapping[str, RegistryStatus] | None = None,
        version: int = 0,
    ) -> None:
        """Make this the view of a new registry version (one assignment per field,
        so a reader never sees half of a change)."""
        active = {p.id: p for p in providers}
        known = dict(statuses or {})
        known.update(dict.fromkeys(active, RegistryStatus.ACTIVE))
        self._active = active
        self._statuses = known
        self._dialable = tuple(p for p in active.values() if p.address is not None)
        self.version = version

    def __getitem__(self, provider_id: str) -> ProviderConfig:
        return self._active[provider_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._active)

    def __len__(self) -> int:
        return len(self._active)

    def status(self, provider_id: str) -> RegistryStatus | None:
        """The provider's registry status (None: unknown to this gateway)."""
        return self._statuses.get(provider_id)

    def dialable(self) -> tuple[ProviderConfig, ...]:
        """The active providers with an address: those lookups may ask."""
        return self._dialable


def status_of(providers: Mapping[str, ProviderConfig], provider_id: str) -> RegistryStatus | None:
    """``provider_id``'s status in ``providers``: a directory knows; in a plain mapping
    (tests, a gateway without a store) a provider listed is active, others unknown."""
    if isinstance(providers, ProviderDirectory):
        return providers.status(provider_id)
    return RegistryStatus.ACTIVE if provider_id in providers else None


def by_id(
    providers: Mapping[str, ProviderConfig] | Sequence[ProviderConfig],
) -> Mapping[str, ProviderConfig]:
    """``providers`` by id: a mapping (a live directory) as it is, a sequence indexed."""
    if isinstance(providers, Mapping):
        return providers
    return {p.id: p for p in providers}
