"""Helpers for tests that need a real database: a SQLite file or a PostgreSQL schema.

A pytest fixture running a test on both databases::

    @pytest.fixture(params=["sqlite", "postgres"])
    async def database(request, tmp_path):
        if request.param == "sqlite":
            yield Database.sqlite(tmp_path / "store.db")
        else:
            async with Database.postgres(request.getfixturevalue("pg_url")) as db:
                yield db

Each PostgreSQL database gets its own schema, dropped afterwards, so tests
can share one server.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from onecert.gateway.store._engine import normalize_url
from onecert.gateway.store._store import Store

__all__ = ["Database"]


@dataclass(frozen=True)
class Database:
    """Where a test's store lives: a URL and, on PostgreSQL, a private schema."""

    url: str
    schema: str | None = None

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return make_url(self.url).get_backend_name()

    def open(self, *, busy_timeout_ms: int = 5000, pool_size: int = 5) -> Store:
        """A new :class:`Store` on this database (as another process would open it)."""
        return Store.open(
            self.url, schema=self.schema, busy_timeout_ms=busy_timeout_ms, pool_size=pool_size
        )

    async def open_upgraded(self) -> Store:
        """A new :class:`Store` with the schema migrated to the newest version."""
        store = self.open()
        await store.upgrade()
        return store

    @classmethod
    def sqlite(cls, path: str | Path) -> Database:
        """A SQLite file database at ``path`` (created on first use)."""
        return cls(f"sqlite+aiosqlite:///{Path(path)}")

    @classmethod
    @asynccontextmanager
    async def postgres(cls, url: str) -> AsyncIterator[Database]:
        """A fresh, empty schema on the PostgreSQL at ``url``, dropped on exit."""
        url = normalize_url(url)
        schema = "t_" + secrets.token_hex(8)
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            try:
                yield cls(url, schema)
            finally:
                async with engine.begin() as conn:
                    await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await engine.dispose()
