"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import structlog

from onecert.gateway.store import Store
from onecert.gateway.store.testing import Database, PrivatePostgres
from onecert.gateway.testing import FederationKeys

# The client certificates the notices' and the registry's federations hand out: the
# carriers', the providers' (CN = provider id), and one of the same CA that is no
# caller the gateway knows.
CARRIERS, INTRUDER = ("cm", "ct"), "intruder"
PROVIDERS = ("pay", "chat", "forum", "idle", "slow", "late", "poller", "shop")


def _reachable(url: str) -> bool:
    parts = urlsplit(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL URL for tests (``ONECERT_TEST_PG_URL``).

    Without the variable the test is skipped, saying why. Under CI (``CI`` set)
    an unset variable or an unreachable server fails the test instead.
    """
    url = os.environ.get("ONECERT_TEST_PG_URL")
    in_ci = bool(os.environ.get("CI"))
    if not url:
        if in_ci:
            pytest.fail("CI is set but ONECERT_TEST_PG_URL is not: PostgreSQL tests must run")
        pytest.skip("PostgreSQL tests need ONECERT_TEST_PG_URL (e.g. postgresql+asyncpg://...)")
    if not _reachable(url):
        if in_ci:
            pytest.fail(f"CI is set but PostgreSQL at {urlsplit(url).netloc} is unreachable")
        pytest.skip(f"PostgreSQL at {urlsplit(url).netloc} is unreachable")
    return url


@pytest.fixture
def logs_to_stderr() -> Iterator[None]:
    """Gateway logs go to stderr, as in production (stdout is the CLI's output);
    tests that run the CLI configure structlog, so the previous setup is put back
    after. Packages that start gateways use it for every test."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def federation_keys(tmp_path_factory: pytest.TempPathFactory) -> FederationKeys:
    """One federation's keys for the session, with a client certificate for each of the
    carriers, the providers and the intruder."""
    return FederationKeys.create(
        tmp_path_factory.mktemp("keys"), clients=(*CARRIERS, *PROVIDERS, INTRUDER)
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database: a SQLite file, or a private schema on PostgreSQL."""
    if request.param == "sqlite":
        yield Database.sqlite(tmp_path / "store.db")
        return
    pg_url: str = request.getfixturevalue("pg_url")
    async with Database.postgres(pg_url) as db:
        yield db


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own (``initdb`` and ``pg_ctl`` of the installed
    server, its own port and directory), which the test may stop, crash and start again;
    skipped when no server is installed."""
    if PrivatePostgres.find() is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no PostgreSQL server is installed (initdb, pg_ctl)")
        pytest.skip("no PostgreSQL server installed (initdb, pg_ctl)")
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def store(database: Database) -> AsyncIterator[Store]:
    """A store on ``database`` with the schema migrated."""
    opened = await database.open_upgraded()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test keeps `onecert lookup`'s numbered rows in its own directory, not the user's."""
    monkeypatch.setenv("ONECERT_STATE_DIR", str(tmp_path / "state"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a test marked ``slow`` run first, the rest in their usual order.

    ``make test`` hands whole files to its workers in this order (pytest-xdist,
    ``--dist loadfile``): the longest files start early, side by side, instead of
    one of them running on alone at the end while the other workers idle.
    """
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)  # stable: file order kept within each
