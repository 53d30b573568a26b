"""Engines and migrations: URLs, SQLite connection settings, alembic in code."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from onecert.sdk._dburl import database_url

__all__ = [
    "BEGIN_OPTION",
    "MIGRATION_LOCK",
    "configure_sqlite",
    "current_revision",
    "head_revision",
    "normalize_url",
    "run_alembic",
]

_MIGRATIONS = Path(__file__).with_name("migrations")
# Execution option read by the SQLite "begin" hook: how to BEGIN ("" for
# no BEGIN: a single statement in autocommit mode).
BEGIN_OPTION = "onecert_sqlite_begin"
# PostgreSQL advisory lock key held while migrating ("onecert" in ASCII).
MIGRATION_LOCK = 0x6F6E6563657274


def normalize_url(url: str) -> str:
    """Return ``url`` with the async driver the store uses.

    ``sqlite:///path`` becomes ``sqlite+aiosqlite:///path`` and
    ``postgresql://`` (or ``postgres://``) becomes ``postgresql+asyncpg://``;
    any other database raises ValueError. A plain file path is a SQLite file
    (see :func:`onecert.sdk._dburl.database_url`).
    """
    parsed = make_url(database_url(url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


def configure_sqlite(engine: AsyncEngine | Engine, *, busy_timeout_ms: int) -> None:
    """Every connection of ``engine`` in WAL, ``synchronous=FULL``, with foreign keys
    and ``busy_timeout``; transactions begun as :data:`BEGIN_OPTION` says."""
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the driver, emits BEGIN (see _begin), so that a
        # write transaction can take the lock up front with BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                # Switching a new file to WAL does not wait for the busy
                # timeout; when several connections open a new file at once,
                # one switches and the rest see "locked". The mode is stored
                # in the file, and upgrade() makes sure it took.
                if "locked" not in str(exc):
                    raise
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        # "": no BEGIN, so that one write statement is its own transaction
        # (it takes the write lock as it starts, waiting busy_timeout, as
        # BEGIN IMMEDIATE would, and commits durably when it ends).
        if mode:
            conn.exec_driver_sql(f"BEGIN {mode}")


def run_alembic(conn: Connection, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = conn
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head
