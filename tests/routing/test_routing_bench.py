"""The routing micro-benchmark runs (tests/test_public_api.py pins what the routing
modules export)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_routing_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """`python -m bench.routing_index` runs small and reports every figure; no holder missed."""
    out = tmp_path / "routing.json"
    args = ["--providers", "300", "--total", "300000", "--queries", "50", "--build", "2000"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.routing_index", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    assert "route per number" in done.stdout
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["missed_holders"] == 0
    assert figures["params"]["providers"] == 300
    assert set(figures["route_ms"]) >= {"p50", "p99", "cpu_p50", "cpu_p99"}
    assert 0 < figures["memory"]["index_bytes"] < figures["memory"]["budget_bytes"]
    assert figures["memory"]["layout"]["sliced"] + figures["memory"]["layout"]["plain"] == 300
    assert 0 <= figures["non_holder_share_asked"] < 1
    assert figures["provider_build"]["one_pass_hint_passes"] == 1
    assert figures["provider_build"]["two_pass_no_hint_passes"] == 2
