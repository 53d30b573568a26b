"""The conformance kit against plain-grpcio carriers: what it says of their tenures and
of its own arguments (tests/conformance/test_kit_rules.py breaks one rule at a time)."""

from __future__ import annotations

import pytest

from onecert.sdk._keys import SigningKey
from onecert.sdk.conformance import check_carrier
from tests.conformance.conformance_support import run_carrier_kit
from tests.conformance.conftest import StartCarrier


async def test_tenure_problems_are_named(
    start_carrier: StartCarrier, warrant_key: SigningKey
) -> None:
    """Tenures with another carrier's id and without held_until after the number was given
    up are reported as such, with the number masked."""
    report = await run_carrier_kit(await start_carrier(["C-1"]), warrant_key)
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
