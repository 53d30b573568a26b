"""Fixtures of the stress scenarios (``make stress``; never part of ``make test``).

A database (a SQLite file, or a private schema on the PostgreSQL named by
``ONECERT_TEST_PG_URL``), dev keys, quiet logs in the test process, and a
summary of every scenario's figures at the end of the session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from onecert.gateway.store.testing import Database
from onecert.sdk.devkeys import DevKeys, init_dev_keys
from stress.stress_support import summary_lines

# The same database fixtures as the test suite's (a SQLite file, or a private
# PostgreSQL schema that skips without ONECERT_TEST_PG_URL and fails under CI).
from tests.conftest import database, pg_url, private_pg  # noqa: F401 - fixtures, found by name


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
