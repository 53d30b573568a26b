"""What a conformance run found: one result per check, as a table or JSON."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any


class Outcome(enum.StrEnum):
    """How one check ended."""

    PASSED = "passed"
    FAILED = "failed"
    # Not run, with the reason (missing option, an earlier check failed).
    # A skip never makes the run fail.
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """The result of one check.

    Attributes:
        name: stable dotted name, for example ``list_bindings.warrant.expired``.
        outcome: passed, failed or skipped.
        detail: what was seen (on a pass), what went wrong (on a failure) or
            why the check did not run (on a skip). Never a raw phone number.
        elapsed: seconds the check took.
        rule: the id of the rule of docs/contract.md it checks, for example
            ``W-9``.
    """

    name: str
    outcome: Outcome
    detail: str = ""
    elapsed: float = 0.0
    rule: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def skipped(self) -> bool:
        return self.outcome is Outcome.SKIPPED


_MARKS = {Outcome.PASSED: "PASS", Outcome.FAILED: "FAIL", Outcome.SKIPPED: "SKIP"}


@dataclass(frozen=True)
class Report:
    """Every check of one run against one target.

    Attributes:
        kind: "provider" or "carrier".
        target: the address checked.
        results: one per check, in the order they ran.
    """

    kind: str
    target: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        """True when no check failed (skips do not count as failures)."""
        return not self.failures

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.failed)

    def result(self, name: str) -> CheckResult:
        """The result of the check called ``name``; KeyError if there is none."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        return {o.value: sum(1 for r in self.results if r.outcome is o) for o in Outcome}

    def summary(self) -> str:
        c = self.counts()
        verdict = "conformant" if self.ok else "NOT conformant"
        return (
            f"{self.kind} at {self.target}: {verdict}: {c['passed']} passed, "
            f"{c['failed']} failed, {c['skipped']} skipped"
        )

    def to_table(self) -> str:
        """A plain-text table, one line per check, and a summary line."""
        width = max((len(r.name) for r in self.results), default=5)
        lines = [f"{'':4}  {'RULE':<5} {'CHECK':<{width}}  DETAIL"]
        for r in self.results:
            detail = r.detail.replace("\n", " ")
            line = f"{_MARKS[r.outcome]:4}  {r.rule:<5} {r.name:<{width}}  {detail}"
            lines.append(line.rstrip())
        lines.append("")
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "ok": self.ok,
            "counts": self.counts(),
            "checks": [
                {
                    "rule": r.rule,
                    "name": r.name,
                    "outcome": r.outcome.value,
                    "detail": r.detail,
                    "elapsed_ms": round(r.elapsed * 1000, 1),
                }
                for r in self.results
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
