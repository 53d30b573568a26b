"""A site's user database as a ``BindingProvider``: the two SDK functions over SQL."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, tzinfo
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import structlog

from onecert.adapters.sql._config import SiteConfig, bind_names
from onecert.adapters.sql._errors import (
    DatabaseUnavailableError,
    MappingError,
    QueryFailedError,
)
from onecert.adapters.sql._phone import normalize_phone, phone_variants
from onecert.adapters.sql._values import to_bool, to_kind, to_utc
from onecert.sdk import (
    Binding,
    CallInfo,
    Provider,
    Unavailable,
    UnbindRequest,
    UnbindResult,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from onecert.adapters.sql._db import Database

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
        self._unbind = statement(config.queries.unbind)
        self._list_binds = bind_names(config.queries.list_bindings)
        self._unbind_binds = bind_names(config.queries.unbind)
        self._columns = config.columns.mapped()
        self._tz: tzinfo = config.database.tz()
        self._provider = Provider(
            provider_id=config.provider.id,
            name=config.provider.name,
            category=config.provider.category,
            implementation=self,
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
        from onecert.adapters.sql._db import Database  # noqa: PLC0415  # SQLAlchemy is imported only here

        site = cls(config, Database(config.database))
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

        Both statements must compile; ``list_bindings`` runs once for a number
        no one holds and must return every mapped column; ``unbind`` runs once
        for an account that cannot exist, in a transaction that is rolled back,
        and must match no row.

        Raises:
            MappingError: the first mismatch, with the keys and columns named.
            DatabaseUnavailableError: the database cannot be reached.
        """
        queries = self._config.queries
        for key, clause in (("list_bindings", self._list), ("unbind", self._unbind)):
            try:
                self._db.compile(clause)
            except QueryFailedError as exc:
                raise MappingError(f"queries.{key} {exc}") from None
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
        probe_ref: str | int = (
            _PROBE_ACCOUNT_INTEGER if queries.account_ref_type == "integer" else _PROBE_ACCOUNT_TEXT
        )
        params = self._params(self._unbind_binds, PROBE_NUMBER, account_ref=probe_ref)
        try:
            count = await self._db.execute(
                self._unbind, params, limit=limit, max_rows=0, commit=False, reveal=True
            )
        except QueryFailedError as exc:
            hint = (
                "; if the account column is not text (an integer id), set "
                "queries.account_ref_type = 'integer' or compare as text in SQL"
                if queries.account_ref_type == "text"
                else ""
            )
            raise MappingError(
                f"queries.unbind fails against the database (checked in a transaction "
                f"that was rolled back): {exc}{hint}"
            ) from None
        if count != 0:
            raise MappingError(
                f"queries.unbind matched {count} rows for an account and a number that do "
                "not exist (rolled back); it must match only the account with that number"
            )
        if "bound_at" not in self._columns:
            log.warning(
                "columns.bound_at is not mapped: without it the gateway cannot tell whose "
                "accounts these are and hides their details"
            )
        log.info(
            "queries match the mapping",
            backend=self._db.backend,
            columns=list(fetched.columns),
        )
        return fetched.columns

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

    def _binding(self, values: Mapping[str, Any], msisdn: str) -> Binding | None:
        defaults = self._config.defaults
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
        return Binding(
            account_ref=ref,
            kind=kind,
            bound_at=self._timestamp(values, "bound_at"),
            display_name=name,
            last_used_at=self._timestamp(values, "last_used_at"),
            unbindable=unbindable,
        )

    def _timestamp(self, values: Mapping[str, Any], key: str) -> datetime | None:
        if key not in values:
            return None
        try:
            return to_utc(values[key], timezone=self._tz)
        except (ValueError, TypeError) as exc:
            log.warning(
                "unreadable timestamp; left out", column=self._columns[key], problem=str(exc)
            )
            return None

    async def unbind(self, request: UnbindRequest, info: CallInfo) -> UnbindResult:
        """Run the site's ``unbind`` statement: one row DONE, none REJECTED."""
        account_ref: str | int = request.account_ref
        if self._config.queries.account_ref_type == "integer":
            ref = request.account_ref
            if not _INTEGER_REF.fullmatch(ref) or not -_INT64 <= int(ref) < _INT64:
                # Not an id this site could have given: no query needed.
                return UnbindResult.rejected(NO_SUCH_ACCOUNT)
            account_ref = int(ref)
        params = self._params(self._unbind_binds, request.msisdn, account_ref=account_ref)
        try:
            count = await self._db.execute(
                self._unbind, params, limit=self._limit(info), max_rows=1
            )
        except DatabaseUnavailableError as exc:
            raise Unavailable(f"unbind: {exc}") from None
        except QueryFailedError as exc:
            if exc.invalid_value:
                # The database cannot even hold this ref (an id out of the
                # column's range): no account of this site has it, and the
                # statement changed nothing.
                log.info("unbind refused: the database cannot hold the account ref")
                return UnbindResult.rejected(NO_SUCH_ACCOUNT)
            raise QueryFailedError(f"queries.unbind failed: {exc}") from None
        if count == 1:
            return UnbindResult.done()
        if count == 0:
            return UnbindResult.rejected(NO_SUCH_ACCOUNT)
        raise QueryFailedError(
            f"queries.unbind matched {count} rows (at most 1 is allowed); rolled back"
        )


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(value)
