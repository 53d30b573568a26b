"""The conformance report: how it renders, when a run counts as passed."""

from __future__ import annotations

import json

from onecert.sdk.conformance import CheckResult, Outcome, Report


def _report(*outcomes: Outcome) -> Report:
    return Report(
        kind="provider",
        target="127.0.0.1:50051",
        results=tuple(
            CheckResult(
                name=f"check.{i}", outcome=o, detail=f"detail {i}", elapsed=0.01, rule=f"X-{i}"
            )
            for i, o in enumerate(outcomes)
        ),
    )


def test_skips_do_not_fail_a_run_but_failures_do() -> None:
    """A run passes when no check failed; skipped checks never make it fail."""
    assert _report(Outcome.PASSED, Outcome.SKIPPED).ok
    failing = _report(Outcome.PASSED, Outcome.FAILED, Outcome.SKIPPED)
    assert not failing.ok
    assert [r.name for r in failing.failures] == ["check.1"]
    assert failing.counts() == {"passed": 1, "failed": 1, "skipped": 1}


def test_table_has_one_line_per_check_and_a_summary() -> None:
    """The table marks each check PASS, FAIL or SKIP with its rule and detail, then sums up."""
    table = _report(Outcome.PASSED, Outcome.FAILED, Outcome.SKIPPED).to_table()
    lines = table.splitlines()
    assert lines[0].split() == ["RULE", "CHECK", "DETAIL"]
    assert lines[1].split() == ["PASS", "X-0", "check.0", "detail", "0"]
    assert lines[2].startswith("FAIL  X-1   check.1")
    assert lines[3].startswith("SKIP  X-2   check.2")
    assert lines[-1] == (
        "provider at 127.0.0.1:50051: NOT conformant: 1 passed, 1 failed, 1 skipped"
    )


def test_json_round_trips() -> None:
    """The JSON form carries the verdict, the counts and every check."""
    data = json.loads(_report(Outcome.PASSED, Outcome.SKIPPED).to_json())
    assert data["ok"] is True
    assert data["checks"][1] == {
        "rule": "X-1",
        "name": "check.1",
        "outcome": "skipped",
        "detail": "detail 1",
        "elapsed_ms": 10.0,
    }
