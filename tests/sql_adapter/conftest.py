"""Fixtures: a site's users table on SQLite, PostgreSQL and MariaDB, and its config.

Every table gets a unique name and is dropped after the test, so the tests
can share one PostgreSQL or MariaDB database with each other and with other
test packages.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from onecert.sdk.testing import FakeGateway
from tests.sql_adapter.sql_site import DDL, USERS, SiteDB


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """The MySQL/MariaDB URL for tests (``ONECERT_TEST_MYSQL_URL``).

    Without the variable the test is skipped, saying why. Under CI (``CI``
    set) a set variable whose server is unreachable fails the test instead.
    """
    url = os.environ.get("ONECERT_TEST_MYSQL_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI is set but ONECERT_TEST_MYSQL_URL is not: MySQL tests must run")
        pytest.skip(
            "MySQL/MariaDB tests need ONECERT_TEST_MYSQL_URL "
            "(e.g. mysql+aiomysql://root@127.0.0.1:3306/test)"
        )
    if not _reachable(url, 3306):
        where = urlsplit(url).netloc.rpartition("@")[2]
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but MySQL/MariaDB at {where} is unreachable")
        pytest.skip(f"MySQL/MariaDB at {where} is unreachable")
    return url


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Each database the adapter supports."""
    param: str = request.param
    return param


@pytest.fixture
def backend_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An async URL for ``backend`` (skips when that server is not configured)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'site.db'}"
    url: str = request.getfixturevalue("pg_url" if backend == "postgresql" else "mysql_url")
    return url


@pytest.fixture
async def site_db(backend: str, backend_url: str, tmp_path: Path) -> AsyncIterator[SiteDB]:
    """The test users table (``USERS``) under a unique name, dropped afterwards."""
    table = f"users_{secrets.token_hex(6)}"
    engine = create_async_engine(backend_url)
    db = SiteDB(backend=backend, url=backend_url, table=table, engine=engine, base_dir=tmp_path)
    try:
        await db.sql(DDL[backend])
        async with engine.begin() as conn:
            for user in USERS:
                await conn.execute(
                    text(
                        f"INSERT INTO {table} (id, nickname, phone, phone_bound_at, "
                        "last_login_at, kind, unbindable) VALUES "
                        "(:id, :nick, :phone, :bound, :last, :kind, :unbindable)"
                    ),
                    {
                        "id": user[0],
                        "nick": user[1],
                        "phone": user[2],
                        # SQLite has no timestamp type: the site stores text.
                        "bound": (
                            user[3].isoformat(sep=" ")
                            if backend == "sqlite" and user[3] is not None
                            else user[3]
                        ),
                        "last": user[4],
                        "kind": user[5],
                        "unbindable": (
                            bool(user[6])
                            if backend == "postgresql" and user[6] is not None
                            else user[6]
                        ),
                    },
                )
        yield db
    finally:
        try:
            await db.sql("DROP TABLE IF EXISTS {t}")
        finally:
            await engine.dispose()


@pytest.fixture
def gateway(tmp_path: Path) -> FakeGateway:
    """The gateway the site trusts; its JWKS is ``gateway.jwks.json`` in ``tmp_path``."""
    fake = FakeGateway(audience="test-site")
    fake.write_jwks(tmp_path / "gateway.jwks.json")
    return fake
