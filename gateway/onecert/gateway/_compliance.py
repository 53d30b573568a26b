"""The compliance report: per provider, how notices and unbind tickets were handled.

Served to admins by ``Gateway.GetComplianceReport`` and printed by
``onecert report compliance`` (a table, or JSON with ``--json``), from the
gateway or straight from its database.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from google.protobuf.duration_pb2 import Duration

from onecert.gateway._audit import Auditor
from onecert.gateway._config import ProviderConfig
from onecert.gateway._notices import Clock, timestamp_arg, utc_now
from onecert.gateway._principals import Principal
from onecert.gateway._refusal import invalid, store_call
from onecert.gateway.store import ProviderComplianceRow, Store
from onecert.sdk._convert import timestamp
from onecert.v1 import gateway_pb2

__all__ = [
    "ComplianceReport",
    "ComplianceService",
    "ComplianceStatus",
    "ProviderCompliance",
    "build_report",
    "render_table",
    "report_from_pb",
    "report_to_json",
    "report_to_pb",
]

_log = structlog.get_logger("onecert.gateway.compliance")


class ComplianceStatus(enum.StrEnum):
    """A provider's standing on recycled-number notices, worst first."""

    NON_COMPLIANT = "non-compliant"
    """At least one notice was never acted on before its deadline."""
    LATE = "late"
    """Every notice acted on, some after the deadline."""
    AWAITING = "awaiting"
    """Nothing missed yet; some notices are not due."""
    OK = "ok"
    """Every notice acted on in time."""
    NO_NOTICES = "no notices"


@dataclass(frozen=True)
class ProviderCompliance:
    """One provider's line of the report.

    Every notice counts in exactly one of ``acted_on_time``, ``acted_late``,
    ``never_acted`` (deadline passed, no action confirmed) and
    ``awaiting_action`` (not due yet). ``unbind_median_time`` runs from a
    ticket's creation to the provider's final answer; None without any.
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

    @property
    def notices(self) -> int:
        """Notices sent to this provider (delivered or not)."""
        return self.acted_on_time + self.acted_late + self.never_acted + self.awaiting_action

    @property
    def status(self) -> ComplianceStatus:
        """The worst standing among its notices."""
        if self.never_acted:
            return ComplianceStatus.NON_COMPLIANT
        if self.acted_late:
            return ComplianceStatus.LATE
        if self.awaiting_action:
            return ComplianceStatus.AWAITING
        if self.acted_on_time:
            return ComplianceStatus.OK
        return ComplianceStatus.NO_NOTICES


@dataclass(frozen=True)
class ComplianceReport:
    """The report: when it was made, what it covers, one line per provider."""

    generated_at: datetime
    providers: tuple[ProviderCompliance, ...]
    since: datetime | None = None


def _line(row: ProviderComplianceRow, name: str) -> ProviderCompliance:
    return ProviderCompliance(
        provider_id=row.provider_id,
        provider_name=name,
        notices_delivered=row.notices_delivered,
        notices_acknowledged=row.notices_acknowledged,
        acted_on_time=row.acted_on_time,
        acted_late=row.acted_late,
        never_acted=row.never_acted,
        awaiting_action=row.awaiting_action,
        unbinds_done=row.unbinds_done,
        unbinds_rejected=row.unbinds_rejected,
        unbinds_failed=row.unbinds_failed,
        unbind_median_time=row.unbind_median_time,
    )


async def build_report(
    store: Store,
    *,
    providers: Sequence[ProviderConfig] = (),
    now: datetime | None = None,
    since: datetime | None = None,
) -> ComplianceReport:
    """The report from the database at ``now``.

    Configured ``providers`` appear even without any notice or ticket, with
    their names; providers found only in the database appear by id.
    """
    now = now or utc_now()
    names: Mapping[str, str] = {p.id: p.display_name for p in providers}
    rows = await store.compliance.report(now=now, since=since, providers=list(names))
    return ComplianceReport(
        generated_at=now,
        providers=tuple(_line(r, names.get(r.provider_id, r.provider_id)) for r in rows),
        since=since,
    )


def _duration(value: timedelta) -> Duration:
    out = Duration()
    out.FromTimedelta(value)
    return out


def report_to_pb(report: ComplianceReport) -> gateway_pb2.GetComplianceReportResponse:
    """The report as the admin RPC answers it."""
    response = gateway_pb2.GetComplianceReportResponse()
    response.generated_at.CopyFrom(timestamp(report.generated_at))
    for line in report.providers:
        item = gateway_pb2.ProviderCompliance(
            provider_id=line.provider_id,
            provider_name=line.provider_name,
            notices_delivered=line.notices_delivered,
            notices_acknowledged=line.notices_acknowledged,
            acted_on_time=line.acted_on_time,
            acted_late=line.acted_late,
            never_acted=line.never_acted,
            awaiting_action=line.awaiting_action,
            unbinds_done=line.unbinds_done,
            unbinds_rejected=line.unbinds_rejected,
            unbinds_failed=line.unbinds_failed,
        )
        if line.unbind_median_time is not None:
            item.unbind_median_time.CopyFrom(_duration(line.unbind_median_time))
        response.providers.append(item)
    return response


def report_from_pb(
    response: gateway_pb2.GetComplianceReportResponse, *, since: datetime | None = None
) -> ComplianceReport:
    """The report from the admin RPC's answer."""
    return ComplianceReport(
        generated_at=response.generated_at.ToDatetime(tzinfo=UTC),
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
                    p.unbind_median_time.ToTimedelta() if p.HasField("unbind_median_time") else None
                ),
            )
            for p in response.providers
        ),
        since=since,
    )


def report_to_json(report: ComplianceReport) -> dict[str, Any]:
    """The report as a JSON-ready dict (times ISO 8601, durations in seconds)."""
    return {
        "generated_at": report.generated_at.isoformat(),
        "since": None if report.since is None else report.since.isoformat(),
        "providers": [
            {
                "provider_id": p.provider_id,
                "provider_name": p.provider_name,
                "status": p.status.value,
                "notices": p.notices,
                "notices_delivered": p.notices_delivered,
                "notices_acknowledged": p.notices_acknowledged,
                "acted_on_time": p.acted_on_time,
                "acted_late": p.acted_late,
                "never_acted": p.never_acted,
                "awaiting_action": p.awaiting_action,
                "unbinds_done": p.unbinds_done,
                "unbinds_rejected": p.unbinds_rejected,
                "unbinds_failed": p.unbinds_failed,
                "unbind_median_s": (
                    None
                    if p.unbind_median_time is None
                    else round(p.unbind_median_time.total_seconds(), 3)
                ),
            }
            for p in report.providers
        ],
    }


def format_duration(value: timedelta | None) -> str:
    """``"-"``, ``"850ms"``, ``"42s"``, ``"3m05s"``, ``"2h05m"``, ``"1d03h"``."""
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


_COLUMNS = (
    "provider",
    "status",
    "notices",
    "delivered",
    "acked",
    "on time",
    "late",
    "never",
    "awaiting",
    "unbinds done",
    "rejected",
    "failed",
    "median",
)


def render_table(report: ComplianceReport) -> str:
    """The report as a plain-text table for a terminal."""
    rows = [
        [
            p.provider_name
            if p.provider_name == p.provider_id
            else f"{p.provider_name} ({p.provider_id})",
            p.status.value,
            str(p.notices),
            str(p.notices_delivered),
            str(p.notices_acknowledged),
            str(p.acted_on_time),
            str(p.acted_late),
            str(p.never_acted),
            str(p.awaiting_action),
            str(p.unbinds_done),
            str(p.unbinds_rejected),
            str(p.unbinds_failed),
            format_duration(p.unbind_median_time),
        ]
        for p in report.providers
    ]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        # Names left-aligned, numbers right-aligned.
        parts = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    scope = "" if report.since is None else f" (since {report.since.isoformat()})"
    out = [
        f"Compliance report at {report.generated_at.isoformat(timespec='seconds')}{scope}",
        "",
        line(_COLUMNS),
        line(["-" * w for w in widths]),
    ]
    out.extend(line(r) for r in rows)
    if not rows:
        out.append("(no providers)")
    flagged = [p for p in report.providers if p.never_acted]
    if flagged:
        out.append("")
        out.extend(
            f"{p.provider_name}: {p.never_acted} notice(s) never acted on before the deadline"
            for p in flagged
        )
    return "\n".join(out)


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
        since = None
        if request.HasField("since"):
            try:
                since = timestamp_arg(request.since, "since")
            except ValueError as exc:
                raise invalid(str(exc)) from None
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
