"""docs/contract.md and the conformance kit agree: every rule is checked or marked
unobservable, and every check belongs to a rule the document states."""

from __future__ import annotations

import re
from pathlib import Path

from onecert.sdk.conformance import CARRIER_CHECKS, FILTER_CHECKS, PROVIDER_CHECKS

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
_RULE = re.compile(r"^- \*\*([A-Z]-\d+)\*\* ", re.MULTILINE)
_UNOBSERVABLE = "*Unobservable*"


def _rules() -> dict[str, str]:
    """Each rule id of the document with its text (up to the next rule or heading)."""
    text = CONTRACT.read_text()
    starts = list(_RULE.finditer(text))
    rules: dict[str, str] = {}
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = text[match.end() : end].split("\n#", 1)[0]
        assert match.group(1) not in rules, f"rule {match.group(1)} is defined twice"
        rules[match.group(1)] = body
    return rules


def _checks() -> set[tuple[str, str]]:
    return {*PROVIDER_CHECKS, *CARRIER_CHECKS, *FILTER_CHECKS}


def test_every_rule_is_checked_or_marked_unobservable() -> None:
    """A rule in docs/contract.md without a kit check must say why it cannot be observed."""
    checked = {rule for rule, _ in _checks()}
    missing = [
        rule for rule, body in _rules().items() if rule not in checked and _UNOBSERVABLE not in body
    ]
    assert missing == [], f"rules with neither a check nor an {_UNOBSERVABLE} mark: {missing}"


def test_unobservable_rules_have_no_check() -> None:
    """A rule marked unobservable has no check, so the mark never hides a real one."""
    checked = {rule for rule, _ in _checks()}
    marked = {rule for rule, body in _rules().items() if _UNOBSERVABLE in body}
    assert marked & checked == set()


def test_every_check_belongs_to_a_rule_that_names_it() -> None:
    """Each check's rule exists in the document, and that rule's text names the check
    (warrant checks as ``*.warrant.<case>``, shared by every RPC)."""
    rules = _rules()
    for rule, name in sorted(_checks()):
        assert rule in rules, f"{name} checks {rule}, which docs/contract.md does not define"
        body = rules[rule]
        shared = "*." + name.split(".", 1)[1]
        assert f"`{name}`" in body or f"`{shared}`" in body, f"{rule} does not name {name}"


def test_rule_ids_are_numbered_without_gaps() -> None:
    """Within each letter the rules run 1, 2, 3...: a deleted rule leaves no silent hole."""
    by_letter: dict[str, list[int]] = {}
    for rule in _rules():
        letter, number = rule.split("-")
        by_letter.setdefault(letter, []).append(int(number))
    for letter, numbers in by_letter.items():
        assert numbers == list(range(1, len(numbers) + 1)), letter
