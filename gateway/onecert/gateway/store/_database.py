"""The database every repository shares: engine, dialect, transactions, migrations.

Writes run in a *write transaction*: on SQLite ``BEGIN IMMEDIATE`` (the
database write lock is taken before the first read, so a read-then-write
never races another process); on PostgreSQL a READ COMMITTED transaction
whose reads of work items use ``SELECT ... FOR UPDATE SKIP LOCKED``, so
concurrent workers never claim the same row and never wait for each other.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, Table, create_engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from onecert.gateway.store._engine import (
    BEGIN_OPTION,
    MIGRATION_LOCK,
    configure_sqlite,
    current_revision,
    run_alembic,
)

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["StoreDatabase"]


class StoreDatabase:
    """One database, shared by every repository of a :class:`~onecert.gateway.store.Store`.

    It owns the engine and the dialect differences: how a write transaction
    begins, how a single statement commits on its own, how an upsert is
    spelled, and how the schema is migrated. Repositories hold one and never
    touch the engine themselves.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        schema: str | None = None,
        database_clock: bool = False,
        migrator: AsyncEngine | None = None,
        busy_timeout_ms: int = 5000,
    ) -> None:
        """Wrap an engine (``Store.open`` builds it, with the SQLite settings);
        ``migrator``, if given, is the engine migrations run on (no timeouts)."""
        self._engine = engine
        self._migrator = migrator or engine
        self._busy_timeout_ms = busy_timeout_ms
        # SQLite: a synchronous engine on the same file, used by one thread,
        # for write_sync (created on first use).
        self._sync_engine: Engine | None = None
        self._sync_writer: Engine | None = None
        self._sync_thread: ThreadPoolExecutor | None = None
        self._schema = schema
        self._dialect = engine.dialect.name
        self._database_clock = database_clock and self._dialect == "postgresql"
        self._writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        # For a write that is one statement: no BEGIN/COMMIT round trips; the
        # statement is atomic and durable on its own.
        self._single = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._dialect == "postgresql"
            else engine.execution_options(**{BEGIN_OPTION: ""})
        )

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    async def clock(self, conn: AsyncConnection, now: datetime) -> datetime:
        """The time a write transaction works with: ``now`` (the caller's clock), or,
        with the database clock, the database's ``now()`` in ``conn``'s transaction.

        Replicas whose clocks disagree then take leases, judge due and expired
        work and stamp new work on one clock, the database's: a replica a few
        seconds ahead cannot take a lease another still holds, nor expire a
        ticket early.
        """
        if not self._database_clock:
            return now
        value = await conn.scalar(select(func.now()))
        if not isinstance(value, datetime):
            raise TypeError("now() did not return a timestamp")
        return value

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()
        if self._migrator is not self._engine:
            await self._migrator.dispose()
        if self._sync_thread is not None:
            engine, thread = self._sync_engine, self._sync_thread
            self._sync_engine = self._sync_writer = self._sync_thread = None
            if engine is not None:
                await asyncio.get_running_loop().run_in_executor(thread, engine.dispose)
            thread.shutdown(wait=False)

    # ------------------------------------------------------------ transactions

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``), committed on exit."""
        async with self._writer.begin() as conn:
            yield conn

    async def write_sync(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(conn, ...)`` in one write transaction (as :meth:`write`), committed after.

        On SQLite the whole transaction runs in one step on a thread of its
        own, with a synchronous connection to the same file: the async
        driver would hop to its thread and back for every cursor operation
        (about 30 hops for a four-statement transaction, most of its cost).
        On PostgreSQL it runs in an async write transaction (``run_sync``).
        """
        if self._dialect != "sqlite" or self._engine.url.database in (None, "", ":memory:"):
            async with self.write() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        if self._sync_thread is None:
            self._sync_thread = ThreadPoolExecutor(1, thread_name_prefix="onecert-sqlite-writer")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._sync_thread, lambda: self._in_sync_transaction(fn, *args, **kwargs)
        )

    def _in_sync_transaction(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        # Runs on the writer thread only: its engine and connection never
        # cross threads.
        if self._sync_writer is None:
            url = self._engine.url.set(drivername="sqlite")
            engine = create_engine(url, pool_size=1, max_overflow=0)
            configure_sqlite(engine, busy_timeout_ms=self._busy_timeout_ms)
            self._sync_engine = engine
            self._sync_writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        with self._sync_writer.begin() as conn:
            return fn(conn, *args, **kwargs)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction."""
        async with self._engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def single(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one write statement that commits by itself."""
        async with self._single.begin() as conn:
            yield conn

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction that sees one consistent snapshot for all its statements."""
        async with self._engine.connect() as conn:
            if self._dialect == "postgresql":
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn

    def insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT with this dialect's ``ON CONFLICT`` clauses."""
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # ------------------------------------------------------------ schema

    async def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to ``revision`` (alembic; idempotent).

        Safe when several gateways start at once: the migration runs in one
        transaction under a lock (PostgreSQL: an advisory lock; SQLite: the
        write lock), so the others wait and then find nothing to do.
        """
        if self._dialect == "sqlite":
            await self._ensure_wal()
        writer = self._migrator.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        async with writer.begin() as conn:
            if self._dialect == "postgresql":
                await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                if self._schema is not None:
                    await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await conn.run_sync(run_alembic, "upgrade", revision)
        # Pooled connections may hold statements prepared against the old
        # schema; start afresh.
        await self._engine.dispose()

    async def _ensure_wal(self) -> None:
        delay = 0.01
        while True:
            async with self._engine.connect() as conn:
                raw = await conn.get_raw_connection()
                # Outside any transaction: the driver connection itself.
                driver: Any = raw.driver_connection
                try:
                    cursor = await driver.execute("PRAGMA journal_mode = WAL")
                    (mode,) = await cursor.fetchone()
                    await cursor.close()
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or delay > 5:
                        raise
                    mode = None
            if mode in ("wal", "memory"):
                return
            if mode is not None:
                raise RuntimeError(f"SQLite refused WAL mode (journal_mode is {mode})")
            await asyncio.sleep(delay)
            delay *= 2

    async def downgrade(self, revision: str = "base") -> None:
        """Migrate the schema down to ``revision`` ("base" drops everything)."""
        async with self.write() as conn:
            if self._dialect == "postgresql":
                await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            await conn.run_sync(run_alembic, "downgrade", revision)
        await self._engine.dispose()

    async def schema_revision(self) -> str | None:
        """The migration the database is at (None before the first upgrade)."""
        async with self._engine.connect() as conn:
            return await conn.run_sync(current_revision)
