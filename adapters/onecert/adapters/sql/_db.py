"""Running the site's statements: bound parameters only, a time limit on every one.

Each call takes a pooled connection, tells the database how long the
statement may run, runs it in a transaction, and is also bounded by an
asyncio timeout in case the database does not keep its word:

- PostgreSQL: ``set_config('statement_timeout', <ms>, true)``, the same as
  ``SET LOCAL statement_timeout`` (it ends with the transaction) but with the
  value bound as a parameter.
- MariaDB: ``SET SESSION max_statement_time`` (seconds, every statement).
  MySQL: ``SET SESSION max_execution_time`` (milliseconds, SELECT only).
  Both: ``innodb_lock_wait_timeout`` (whole seconds), which bounds an
  UPDATE or DELETE waiting for a row lock.
- SQLite: a progress handler aborts the statement once the limit has passed
  (the query runs in aiosqlite's thread, where asyncio cannot stop it), and
  the busy timeout bounds waiting for a write lock.

Errors are sorted in two: :class:`DatabaseUnavailableError` (connection
lost, timeout, lock, overload: retrying may help) and
:class:`QueryFailedError` (anything else). Their messages carry the error
class and code and the driver's message with quoted values removed, never
the parameters (the engine hides them too).

This is the only module of the adapter that imports SQLAlchemy at import time.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.expression import bindparam

from onecert.adapters.sql._config import DatabaseConfig, bind_names
from onecert.adapters.sql._errors import DatabaseUnavailableError, QueryFailedError
from onecert.sdk._msisdn import mask_numbers_in_text

__all__ = ["NON_TRANSACTIONAL_ENGINES", "Column", "Database", "Fetched", "statement"]

_T = TypeVar("_T")

# The asyncio backstop fires this long after the database's own limit, so
# the database normally ends the statement (and says so) first.
_BACKSTOP_MARGIN_S: Final = 0.25
# SQLite calls the progress handler every this many virtual machine steps
# (well under a millisecond of work).
_SQLITE_PROGRESS_STEPS: Final = 1000

# PostgreSQL SQLSTATE classes meaning "not now": connection exception,
# transaction rollback (serialization, deadlock), insufficient resources,
# operator intervention (query_canceled by statement_timeout, shutdown).
_PG_UNAVAILABLE_CLASSES: Final = ("08", "40", "53", "57")
_PG_UNAVAILABLE_STATES: Final = frozenset({"55P03"})  # lock_not_available
# MySQL/MariaDB error numbers meaning "not now".
_MYSQL_UNAVAILABLE: Final = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1205,  # lock wait timeout
        1213,  # deadlock
        1969,  # MariaDB max_statement_time exceeded
        2002,  # cannot connect (socket)
        2003,  # cannot connect (TCP)
        2006,  # server has gone away
        2013,  # lost connection during query
        3024,  # MySQL max_execution_time exceeded
    }
)
# MySQL/MariaDB error numbers for a value the column cannot hold.
_MYSQL_INVALID_VALUE: Final = frozenset({1264, 1292, 1366, 1406})
_SQLITE_UNAVAILABLE: Final = (
    "interrupted",
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "disk i/o error",
)
_QUOTED: Final = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
# MySQL/MariaDB storage engines whose changes a ROLLBACK cannot undo.
NON_TRANSACTIONAL_ENGINES: Final = frozenset(
    {"MYISAM", "ARIA", "MEMORY", "CSV", "ARCHIVE", "MRG_MYISAM", "BLACKHOLE", "FEDERATED"}
)


def identifiers(*sqls: str) -> frozenset[str]:
    """Every word in the site's statements: table and column names that may
    appear in a database error and are no one's personal data."""
    return frozenset(w.lower() for sql in sqls for w in _WORD.findall(sql))


@dataclass(frozen=True)
class Column:
    """One column of a table, as the database describes it."""

    name: str
    nullable: bool
    python_type: type | None
    length: int | None
    type_name: str


def statement(sql: str) -> TextClause:
    """``sql`` as a SQLAlchemy text clause, ``:phones`` an expanding IN list."""
    clause = text(sql)
    if "phones" in bind_names(sql):
        clause = clause.bindparams(bindparam("phones", expanding=True))
    return clause


@dataclass(frozen=True)
class Fetched:
    """What a SELECT returned: its column names and at most ``max_rows`` rows."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    truncated: bool


class _Deadline:
    # Per SQLite connection, read by its progress handler in aiosqlite's thread.
    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = math.inf

    def expired(self) -> int:
        return 1 if time.monotonic() > self.at else 0


class Database:
    """A pool of connections to the site's database and the way statements run.

    Args:
        config: the ``[database]`` section.
    """

    def __init__(self, config: DatabaseConfig, *, names: frozenset[str] = frozenset()) -> None:
        self._config = config
        # Quoted words in error messages that are kept (the site's own table
        # and column names); every other quoted value is removed.
        self._names = names
        backend = config.backend
        limit = config.statement_timeout_s
        connect_args: dict[str, Any]
        if backend == "sqlite":
            path = config.url.partition(":///")[2].partition("?")[0]
            if not path.startswith("file:") and not Path(path).is_file():
                # Opening would create an empty file and hide the mistake.
                raise DatabaseUnavailableError(f"the SQLite database file {path} does not exist")
            # The busy timeout: how long a write waits for another writer.
            connect_args = {"timeout": limit}
        elif backend == "postgresql":
            connect_args = {
                "timeout": max(limit, 1.0),
                "server_settings": {"application_name": "onecert-sql-adapter"},
            }
        else:
            connect_args = {"connect_timeout": max(1, math.ceil(limit))}
        self._backend = backend
        self._engine: AsyncEngine = create_async_engine(
            config.url,
            pool_size=config.pool_size,
            max_overflow=0,
            pool_timeout=limit,
            # A database restarted under the adapter costs one failed ping,
            # not one failed citizen's call.
            pool_pre_ping=True,
            pool_recycle=1800,
            # Parameters are phone numbers: never in exception messages.
            hide_parameters=True,
            connect_args=connect_args,
        )
        self._deadlines: weakref.WeakKeyDictionary[Any, _Deadline] = weakref.WeakKeyDictionary()

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (for tests and instrumentation)."""
        return self._engine

    @property
    def backend(self) -> str:
        return self._backend

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    def compile(self, clause: TextClause) -> None:
        """Compile ``clause`` for this database; :class:`QueryFailedError` if it cannot."""
        try:
            clause.compile(dialect=self._engine.dialect)
        except sa_exc.SQLAlchemyError as exc:
            raise QueryFailedError(f"does not compile: {type(exc).__name__}: {exc}") from None

    async def fetch(
        self,
        clause: TextClause,
        params: Mapping[str, Any],
        *,
        limit: float,
        max_rows: int,
        reveal: bool = False,
    ) -> Fetched:
        """Run a SELECT within ``limit`` seconds; at most ``max_rows`` rows.

        ``reveal`` keeps quoted names in error messages (for the start-up
        check, whose parameters are no one's number).
        """

        async def work(conn: AsyncConnection) -> Fetched:
            result = await conn.execute(clause, dict(params))
            rows = result.fetchmany(max_rows + 1)
            return Fetched(
                columns=tuple(result.keys()),
                rows=tuple(tuple(row) for row in rows[:max_rows]),
                truncated=len(rows) > max_rows,
            )

        return await self.run(work, limit=limit, reveal=reveal)

    async def run(
        self,
        work: Callable[[AsyncConnection], Awaitable[_T]],
        *,
        limit: float,
        reveal: bool = False,
    ) -> _T:
        """Run ``work`` on one connection in one transaction within ``limit`` seconds.

        ``work`` commits or rolls back itself; leaving without either rolls
        back. Errors are sorted as for :meth:`fetch`.
        """

        async def go() -> _T:
            async with self._transaction(limit) as conn:
                return await work(conn)

        return await self._bounded(go(), limit, reveal=reveal)

    async def table_engines(self) -> dict[str, str]:
        """MySQL/MariaDB: each table of the current database and its storage
        engine, upper case (``{"users": "INNODB"}``); empty on other backends."""
        if self._backend not in ("mysql", "mariadb"):
            return {}

        async def work(conn: AsyncConnection) -> dict[str, str]:
            result = await conn.execute(
                text(
                    "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE() AND ENGINE IS NOT NULL"
                )
            )
            return {str(name): str(engine).upper() for name, engine in result.all()}

        return await self.run(work, limit=self._config.statement_timeout_s, reveal=True)

    async def columns(self, table: str) -> dict[str, Column] | None:
        """The columns of ``table`` (``schema.table`` allowed) by lower-case
        name, or None when the database has no such table."""
        schema, _, name = table.rpartition(".")

        def read(sync_conn: Any) -> dict[str, Column] | None:
            inspector = inspect(sync_conn)
            if not inspector.has_table(name, schema=schema or None):
                return None
            out: dict[str, Column] = {}
            for info in inspector.get_columns(name, schema=schema or None):
                column_type = info["type"]
                try:
                    python_type: type | None = column_type.python_type
                except NotImplementedError:
                    python_type = None
                out[str(info["name"]).lower()] = Column(
                    name=str(info["name"]),
                    nullable=bool(info.get("nullable", True)),
                    python_type=python_type,
                    length=getattr(column_type, "length", None),
                    type_name=str(column_type),
                )
            return out

        async def work(conn: AsyncConnection) -> dict[str, Column] | None:
            return await conn.run_sync(read)

        return await self.run(work, limit=self._config.statement_timeout_s, reveal=True)

    @asynccontextmanager
    async def _transaction(self, limit: float) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            await self._set_limit(conn, limit)
            yield conn
            # Reached only when the block ended normally: after a timeout or
            # a cancellation the SQLite deadline stays set, so a statement
            # still running in aiosqlite's thread is interrupted on time.
            await self._clear_limit(conn)

    async def _set_limit(self, conn: AsyncConnection, limit: float) -> None:
        if self._backend == "postgresql":
            await conn.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": str(max(1, int(limit * 1000)))},
            )
        elif self._backend in ("mysql", "mariadb"):
            lock_wait = max(1, math.ceil(limit))
            if conn.dialect.is_mariadb:  # type: ignore[attr-defined]  # set by the MySQL dialect on connect
                await conn.execute(
                    text(
                        "SET SESSION max_statement_time = :seconds, "
                        "innodb_lock_wait_timeout = :lock_wait"
                    ),
                    {"seconds": round(limit, 3), "lock_wait": lock_wait},
                )
            else:
                await conn.execute(
                    text(
                        "SET SESSION max_execution_time = :ms, "
                        "innodb_lock_wait_timeout = :lock_wait"
                    ),
                    {"ms": max(1, int(limit * 1000)), "lock_wait": lock_wait},
                )
        elif self._backend == "sqlite":
            deadline = await self._sqlite_deadline(conn)
            deadline.at = time.monotonic() + limit

    async def _clear_limit(self, conn: AsyncConnection) -> None:
        if self._backend == "sqlite":
            (await self._sqlite_deadline(conn)).at = math.inf

    async def _sqlite_deadline(self, conn: AsyncConnection) -> _Deadline:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection  # an aiosqlite.Connection
        deadline = self._deadlines.get(driver)
        if deadline is None:
            deadline = _Deadline()
            # Installed once per connection. Between calls the deadline is
            # infinite, unless the last call ended early (see _transaction).
            await driver.set_progress_handler(deadline.expired, _SQLITE_PROGRESS_STEPS)  # type: ignore[union-attr]  # aiosqlite's connection
            self._deadlines[driver] = deadline
        return deadline

    async def _bounded(self, work: Coroutine[Any, Any, _T], limit: float, *, reveal: bool) -> _T:
        try:
            async with asyncio.timeout(limit + _BACKSTOP_MARGIN_S) as scope:
                return await work
        except TimeoutError:
            if scope.expired():
                raise DatabaseUnavailableError(
                    f"the database did not answer within {limit:.2f} s"
                ) from None
            raise DatabaseUnavailableError("the database connection timed out") from None
        except sa_exc.DBAPIError as exc:
            raise self._classify(exc, reveal=reveal) from None
        except sa_exc.TimeoutError:
            raise DatabaseUnavailableError(
                "no database connection free within the time limit (pool exhausted)"
            ) from None
        except OSError as exc:
            raise DatabaseUnavailableError(
                f"cannot reach the database: {type(exc).__name__}: {exc.strerror or exc}"
            ) from None
        except sa_exc.SQLAlchemyError as exc:
            raise QueryFailedError(
                f"{type(exc).__name__}: {_scrub(str(exc), reveal=reveal, names=self._names)}"
            ) from None

    def _classify(self, exc: sa_exc.DBAPIError, *, reveal: bool) -> Exception:
        orig = exc.orig
        message = _scrub(_driver_message(orig), reveal=reveal, names=self._names)
        kind = type(orig).__name__ if orig is not None else type(exc).__name__
        code = ""
        unavailable = bool(exc.connection_invalidated) or isinstance(exc, sa_exc.InterfaceError)
        invalid_value = isinstance(exc, sa_exc.DataError)
        if self._backend == "postgresql":
            state = str(getattr(orig, "sqlstate", "") or "")
            code = f" (SQLSTATE {state})" if state else ""
            unavailable = unavailable or (
                state[:2] in _PG_UNAVAILABLE_CLASSES or state in _PG_UNAVAILABLE_STATES
            )
            invalid_value = invalid_value or state[:2] == "22"
        elif self._backend in ("mysql", "mariadb"):
            args = getattr(orig, "args", ())
            errno = args[0] if args and isinstance(args[0], int) else None
            code = f" (error {errno})" if errno is not None else ""
            unavailable = unavailable or errno in _MYSQL_UNAVAILABLE
            invalid_value = invalid_value or errno in _MYSQL_INVALID_VALUE
        else:
            lowered = message.lower()
            unavailable = unavailable or any(m in lowered for m in _SQLITE_UNAVAILABLE)
        text_ = f"{kind}{code}: {message}"
        if unavailable:
            return DatabaseUnavailableError(text_)
        return QueryFailedError(text_, invalid_value=invalid_value)


def _driver_message(orig: BaseException | None) -> str:
    if orig is None:
        return ""
    args: Sequence[Any] = getattr(orig, "args", ())
    # pymysql: (errno, message); the others: (message,).
    if len(args) >= 2 and isinstance(args[0], int):
        return str(args[1])
    text_ = str(orig)
    # The asyncpg adapter prefixes "<class 'asyncpg.exceptions.X'>: ".
    return re.sub(r"^<class '[\w.]+'>:\s*", "", text_)


def _scrub(message: str, *, reveal: bool, names: frozenset[str] = frozenset()) -> str:
    """A driver message safe to log: quoted values removed (unless ``reveal``:
    at start the only values are the probe's) except the site's own table and
    column names, numbers masked outside those names, one short line."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    out: list[str] = []
    last = 0
    for match in _QUOTED.finditer(first):
        out.append(mask_numbers_in_text(first[last : match.start()]))
        quoted = match.group(0)
        words = [w for w in re.split(r"[.\s]+", quoted[1:-1]) if w]
        if words and all(w.lower() in names for w in words):
            out.append(quoted)  # a name from the site's statements: the operator needs it
        elif reveal:
            out.append(mask_numbers_in_text(quoted))
        else:
            out.append("'…'")
        last = match.end()
    out.append(mask_numbers_in_text(first[last:]))
    return "".join(out)[:300]
