"""Fixtures of the stress scenarios (``make stress``; never part of ``make test``).

A database (a SQLite file, or a private schema on the PostgreSQL named by
``ONECERT_TEST_PG_URL``), dev keys, quiet logs in the test process, and a
summary of every scenario's figures at the end of the session.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import structlog

from onecert.gateway.store.testing import Database
from onecert.sdk.devkeys import DevKeys, init_dev_keys
from stress.stress_support import summary_lines


def _reachable(url: str) -> bool:
    parts = urlsplit(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL URL (``ONECERT_TEST_PG_URL``): skipped without it, failing under CI."""
    url = os.environ.get("ONECERT_TEST_PG_URL")
    in_ci = bool(os.environ.get("CI"))
    if not url:
        if in_ci:
            pytest.fail("CI is set but ONECERT_TEST_PG_URL is not: PostgreSQL scenarios must run")
        pytest.skip("PostgreSQL scenarios need ONECERT_TEST_PG_URL (make stress sets it)")
    if not _reachable(url):
        if in_ci:
            pytest.fail(f"CI is set but PostgreSQL at {urlsplit(url).netloc} is unreachable")
        pytest.skip(f"PostgreSQL at {urlsplit(url).netloc} is unreachable")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database: a SQLite file, or a private schema on PostgreSQL."""
    if request.param == "sqlite":
        yield Database.sqlite(tmp_path / "gateway.db")
        return
    url: str = request.getfixturevalue("pg_url")
    async with Database.postgres(url) as db:
        yield db


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Database:
    """A SQLite file database (the default store)."""
    return Database.sqlite(tmp_path / "gateway.db")


@pytest.fixture
def dev_keys(tmp_path: Path) -> DevKeys:
    """A dev keys directory, as ``onecert keys init`` makes it."""
    return init_dev_keys(tmp_path / "keys")


@pytest.fixture(autouse=True)
def _quiet_test_process() -> Iterator[None]:
    """The SDK servers in the test process log errors only: at info they
    would spend the test process's CPU on every call. The gateway, in its own
    process, logs as in production."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    yield
    structlog.configure(**saved)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every scenario's figures (also in stress/results/latest.json)."""
    lines = summary_lines()
    if lines:
        terminalreporter.section("stress results")
        for line in lines:
            terminalreporter.write_line(line)
