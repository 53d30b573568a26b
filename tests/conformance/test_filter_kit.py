"""The conformance kit's filter checks (section R): a good filter passes, each fault fails."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from onecert.cli import main
from onecert.sdk.conformance import FILTER_CHECKS, Outcome, Report, check_filter
from onecert.sdk.routing import FilterAdditions, FilterBuilder

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
HELD = ["+8613800138000", "+8613912345678", "+14155550123"]
ADDED = ["+8613700001111"]
NOW = int(time.time())


def _snapshot(
    numbers: list[str], *, key: bytes = KEY, version: int = 1, created: int = NOW
) -> bytes:
    builder = FilterBuilder(key, key_version=version, m=1 << 12, k=7)
    builder.add_many(numbers)
    return builder.snapshot(created_at=created).to_bytes()


def _additions(numbers: list[str], *, key: bytes = KEY, version: int = 1) -> bytes:
    return FilterAdditions.of(key, version, numbers, created_at=NOW).to_bytes()


def _outcomes(report: Report) -> dict[str, Outcome]:
    return {r.name: r.outcome for r in report.results}


def test_a_filter_built_by_the_sdk_passes_every_check() -> None:
    """The SDK's snapshot and additions, with every number listed, pass all checks, in order."""
    report = check_filter(
        snapshot=_snapshot(HELD),
        key=KEY,
        key_version=1,
        numbers=HELD,
        additions=_additions(ADDED),
        added=ADDED,
    )
    assert [(r.rule, r.name) for r in report.results] == list(FILTER_CHECKS)
    assert report.ok
    assert set(_outcomes(report).values()) == {Outcome.PASSED}


@pytest.mark.parametrize(
    ("snapshot", "version", "failed"),
    [
        (b"OCRF" + bytes(60), 1, "filter.format"),
        (_snapshot(HELD, created=NOW + 3600), 1, "filter.format"),
        (_snapshot(HELD, key=OTHER_KEY), 1, "filter.key"),
        (_snapshot(HELD), 2, "filter.key"),
        (_snapshot(HELD[:1]), 1, "filter.complete"),
    ],
    ids=["malformed", "created_in_the_future", "other_key", "other_version", "missing_numbers"],
)
def test_each_snapshot_fault_fails_its_check(snapshot: bytes, version: int, failed: str) -> None:
    """A malformed or future snapshot fails R-3, another key or version R-1, a number
    left out R-4; a raw number never appears in the report."""
    report = check_filter(snapshot=snapshot, key=KEY, key_version=version, numbers=HELD)
    assert _outcomes(report)[failed] is Outcome.FAILED
    assert not report.ok
    assert all("13912345678" not in r.detail for r in report.results)


def test_additions_keyed_otherwise_or_missing_a_number_fail_r5() -> None:
    """Additions under another key than the snapshot, or without a number said to be
    added, fail R-5; without additions those checks are skipped, not failed."""
    other = check_filter(
        snapshot=_snapshot(HELD), key=KEY, key_version=1, additions=_additions(ADDED, key=OTHER_KEY)
    )
    assert _outcomes(other)["additions.keyed_as_snapshot"] is Outcome.FAILED
    missing = check_filter(
        snapshot=_snapshot(HELD),
        key=KEY,
        key_version=1,
        additions=_additions(ADDED),
        added=[*ADDED, "+8613600002222"],
    )
    assert _outcomes(missing)["additions.complete"] is Outcome.FAILED
    none = check_filter(snapshot=_snapshot(HELD), key=KEY, key_version=1)
    assert none.ok
    assert _outcomes(none)["additions.format"] is Outcome.SKIPPED


def test_the_command_checks_files_and_exits_1_on_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`onecert conformance filter` reads the snapshot, the key file and the numbers,
    prints the table, and exits 0 when conformant, 1 when a check failed."""
    (tmp_path / "key.hex").write_text(KEY.hex())
    (tmp_path / "filter.bin").write_bytes(_snapshot(HELD))
    (tmp_path / "numbers.txt").write_text("\n".join(HELD) + "\n")
    args = ["conformance", "filter", "--snapshot", str(tmp_path / "filter.bin")]
    args += ["--key-file", str(tmp_path / "key.hex"), "--key-version", "1"]
    assert main([*args, "--numbers", str(tmp_path / "numbers.txt")]) == 0
    assert "filter.complete" in capsys.readouterr().out
    (tmp_path / "numbers.txt").write_text("+8613600002222\n")
    assert main([*args, "--numbers", str(tmp_path / "numbers.txt")]) == 1
    assert "NOT conformant" in capsys.readouterr().out
