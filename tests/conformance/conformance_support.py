"""How the conformance tests run the kit against a plain adapter, and what they read in
its report, written once."""

from __future__ import annotations

from collections.abc import Sequence

from onecert.sdk._keys import SigningKey
from onecert.sdk.conformance import Outcome, Report, check_carrier, check_provider
from tests.conformance.plain_adapters import (
    CARRIER_ID,
    IDN_A,
    IDN_B,
    NUMBER_A,
    NUMBER_B,
    PROVIDER_ID,
    UNBIND_ACCOUNT,
)


def failed_rules(report: Report) -> set[str]:
    """The rules of the checks that failed."""
    return {r.rule for r in report.results if r.outcome is Outcome.FAILED}


def assert_passed_every_check(report: Report, checks: Sequence[tuple[str, str]]) -> None:
    """The report ran exactly ``checks`` (rule, name), in order, and every one passed."""
    assert [(r.rule, r.name) for r in report.results] == list(checks)
    assert [r for r in report.results if not r.passed] == [], report.to_table()
    assert report.ok, report.to_table()


async def run_provider_kit(target: str, key: SigningKey, **overrides: object) -> Report:
    """The kit against a plain provider at ``target``: its id, numbers and test account,
    short deadlines; ``overrides`` replace any of these options."""
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


async def run_carrier_kit(target: str, key: SigningKey) -> Report:
    """The kit against a plain carrier at ``target``: its id and idns, short deadlines."""
    return await check_carrier(
        target=target,
        warrant_key=key,
        carrier_id=CARRIER_ID,
        known_idns=[IDN_A, IDN_B],
        call_timeout=2.0,
        short_deadline=0.2,
        slack=1.0,
    )
