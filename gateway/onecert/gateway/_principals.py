"""Who is calling: the portal, a carrier, a provider or the regulator (admin).

Callers are identified by the common name of their verified client
certificate (mutual TLS), mapped through the configuration (``client_cn`` of
each carrier and provider, ``admin.client_cns``, ``portal.client_cns``). The
portal's calls also carry a citizen's assertion, which is what authorises
them; the certificate check keeps a carrier's or a provider's certificate
from being used to run lookups at all. Only in
development mode (``gateway.dev_plaintext``) may a caller without a
certificate name itself in the metadata ``x-onecert-dev-principal``:
``carrier:ID``, ``provider:ID`` or ``admin``. What each role may call is
the table in :mod:`onecert.gateway._policy`. With a store, providers are
identified by the live registry instead (:meth:`PrincipalResolver.apply_registry`):
every provider it holds, by its certificate's CN (its id for enrolled
providers), with its status.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from onecert.gateway._config import GatewayConfig
from onecert.gateway._identity import Metadata
from onecert.gateway.store._registry_types import EntryKind, RegistrySnapshot, RegistryStatus

__all__ = ["DEV_PRINCIPAL_HEADER", "Principal", "PrincipalResolver", "Role"]

DEV_PRINCIPAL_HEADER = "x-onecert-dev-principal"


class Role(enum.StrEnum):
    """What a caller may do."""

    CARRIER = "carrier"
    PROVIDER = "provider"
    ADMIN = "admin"
    PORTAL = "portal"


@dataclass(frozen=True)
class Principal:
    """An identified caller: its role, its id (the CN for admins) and, for providers
    and carriers, its status in the registry (None for admins and the portal)."""

    role: Role
    id: str
    status: RegistryStatus | None = None

    @property
    def actor(self) -> str:
        """The audit log's name for it: ``"carrier:cm"``, ``"admin:regulator"``."""
        return f"{self.role.value}:{self.id}"


class PrincipalResolver:
    """Maps a call's verified identity to a :class:`Principal`.

    Args:
        carriers: client certificate CN -> carrier id.
        providers: client certificate CN -> provider id.
        admin_cns: client certificate CNs with the admin role.
        dev_principals: accept ``x-onecert-dev-principal`` from callers
            without a certificate (development mode only).
    """

    def __init__(
        self,
        *,
        carriers: Mapping[str, str],
        providers: Mapping[str, str],
        admin_cns: frozenset[str] | set[str] | tuple[str, ...] = (),
        portal_cns: frozenset[str] | set[str] | tuple[str, ...] = (),
        dev_principals: bool = False,
    ) -> None:
        self._carriers = dict(carriers)
        self._admin_cns = tuple(admin_cns)
        self._portal_cns = tuple(portal_cns)
        self._carrier_ids = frozenset(carriers.values())
        self._dev = dev_principals
        self._by_cn: dict[str, Principal] = {}
        self._providers: dict[str, Principal] = {}
        self._rebuild({cn: Principal(Role.PROVIDER, pid) for cn, pid in providers.items()})

    def _rebuild(self, providers: Mapping[str, Principal]) -> None:
        # Providers first: a carrier's, an admin's or the portal's CN always
        # wins, so no enrolled provider can take one over. One assignment,
        # so a call never sees half a change.
        by_cn = dict(providers)
        for cn, carrier_id in self._carriers.items():
            by_cn[cn] = Principal(Role.CARRIER, carrier_id)
        for cn in self._admin_cns:
            by_cn[cn] = Principal(Role.ADMIN, cn)
        for cn in self._portal_cns:
            by_cn[cn] = Principal(Role.PORTAL, cn)
        self._providers = {p.id: p for p in providers.values()}
        self._by_cn = by_cn

    def apply_registry(self, snapshot: RegistrySnapshot) -> None:
        """Identify providers by the registry from now on: every provider it knows,
        with its status (the policy refuses those that are not active)."""
        principals = {
            provider_id: Principal(Role.PROVIDER, provider_id, RegistryStatus.REMOVED)
            for kind, provider_id in snapshot.removed
            if kind is EntryKind.PROVIDER
        }
        for entry in snapshot.of(EntryKind.PROVIDER):
            principals[entry.cn] = Principal(Role.PROVIDER, entry.id, entry.status)
        self._rebuild(principals)

    def reserved_cns(self) -> frozenset[str]:
        """The CNs no new provider may be given (its CN is its id): those of carriers,
        admins and the portal, and the certificate names providers hold besides their ids."""
        others = (cn for cn, p in self._by_cn.items() if p.role is Role.PROVIDER and cn != p.id)
        return frozenset((*self._carriers, *self._admin_cns, *self._portal_cns, *others))

    @classmethod
    def from_config(cls, config: GatewayConfig) -> PrincipalResolver:
        """The resolver for a gateway configuration."""
        return cls(
            carriers={c.cn: c.id for c in config.carriers},
            providers={p.cn: p.id for p in config.providers},
            admin_cns=config.admin.client_cns,
            portal_cns=config.portal.client_cns,
            dev_principals=config.dev_plaintext,
        )

    def identify(self, *, common_name: str | None, metadata: Metadata) -> Principal | str:
        """The caller, or why it could not be identified (a message for the caller).

        Args:
            common_name: the verified client certificate's CN (None without one).
            metadata: the call's invocation metadata (for the dev principal header).
        """
        if common_name is not None:
            found = self._by_cn.get(common_name)
            if found is not None:
                return found
            return (
                f"client certificate {common_name!r} is not registered as a portal, carrier, "
                "provider or admin"
            )
        claimed = _metadata(metadata, DEV_PRINCIPAL_HEADER)
        if claimed is None:
            return "a client certificate is required"
        if not self._dev:
            return (
                f"{DEV_PRINCIPAL_HEADER} is accepted in development mode only; "
                "present a client certificate"
            )
        return self._dev_principal(claimed)

    def _dev_principal(self, claimed: str) -> Principal | str:
        role, _, ident = claimed.strip().partition(":")
        if role == Role.ADMIN.value and not ident:
            return Principal(Role.ADMIN, "dev")
        if role == Role.CARRIER.value and ident in self._carrier_ids:
            return Principal(Role.CARRIER, ident)
        if role == Role.PROVIDER.value and ident in self._providers:
            return self._providers[ident]
        return (
            f"{DEV_PRINCIPAL_HEADER} must be carrier:ID or provider:ID of a configured "
            "carrier or provider, or admin"
        )

    def by_common_name(self, cn: str) -> Principal | None:
        """The principal a verified client certificate's common name maps to, if any."""
        return self._by_cn.get(cn)


def _metadata(metadata: Metadata, key: str) -> str | None:
    for name, value in metadata:
        if name == key and isinstance(value, str):
            return value
    return None
