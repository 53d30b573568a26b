"""A site's user database as a ``BindingProvider``: the two SDK functions over SQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import structlog

from onecert.adapters.sql._config import SiteConfig, bind_names
from onecert.adapters.sql._errors import (
    DatabaseUnavailableError,
    QueryFailedError,
)
from onecert.adapters.sql._phone import normalize_phone
from onecert.adapters.sql._rows import RowReader
from onecert.adapters.sql._startup import PROBE_NUMBER, SiteChecks
from onecert.sdk import (
    Binding,
    CallInfo,
    Provider,
    Unavailable,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk._lifecycle import AsyncResource

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
    from sqlalchemy.sql.elements import TextClause

    from onecert.adapters.sql._db import Database

__all__ = ["NO_SUCH_ACCOUNT", "PROBE_NUMBER", "SqlSite"]

log = structlog.get_logger("onecert.adapters.sql")

NO_SUCH_ACCOUNT: Final = "no such account bound to this number"
_INTEGER_REF: Final = re.compile(r"-?[0-9]{1,19}")
_INT64: Final = 2**63


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


class SqlSite(SiteChecks, AsyncResource):
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
        self._rows = RowReader(config)
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

    async def _exit(self) -> None:
        await self.close()

    # --------------------------------------------------------------- calls

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
            binding = self._rows.binding(values, msisdn)
            if binding is None:
                dropped += 1
            elif binding.account_ref not in seen:
                seen.add(binding.account_ref)
                bindings.append(binding)
        if dropped:
            log.info("rows dropped", count=dropped)
        return bindings

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
            ref = self._rows.ref(values, msisdn)
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
