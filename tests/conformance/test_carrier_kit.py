"""The conformance kit against plain-grpcio carriers: correct, and broken one rule at a time."""

from __future__ import annotations

import pytest

from onecert.sdk._keys import SigningKey
from onecert.sdk.conformance import Outcome, Report, check_carrier
from tests.conformance.conftest import StartCarrier
from tests.conformance.plain_adapters import CARRIER_ID, IDN_A, IDN_B, CarrierFlaws

_FAULTS = (
    "missing",
    "malformed",
    "expired",
    "wrong_key_same_kid",
    "unknown_kid",
    "alg_none",
    "wrong_issuer",
    "wrong_audience",
    "wrong_idn",
)
CARRIER_CHECKS = [
    "health.overall",
    "health.service",
    "list_numbers.known_idn[1]",
    "list_numbers.known_idn[2]",
    "list_numbers.unknown_idn",
    "list_numbers.malformed_idn",
    *(f"list_numbers.warrant.{f}" for f in _FAULTS),
    "deadline.short",
]


async def _run(target: str, key: SigningKey) -> Report:
    return await check_carrier(
        target=target,
        warrant_key=key,
        carrier_id=CARRIER_ID,
        known_idns=[IDN_A, IDN_B],
        call_timeout=2.0,
        short_deadline=0.2,
        slack=1.0,
    )


def _failed(report: Report) -> set[str]:
    return {r.name for r in report.results if r.outcome is Outcome.FAILED}


async def test_correct_plain_carrier_passes_every_check(
    start_carrier: StartCarrier, warrant_key: SigningKey
) -> None:
    """A carrier in plain grpcio (no SDK) that follows the contract passes every check."""
    report = await _run(await start_carrier(CarrierFlaws()), warrant_key)
    assert [r.name for r in report.results] == CARRIER_CHECKS
    assert [r for r in report.results if not r.passed] == [], report.to_table()


@pytest.mark.parametrize(
    ("flaws", "expected"),
    [
        pytest.param(
            CarrierFlaws(ignore_warrants=True),
            {f"list_numbers.warrant.{f}" for f in _FAULTS},
            id="ignores-warrants",
        ),
        pytest.param(
            CarrierFlaws(not_found_for_unknown=True),
            {"list_numbers.unknown_idn"},
            id="not-found-for-unknown-idn",
        ),
        pytest.param(
            CarrierFlaws(omit_held_until=True),
            {"list_numbers.known_idn[1]"},
            id="cancelled-without-held-until",
        ),
        pytest.param(
            CarrierFlaws(accept_uppercase_idn=True),
            {"list_numbers.malformed_idn"},
            id="accepts-uppercase-idn",
        ),
        pytest.param(
            CarrierFlaws(wrong_carrier_id=True),
            {"list_numbers.known_idn[1]", "list_numbers.known_idn[2]"},
            id="wrong-carrier-id",
        ),
    ],
)
async def test_each_broken_carrier_rule_is_caught(
    start_carrier: StartCarrier, warrant_key: SigningKey, flaws: CarrierFlaws, expected: set[str]
) -> None:
    """A carrier that breaks one rule fails exactly the checks for that rule."""
    report = await _run(await start_carrier(flaws), warrant_key)
    assert _failed(report) == expected, report.to_table()


async def test_tenure_problems_are_named(
    start_carrier: StartCarrier, warrant_key: SigningKey
) -> None:
    """A tenure without held_until after the number was given up is reported as such."""
    report = await _run(await start_carrier(CarrierFlaws(omit_held_until=True)), warrant_key)
    detail = report.result("list_numbers.known_idn[1]").detail
    assert "held_until is missing on a number no longer held" in detail
    assert "+8613900000009" not in detail


async def test_carrier_arguments_are_checked(warrant_key: SigningKey) -> None:
    """A malformed idn or carrier id is refused before any call."""
    with pytest.raises(ValueError, match="lowercase hex"):
        await check_carrier(
            target="x:1", warrant_key=warrant_key, carrier_id="c", known_idns=["ABC"]
        )
    with pytest.raises(ValueError, match="carrier_id"):
        await check_carrier(target="x:1", warrant_key=warrant_key, carrier_id="a b")
