"""The conformance kit against plain-grpcio adapters (no SDK), provider and carrier: a
correct one passes every check, and one broken in one rule fails a check of that rule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import pytest

from onecert.sdk._keys import SigningKey
from onecert.sdk.conformance import CARRIER_CHECKS, PROVIDER_CHECKS, Report
from tests.conformance.conformance_support import (
    assert_passed_every_check,
    failed_rules,
    run_carrier_kit,
    run_provider_kit,
)
from tests.conformance.conftest import StartCarrier, StartProvider


@dataclass(frozen=True)
class _Kit:
    """The kit's checks for one kind of adapter, and the rules a test breaks one at a time."""

    checks: Sequence[tuple[str, str]]
    run: Callable[[str, SigningKey], Awaitable[Report]]
    # A broken rule may take other checks down with it, when they need what it
    # broke to run at all. Everything else must keep passing.
    cascades: Mapping[str, set[str]]
    unbroken: frozenset[str] = frozenset()

    @property
    def rules(self) -> list[str]:
        return sorted({rule for rule, _ in self.checks} - self.unbroken)


KITS = {
    "provider": _Kit(
        PROVIDER_CHECKS,
        run_provider_kit,
        {
            # Health of "" is also how deadline.short sees the provider responsive.
            "H-1": {"D-1"},
            # Unknown accounts are how the kit probes Unbind without changing data.
            "U-2": {"U-3", "W-8", "W-15", "W-16", "W-17"},
            # Without bookkeeping, duplicates and a reused request_id are re-applied.
            "U-4": {"U-5", "U-6"},
            # Which answer the kit keeps as "the first" depends on the race.
            "U-5": {"U-4"},
            # A notice the provider never accepts cannot be redelivered, alone or in a batch.
            "E-1": {"E-10", "E-13"},
            # Batches answer each notice as ReceiveEvent would.
            "E-2": {"E-15"},
            "E-10": {"E-16"},
            # A batch whose answer lacks a result is refused by every batch check.
            "E-14": {"E-13", "E-15", "E-16"},
            # Failing the whole batch for one bad SET also loses the count.
            "E-15": {"E-14"},
        },
    ),
    # The deadline rules are broken on purpose by the provider; the carrier's suite
    # runs the same shared checks.
    "carrier": _Kit(
        CARRIER_CHECKS, run_carrier_kit, {"H-1": {"D-1"}}, unbroken=frozenset({"D-1", "D-2"})
    ),
}


@pytest.fixture
def start(
    kind: str, start_provider: StartProvider, start_carrier: StartCarrier
) -> StartProvider | StartCarrier:
    """Start a plain adapter of ``kind``, breaking the rules named."""
    return start_provider if kind == "provider" else start_carrier


@pytest.mark.parametrize("kind", list(KITS))
async def test_a_correct_plain_adapter_passes_every_check(
    kind: str, start: StartProvider, warrant_key: SigningKey
) -> None:
    """A provider or carrier in plain grpcio (no SDK) that follows the contract passes
    every check."""
    kit = KITS[kind]
    report = await kit.run(await start(), warrant_key)
    assert_passed_every_check(report, kit.checks)


@pytest.mark.parametrize(
    ("kind", "rule"), [(kind, rule) for kind, kit in KITS.items() for rule in kit.rules]
)
async def test_each_broken_rule_is_caught_by_its_check(
    kind: str, rule: str, start: StartProvider, warrant_key: SigningKey
) -> None:
    """An adapter that breaks one rule fails a check of that rule, and no check of an
    unrelated rule."""
    kit = KITS[kind]
    report = await kit.run(await start([rule]), warrant_key)
    failed = failed_rules(report)
    assert rule in failed, report.to_table()
    assert failed <= {rule} | kit.cascades.get(rule, set()), report.to_table()
    assert not report.ok
