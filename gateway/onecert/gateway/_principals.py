"""Who is calling: the portal, a carrier, a provider or the regulator (admin).

Callers are identified by the common name of their verified client
certificate (mutual TLS), mapped through the configuration (``client_cn`` of
each carrier and provider, ``admin.client_cns``, ``portal.client_cns``). The
portal's calls also carry a citizen's assertion, which is what authorises
them; the certificate check keeps a carrier's or a provider's certificate
from being used to run lookups at all. Only in
development mode (``gateway.dev_plaintext``) may a caller without a
certificate name itself in the metadata ``x-onecert-dev-principal``:
``carrier:ID``, ``provider:ID`` or ``admin``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from onecert.gateway._config import GatewayConfig
from onecert.sdk._tls import peer_common_name

__all__ = ["DEV_PRINCIPAL_HEADER", "Principal", "PrincipalResolver", "Role"]

DEV_PRINCIPAL_HEADER = "x-onecert-dev-principal"

_log = structlog.get_logger("onecert.gateway.principals")


class Role(enum.StrEnum):
    """What a caller may do."""

    CARRIER = "carrier"
    PROVIDER = "provider"
    ADMIN = "admin"
    PORTAL = "portal"


@dataclass(frozen=True)
class Principal:
    """An identified caller: its role and its configured id (the CN for admins)."""

    role: Role
    id: str

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
        self._by_cn: dict[str, Principal] = {}
        for cn, carrier_id in carriers.items():
            self._by_cn[cn] = Principal(Role.CARRIER, carrier_id)
        for cn, provider_id in providers.items():
            self._by_cn[cn] = Principal(Role.PROVIDER, provider_id)
        for cn in admin_cns:
            self._by_cn[cn] = Principal(Role.ADMIN, cn)
        for cn in portal_cns:
            self._by_cn[cn] = Principal(Role.PORTAL, cn)
        self._carrier_ids = frozenset(carriers.values())
        self._provider_ids = frozenset(providers.values())
        self._dev = dev_principals

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

    def identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal | str:
        """The caller, or why it could not be identified (a message for the caller)."""
        cn = peer_common_name(context)
        if cn is not None:
            found = self._by_cn.get(cn)
            if found is not None:
                return found
            return (
                f"client certificate {cn!r} is not registered as a portal, carrier, "
                "provider or admin"
            )
        claimed = _metadata(context, DEV_PRINCIPAL_HEADER)
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
        if role == Role.PROVIDER.value and ident in self._provider_ids:
            return Principal(Role.PROVIDER, ident)
        return (
            f"{DEV_PRINCIPAL_HEADER} must be carrier:ID or provider:ID of a configured "
            "carrier or provider, or admin"
        )

    async def require_portal(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Abort the call unless a client certificate, if any, is a portal's.

        Without a client certificate (development plaintext) there is nothing
        to check: the citizen's assertion still authorises the call.
        """
        cn = peer_common_name(context)
        if cn is None:
            return
        found = self._by_cn.get(cn)
        if found is None or found.role is not Role.PORTAL:
            _log.info("caller.not_portal", caller=found.actor if found else "unregistered")
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client certificate {cn!r} is not a portal's: citizens' calls come "
                "through the portal (portal.client_cns)",
            )

    async def require(self, context: grpc.aio.ServicerContext[Any, Any], role: Role) -> Principal:
        """The caller if it has ``role``; otherwise abort the call.

        UNAUTHENTICATED when the caller cannot be identified, PERMISSION_DENIED
        when it is someone with another role.
        """
        found = self.identify(context)
        if isinstance(found, str):
            _log.info("caller.unidentified", wanted=role.value)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, found)
        if found.role is not role:
            _log.info("caller.wrong_role", caller=found.actor, wanted=role.value)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this call is for {_article(role)}; the caller is {found.role.value} {found.id!r}",
            )
        structlog.contextvars.bind_contextvars(caller=found.actor)
        return found


def _article(role: Role) -> str:
    return f"an {role.value}" if role is Role.ADMIN else f"a {role.value}"


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None
