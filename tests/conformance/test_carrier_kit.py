"""The conformance kit against plain-grpcio carriers: correct, and broken one rule at a time."""

from __future__ import annotations

import pytest

from onecert.sdk._keys import SigningKey
from onecert.sdk.conformance import CARRIER_CHECKS, Report, check_carrier
from tests.conformance.conformance_support import assert_passed_every_check, failed_rules
from tests.conformance.conftest import StartCarrier
from tests.conformance.plain_adapters import CARRIER_ID, IDN_A, IDN_B

# The deadline rules are broken on purpose by the provider table; the
# carrier's suite runs the same shared checks.
CARRIER_RULES = sorted({rule for rule, _ in CARRIER_CHECKS} - {"D-1", "D-2"})
CASCADES: dict[str, set[str]] = {"H-1": {"D-1"}}


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


async def test_correct_plain_carrier_passes_every_check(
    start_carrier: StartCarrier, warrant_key: SigningKey
) -> None:
    """A carrier in plain grpcio (no SDK) that follows the contract passes every check."""
    report = await _run(await start_carrier(), warrant_key)
    assert_passed_every_check(report, CARRIER_CHECKS)


@pytest.mark.parametrize("rule", CARRIER_RULES)
async def test_each_broken_carrier_rule_is_caught(
    start_carrier: StartCarrier, warrant_key: SigningKey, rule: str
) -> None:
    """A carrier that breaks one rule fails a check of that rule and no unrelated one."""
    report = await _run(await start_carrier([rule]), warrant_key)
    failed = failed_rules(report)
    assert rule in failed, report.to_table()
    assert failed <= {rule} | CASCADES.get(rule, set()), report.to_table()


async def test_tenure_problems_are_named(
    start_carrier: StartCarrier, warrant_key: SigningKey
) -> None:
    """Tenures with another carrier's id and without held_until after the number was given
    up are reported as such, with the number masked."""
    report = await _run(await start_carrier(["C-1"]), warrant_key)
    detail = report.result("list_numbers.known_idns").detail
    assert "held_until is missing on a number no longer held" in detail
    assert "carrier_id is 'someone-else'" in detail
    assert "+8613900000009" not in detail


async def test_carrier_arguments_are_checked(warrant_key: SigningKey) -> None:
    """A malformed idn or carrier id is refused before any call."""
    with pytest.raises(ValueError, match="lowercase hex"):
        await check_carrier(
            target="x:1", warrant_key=warrant_key, carrier_id="c", known_idns=["ABC"]
        )
    with pytest.raises(ValueError, match="carrier_id"):
        await check_carrier(target="x:1", warrant_key=warrant_key, carrier_id="a b")
