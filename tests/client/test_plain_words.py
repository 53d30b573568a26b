"""The citizen's list says in plain words who did not answer; the technical detail stays in
--json (and the gateway's log)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from onecert.cli._lookup import plain_outcome, render_table, to_json
from onecert.sdk.client import CallOutcome, CarrierStatus, Coverage, Started, Summary
from tests.client.client_support import provider_result


@pytest.mark.parametrize(
    ("outcome", "detail", "words"),
    [
        ("timed_out", "deadline exceeded", "did not answer in time; try again later"),
        (
            "skipped",
            "breaker open",
            "has not been answering lately, so was not asked; try again later",
        ),
        (
            "failed",
            "UNAVAILABLE: failed to connect to all addresses",
            "could not be reached; try again later",
        ),
        ("failed", "INTERNAL: internal error in the adapter", "could not answer; try again later"),
    ],
)
def test_plain_outcome(outcome: str, detail: str, words: str) -> None:
    """Each way a call can go unanswered has its plain sentence."""
    assert plain_outcome(outcome, detail) == words


def test_list_speaks_plainly_and_json_keeps_the_detail() -> None:
    """The table shows no gRPC status or breaker state; --json still carries both."""
    results = [
        provider_result("chirp", outcome=CallOutcome.SKIPPED, detail="breaker open"),
        provider_result(
            "down",
            outcome=CallOutcome.FAILED,
            detail="UNAVAILABLE: failed to connect to all addresses",
        ),
        provider_result(
            "slow", outcome=CallOutcome.TIMED_OUT, detail="DEADLINE_EXCEEDED: deadline exceeded"
        ),
    ]
    carriers = (CarrierStatus("carrier-b", CallOutcome.FAILED, "UNAVAILABLE: socket closed"),)
    started = Started(query_id="q", numbers=(), carriers=carriers, provider_calls=3)
    summary = Summary(
        query_id="q",
        total=Coverage(asked=3, answered=0, timed_out=1, failed=1, skipped=1),
        numbers=(),
        carriers=carriers,
        elapsed=timedelta(seconds=1),
    )
    text = render_table(started, results, summary)
    for technical in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "breaker"):
        assert technical not in text
    lines = text.splitlines()
    assert "Not answered (accounts there may be missing from this list)" in lines
    assert any(
        "Chirp" in line
        and line.endswith("has not been answering lately, so was not asked; try again later")
        for line in lines
    )
    assert any("carrier carrier-b" in line and "could not be reached" in line for line in lines)
    document = to_json(started, results, summary)
    assert [r["detail"] for r in document["results"]] == [r.detail for r in results]
