"""The compliance report tells a provider that never received a notice (unreachable) from
one that received it and ignored it, and says what each column counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from onecert.cli._report import render_table, report_to_json
from onecert.gateway._compliance import report_to_pb
from onecert.sdk.client import ComplianceReport, ComplianceStatus, ProviderCompliance
from onecert.sdk.client._admin import report_from_pb

DOWN = ProviderCompliance("down", "Down Shop", never_acted=1, never_received=1)
DEAF = ProviderCompliance(
    "deaf", "Deaf Chat", notices_delivered=1, notices_acknowledged=1, never_acted=1
)
GOOD = ProviderCompliance(
    "good", "Good Pay", notices_delivered=1, acted_on_time=1, unbinds_done=2,
    unbind_median_time=timedelta(seconds=3),
)  # fmt: skip
REPORT = ComplianceReport(datetime(2026, 12, 5, tzinfo=UTC), (DOWN, DEAF, GOOD))


def test_statuses_differ() -> None:
    """Unreachable and ignoring are different standings; ignoring is the worse."""
    assert DOWN.status is ComplianceStatus.UNREACHABLE
    assert (DOWN.never_received, DOWN.ignored) == (1, 0)
    assert DEAF.status is ComplianceStatus.NON_COMPLIANT
    assert (DEAF.never_received, DEAF.ignored) == (0, 1)
    both = ProviderCompliance("x", "X", never_acted=3, never_received=1)
    assert both.status is ComplianceStatus.NON_COMPLIANT


def test_table_separates_them_and_explains_its_columns() -> None:
    """Separate columns, a legend for them and the median, and one note per failure."""
    lines = render_table(REPORT).splitlines()
    header = lines[2]
    assert "not received" in header
    assert "ignored" in header
    assert header.rstrip().endswith("median answer")
    assert "never" not in header.split()
    text = "\n".join(lines)
    assert (
        "median answer: the median time from an unbind request to the provider's final answer"
        in text
    )
    assert "Down Shop: 1 notice(s) never received before the deadline (unreachable)" in text
    assert "Deaf Chat: 1 notice(s) received and never acted on before the deadline" in text
    assert "Good Pay:" not in text


def test_the_split_survives_the_wire_and_json() -> None:
    """GetComplianceReport carries never_received; --json shows both counts."""
    again = report_from_pb(report_to_pb(REPORT))
    assert again.providers == REPORT.providers
    by_id = {p["provider_id"]: p for p in report_to_json(REPORT)["providers"]}
    assert (by_id["down"]["never_received"], by_id["down"]["ignored"]) == (1, 0)
    assert (by_id["deaf"]["never_received"], by_id["deaf"]["ignored"]) == (0, 1)
    assert by_id["down"]["status"] == "unreachable"
