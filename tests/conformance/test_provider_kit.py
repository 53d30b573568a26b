"""The conformance kit against plain-grpcio providers: its options, what its failures say,
and deadlines (tests/conformance/test_kit_rules.py breaks one rule at a time)."""

from __future__ import annotations

import asyncio
import time

import pytest

from onecert.sdk._keys import SigningKey
from onecert.sdk.conformance import Outcome, Report, check_provider
from tests.conformance.conformance_support import failed_rules, run_provider_kit
from tests.conformance.conftest import StartProvider
from tests.conformance.plain_adapters import NUMBER_A, NUMBER_B, PROVIDER_ID


def _failed(report: Report) -> set[str]:
    return {r.name for r in report.results if r.outcome is Outcome.FAILED}


async def test_provider_id_is_taken_from_describe_when_not_given(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """Without a provider id the warrants are addressed to the id Describe gives, and the
    comparison check is skipped with its reason."""
    report = await run_provider_kit(await start_provider(), warrant_key, provider_id=None)
    assert report.ok, report.to_table()
    skipped = report.result("describe.provider_id")
    assert skipped.outcome is Outcome.SKIPPED
    assert "no provider id given" in skipped.detail
    assert report.result("list_bindings.warrant.wrong_audience").passed


async def test_unbind_checks_are_skipped_without_a_test_account(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """Without --unbind the checks that unbind a real account are skipped with the reason,
    and the run passes."""
    report = await run_provider_kit(await start_provider(), warrant_key, unbind=None)
    assert report.ok
    skipped = {r.rule for r in report.results if r.outcome is Outcome.SKIPPED}
    assert skipped == {"U-4", "U-5", "U-6", "U-7"}
    assert "--unbind NUMBER:ACCOUNT_REF" in report.result("unbind.idempotent").detail


async def test_wrong_provider_id_fails_the_describe_comparison(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """A provider id that differs from Describe's fails describe.provider_id."""
    report = await run_provider_kit(await start_provider(), warrant_key, provider_id="someone-else")
    assert "describe.provider_id" in _failed(report)
    assert "'plain-provider'" in report.result("describe.provider_id").detail


async def test_failure_details_say_what_was_answered(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """A failed check says what the provider answered and what was expected, and never
    shows a whole phone number."""
    report = await run_provider_kit(await start_provider(["L-2", "U-3"]), warrant_key)
    detail = report.result("list_bindings.unknown_number").detail
    assert "NOT_FOUND" in detail
    assert "empty list" in detail
    assert "contains the phone number" in report.result("unbind.reason_private").detail
    assert NUMBER_A not in report.to_table()
    assert NUMBER_B not in report.to_table()


async def test_concurrent_duplicates_answered_differently_are_named(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """Duplicates of one request_id sent at once and answered DONE, REJECTED, REJECTED
    fail U-5 with every answer shown."""
    report = await run_provider_kit(await start_provider(["U-5"]), warrant_key)
    detail = report.result("unbind.concurrent_duplicates").detail
    assert "DONE" in detail
    assert "'already in progress'" in detail


async def test_hanging_provider_gives_failed_checks_not_a_hung_kit(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """A provider whose ListBindings never answers fails the checks that need an answer,
    each at its own deadline, and the whole run ends in bounded time."""
    target = await start_provider(hang=True)
    start = time.monotonic()
    report = await run_provider_kit(target, warrant_key, call_timeout=0.5)
    elapsed = time.monotonic() - start
    assert failed_rules(report) == {
        "L-1",
        "L-2",
        "L-4",
        "W-8",
        "W-15",
        "W-16",
        "W-17",
        "U-7",
        "D-2",
    }, report.to_table()
    assert "DEADLINE_EXCEEDED" in report.result("list_bindings.known_numbers").detail
    # Seven phases, each bounded by a few call deadlines.
    assert elapsed < 7 * (2 * 0.5 + 1.0) + 2.0


def test_provider_busy_past_the_deadline_fails_the_deadline_checks(
    blocking_provider: str, warrant_key: SigningKey
) -> None:
    """A provider that keeps its only worker busy after the caller's deadline passed fails
    deadline.short (and only that)."""
    report = asyncio.run(
        check_provider(
            target=blocking_provider,
            warrant_key=warrant_key,
            provider_id=PROVIDER_ID,
            known_numbers=[NUMBER_A],
            call_timeout=8.0,
            short_deadline=0.2,
            slack=0.5,
        )
    )
    assert failed_rules(report) == {"D-1"}, report.to_table()
    assert "still busy" in report.result("deadline.short").detail


async def test_unreachable_target_fails_every_call_check(warrant_key: SigningKey) -> None:
    """Against an address where nothing listens, the checks fail quickly instead of hanging."""
    report = await run_provider_kit("127.0.0.1:1", warrant_key, call_timeout=1.0)
    assert not report.ok
    assert report.result("health.overall").failed
    assert "UNAVAILABLE" in report.result("health.overall").detail


async def test_malformed_arguments_are_refused_before_any_call(warrant_key: SigningKey) -> None:
    """Numbers that are not E.164 are refused with ValueError, naming no number."""
    with pytest.raises(ValueError, match=r"E\.164"):
        await check_provider(target="x:1", warrant_key=warrant_key, known_numbers=["12345"])
    with pytest.raises(ValueError, match="unknown number"):
        await check_provider(
            target="x:1", warrant_key=warrant_key, known_numbers=[NUMBER_A], unknown_number=NUMBER_A
        )
