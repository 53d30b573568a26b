"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest


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
