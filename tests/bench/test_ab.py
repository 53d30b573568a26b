"""``bench.ab`` reads a lookup's phases from the gateway's JSON log lines."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from bench.ab import phases

if TYPE_CHECKING:
    from pathlib import Path


def _line(query_id: str, event: str, ms: int, **extra: object) -> str:
    stamp = f"2026-12-05T21:00:00.{ms:03d}000Z"
    return json.dumps({"event": event, "query_id": query_id, "timestamp": stamp, **extra})


def test_phases_split_each_complete_lookup_and_skip_the_rest(tmp_path: Path) -> None:
    """Each lookup with all four lines gives one value per phase (ms between them);
    one missing a line, lines without a query id, and the first ``skip`` are left out."""
    log = tmp_path / "gateway.log"
    lines = [
        "onecert gateway test listening on port 1 (development)",
        json.dumps({"event": "gateway.listening", "timestamp": "2026-12-05T21:00:00Z"}),
        _line("a", "lookup.identified", 101),
        _line("a", "lookup.started", 105),
        _line("a", "lookup.finished", 115),
        _line("a", "rpc.finished", 118, elapsed_ms=18),
        _line("b", "lookup.identified", 201),
        _line("b", "rpc.finished", 230, elapsed_ms=30),
    ]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    split = phases(log, skip=0)
    assert list(split) == [
        "identity",
        "carriers + replay write",
        "fan-out to summary",
        "audit row + stream end",
    ]
    assert [v[0] for v in split.values()] == pytest.approx([1, 4, 10, 3])
    assert all(len(v) == 1 for v in split.values())
    assert all(v == [] for v in phases(log, skip=1).values())
