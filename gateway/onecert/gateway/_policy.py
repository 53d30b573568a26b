"""Who may call which RPC: the gateway's whole access policy, in one table.

:data:`POLICY` maps every RPC the gateway serves (its full method name) to
the roles allowed to call it; :class:`Policy` enforces it for the server's
boundary (:mod:`onecert.gateway._boundary`) before any handler runs, and
puts the identified caller in :data:`CALLER` for the handler to read.

Portal RPCs are a special case kept from the start: they are authorised by
the citizen's identity assertion, which the service checks. The policy only
makes sure that a client certificate, when there is one, is a portal's, so a
carrier's or a provider's certificate cannot run lookups; without mutual TLS
(development plaintext) there is no certificate to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final

import grpc
import structlog

from onecert.gateway._principals import Principal, PrincipalResolver, Role
from onecert.gateway._refusal import Refusal
from onecert.gateway.store._registry_types import RegistryStatus
from onecert.sdk._tls import peer_common_name

__all__ = ["CALLER", "PENDING_RPCS", "POLICY", "PUBLIC", "Policy", "current_caller"]

_log = structlog.get_logger("onecert.gateway.policy")

PUBLIC: Final[frozenset[Role]] = frozenset()
"""No caller identity needed (health checks, reflection)."""

_GATEWAY = "/onecert.v1.Gateway/"

POLICY: Final[Mapping[str, frozenset[Role]]] = {
    # Citizens, through the portal; each call also needs the citizen's assertion.
    _GATEWAY + "Lookup": frozenset({Role.PORTAL}),
    _GATEWAY + "Unbind": frozenset({Role.PORTAL}),
    _GATEWAY + "GetUnbind": frozenset({Role.PORTAL}),
    # Carriers report their own numbers' events.
    _GATEWAY + "ReportNumberEvent": frozenset({Role.CARRIER}),
    # Providers check numbers at login and fetch and confirm notices.
    _GATEWAY + "CheckRecycled": frozenset({Role.PROVIDER}),
    _GATEWAY + "PollEvents": frozenset({Role.PROVIDER}),
    _GATEWAY + "ConfirmEventAction": frozenset({Role.PROVIDER}),
    # Providers fetch the routing key and publish their own filter.
    _GATEWAY + "GetRoutingKey": frozenset({Role.PROVIDER}),
    _GATEWAY + "PublishFilter": frozenset({Role.PROVIDER}),
    # The regulator.
    _GATEWAY + "GetComplianceReport": frozenset({Role.ADMIN}),
    # The regulator keeps the provider registry.
    _GATEWAY + "InviteProvider": frozenset({Role.ADMIN}),
    _GATEWAY + "ListProviders": frozenset({Role.ADMIN}),
    _GATEWAY + "GetProvider": frozenset({Role.ADMIN}),
    _GATEWAY + "SuspendProvider": frozenset({Role.ADMIN}),
    _GATEWAY + "ResumeProvider": frozenset({Role.ADMIN}),
    _GATEWAY + "RemoveProvider": frozenset({Role.ADMIN}),
    # A joined provider: where it stands, the gate, its certificate (also pending ones).
    _GATEWAY + "GetEnrollmentStatus": frozenset({Role.PROVIDER}),
    _GATEWAY + "RequestActivation": frozenset({Role.PROVIDER}),
    _GATEWAY + "RenewCertificate": frozenset({Role.PROVIDER}),
    # Orchestrators and operators.
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
}

PENDING_RPCS: Final[frozenset[str]] = frozenset(
    {
        # The RPCs a provider that joined but has not passed the conformance
        # gate yet may call (its enrollment's status, its certificate). Each
        # is also in POLICY with the provider role.
        _GATEWAY + "GetEnrollmentStatus",
        _GATEWAY + "RequestActivation",
        _GATEWAY + "RenewCertificate",
    }
)
"""What a ``pending`` provider may call; an ``active`` one may call every provider RPC,
a ``suspended`` or ``removed`` one nothing (see :meth:`Policy.authorize`)."""

CALLER: ContextVar[Principal | None] = ContextVar("onecert_caller", default=None)
"""The caller of the RPC being served, as the policy identified it (None for a portal
call without a client certificate)."""


def current_caller() -> Principal:
    """The identified caller of the RPC being served (RPCs for carriers, providers, admins)."""
    caller = CALLER.get()
    if caller is None:
        raise RuntimeError("no caller: the RPC is not behind the access policy")
    return caller


class Policy:
    """Enforces a policy table with a :class:`PrincipalResolver`.

    Args:
        principals: identifies callers by certificate (or dev header).
        table: full method name -> roles allowed (:data:`POLICY`).
    """

    def __init__(
        self, principals: PrincipalResolver, table: Mapping[str, frozenset[Role]] = POLICY
    ) -> None:
        self._principals = principals
        self._table = table

    def is_public(self, method: str) -> bool:
        """Whether anyone may call ``method`` (False for a method not in the table)."""
        return method in self._table and not self._table[method]

    def missing(self, methods: list[str]) -> list[str]:
        """The methods among ``methods`` the table does not name."""
        return [m for m in methods if m not in self._table]

    def authorize(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Set :data:`CALLER` for this call, or raise :class:`Refusal`.

        UNAUTHENTICATED when the caller cannot be identified, PERMISSION_DENIED
        when it is someone with another role (or the method is not in the table).
        """
        roles = self._table.get(method)
        if roles is None:
            _log.error("policy.missing", method=method)
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "this method has no access policy",
                reason="no_policy",
            )
        if Role.PORTAL in roles:
            self._authorize_portal(context, roles)
            return
        found = self._principals.identify(
            common_name=peer_common_name(context), metadata=context.invocation_metadata() or ()
        )
        if isinstance(found, str):
            _log.info("caller.unidentified", wanted=_names(roles))
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, found, reason="unidentified")
        if found.role not in roles:
            _log.info("caller.wrong_role", caller=found.actor, wanted=_names(roles))
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this call is for {_articled(roles)}; the caller is "
                f"{found.role.value} {found.id!r}",
                reason="wrong_role",
            )
        _check_standing(found, method)
        CALLER.set(found)
        structlog.contextvars.bind_contextvars(caller=found.actor)

    def _authorize_portal(
        self, context: grpc.aio.ServicerContext[Any, Any], roles: frozenset[Role]
    ) -> None:
        cn = peer_common_name(context)
        if cn is None:
            return
        found = self._principals.by_common_name(cn)
        if found is None or found.role not in roles:
            _log.info("caller.not_portal", caller=found.actor if found else "unregistered")
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client certificate {cn!r} is not a portal's: citizens' calls come "
                "through the portal (portal.client_cns)",
                reason="not_portal",
            )
        CALLER.set(found)


def _check_standing(caller: Principal, method: str) -> None:
    """Refuse a registry caller whose status does not allow ``method``.

    Active providers and carriers may call what their role may; a pending
    provider only :data:`PENDING_RPCS`; an invited, suspended or removed one
    nothing. Callers outside the registry (admins, the portal) have no status.
    """
    status = caller.status
    if status is None or status is RegistryStatus.ACTIVE:
        return
    if status is RegistryStatus.PENDING and method in PENDING_RPCS:
        return
    _log.info("caller.not_active", caller=caller.actor, status=status.value)
    if status is RegistryStatus.PENDING:
        message = (
            f"{caller.role.value} {caller.id!r} is pending: it has joined but not passed the "
            "conformance gate yet, so it may only ask about its enrollment"
        )
    elif status is RegistryStatus.SUSPENDED:
        message = (
            f"{caller.role.value} {caller.id!r} is suspended by the regulator: its calls are "
            "refused until it is resumed"
        )
    elif status is RegistryStatus.REMOVED:
        message = (
            f"{caller.role.value} {caller.id!r} was removed from the registry: its calls are "
            "refused"
        )
    else:
        message = f"{caller.role.value} {caller.id!r} has not joined yet"
    raise Refusal(grpc.StatusCode.PERMISSION_DENIED, message, reason=f"status_{status.value}")


def _names(roles: frozenset[Role]) -> str:
    return ",".join(sorted(r.value for r in roles))


def _articled(roles: frozenset[Role]) -> str:
    return " or ".join(
        f"an {r.value}" if r is Role.ADMIN else f"a {r.value}"
        for r in sorted(roles, key=lambda r: r.value)
    )
