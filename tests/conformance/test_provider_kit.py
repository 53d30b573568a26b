"""The conformance kit against plain-grpcio providers: correct, and broken one rule at a time."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from onecert.sdk._keys import SigningKey
from onecert.sdk.conformance import Outcome, Report, check_provider
from tests.conformance.conftest import StartProvider
from tests.conformance.plain_adapters import (
    NUMBER_A,
    NUMBER_B,
    PROVIDER_ID,
    UNBIND_ACCOUNT,
    Flaws,
)

# Every check of a provider run, in report order (with two known numbers).
PROVIDER_CHECKS = [
    "health.overall",
    "health.service",
    "describe.complete",
    "describe.provider_id",
    "list_bindings.known_number[1]",
    "list_bindings.known_number[2]",
    "list_bindings.unknown_number",
    "list_bindings.malformed_msisdn",
    *(
        f"{rpc}.warrant.{fault}"
        for rpc in ("list_bindings", "unbind")
        for fault in (
            "missing",
            "malformed",
            "expired",
            "wrong_key_same_kid",
            "unknown_kid",
            "alg_none",
            "wrong_issuer",
            "wrong_audience",
            "wrong_number",
        )
    ),
    "unbind.unknown_account",
    "unbind.malformed_request",
    "receive_event.valid",
    "receive_event.wrong_key_same_kid",
    "receive_event.unknown_kid",
    "receive_event.wrong_issuer",
    "receive_event.wrong_audience",
    "receive_event.not_a_set",
    "unbind.idempotent",
    "unbind.applied",
    "deadline.short",
]
_WARRANT_FAULTS = [
    n.removeprefix("unbind.warrant.") for n in PROVIDER_CHECKS if "unbind.warrant" in n
]


async def _run(target: str, key: SigningKey, **overrides: object) -> Report:
    options: dict[str, object] = {
        "provider_id": PROVIDER_ID,
        "known_numbers": [NUMBER_A, NUMBER_B],
        "unbind": UNBIND_ACCOUNT,
        "call_timeout": 2.0,
        "short_deadline": 0.2,
        "slack": 1.0,
    }
    options.update(overrides)
    return await check_provider(target=target, warrant_key=key, **options)  # type: ignore[arg-type] # test options


def _failed(report: Report) -> set[str]:
    return {r.name for r in report.results if r.outcome is Outcome.FAILED}


async def test_correct_plain_provider_passes_every_check(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """A provider in plain grpcio (no SDK) that follows the contract passes every check."""
    report = await _run(await start_provider(Flaws()), warrant_key)
    assert [r.name for r in report.results] == PROVIDER_CHECKS
    assert [r for r in report.results if not r.passed] == [], report.to_table()
    assert report.ok


async def test_provider_id_is_taken_from_describe_when_not_given(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """Without a provider id the warrants are addressed to the id Describe gives, and the
    comparison check is skipped with its reason."""
    report = await _run(await start_provider(Flaws()), warrant_key, provider_id=None)
    assert report.ok, report.to_table()
    skipped = report.result("describe.provider_id")
    assert skipped.outcome is Outcome.SKIPPED
    assert "no provider id given" in skipped.detail
    assert report.result("list_bindings.warrant.wrong_audience").passed


async def test_unbind_checks_are_skipped_without_a_test_account(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """Without --unbind the idempotency checks are skipped with the reason, and the run passes."""
    report = await _run(await start_provider(Flaws()), warrant_key, unbind=None)
    assert report.ok
    idempotent = report.result("unbind.idempotent")
    assert idempotent.outcome is Outcome.SKIPPED
    assert "--unbind NUMBER:ACCOUNT_REF" in idempotent.detail
    assert report.result("unbind.applied").outcome is Outcome.SKIPPED


async def test_wrong_provider_id_fails_the_describe_comparison(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """A provider id that differs from Describe's fails describe.provider_id."""
    report = await _run(await start_provider(Flaws()), warrant_key, provider_id="someone-else")
    assert "describe.provider_id" in _failed(report)
    assert "'plain-provider'" in report.result("describe.provider_id").detail


@pytest.mark.parametrize(
    ("flaws", "expected"),
    [
        pytest.param(
            Flaws(ignore_warrants=True),
            {f"{rpc}.warrant.{f}" for rpc in ("list_bindings", "unbind") for f in _WARRANT_FAULTS},
            id="ignores-warrants",
        ),
        pytest.param(
            Flaws(accept_wrong_audience=True),
            {"list_bindings.warrant.wrong_audience", "unbind.warrant.wrong_audience"},
            id="accepts-wrong-audience",
        ),
        pytest.param(
            Flaws(accept_wrong_number=True),
            {"list_bindings.warrant.wrong_number", "unbind.warrant.wrong_number"},
            id="accepts-wrong-number",
        ),
        pytest.param(
            Flaws(unknown_number_status=grpc.StatusCode.UNAVAILABLE),
            # After the unbind the test number has no binding left, so the
            # re-listing errors too.
            {"list_bindings.unknown_number", "unbind.applied"},
            id="errors-on-unknown-number",
        ),
        pytest.param(
            Flaws(unknown_number_status=grpc.StatusCode.NOT_FOUND),
            {"list_bindings.unknown_number", "unbind.applied"},
            id="not-found-for-unknown-number",
        ),
        pytest.param(
            Flaws(malformed_status=grpc.StatusCode.INTERNAL),
            {"list_bindings.malformed_msisdn"},
            id="internal-for-malformed-msisdn",
        ),
        pytest.param(Flaws(reapply_unbind=True), {"unbind.idempotent"}, id="applies-unbind-twice"),
        pytest.param(
            Flaws(crash_on_unknown_account=True),
            {"unbind.unknown_account"},
            id="crashes-on-unknown-account",
        ),
        pytest.param(
            Flaws(omit_bound_at=True),
            {"list_bindings.known_number[1]", "list_bindings.known_number[2]"},
            id="misses-bound-at",
        ),
        pytest.param(
            Flaws(incomplete_describe=True), {"describe.complete"}, id="incomplete-describe"
        ),
        pytest.param(
            Flaws(accept_forged_events=True),
            {
                "receive_event.wrong_key_same_kid",
                "receive_event.unknown_kid",
                "receive_event.wrong_issuer",
                "receive_event.wrong_audience",
            },
            id="accepts-forged-events",
        ),
    ],
)
async def test_each_broken_rule_is_caught_by_its_check(
    start_provider: StartProvider, warrant_key: SigningKey, flaws: Flaws, expected: set[str]
) -> None:
    """A provider that breaks one rule fails exactly the checks for that rule."""
    report = await _run(await start_provider(flaws), warrant_key)
    assert _failed(report) == expected, report.to_table()
    assert not report.ok


async def test_failure_details_say_what_was_answered(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """A failed check says what the provider answered and what was expected, and never
    shows a whole phone number."""
    report = await _run(
        await start_provider(Flaws(unknown_number_status=grpc.StatusCode.NOT_FOUND)), warrant_key
    )
    detail = report.result("list_bindings.unknown_number").detail
    assert "NOT_FOUND" in detail
    assert "empty list" in detail
    assert NUMBER_A not in report.to_table()
    assert NUMBER_B not in report.to_table()


async def test_hanging_provider_gives_failed_checks_not_a_hung_kit(
    start_provider: StartProvider, warrant_key: SigningKey
) -> None:
    """A provider whose ListBindings never answers fails the listing checks, each at its own
    deadline, and the whole run ends in bounded time."""
    target = await start_provider(Flaws(hang=True))
    start = time.monotonic()
    report = await _run(target, warrant_key, call_timeout=0.5)
    elapsed = time.monotonic() - start
    assert _failed(report) == {
        "list_bindings.known_number[1]",
        "list_bindings.known_number[2]",
        "list_bindings.unknown_number",
        "unbind.applied",
    }, report.to_table()
    assert "DEADLINE_EXCEEDED" in report.result("list_bindings.known_number[1]").detail
    # Three phases make ListBindings calls, each bounded by one call deadline.
    assert elapsed < 3 * (0.5 + 1.0) + 2.0


def test_provider_busy_past_the_deadline_fails_the_deadline_check(
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
            call_timeout=3.0,
            short_deadline=0.2,
            slack=0.5,
        )
    )
    assert _failed(report) == {"deadline.short"}, report.to_table()
    assert "still busy" in report.result("deadline.short").detail


async def test_unreachable_target_fails_every_call_check(warrant_key: SigningKey) -> None:
    """Against an address where nothing listens, the checks fail quickly instead of hanging."""
    report = await _run("127.0.0.1:1", warrant_key, call_timeout=1.0)
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
