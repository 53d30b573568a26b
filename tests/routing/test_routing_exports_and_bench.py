"""The routing modules export exactly their public API; the routing micro-benchmark runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onecert.gateway.routing
import onecert.sdk.routing

ROOT = Path(__file__).resolve().parents[2]

SDK_ROUTING_API = {
    "DEFAULT_FP_RATE",
    "FORMAT_VERSION",
    "SMALL_SET_BELOW",
    "SMALL_SET_FP_RATE",
    "SNAPSHOT_FORMATS",
    "BuildResult",
    "FilterAdditions",
    "FilterBuilder",
    "FilterFormatError",
    "RoutingFilter",
    "bit_positions",
    "bits_for",
    "build_filter",
    "default_fp_rate",
    "expected_fp_rate",
    "fold",
    "hashes_for",
    "key_check",
    "routing_digest",
}

GATEWAY_ROUTING_API = {
    "AskReason",
    "FilterRejectedError",
    "FilterSealer",
    "ProviderRouting",
    "Route",
    "RoutingIndex",
    "RoutingKeyring",
    "RoutingService",
    "UnknownProviderError",
    "derive_filter_key",
    "derive_routing_key",
    "load_routing_keys",
}


def test_sdk_routing_exports() -> None:
    """onecert.sdk.routing exports the filter format and builder, all importable."""
    assert set(onecert.sdk.routing.__all__) == SDK_ROUTING_API
    assert all(hasattr(onecert.sdk.routing, name) for name in SDK_ROUTING_API)


def test_gateway_routing_exports() -> None:
    """onecert.gateway.routing exports the index, the keyring and the service, all importable."""
    assert set(onecert.gateway.routing.__all__) == GATEWAY_ROUTING_API
    assert all(hasattr(onecert.gateway.routing, name) for name in GATEWAY_ROUTING_API)


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
