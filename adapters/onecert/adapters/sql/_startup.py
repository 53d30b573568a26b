"""The SQL adapter's start-up check: the site's statements against its real database.

Before a site serves, every statement must compile, ``list_bindings`` must
return every mapped column, the values the unbind statements set must fit
their columns (NOT NULL, types, lengths; the statements read with sqlglot),
tables that cannot roll back (MyISAM) are found and named, and the unbind
statements run once, rolled back, for an account that cannot exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date as date_type
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import structlog

from onecert.adapters.sql._config import SiteConfig, bind_names
from onecert.adapters.sql._errors import MappingError, QueryFailedError
from onecert.adapters.sql._phone import phone_variants

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection
    from sqlalchemy.sql.elements import TextClause

    from onecert.adapters.sql._db import Column, Database

__all__ = ["PROBE_NUMBER", "SiteChecks"]

log = structlog.get_logger("onecert.adapters.sql")

# The start-up check queries with this number: +999 is no country's code,
# so no users table holds it in any format.
PROBE_NUMBER: Final = "+99900000000"
_PROBE_ACCOUNT_TEXT: Final = "onecert-start-up-check-no-such-account"
# In range of every integer column type; the probe number keeps it from matching.
_PROBE_ACCOUNT_INTEGER: Final = -1
# sqlglot's dialect for each backend: how the site's statements are read.
_DIALECTS: Final = {
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}
_NUMBER_LITERAL: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class _Assignment:
    table: str | None  # the alias or table name it is qualified with, lower case
    column: str
    value: str  # SQL text
    literal: object  # None for NULL, the text of a string literal, or _OTHER


_OTHER: Final = object()


@dataclass(frozen=True)
class _Statement:
    """What the schema check needs of one statement: the tables it names
    (alias or name -> table, target first) and its SET assignments."""

    tables: dict[str, str]
    assignments: list[_Assignment]


def _read_statement(sql: str, backend: str) -> _Statement | None:
    """``sql`` read by sqlglot; None when it cannot read it (the dry run still checks it)."""
    import sqlglot  # noqa: PLC0415  # only the start-up check reads SQL
    from sqlglot import exp  # noqa: PLC0415  # only the start-up check reads SQL

    dialect = _DIALECTS.get(backend, "mysql")
    try:
        tree = sqlglot.parse_one(sql, dialect=dialect)
    except sqlglot.errors.SqlglotError:
        return None
    tables: dict[str, str] = {}
    for table in tree.find_all(exp.Table):
        name = f"{table.db}.{table.name}" if table.db else table.name
        tables.setdefault(table.alias_or_name.lower(), name)
        tables.setdefault(table.name.lower(), name)
    assignments: list[_Assignment] = []
    if isinstance(tree, exp.Update):
        for assignment in tree.expressions:
            target, value = assignment.this, assignment.expression
            if not isinstance(target, exp.Column) or value is None:
                continue
            literal: object = _OTHER
            if isinstance(value, exp.Null):
                literal = None
            elif isinstance(value, exp.Literal) and value.is_string:
                literal = value.this
            assignments.append(
                _Assignment(
                    table=target.table.lower() or None,
                    column=target.name,
                    value=value.sql(dialect=dialect),
                    literal=literal,
                )
            )
    return _Statement(tables, assignments)


class SiteChecks:
    """The site's statements and their start-up check: a base of
    :class:`~onecert.adapters.sql._site.SqlSite`.

    It binds a statement's parameters, names a statement in messages, checks
    every statement against the database, and records which tables cannot
    roll back; the site itself serves the calls.
    """

    _config: SiteConfig
    _db: Database
    _list: TextClause
    _unbinds: tuple[tuple[TextClause, set[str]], ...]
    _list_binds: set[str]
    _columns: Mapping[str, str]
    _non_transactional: tuple[str, ...] | None

    def _unbind_key(self, index: int) -> str:
        return "queries.unbind" if len(self._unbinds) == 1 else f"queries.unbind[{index}]"

    def _params(
        self, binds: set[str], msisdn: str, *, account_ref: str | int | None = None
    ) -> dict[str, Any]:
        # Only the parameters the statement names: a driver may refuse others.
        params: dict[str, Any] = {}
        if "phones" in binds:
            params["phones"] = list(
                phone_variants(msisdn, default_country=self._config.default_country)
            )
        if "msisdn" in binds:
            params["msisdn"] = msisdn
        if "account_ref" in binds:
            params["account_ref"] = account_ref
        return params

    async def check(self) -> tuple[str, ...]:
        """Check the queries against the database; the columns ``list_bindings`` returns.

        Every statement must compile; ``list_bindings`` runs once for a number
        no one holds and must return every mapped column; the columns the
        ``unbind`` statements set must take the values they are set to
        (NOT NULL, types); the unbind statements run once for an account that
        cannot exist, in a transaction that is rolled back, and must match no
        row. On tables that cannot roll back (MyISAM) they are not run but
        explained (``EXPLAIN``), and a warning says what that means.

        Raises:
            MappingError: the first mismatch, with the keys and columns named.
            DatabaseUnavailableError: the database cannot be reached.
        """
        queries = self._config.queries
        clauses = [("queries.list_bindings", self._list)] + [
            (self._unbind_key(i), clause) for i, (clause, _) in enumerate(self._unbinds)
        ]
        for key, clause in clauses:
            try:
                self._db.compile(clause)
            except QueryFailedError as exc:
                raise MappingError(f"{key} {exc}") from None
        limit = self._config.database.statement_timeout_s
        try:
            fetched = await self._db.fetch(
                self._list,
                self._params(self._list_binds, PROBE_NUMBER),
                limit=limit,
                max_rows=1,
                reveal=True,
            )
        except QueryFailedError as exc:
            raise MappingError(f"queries.list_bindings fails against the database: {exc}") from None
        returned = set(fetched.columns)
        missing = [(key, col) for key, col in self._columns.items() if col not in returned]
        if missing:
            named = ", ".join(f"{col!r} (columns.{key})" for key, col in missing)
            raise MappingError(
                f"queries.list_bindings returns no column {named}; it returns "
                f"{', '.join(fetched.columns) or 'no columns'}"
            )
        await self._check_engines()
        await self._check_schema()
        await self._dry_run(limit)
        if "bound_at" not in self._columns and "bound_not_before" not in self._columns:
            log.warning(
                "neither columns.bound_at nor columns.bound_not_before is mapped: without "
                "them the gateway cannot tell whose accounts these are and hides their details"
            )
        elif "bound_not_after" in self._columns and "bound_not_before" not in self._columns:
            log.warning(
                "columns.bound_not_after is mapped without columns.bound_not_before: an upper "
                "bound alone says nothing about whose account it is"
            )
        log.info(
            "queries match the mapping",
            backend=self._db.backend,
            columns=list(fetched.columns),
            unbind_statements=len(self._unbinds),
            unbind_max_rows=queries.max_unbind_rows,
        )
        return fetched.columns

    async def _check_engines(self) -> None:
        from onecert.adapters.sql._db import NON_TRANSACTIONAL_ENGINES  # noqa: PLC0415  # SQLAlchemy only once a database is opened

        engines = {
            name.lower(): engine for name, engine in (await self._db.table_engines()).items()
        }
        if not engines:
            return
        named: set[str] = set()
        for sql in self._config.queries.unbind_statements:
            read = _read_statement(sql, self._db.backend)
            if read is None:
                # Unreadable here: every table of the database the statement
                # mentions counts, so none that cannot roll back is missed.
                named.update(
                    name
                    for name in engines
                    if re.search(rf"(?<![\w$]){re.escape(name)}(?![\w$])", sql, re.IGNORECASE)
                )
            else:
                named.update(t.rpartition(".")[2].lower() for t in read.tables.values())
        found = sorted(
            f"{name} ({engines[name]})"
            for name in named
            if engines.get(name) in NON_TRANSACTIONAL_ENGINES
        )
        self._non_transactional = tuple(found)
        if found:
            log.warning(
                "the unbind statements change tables that cannot roll back: a failed or "
                "refused unbind leaves the changes it made, and is never reported as rolled "
                "back; an unbind that detached the account's number is answered DONE even "
                "when a check after it failed (the operator is told here); the start-up "
                "check explains the statements instead of running them. Convert the tables "
                "to InnoDB (ALTER TABLE ... ENGINE=InnoDB) to have every unbind all or nothing",
                tables=list(found),
            )

    async def _check_schema(self) -> None:
        """The values the unbind statements set fit their columns (NOT NULL, types)."""
        cache: dict[str, dict[str, Column] | None] = {}
        for index, sql in enumerate(self._config.queries.unbind_statements):
            read = _read_statement(sql, self._db.backend)
            if read is None:
                continue
            for assignment in read.assignments:
                for table in self._owners(assignment, read.tables):
                    if table not in cache:
                        cache[table] = await self._db.columns(table)
                    columns = cache[table]
                    column = None if columns is None else columns.get(assignment.column.lower())
                    if column is not None:
                        problem = _misfit(column, assignment.literal)
                        if problem:
                            raise MappingError(
                                f"{self._unbind_key(index)} sets {table}.{column.name} = "
                                f"{assignment.value}, but {problem}"
                            )
                        break

    @staticmethod
    def _owners(assignment: _Assignment, tables: Mapping[str, str]) -> Sequence[str]:
        if assignment.table is not None:
            owner = tables.get(assignment.table)
            return [owner] if owner else []
        # Unqualified: the target table's column first, then a joined one's.
        return list(dict.fromkeys(tables.values()))

    async def _dry_run(self, limit: float) -> None:
        queries = self._config.queries
        probe_ref: str | int = (
            _PROBE_ACCOUNT_INTEGER if queries.account_ref_type == "integer" else _PROBE_ACCOUNT_TEXT
        )
        hint = (
            "; if the account column is not text (an integer id), set "
            "queries.account_ref_type = 'integer' or compare as text in SQL"
            if queries.account_ref_type == "text"
            else ""
        )
        if self._non_transactional:
            from onecert.adapters.sql._db import statement  # noqa: PLC0415  # SQLAlchemy only once a database is opened

            for index, sql in enumerate(queries.unbind_statements):
                params = self._params(bind_names(sql), PROBE_NUMBER, account_ref=probe_ref)
                try:
                    await self._db.fetch(
                        statement("EXPLAIN " + sql), params, limit=limit, max_rows=100, reveal=True
                    )
                except QueryFailedError as exc:
                    raise MappingError(
                        f"{self._unbind_key(index)} fails against the database (explained, "
                        f"not run: a table cannot roll back): {exc}{hint}"
                    ) from None
            return
        failed_at = [0]

        async def work(conn: AsyncConnection) -> int:
            count = 0
            for index, (clause, binds) in enumerate(self._unbinds):
                failed_at[0] = index
                params = self._params(binds, PROBE_NUMBER, account_ref=probe_ref)
                count += max(0, int((await conn.execute(clause, params)).rowcount))
            await conn.rollback()
            return count

        try:
            count = await self._db.run(work, limit=limit, reveal=True)
        except QueryFailedError as exc:
            raise MappingError(
                f"{self._unbind_key(failed_at[0])} fails against the database (checked in a "
                f"transaction that was rolled back): {exc}{hint}"
            ) from None
        if count != 0:
            raise MappingError(
                f"queries.unbind matched {count} rows for an account and a number that do "
                "not exist (rolled back); it must match only the account with that number"
            )


_NUMERIC: Final = (int, float)


def _misfit(column: Column, literal: object) -> str:
    """Why ``literal`` (None for NULL, text for a string literal) cannot go into
    ``column``, or ""; other values are for the dry run to judge."""
    if literal is None:
        if column.nullable:
            return ""
        return (
            f"that column is NOT NULL ({column.type_name}): the database would refuse the "
            "unbind, or store '' or 0 without saying so. Set it to '' (and keep "
            "list_bindings from matching '') or make the column nullable"
        )
    if not isinstance(literal, str):
        return ""
    kind = column.python_type
    numeric = kind is not None and issubclass(kind, (*_NUMERIC, Decimal)) and kind is not bool
    if numeric and not _NUMBER_LITERAL.fullmatch(literal):
        return f"that column holds numbers ({column.type_name}), not text"
    if kind is not None and issubclass(kind, datetime | date_type):
        return f"that column holds times ({column.type_name}), not text"
    if column.length is not None and len(literal) > column.length:
        return f"that column holds at most {column.length} characters"
    return ""
