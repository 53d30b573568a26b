"""The compliance report: per provider, how notices and unbind tickets were handled.

Served to admins by ``Gateway.GetComplianceReport`` and printed by
``onecert report compliance``, from the gateway or straight from its database.
The report is the SDK client's :class:`onecert.sdk.client.ComplianceReport`,
built here from the store's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from google.protobuf.duration_pb2 import Duration

from onecert.gateway._audit import Auditor
from onecert.gateway._config import ProviderConfig
from onecert.gateway._notices import Clock, optional_time_arg, utc_now
from onecert.gateway._principals import Principal
from onecert.gateway._refusal import store_call
from onecert.gateway.store import ProviderComplianceRow, RegistryEntry, Store
from onecert.sdk._convert import timestamp
from onecert.sdk.client import ComplianceReport, ProviderCompliance, ProviderStatus
from onecert.v1 import gateway_pb2

__all__ = ["ComplianceService", "build_report", "report_to_pb"]

_log = structlog.get_logger("onecert.gateway.compliance")


# The counts a report line takes from the store's row, and the RPC's message from
# the line, each under the same name in all three.
_COUNTS = (
    "notices_delivered",
    "notices_acknowledged",
    "acted_on_time",
    "acted_late",
    "never_acted",
    "awaiting_action",
    "unbinds_done",
    "unbinds_rejected",
    "unbinds_failed",
    "never_received",
)


def _counts(source: ProviderComplianceRow | ProviderCompliance) -> dict[str, Any]:
    # Any: the protobuf message's keyword arguments are typed each, not as one dict.
    return {name: getattr(source, name) for name in _COUNTS}


def _line(row: ProviderComplianceRow, name: str, entry: RegistryEntry | None) -> ProviderCompliance:
    return ProviderCompliance(
        provider_id=row.provider_id,
        provider_name=name,
        **_counts(row),
        unbind_median_time=row.unbind_median_time,
        registry_status=None if entry is None else ProviderStatus(entry.status.value),
        onboarded_at=None if entry is None else entry.activated_at,
        certificate_not_after=None if entry is None else entry.cert_not_after,
    )


async def build_report(
    store: Store,
    *,
    providers: Sequence[ProviderConfig] = (),
    now: datetime | None = None,
    since: datetime | None = None,
) -> ComplianceReport:
    """The report from the database at ``now``.

    Every provider of the registry and every configured one appears, even
    without any notice or ticket, with its name, registry status, onboarding
    date and certificate expiry; providers found only in old notices and
    tickets appear by id.
    """
    now = now or utc_now()
    registry = {e.id: e for e in await store.registry.list()}
    names: dict[str, str] = {p.id: p.display_name for p in providers}
    names.update({e.id: e.display_name for e in registry.values()})
    rows = await store.compliance.report(now=now, since=since, providers=list(names))
    return ComplianceReport(
        generated_at=now,
        providers=tuple(
            _line(r, names.get(r.provider_id, r.provider_id), registry.get(r.provider_id))
            for r in rows
        ),
        since=since,
    )


def _duration(value: timedelta) -> Duration:
    out = Duration()
    out.FromTimedelta(value)
    return out


def report_to_pb(report: ComplianceReport) -> gateway_pb2.GetComplianceReportResponse:
    """The report as the admin RPC answers it."""
    response = gateway_pb2.GetComplianceReportResponse()
    if report.generated_at is not None:
        response.generated_at.CopyFrom(timestamp(report.generated_at))
    for line in report.providers:
        item = gateway_pb2.ProviderCompliance(
            provider_id=line.provider_id, provider_name=line.provider_name, **_counts(line)
        )
        if line.unbind_median_time is not None:
            item.unbind_median_time.CopyFrom(_duration(line.unbind_median_time))
        if line.registry_status is not None:
            item.status = line.registry_status.pb
        if line.onboarded_at is not None:
            item.onboarded_at.CopyFrom(timestamp(line.onboarded_at))
        if line.certificate_not_after is not None:
            item.certificate_not_after.CopyFrom(timestamp(line.certificate_not_after))
        response.providers.append(item)
    return response


class ComplianceService:
    """``GetComplianceReport`` (admins only, by the access policy), without the server.

    Args:
        store: the durable state.
        providers: the configured providers (names; listed even when idle).
        auditor: where audit rows go.
        clock: the gateway's notion of now.
    """

    def __init__(
        self,
        *,
        store: Store,
        providers: Sequence[ProviderConfig],
        auditor: Auditor,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._providers = tuple(providers)
        self._auditor = auditor
        self._clock = clock

    async def get_report(
        self, request: gateway_pb2.GetComplianceReportRequest, caller: Principal
    ) -> gateway_pb2.GetComplianceReportResponse:
        """The report now (since ``request.since`` if set), for the admin ``caller``."""
        since = optional_time_arg(request, "since")
        report = await store_call(
            build_report(self._store, providers=self._providers, now=self._clock(), since=since),
            "compliance_report",
        )
        _log.info("compliance.reported", providers=len(report.providers))
        detail: dict[str, str | int | bool] = {"providers": len(report.providers)}
        if since is not None:
            detail["since"] = since.isoformat()
        self._auditor.spawn(
            "admin.compliance_report", actor=caller.actor, subject="compliance", detail=detail
        )
        return report_to_pb(report)
