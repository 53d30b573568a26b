"""The regulator's client: the compliance report, and the provider registry."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from onecert.sdk.client._base import (
    ClientBase,
    delta,
    stamp,
    time_of,
)
from onecert.sdk.client._registry import (
    Invitation,
    ProviderRecord,
    ProviderStatus,
    RegistryChange,
    category_number,
    change_from_pb,
    record_from_pb,
    status_of_pb,
)
from onecert.v1 import gateway_pb2


class ComplianceStatus(enum.StrEnum):
    """A provider's standing on recycled-number notices, worst first."""

    NON_COMPLIANT = "non-compliant"
    """At least one notice reached the provider and was never acted on before its deadline."""
    UNREACHABLE = "unreachable"
    """None ignored, but at least one notice never reached the provider before its deadline."""
    LATE = "late"
    """Every notice acted on, some after the deadline."""
    AWAITING = "awaiting"
    """Nothing missed yet; some notices are not due."""
    OK = "ok"
    """Every notice acted on in time."""
    NO_NOTICES = "no notices"


@dataclass(frozen=True)
class ProviderCompliance:
    """One provider's line of the compliance report.

    Every notice counts in exactly one of ``acted_on_time``, ``acted_late``,
    ``never_acted`` (deadline passed, no action confirmed) and
    ``awaiting_action`` (not due yet). Of ``never_acted``, ``never_received``
    never reached the provider (it was unreachable: a failure of its service)
    and :attr:`ignored` reached it and were not acted on (a failure to act).
    ``unbind_median_time`` runs from a ticket's creation to the provider's
    final answer; None without any. ``registry_status``, ``onboarded_at``
    (when it became active) and ``certificate_not_after`` come from the
    provider registry (None when the provider is not in it, or unknown).
    """

    provider_id: str
    provider_name: str
    notices_delivered: int = 0
    notices_acknowledged: int = 0
    acted_on_time: int = 0
    acted_late: int = 0
    never_acted: int = 0
    awaiting_action: int = 0
    unbinds_done: int = 0
    unbinds_rejected: int = 0
    unbinds_failed: int = 0
    unbind_median_time: timedelta | None = None
    never_received: int = 0
    registry_status: ProviderStatus | None = None
    onboarded_at: datetime | None = None
    certificate_not_after: datetime | None = None

    @property
    def ignored(self) -> int:
        """Notices that reached the provider and were never acted on before the deadline."""
        return self.never_acted - self.never_received

    @property
    def notices(self) -> int:
        """Notices sent to this provider (delivered or not)."""
        return self.acted_on_time + self.acted_late + self.never_acted + self.awaiting_action

    @property
    def status(self) -> ComplianceStatus:
        """The worst standing among its notices."""
        if self.ignored:
            return ComplianceStatus.NON_COMPLIANT
        if self.never_received:
            return ComplianceStatus.UNREACHABLE
        if self.acted_late:
            return ComplianceStatus.LATE
        if self.awaiting_action:
            return ComplianceStatus.AWAITING
        if self.acted_on_time:
            return ComplianceStatus.OK
        return ComplianceStatus.NO_NOTICES


@dataclass(frozen=True)
class ComplianceReport:
    """The regulator's report: when the gateway made it, one line per provider.

    ``since`` is the scope it was asked for (notices and tickets created at or
    after), where known: the RPC does not echo it, so
    :meth:`AdminGatewayClient.compliance_report` leaves it None.
    """

    generated_at: datetime | None
    providers: tuple[ProviderCompliance, ...]
    since: datetime | None = None


def report_from_pb(
    response: gateway_pb2.GetComplianceReportResponse, *, since: datetime | None = None
) -> ComplianceReport:
    """The report from the gateway's ``GetComplianceReport`` answer."""
    return ComplianceReport(
        generated_at=time_of(response, "generated_at"),
        providers=tuple(
            ProviderCompliance(
                provider_id=p.provider_id,
                provider_name=p.provider_name or p.provider_id,
                notices_delivered=p.notices_delivered,
                notices_acknowledged=p.notices_acknowledged,
                acted_on_time=p.acted_on_time,
                acted_late=p.acted_late,
                never_acted=p.never_acted,
                awaiting_action=p.awaiting_action,
                unbinds_done=p.unbinds_done,
                unbinds_rejected=p.unbinds_rejected,
                unbinds_failed=p.unbinds_failed,
                unbind_median_time=(
                    delta(p.unbind_median_time) if p.HasField("unbind_median_time") else None
                ),
                never_received=p.never_received,
                registry_status=status_of_pb(p.status),
                onboarded_at=time_of(p, "onboarded_at"),
                certificate_not_after=time_of(p, "certificate_not_after"),
            )
            for p in response.providers
        ),
        since=since,
    )


class AdminGatewayClient(ClientBase):
    """The regulator's client of the gateway: the compliance report and the provider registry.

    ::

        async with AdminGatewayClient("gateway.example:443", tls=ClientTLS(
                ca_file="ca.pem", cert_file="regulator.pem",
                key_file="regulator.key.pem")) as gw:
            report = await gw.compliance_report()

    The gateway grants the admin role to the client certificate CNs in its
    ``[admin] client_cns``; a development gateway without TLS takes
    ``insecure=True`` (as the dev admin).

    Args:
        target: ``host:port`` of the gateway.
        tls: the CA to check the gateway and your client certificate.
        insecure: plaintext, for a development gateway only.
        max_message_bytes: the largest message accepted from the gateway.
    """

    _dev_principal = "admin"

    async def compliance_report(
        self,
        *,
        since: datetime | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ComplianceReport:
        """Per provider: notices acted on in time, late, not received or ignored; unbinds.

        Args:
            since: only notices and tickets created at or after this
                (timezone-aware); everything when None.
            timeout: seconds the call may take.

        Raises:
            GatewayError: PERMISSION_DENIED (not an admin), UNAUTHENTICATED, ...
        """
        request = gateway_pb2.GetComplianceReportRequest()
        if since is not None:
            request.since.CopyFrom(stamp(since, "since"))
        response = await self._unary(self._stub.GetComplianceReport, request, timeout=timeout)
        return report_from_pb(response)

    async def invite_provider(
        self,
        provider_id: str,
        *,
        category: str,
        name: str = "",
        ttl: timedelta | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> Invitation:
        """Invite a provider: its record and a one-time enrollment token (shown once).

        Args:
            provider_id: 1 to 64 characters of ``[a-z0-9._-]``.
            category: ``"payment"``, ``"forum"``... (ValueError for an unknown one).
            name: its display name.
            ttl: how long the token lives (the gateway's default when None).
            timeout: seconds the call may take.

        Raises:
            GatewayError: ALREADY_EXISTS (active or suspended), INVALID_ARGUMENT, ...
        """
        request = gateway_pb2.InviteProviderRequest(
            provider_id=provider_id, name=name, category=category_number(category)
        )
        if ttl is not None:
            request.ttl.FromTimedelta(ttl)
        response = await self._unary(self._stub.InviteProvider, request, timeout=timeout)
        return Invitation(
            provider=record_from_pb(response.provider),
            token=response.enrollment_token,
            expires_at=time_of(response, "expires_at"),
        )

    async def list_providers(
        self,
        *,
        status: ProviderStatus | None = None,
        page_size: int = 500,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline of each page
    ) -> tuple[ProviderRecord, ...]:
        """Every provider in the registry (those in ``status`` when given), by id,
        fetched ``page_size`` at a time (contract A-9; a gateway without paging
        answers all at once)."""
        request = gateway_pb2.ListProvidersRequest(page_size=page_size)
        if status is not None:
            request.status = status.pb
        records: list[ProviderRecord] = []
        while True:
            response = await self._unary(self._stub.ListProviders, request, timeout=timeout)
            records += [record_from_pb(r) for r in response.providers]
            if not response.next_page_token:
                return tuple(records)
            request.page_token = response.next_page_token

    async def get_provider(
        self,
        provider_id: str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> tuple[ProviderRecord, tuple[RegistryChange, ...]]:
        """One provider and its history, oldest first (GatewayError NOT_FOUND if unknown)."""
        request = gateway_pb2.GetProviderRequest(provider_id=provider_id)
        response = await self._unary(self._stub.GetProvider, request, timeout=timeout)
        return record_from_pb(response.provider), tuple(change_from_pb(c) for c in response.history)

    async def suspend_provider(
        self,
        provider_id: str,
        *,
        reason: str,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ProviderRecord:
        """Stop calling a provider and refuse its calls until it is resumed."""
        request = gateway_pb2.SuspendProviderRequest(provider_id=provider_id, reason=reason)
        response = await self._unary(self._stub.SuspendProvider, request, timeout=timeout)
        return record_from_pb(response.provider)

    async def resume_provider(
        self,
        provider_id: str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ProviderRecord:
        """Call a suspended provider again."""
        request = gateway_pb2.ResumeProviderRequest(provider_id=provider_id)
        response = await self._unary(self._stub.ResumeProvider, request, timeout=timeout)
        return record_from_pb(response.provider)

    async def remove_provider(
        self,
        provider_id: str,
        *,
        reason: str,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ProviderRecord:
        """Remove a provider for good (only a new invitation brings the id back)."""
        request = gateway_pb2.RemoveProviderRequest(provider_id=provider_id, reason=reason)
        response = await self._unary(self._stub.RemoveProvider, request, timeout=timeout)
        return record_from_pb(response.provider)
