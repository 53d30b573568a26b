"""A real federation (carriers, providers, gateway: one process each, mutual TLS)
with the portal in front of it, and Debian's Chromium driven by Playwright.

No browser is ever downloaded: Playwright is pointed at ``/usr/bin/chromium``
(``apt-get install chromium``). Without it the browser tests are skipped,
saying why; under CI (``CI`` set) they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from onecert.adapters.demo import Federation

CHROMIUM = os.environ.get("ONECERT_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
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


@dataclass
class Portal:
    """A running federation and its portal."""

    federation: Federation
    url: str

    def log(self) -> str:
        return (self.federation.logs / "portal.log").read_text(encoding="utf-8", errors="replace")


def start_federation(directory: Path) -> Portal:
    """Every process of the demo federation, then the portal on top (port 0 everywhere)."""
    federation = Federation(directory, startup_timeout=60.0)

    async def start() -> str:
        await federation.start()
        return await federation.start_portal()

    try:
        url = asyncio.run(start())
    except BaseException:
        federation.stop()
        raise
    return Portal(federation, url.rstrip("/"))


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """One federation and portal for the module's tests."""
    running = start_federation(tmp_path_factory.mktemp("portal") / "fed")
    try:
        yield running
    finally:
        running.federation.stop()


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {what}: the portal's browser tests must run")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium, through Playwright (never a downloaded browser)."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def axe_source() -> str:
    """axe-core's browser bundle, from npm (``npm ci`` in tests/portal)."""
    if not AXE.exists():
        _missing(f"no {AXE} (run npm ci in tests/portal)")
    return AXE.read_text(encoding="utf-8")
