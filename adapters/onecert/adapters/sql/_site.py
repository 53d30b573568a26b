"""A site's user database as a ``BindingProvider``: the two SDK functions over SQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import date as date_type
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from zoneinfo import ZoneInfo

import structlog

from onecert.adapters.sql._config import SiteConfig, bind_names
from onecert.adapters.sql._errors import (
    DatabaseUnavailableError,
    MappingError,
    QueryFailedError,
)
from onecert.adapters.sql._phone import normalize_phone, phone_variants
from onecert.adapters.sql._values import to_bool, to_kind, to_utc_as
from onecert.sdk import (
    Binding,
    CallInfo,
    Provider,
    Unavailable,
    UnbindRequest,
    UnbindResult,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
    from sqlalchemy.sql.elements import TextClause

    from onecert.adapters.sql._db import Column, Database

__all__ = ["NO_SUCH_ACCOUNT", "PROBE_NUMBER", "SqlSite"]

log = structlog.get_logger("onecert.adapters.sql")

NO_SUCH_ACCOUNT: Final = "no such account bound to this number"
# The start-up check queries with this number: +999 is no country's code,
# so no users table holds it in any format.
PROBE_NUMBER: Final = "+99900000000"
_PROBE_ACCOUNT_TEXT: Final = "onecert-start-up-check-no-such-account"
# In range of every integer column type; the probe number keeps it from matching.
_PROBE_ACCOUNT_INTEGER: Final = -1
_MAX_ACCOUNT_REF: Final = 256
_MAX_DISPLAY_NAME: Final = 256
_INTEGER_REF: Final = re.compile(r"-?[0-9]{1,19}")
_INT64: Final = 2**63
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


class _Progress:
    """How far one unbind got: what an error midway leaves behind."""

    __slots__ = ("rows", "stage")

    def __init__(self) -> None:
        self.rows = 0
        self.stage = "queries.list_bindings (before the unbind)"


@dataclass(frozen=True)
class _Applied:
    """What one unbind's statements did, before the commit or the rollback."""

    count: int
    others: frozenset[str]  # other accounts that lost the number
    still_bound: bool  # the account still lists the number
    committed: bool


class SqlSite:
    """The site's database answering ``ListBindings`` and ``Unbind``.

    Open it with :meth:`open` (which checks the queries against the
    database), serve :attr:`provider`, and :meth:`close` it, or use
    ``async with await SqlSite.open(config) as site``.
    """

    def __init__(self, config: SiteConfig, database: Database) -> None:
        from onecert.adapters.sql._db import statement  # noqa: PLC0415  # SQLAlchemy only once a database is opened

        self._config = config
        self._db = database
        self._list = statement(config.queries.list_bindings)
        self._unbinds: tuple[tuple[TextClause, set[str]], ...] = tuple(
            (statement(sql), bind_names(sql)) for sql in config.queries.unbind_statements
        )
        self._list_binds = bind_names(config.queries.list_bindings)
        self._columns = config.columns.mapped()
        self._tz: tzinfo = config.database.tz()
        # Tables the unbind statements change that cannot roll back (MyISAM),
        # found by check(); None until it ran.
        self._non_transactional: tuple[str, ...] | None = (
            None if config.database.backend in ("mysql", "mariadb") else ()
        )
        # Request ids whose failed attempt left changes that could not roll back.
        self._partial: set[str] = set()
        self._numbers = (
            None if config.queries.numbers is None else statement(config.queries.numbers)
        )
        routing = config.routing
        self._provider = Provider(
            provider_id=config.provider.id,
            name=config.provider.name,
            category=config.provider.category,
            implementation=self,
            list_numbers=None if self._numbers is None else self.list_numbers,
            snapshot_interval=timedelta(
                seconds=86400.0 if routing is None else routing.snapshot_interval_s
            ),
        )

    @classmethod
    async def open(cls, config: SiteConfig, *, check: bool = True) -> SqlSite:
        """Connect to the site's database and, unless ``check`` is False, check
        that the queries match the configuration.

        Raises:
            MappingError: a statement fails against the database, or
                ``list_bindings`` lacks a mapped column (all of them named).
            DatabaseUnavailableError: the database cannot be reached (or a
                SQLite file does not exist).
            ImportError: SQLAlchemy or the driver is not installed.
        """
        from onecert.adapters.sql._db import (  # noqa: PLC0415  # SQLAlchemy is imported only here
            Database,
            identifiers,
        )

        names = identifiers(config.queries.list_bindings, *config.queries.unbind_statements)
        site = cls(config, Database(config.database, names=names))
        try:
            if check:
                await site.check()
        except BaseException:
            await site.close()
            raise
        return site

    @property
    def provider(self) -> Provider:
        """The SDK :class:`~onecert.sdk.Provider` to serve."""
        return self._provider

    @property
    def config(self) -> SiteConfig:
        return self._config

    @property
    def non_transactional(self) -> tuple[str, ...] | None:
        """The tables the unbind statements change that cannot roll back
        ("name (ENGINE)"); None on MySQL/MariaDB until :meth:`check` ran."""
        return self._non_transactional

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (for tests and instrumentation)."""
        return self._db.engine

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ start-up

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

    def _unbind_key(self, index: int) -> str:
        return "queries.unbind" if len(self._unbinds) == 1 else f"queries.unbind[{index}]"

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

    # --------------------------------------------------------------- calls

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

    def _limit(self, info: CallInfo) -> float:
        # The database may use the whole statement timeout, unless the
        # gateway's deadline comes first: then the statement ends with it.
        limit = self._config.database.statement_timeout_s
        remaining = info.time_remaining()
        if remaining is not None:
            limit = min(limit, remaining)
        return max(limit, 0.001)

    async def list_numbers(self) -> AsyncIterator[str]:
        """Every number ``queries.numbers`` returns, as E.164 (others are left out).

        Rows are streamed (a server-side cursor where the driver has one), so
        memory does not grow with the site's size.
        """
        if self._numbers is None:
            raise RuntimeError("queries.numbers is not configured")
        country = self._config.default_country
        async with self._db.engine.connect() as conn:
            result = await conn.stream(self._numbers)
            async for row in result:
                msisdn = normalize_phone(row[0], default_country=country)
                if msisdn is not None:
                    yield msisdn

    async def list_bindings(self, msisdn: str, info: CallInfo) -> list[Binding]:
        """Every account the site's ``list_bindings`` query returns for ``msisdn``."""
        try:
            fetched = await self._db.fetch(
                self._list,
                self._params(self._list_binds, msisdn),
                limit=self._limit(info),
                max_rows=self._config.queries.max_rows,
            )
        except DatabaseUnavailableError as exc:
            raise Unavailable(f"list_bindings: {exc}") from None
        except QueryFailedError as exc:
            # The operator's log names the cause (the column, the table); the
            # gateway gets only INTERNAL.
            log.error("queries.list_bindings failed", cause=str(exc))  # noqa: TRY400  # the cause names the column; a traceback adds nothing
            raise QueryFailedError(f"queries.list_bindings failed: {exc}") from None
        if fetched.truncated:
            log.warning(
                "list_bindings returned more rows than queries.max_rows; the rest are ignored",
                max_rows=self._config.queries.max_rows,
            )
        index = {name: i for i, name in enumerate(fetched.columns)}
        bindings: list[Binding] = []
        seen: set[str] = set()
        dropped = 0
        for row in fetched.rows:
            values = {key: row[index[col]] for key, col in self._columns.items()}
            binding = self._binding(values, msisdn)
            if binding is None:
                dropped += 1
            elif binding.account_ref not in seen:
                seen.add(binding.account_ref)
                bindings.append(binding)
        if dropped:
            log.info("rows dropped", count=dropped)
        return bindings

    def _ref(self, values: Mapping[str, Any], msisdn: str) -> str | None:
        """The row's account ref, or None when the row is not this number's account."""
        if "phone" in values:
            stored = normalize_phone(values["phone"], default_country=self._config.default_country)
            if stored != msisdn:
                # The query matched a row holding another number (a LIKE, a
                # loose comparison): not this number's account.
                return None
        ref = _text(values["account_ref"])
        if not ref or len(ref) > _MAX_ACCOUNT_REF:
            log.error(
                "a row's account_ref is empty or longer than 256 characters; row skipped",
                column=self._columns["account_ref"],
            )
            return None
        return ref

    def _binding(self, values: Mapping[str, Any], msisdn: str) -> Binding | None:
        defaults = self._config.defaults
        ref = self._ref(values, msisdn)
        if ref is None:
            return None
        display = values.get("display_name")
        name = (_text(display) or "").strip()[:_MAX_DISPLAY_NAME] if display is not None else ""
        kind = defaults.kind
        if values.get("kind") is not None:
            try:
                kind = to_kind(values["kind"], aliases=defaults.kinds) or kind
            except ValueError as exc:
                log.warning(
                    "unknown kind; the default is used",
                    column=self._columns["kind"],
                    problem=str(exc),
                )
        unbindable = defaults.unbindable
        if values.get("unbindable") is not None:
            try:
                flag = to_bool(values["unbindable"])
            except ValueError as exc:
                log.warning(
                    "unreadable flag; the default is used",
                    column=self._columns["unbindable"],
                    problem=str(exc),
                )
            else:
                unbindable = defaults.unbindable if flag is None else flag
        bound_at, not_before, not_after = self._binding_time(values)
        return Binding(
            account_ref=ref,
            kind=kind,
            bound_at=bound_at,
            display_name=name,
            last_used_at=self._timestamp(values, "last_used_at"),
            unbindable=unbindable,
            bound_not_before=not_before,
            bound_not_after=not_after,
        )

    def _binding_time(
        self, values: Mapping[str, Any]
    ) -> tuple[datetime | None, datetime | None, datetime | None]:
        bound_at = self._timestamp(values, "bound_at")
        low = self._timestamp(values, "bound_not_before")
        high = self._timestamp(values, "bound_not_after")
        contradiction = (
            (low is not None and high is not None and high < low)
            or (bound_at is not None and low is not None and bound_at < low)
            or (bound_at is not None and high is not None and bound_at > high)
        )
        if contradiction:
            # Times that disagree say nothing true about whose account it is:
            # sent as unknown, so its details are never shown.
            log.warning(
                "a row's binding times contradict each other; sent as unknown",
                columns=[
                    self._columns[k]
                    for k in ("bound_at", "bound_not_before", "bound_not_after")
                    if k in self._columns
                ],
            )
            return None, None, None
        return bound_at, low, high

    def _timestamp(self, values: Mapping[str, Any], key: str) -> datetime | None:
        if key not in values:
            return None
        spec = self._config.times.get(key)
        try:
            if spec is None:
                return to_utc_as(values[key], timezone=self._tz)
            return to_utc_as(
                values[key],
                format=spec.format,
                zero_is_null=spec.zero_is_null,
                offset_s=spec.offset_s,
                timezone=self._tz if spec.timezone is None else _zone(spec.timezone),
            )
        except (ValueError, TypeError) as exc:
            log.warning(
                "unreadable timestamp; left out", column=self._columns[key], problem=str(exc)
            )
            return None

    async def _bound(
        self, conn: AsyncConnection, params: Mapping[str, Any], msisdn: str
    ) -> set[str]:
        """The accounts ``list_bindings`` finds bound to ``msisdn``, in ``conn``'s transaction."""
        result = await conn.execute(self._list, dict(params))
        columns = tuple(result.keys())
        index = {name: i for i, name in enumerate(columns)}
        refs: set[str] = set()
        for row in result.fetchmany(self._config.queries.max_rows):
            values = {key: row[index[col]] for key, col in self._columns.items()}
            ref = self._ref(values, msisdn)
            if ref is not None:
                refs.add(ref)
        return refs

    async def unbind(self, request: UnbindRequest, info: CallInfo) -> UnbindResult:
        """Run the site's ``unbind`` statements in one transaction.

        They may change several rows and columns of the account; they must
        leave every other account its number, and leave this account without
        it. Rows changed: DONE; none: REJECTED.
        """
        account_ref: str | int = request.account_ref
        if self._config.queries.account_ref_type == "integer":
            ref = request.account_ref
            if not _INTEGER_REF.fullmatch(ref) or not -_INT64 <= int(ref) < _INT64:
                # Not an id this site could have given: no query needed.
                return UnbindResult.rejected(NO_SUCH_ACCOUNT)
            account_ref = int(ref)
        msisdn = request.msisdn
        list_params = self._params(self._list_binds, msisdn)
        statements = [
            (clause, self._params(binds, msisdn, account_ref=account_ref))
            for clause, binds in self._unbinds
        ]
        max_rows = self._config.queries.max_unbind_rows
        progress = _Progress()

        async def work(conn: AsyncConnection) -> _Applied:
            before = await self._bound(conn, list_params, msisdn)
            for index, (clause, params) in enumerate(statements):
                progress.stage = self._unbind_key(index)
                progress.rows += max(0, int((await conn.execute(clause, params)).rowcount))
            progress.stage = "queries.list_bindings (after the unbind)"
            after = await self._bound(conn, list_params, msisdn)
            others = frozenset(before - after - {request.account_ref})
            still_bound = request.account_ref in after
            rows = progress.rows
            fine = not others and rows <= max_rows and not (rows and still_bound)
            if fine:
                await conn.commit()
                return _Applied(rows, others, still_bound, committed=True)
            await conn.rollback()
            if self._non_transactional:
                # The rollback undid only what it could: what is bound now
                # is what the answer must say.
                now = await self._bound(conn, list_params, msisdn)
                await conn.rollback()
                others = frozenset(before - now - {request.account_ref})
                still_bound = request.account_ref in now
            return _Applied(rows, others, still_bound, committed=False)

        try:
            applied = await self._db.run(work, limit=self._limit(info))
        except DatabaseUnavailableError as exc:
            if progress.rows:
                self._note_partial(request.request_id)
                log.error(  # noqa: TRY400  # the note says what stands; no traceback needed
                    "unbind interrupted after changing rows",
                    statement=progress.stage,
                    rollback=self._rollback_note(),
                )
            raise Unavailable(f"unbind: {exc}") from None
        except QueryFailedError as exc:
            if exc.invalid_value and not progress.rows:
                # The database cannot even hold this ref (an id out of the
                # column's range): no account of this site has it, and the
                # statement changed nothing.
                log.info("unbind refused: the database cannot hold the account ref")
                return UnbindResult.rejected(NO_SUCH_ACCOUNT)
            note = "; nothing changed"
            if progress.rows:
                self._note_partial(request.request_id)
                note = self._rollback_note()
            log.error(  # noqa: TRY400  # the cause names the column; a traceback adds nothing
                "queries.unbind failed", statement=progress.stage, cause=str(exc), rollback=note
            )
            raise QueryFailedError(
                f"{progress.stage} failed during an unbind: {exc}{note}"
            ) from None
        return self._answer(applied, request.request_id, resumed=request.resumed)

    def _note_partial(self, request_id: str) -> None:
        # An attempt that failed after changing rows of a table that cannot
        # roll back: those changes stand, so a redelivery that finds nothing
        # left to change finished this unbind rather than found no account.
        if self._non_transactional:
            self._partial.add(request_id)

    def _answer(self, applied: _Applied, request_id: str, *, resumed: bool) -> UnbindResult:
        if applied.committed:
            if applied.count:
                self._partial.discard(request_id)
                return UnbindResult.done()
            if request_id in self._partial and not applied.still_bound:
                self._partial.discard(request_id)
                log.info("unbind finished by an earlier attempt whose changes stand")
                return UnbindResult.done()
            if resumed and not applied.still_bound:
                # An earlier attempt for this request id started and its
                # answer was never recorded (the process was killed after
                # the commit): the number is detached, as that attempt
                # would have answered. Nothing tells that commit apart from
                # an account detached some other way; both are detached.
                log.info("unbind resumed: the number is already detached from the account")
                return UnbindResult.done()
            return UnbindResult.rejected(NO_SUCH_ACCOUNT)
        problems = []
        if applied.others:
            problems.append(
                f"it also detached the number from {len(applied.others)} other account(s)"
            )
        if applied.count > self._config.queries.max_unbind_rows:
            problems.append(
                f"it changed {applied.count} rows (queries.max_unbind_rows is "
                f"{self._config.queries.max_unbind_rows})"
            )
        if applied.still_bound:
            problems.append(
                f"it changed {applied.count} rows but list_bindings still finds the account "
                "with the number (a phone column it reads is not cleared)"
            )
        problem = "queries.unbind refused: " + "; ".join(problems)
        if not self._non_transactional:
            log.error(problem, rollback=self._rollback_note())
            raise QueryFailedError(problem + self._rollback_note())
        # The rollback undid nothing: answer with what happened, so that the
        # receipt is true and a redelivery gets this same final answer.
        log.error(problem, rollback=self._rollback_note(), count=applied.count)
        self._partial.discard(request_id)
        if not applied.still_bound:
            return UnbindResult.done()
        return UnbindResult.rejected(
            "the site could not detach the number from this account; its operator is told"
        )

    def _rollback_note(self) -> str:
        if self._non_transactional:
            return (
                "; NOT rolled back: changes to "
                + ", ".join(self._non_transactional)
                + " stand (these tables cannot roll back)"
            )
        if self._non_transactional is None:
            return (
                "; rolled back, unless a table cannot roll back (MyISAM: the start-up check says)"
            )
        return "; rolled back, nothing changed"


def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


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


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(value)
