"""What the conformance tests read in a kit's report, written once."""

from __future__ import annotations

from collections.abc import Sequence

from onecert.sdk.conformance import Outcome, Report


def failed_rules(report: Report) -> set[str]:
    """The rules of the checks that failed."""
    return {r.rule for r in report.results if r.outcome is Outcome.FAILED}


def assert_passed_every_check(report: Report, checks: Sequence[tuple[str, str]]) -> None:
    """The report ran exactly ``checks`` (rule, name), in order, and every one passed."""
    assert [(r.rule, r.name) for r in report.results] == list(checks)
    assert [r for r in report.results if not r.passed] == [], report.to_table()
    assert report.ok, report.to_table()
