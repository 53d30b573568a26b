"""The portal scenario: what the citizen's portal adds to a lookup, seen from a browser.

The demo federation (two carriers, seven providers, one slow and one down)
runs with the portal in front of it; Debian's headless Chromium (never a
downloaded browser) signs in once and runs lookups one after another. For
each lookup the portal logs the wall-clock moment the gateway's first result
reached it (``first_result_at``), and the page records the moment that result
was first in the DOM (at load, or streamed in). The difference is what the
portal and the browser add to the first result. The portal's CPU per lookup
(pages, stream, static files, assertions) is read from ``/proc`` around the
run, next to the gateway's for scale.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

from bench._load import percentile
from bench._procs import cpu_seconds
from bench._report import Row, ScenarioResult
from onecert.adapters.demo import STORY, DemoFederation

CHROMIUM = "/usr/bin/chromium"
# The flags headless Chromium runs with here and in the portal tests (no sandbox in
# containers, nothing fetched in the background).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
# Runs in every page before its own script: notes when the first result is in the DOM.
_WATCH = """
window.__firstShown = null;
document.addEventListener("DOMContentLoaded", function () {
  var region = document.getElementById("results");
  if (!region) { return; }
  var has = function () { return region.querySelector(".account, .providers li, #answered"); };
  if (has()) { window.__firstShown = Date.now(); return; }
  new MutationObserver(function (changes, observer) {
    if (has()) { window.__firstShown = Date.now(); observer.disconnect(); }
  }).observe(region, {childList: true, subtree: true});
});
"""
_WAIT_MS = 60_000


def _drive(url: str, lookups: int) -> list[float]:
    """Sign in and run ``lookups`` + 1 lookups (the first warms up); the epoch ms at
    which each page first showed a result."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - a dev dependency, loaded when run

    shown = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_context().new_page()
            page.add_init_script(_WATCH)
            page.goto(url + "/")
            page.click("#sign-in")
            page.get_by_label(STORY.citizen.name).check()
            page.click("#continue")
            button = "#start-lookup"
            for _ in range(lookups + 1):
                with page.expect_navigation():
                    page.click(button)
                page.wait_for_selector("#look-again", timeout=_WAIT_MS)
                shown.append(float(page.evaluate("window.__firstShown")))
                button = "#look-again"
        finally:
            browser.close()
    return shown


def _portal_first_results(log: Path) -> list[float]:
    """``first_result_at`` of each finished lookup in the portal's log, in epoch ms."""
    found = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "lookup_finished" and event.get("first_result_at"):
            found.append(float(event["first_result_at"]) * 1000)
    return found


async def run_portal(ctx: Any) -> ScenarioResult:
    """Run the scenario (see the module's docstring)."""
    lookups = ctx.sizes.portal_lookups
    result = ScenarioResult(
        "portal",
        "Portal: first result, gateway to browser; portal CPU per lookup",
        params={"lookups": lookups, "providers": 7, "numbers": 2, "browser": "chromium"},
    )
    federation = DemoFederation(ctx.directory / "portal", startup_timeout=60.0)
    try:
        await federation.start()
        url = (await federation.start_portal()).rstrip("/")
        assert federation.portal is not None
        assert federation.gateway is not None
        portal_pid, gateway_pid = federation.portal.pid, federation.gateway.pid
        assert portal_pid is not None
        assert gateway_pid is not None
        portal_cpu, gateway_cpu = cpu_seconds(portal_pid), cpu_seconds(gateway_pid)
        shown = await asyncio.to_thread(_drive, url, lookups)
        portal_cpu = cpu_seconds(portal_pid) - portal_cpu
        gateway_cpu = cpu_seconds(gateway_pid) - gateway_cpu
        arrived = _portal_first_results(federation.logs / "portal.log")
    finally:
        federation.stop()
    if len(arrived) != len(shown):
        raise RuntimeError(f"{len(arrived)} lookups in the portal's log, {len(shown)} in the page")
    # The first lookup warms connections and caches: left out.
    added = sorted(s - a for s, a in zip(shown[1:], arrived[1:], strict=True))
    count = len(shown)
    case = "demo federation, 1 browser"
    result.rows = [
        Row(case, "first result, gateway -> browser, median", "ms", statistics.median(added)),
        Row(case, "first result, gateway -> browser, p95", "ms", percentile(added, 95)),
        Row(
            case,
            "portal CPU per lookup",
            "ms",
            portal_cpu / count * 1000,
            baseline=gateway_cpu / count * 1000,
            baseline_name="gateway CPU per lookup",
        ).judge(),
    ]
    result.details = {"added_ms": [round(v, 1) for v in added]}
    result.notes = [
        "the demo federation in production mode (mutual TLS everywhere) behind the portal; "
        "times from the portal's log and the page's clock (one machine); CPU from /proc, "
        "over every lookup including the warm-up one"
    ]
    return result
