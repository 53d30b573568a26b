"""The SQL adapter's configuration: one TOML file, validated into frozen dataclasses.

Every error names the key at fault (``queries.unbind``, ``server.tls.cert``);
relative paths, including a relative SQLite database, are resolved against
the directory of the file, so a config travels with its database and keys.
The keys, with a commented example, are in ``docs/sql-adapter.md``.

Nothing here imports SQLAlchemy: a config can be checked where only the SDK
is installed. What needs the database (does the query return the mapped
columns?) is checked when the adapter opens it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from onecert.adapters.sql._errors import ConfigError
from onecert.adapters.sql._phone import DEFAULT_COUNTRY, is_country_code
from onecert.sdk import BindingKind, ProviderCategory
from onecert.sdk._core import check_adapter_id
from onecert.sdk._dburl import database_url
from onecert.sdk._tls import TLSFiles
from onecert.sdk._tomlconfig import Table as _Table
from onecert.sdk._tomlconfig import load_toml, setting

__all__ = [
    "ColumnsConfig",
    "ConfigError",
    "DatabaseConfig",
    "DefaultsConfig",
    "PhonesConfig",
    "ProviderSection",
    "QueriesConfig",
    "RoutingSection",
    "ServerSection",
    "SiteConfig",
    "TLSFiles",
    "TimeFormat",
    "load_config",
    "parse_config",
]


# Sync spellings a site may copy from its own application settings, and the
# async driver the adapter uses for each.
_ASYNC_SCHEMES: Final = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mysql+aiomysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
    "mariadb+aiomysql": "mariadb+aiomysql",
}
_BACKEND_DRIVERS: Final = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
}
# SQLAlchemy's own rule for named parameters in text(): ":name", not "::"
# (a PostgreSQL cast) and not "\:" (an escaped colon).
_BIND: Final = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
_LEADING_COMMENTS: Final = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_LISTEN: Final = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):([0-9]{1,5})")
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_PASSWORD: Final = re.compile(r"(://[^:/@]*:)[^@/]*@")

LIST_BINDS: Final = frozenset({"phones", "msisdn"})
UNBIND_BINDS: Final = frozenset({"account_ref", "phones", "msisdn"})
MAPPED_COLUMNS: Final = (
    "account_ref",
    "display_name",
    "kind",
    "bound_at",
    "bound_not_before",
    "bound_not_after",
    "last_used_at",
    "unbindable",
    "phone",
)
# The mapped columns that hold a time, and so may have a [times.<key>] format.
TIME_COLUMNS: Final = ("bound_at", "bound_not_before", "bound_not_after", "last_used_at")
TIME_FORMATS: Final = ("auto", "unix", "text")
# {phone:<column>} in a statement: the column with the formatting in
# [phones] strip removed (and full-width forms read as ASCII with
# [phones] fullwidth), so ":phones" compact forms match it.
_PHONE_MACRO: Final = re.compile(r"\{phone:([^{}]+)\}")
DEFAULT_STRIP: Final = " -()./"
# Full-width forms people type on Chinese keyboards, and their ASCII.
_FULLWIDTH: Final = {chr(0xFF10 + i): str(i) for i in range(10)} | {
    "\uff0b": "+",  # FULLWIDTH PLUS SIGN
    "\uff0d": "-",  # FULLWIDTH HYPHEN-MINUS
    "\uff08": "(",  # FULLWIDTH LEFT PARENTHESIS
    "\uff09": ")",  # FULLWIDTH RIGHT PARENTHESIS
    "\u3000": " ",  # IDEOGRAPHIC SPACE
}


def hide_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    return _PASSWORD.sub(r"\1***@", url)


def bind_names(sql: str) -> set[str]:
    """The named parameters SQLAlchemy binds in ``sql`` (``:phones`` -> "phones")."""
    return set(_BIND.findall(sql))


def _first_word(sql: str) -> str:
    comments = _LEADING_COMMENTS.match(sql)
    rest = sql[comments.end() :] if comments else sql
    match = re.match(r"\w+", rest)
    return match.group(0).upper() if match else ""


@dataclass(frozen=True)
class ProviderSection:
    """Who the site is to the gateway and to citizens (``[provider]``)."""

    id: str
    name: str
    category: ProviderCategory


@dataclass(frozen=True)
class DatabaseConfig:
    """The site's user database (``[database]``).

    Attributes:
        url: SQLAlchemy async URL (sync spellings already mapped, a relative
            SQLite path already resolved).
        statement_timeout_s: the longest any one query may run.
        pool_size: connections kept open.
        timezone: IANA name naive timestamps in the database are read in.
    """

    url: str
    statement_timeout_s: float = setting(2.0, seconds=True, maximum=300)
    pool_size: int = setting(5, minimum=1, maximum=100)
    timezone: str = "UTC"

    @property
    def backend(self) -> str:
        """ "sqlite", "postgresql", "mysql" or "mariadb"."""
        return self.url.partition("://")[0].partition("+")[0]

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return hide_password(self.url)

    def tz(self) -> tzinfo:
        return UTC if self.timezone == "UTC" else ZoneInfo(self.timezone)


@dataclass(frozen=True)
class QueriesConfig:
    """The site's two statements (``[queries]``).

    Attributes:
        list_bindings: a SELECT using ``:phones`` (and optionally ``:msisdn``).
        unbind: an UPDATE or DELETE using ``:account_ref`` and ``:phones``
            (or ``:msisdn``), or a list of them run in one transaction (the
            number in several tables). Together they may change several rows
            and columns of one account, never another account's.
        account_ref_type: how ``:account_ref`` is bound: "text", or
            "integer" for integer id columns (a non-integer ref is then
            rejected without a query).
        max_rows: rows read from ``list_bindings`` at most.
        max_unbind_rows: rows one unbind may change at most (all its
            statements together): a backstop against a runaway statement.
    """

    list_bindings: str
    unbind: str | tuple[str, ...]
    account_ref_type: Literal["text", "integer"] = "text"
    max_rows: int = setting(100, minimum=1, maximum=10_000)
    max_unbind_rows: int = setting(10, minimum=1, maximum=1000)
    # For routing: a SELECT without parameters whose first column is every
    # phone bound at the site (read as a stream for each filter snapshot).
    numbers: str | None = None

    @property
    def unbind_statements(self) -> tuple[str, ...]:
        """The unbind statements, run in this order in one transaction."""
        return (self.unbind,) if isinstance(self.unbind, str) else self.unbind


@dataclass(frozen=True)
class ColumnsConfig:
    """Which result column of ``list_bindings`` holds what (``[columns]``).

    Only ``account_ref`` is required. ``phone``, when mapped, is read back
    and rows holding another number are dropped.
    """

    account_ref: str
    display_name: str | None = None
    kind: str | None = None
    bound_at: str | None = None
    bound_not_before: str | None = None
    bound_not_after: str | None = None
    last_used_at: str | None = None
    unbindable: str | None = None
    phone: str | None = None

    def mapped(self) -> dict[str, str]:
        """``{"account_ref": "id", ...}`` for every mapped column."""
        return {key: column for key in MAPPED_COLUMNS if (column := getattr(self, key)) is not None}


@dataclass(frozen=True)
class TimeFormat:
    """How one time column is stored (``[times.<key>]``).

    Attributes:
        format: "auto" (the rules in the docs: native types, epoch numbers,
            ISO 8601 text), "unix" (epoch seconds, as a number or as digit
            text) or "text" (ISO 8601 text only).
        zero_is_null: 0, "0" and "" mean "never": no time (PHP sites store
            0 for a date they do not have).
        offset_s: seconds added to every value read, for a site that stored
            a shifted clock (ECShop's ``gmtime()`` is UTC minus the server's
            offset: ``offset_s = 28800`` on a Beijing-time server).
        timezone: the zone naive values are read in; None for
            ``database.timezone``.
    """

    format: Literal["auto", "unix", "text"] = "auto"
    zero_is_null: bool = False
    offset_s: int = setting(0, minimum=-86_400, maximum=86_400)
    timezone: str | None = None


@dataclass(frozen=True)
class PhonesConfig:
    """How the site's phone columns hold numbers (``[phones]``).

    Attributes:
        default_country: numbers stored without a country code are of this one.
        strip: characters ``{phone:<column>}`` removes from the column.
        fullwidth: ``{phone:<column>}`` also reads full-width digits, plus,
            hyphen, parentheses and the ideographic space as ASCII.
    """

    default_country: str = DEFAULT_COUNTRY
    strip: str = DEFAULT_STRIP
    fullwidth: bool = False

    def expression(self, column: str) -> str:
        """SQL for ``column`` in the compact form ``:phones`` holds (REPLACE works
        the same on SQLite, PostgreSQL and MySQL/MariaDB)."""
        sql = column.strip()
        if self.fullwidth:
            for wide, ascii_ in _FULLWIDTH.items():
                sql = f"REPLACE({sql}, '{wide}', '{ascii_}')"
        for char in self.strip:
            sql = f"REPLACE({sql}, '{char}', '')"
        return sql


@dataclass(frozen=True)
class DefaultsConfig:
    """Constants for what no column says, or a NULL says (``[defaults]``),
    and site values for kinds (``[kinds]``)."""

    kind: BindingKind = BindingKind.LOGIN
    unbindable: bool = True
    kinds: Mapping[str, BindingKind] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerSection:
    """How the adapter serves the gateway (``[server]``).

    ``idempotency_db`` None keeps unbind answers in memory (``":memory:"``
    in the file; development only).
    """

    gateway_jwks: Path
    listen: str = "[::]:50061"
    gateway_issuer: str = "onecert-gateway"
    tls: TLSFiles | None = None
    # What `onecert provider join --dir DIR` wrote: serve with that certificate
    # (answering the gateway's identity only) and renew it; instead of [server.tls].
    credentials: Path | None = None
    insecure: bool = False
    idempotency_db: Path | None = None
    grace_s: float = setting(5.0, seconds=True, allow_zero=True)
    max_concurrent_rpcs: int | None = setting(None, minimum=1)
    log_level: str = "info"
    log_json: bool = False


@dataclass(frozen=True)
class RoutingSection:
    """Publishing the site's routing filter to the gateway (``[routing]``).

    Needs ``queries.numbers``. The adapter publishes a snapshot at start and
    every ``snapshot_interval_s``, so the gateway asks the site only about
    numbers it may hold.
    """

    # The gateway's HOST:PORT.
    gateway: str
    snapshot_interval_s: float = setting(86400.0, seconds=True)
    # None: the SDK's default, 0.01% below 100,000 numbers and 1% from there.
    fp_rate: float | None = None
    # Mutual TLS towards the gateway: its CA, and the site's client certificate.
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    # Plaintext with the development principal header (development gateways only).
    insecure: bool = False


@dataclass(frozen=True)
class SiteConfig:
    """The whole configuration of one site; build it with :func:`load_config`."""

    provider: ProviderSection
    database: DatabaseConfig
    queries: QueriesConfig
    columns: ColumnsConfig
    server: ServerSection
    defaults: DefaultsConfig = field(default_factory=DefaultsConfig)
    phones: PhonesConfig = field(default_factory=PhonesConfig)
    times: Mapping[str, TimeFormat] = field(default_factory=dict)
    routing: RoutingSection | None = None

    @property
    def default_country(self) -> str:
        """Numbers stored without a country code are of this country."""
        return self.phones.default_country


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> SiteConfig:
    """Read and validate a site's TOML configuration.

    Args:
        path: the file; relative paths inside it are resolved against its
            directory, and the idempotency database defaults to
            ``<name>.idempotency.db`` beside it.
        environ: where ``database.url_env`` is looked up (default
            ``os.environ``).

    Raises:
        ConfigError: unreadable file, invalid TOML, or an invalid key.
    """
    return load_toml(
        path,
        lambda data, base: parse_config(data, base_dir=base, name=Path(path).stem, environ=environ),
    )


def parse_config(
    data: Mapping[str, Any],
    *,
    base_dir: str | Path,
    name: str = "sql-adapter",
    environ: Mapping[str, str] | None = None,
) -> SiteConfig:
    """Validate a parsed TOML document (see :func:`load_config`).

    Args:
        data: the document.
        base_dir: what relative paths are relative to.
        name: the config's name, for the default idempotency database.
        environ: where ``database.url_env`` is looked up.
    """
    base = Path(base_dir)
    root = _Table(data, "", base)
    root.refuse_unknown(_TABLES)

    provider = _parse_provider(root.table("provider", required=True))
    database = _parse_database(
        root.table("database", required=True), os.environ if environ is None else environ
    )
    phones = _parse_phones(root.table("phones"))
    queries = _parse_queries(root.table("queries", required=True), phones)
    columns = _parse_columns(root.table("columns", required=True))
    times = _parse_times(root.table("times"), columns)
    defaults = _parse_defaults(root.table("defaults"), root.table("kinds"))
    server = _parse_server(root.table("server", required=True), base, name)
    routing_t = root.optional_table("routing")
    routing = None if routing_t is None else _parse_routing(routing_t, queries)
    root.finish()
    return SiteConfig(
        provider=provider,
        database=database,
        queries=queries,
        columns=columns,
        server=server,
        defaults=defaults,
        phones=phones,
        times=times,
        routing=routing,
    )


def _parse_routing(t: _Table, queries: QueriesConfig) -> RoutingSection:
    if queries.numbers is None:
        raise ConfigError("[routing] needs queries.numbers: the filter is built from it")
    config = t.read_whole(RoutingSection)
    if _LISTEN.fullmatch(config.gateway) is None:
        raise ConfigError(f"{t.where('gateway')} must be HOST:PORT, not {config.gateway!r}")
    files = (config.ca, config.cert, config.key)
    if config.insecure and any(files):
        raise ConfigError(f"{t.where('insecure')} = true and TLS files contradict")
    if not config.insecure and None in files:
        raise ConfigError(
            f"{t.where('ca')}, {t.where('cert')} and {t.where('key')} are required (mutual "
            f"TLS towards the gateway); plaintext needs {t.where('insecure')} = true"
        )
    if not 60 <= config.snapshot_interval_s <= 7 * 86400:
        raise ConfigError(f"{t.where('snapshot_interval_s')} must be from 60 to 604800 seconds")
    if config.fp_rate is not None and not 0 < config.fp_rate <= 0.5:
        raise ConfigError(f"{t.where('fp_rate')} must be above 0 and at most 0.5")
    return config


def _parse_provider(t: _Table) -> ProviderSection:
    provider_id = t.string("id")
    try:
        check_adapter_id(provider_id, t.where("id"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    name = t.string("name")
    category = t.string("category", "other").lower()
    try:
        parsed = ProviderCategory(category)
    except ValueError:
        allowed = ", ".join(c.value for c in ProviderCategory)
        raise ConfigError(f"{t.where('category')} must be one of {allowed}") from None
    t.finish()
    return ProviderSection(id=provider_id, name=name.strip(), category=parsed)


def async_url(url: str, *, base: Path, key: str = "database.url") -> str:
    """The SQLAlchemy async URL for ``url``: sync spellings mapped to the
    async drivers, a relative SQLite path (or a plain file path) resolved
    against ``base``.

    Raises:
        ConfigError: an unsupported backend or driver, or no SQLite path.
    """
    # A plain file path is a SQLite file, as everywhere onecert takes a database.
    scheme, _, rest = database_url(url, base=base).partition("://")
    scheme = scheme.lower()
    mapped = _ASYNC_SCHEMES.get(scheme)
    if mapped is None:
        backend = scheme.partition("+")[0]
        if backend in _BACKEND_DRIVERS:
            raise ConfigError(
                f"{key}: the adapter uses the async driver {_BACKEND_DRIVERS[backend]}, "
                f"not {scheme}; write {_BACKEND_DRIVERS[backend]}:// or {backend}://"
            )
        raise ConfigError(
            f"{key}: unsupported database {backend!r}; the adapter supports sqlite, "
            "postgresql, mysql and mariadb (statement timeouts are implemented for those)"
        )
    if mapped != "sqlite+aiosqlite":
        return f"{mapped}://{rest}"
    # SQLite: "sqlite:///relative.db" or "sqlite:////absolute.db".
    if not rest.startswith("/"):
        raise ConfigError(f"{key}: a SQLite URL has no host: sqlite:///path/to/site.db")
    path, qsep, query = rest[1:].partition("?")
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        raise ConfigError(
            f"{key}: an in-memory SQLite database holds no site's users; name the file"
        )
    file = Path(path).expanduser()
    if not file.is_absolute():
        file = base / file
    return f"{mapped}:///{file}{qsep}{query}"


def _parse_database(t: _Table, environ: Mapping[str, str]) -> DatabaseConfig:
    has_url, has_env = t.has("url"), t.has("url_env")
    if has_url == has_env:
        raise ConfigError(
            "database needs exactly one of url (a SQLAlchemy URL) or url_env (the "
            "environment variable holding it)"
        )
    if has_url:
        raw = t.string("url")
        key = t.where("url")
    else:
        variable = t.string("url_env")
        raw = environ.get(variable, "")
        if not raw:
            raise ConfigError(
                f"{t.where('url_env')} names the environment variable {variable}, which is not set"
            )
        key = f"{t.where('url_env')} ({variable})"
    config = t.read_whole(DatabaseConfig, url=async_url(raw, base=t.base, key=key))
    _check_zone(t, "timezone", config.timezone, "'Asia/Shanghai' or 'UTC'")
    return config


def _check_zone(t: _Table, key: str, zone: str | None, examples: str = "'Asia/Shanghai'") -> None:
    if zone is None or zone == "UTC":
        return
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{t.where(key)} must be an IANA time zone such as {examples}, not {zone!r}"
        ) from None


def _check_statement(
    t: _Table,
    key: str,
    *,
    verbs: Sequence[str],
    allowed: frozenset[str],
    required: Sequence[str],
    one_of: Sequence[str] = (),
) -> str:
    sql: str = t.string(key).strip()
    return _check_sql(
        sql, t.where(key), verbs=verbs, allowed=allowed, required=required, one_of=one_of
    )


def _check_sql(
    sql: str,
    where: str,
    *,
    verbs: Sequence[str],
    allowed: frozenset[str],
    required: Sequence[str],
    one_of: Sequence[str] = (),
) -> str:
    verb = _first_word(sql)
    if verb not in verbs:
        raise ConfigError(
            f"{where} must start with {' or '.join(verbs)}, not {verb or 'nothing'!r}"
        )
    names = bind_names(sql)
    unknown = sorted(names - allowed)
    if unknown:
        raise ConfigError(
            f"{where} uses {', '.join(':' + n for n in unknown)}; the adapter binds only "
            f"{', '.join(':' + n for n in sorted(allowed))}"
        )
    for needed in required:
        if needed not in names:
            raise ConfigError(f"{where} must use the bound parameter :{needed}")
    if one_of and not names.intersection(one_of):
        raise ConfigError(
            f"{where} must check the number with {' or '.join(':' + n for n in one_of)}: "
            "without it an account that changed its number since the lookup would lose "
            "its new one"
        )
    return sql


def _parse_phones(t: _Table) -> PhonesConfig:
    strip = t.raw("strip")
    if strip is None:
        strip = PhonesConfig.strip
    if (
        not isinstance(strip, str)
        or "'" in strip
        or "\\" in strip
        or any(c.isalnum() for c in strip)
    ):
        raise ConfigError(
            f"{t.where('strip')} must be a string of the separators to remove (default "
            f"{DEFAULT_STRIP!r}), with no letters, digits, quotes or backslashes"
        )
    config = t.read_whole(PhonesConfig, strip="".join(dict.fromkeys(strip)))
    if not is_country_code(config.default_country):
        raise ConfigError(
            f"{t.where('default_country')} must be an E.164 country code such as '86', "
            f"not {config.default_country!r}"
        )
    return config


def expand_phone_macros(sql: str, phones: PhonesConfig) -> str:
    """``sql`` with every ``{phone:<column>}`` replaced by its normalising expression."""
    return _PHONE_MACRO.sub(lambda m: phones.expression(m.group(1)), sql)


def _parse_queries(t: _Table, phones: PhonesConfig) -> QueriesConfig:
    list_sql = _check_statement(
        t, "list_bindings", verbs=("SELECT", "WITH"), allowed=LIST_BINDS, required=("phones",)
    )
    if not t.has("unbind"):
        raise ConfigError(f"{t.where('unbind')} is required")
    raw_unbind = t.raw("unbind")
    texts = raw_unbind if isinstance(raw_unbind, list) else [raw_unbind]
    if not texts or not all(isinstance(x, str) and x.strip() for x in texts):
        raise ConfigError(
            f"{t.where('unbind')} must be a statement, or a list of statements run in one "
            "transaction"
        )
    unbind_sqls = tuple(
        _check_sql(
            text_.strip(),
            t.where("unbind") if len(texts) == 1 else f"{t.where('unbind')}[{i}]",
            verbs=("UPDATE", "DELETE"),
            allowed=UNBIND_BINDS,
            required=("account_ref",),
            one_of=("phones", "msisdn"),
        )
        for i, text_ in enumerate(texts)
    )
    ref_type = t.string("account_ref_type", QueriesConfig.account_ref_type)
    if ref_type not in ("text", "integer"):
        raise ConfigError(f"{t.where('account_ref_type')} must be 'text' or 'integer'")
    unbind: str | tuple[str, ...] = tuple(expand_phone_macros(u, phones) for u in unbind_sqls)
    if not isinstance(raw_unbind, list):
        unbind = unbind[0]
    numbers = None
    if t.has("numbers"):
        numbers = expand_phone_macros(
            _check_statement(
                t, "numbers", verbs=("SELECT", "WITH"), allowed=frozenset(), required=()
            ),
            phones,
        )
    return t.read_whole(
        QueriesConfig,
        numbers=numbers,
        list_bindings=expand_phone_macros(list_sql, phones),
        unbind=unbind,
        account_ref_type="integer" if ref_type == "integer" else "text",
    )


def _parse_columns(t: _Table) -> ColumnsConfig:
    values = {key: t.string(key, None) for key in MAPPED_COLUMNS}
    account_ref = values.pop("account_ref")
    if account_ref is None:
        raise ConfigError(
            f"{t.where('account_ref')} is required: the column that identifies the account"
        )
    t.finish()
    return ColumnsConfig(account_ref=account_ref, **values)


def _parse_times(t: _Table, columns: ColumnsConfig) -> dict[str, TimeFormat]:
    times: dict[str, TimeFormat] = {}
    t.refuse_unknown(TIME_COLUMNS)
    mapped = columns.mapped()
    for key in t.names():
        spec = t.table(key)
        if key not in mapped:
            raise ConfigError(f"[{t.where(key)}] describes columns.{key}, which is not mapped")
        fmt = spec.string("format", TimeFormat.format)
        if fmt not in TIME_FORMATS:
            raise ConfigError(f"{spec.where('format')} must be one of {', '.join(TIME_FORMATS)}")
        times[key] = spec.read_whole(
            TimeFormat,
            format="unix" if fmt == "unix" else "text" if fmt == "text" else "auto",
            zero_is_null=spec.boolean("zero_is_null", fmt == "unix"),
        )
        _check_zone(spec, "timezone", times[key].timezone)
    t.finish()
    return times


def _kind(t: _Table, key: str, value: object) -> BindingKind:
    try:
        return BindingKind(str(value).lower())
    except ValueError:
        allowed = ", ".join(k.value for k in BindingKind)
        raise ConfigError(f"{t.where(key)} must be one of {allowed}") from None


def _parse_defaults(t: _Table, kinds_t: _Table) -> DefaultsConfig:
    kind = _kind(t, "kind", t.string("kind", DefaultsConfig.kind.value))
    kinds: dict[str, BindingKind] = {}
    for alias in kinds_t.names():
        kinds[alias] = _kind(kinds_t, alias, kinds_t.string(alias))
    kinds_t.finish()
    return t.read_whole(DefaultsConfig, kind=kind, kinds=kinds)


def _parse_server(t: _Table, base: Path, name: str) -> ServerSection:
    listen = t.string("listen", ServerSection.listen)
    match = _LISTEN.fullmatch(listen)
    if match is None or not 0 <= int(match.group(2)) <= 65535:
        raise ConfigError(
            f"{t.where('listen')} must be HOST:PORT (for example [::]:50061), not {listen!r}"
        )
    insecure = t.boolean("insecure", ServerSection.insecure)
    tls_t = t.optional_table("tls")
    tls = None if tls_t is None else tls_t.read_whole(TLSFiles)
    credentials = t.path("credentials", None)
    given = [
        name
        for name, present in (
            (f"[{t.where('tls')}]", tls is not None),
            (t.where("credentials"), credentials is not None),
            (f"{t.where('insecure')} = true", insecure),
        )
        if present
    ]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} contradict: choose one")
    if tls is None and not insecure and credentials is None:
        raise ConfigError(
            f"{t.where('credentials')} (what `onecert provider join --dir` wrote) or "
            f"[{t.where('tls')}] (cert, key, client_ca) is required; plaintext needs "
            f"{t.where('insecure')} = true and is for development only"
        )
    store = t.string("idempotency_db", None)
    idempotency: Path | None
    if store == ":memory:":
        idempotency = None
    elif store is None:
        idempotency = base / f"{name}.idempotency.db"
    else:
        idempotency = t.path("idempotency_db")
    log_level = t.string("log_level", ServerSection.log_level).lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"{t.where('log_level')} must be one of {', '.join(_LOG_LEVELS)}")
    return t.read_whole(
        ServerSection,
        listen=listen,
        tls=tls,
        credentials=credentials,
        insecure=insecure,
        idempotency_db=idempotency,
        log_level=log_level,
    )


_TABLES: Final = (
    "provider",
    "database",
    "queries",
    "columns",
    "defaults",
    "kinds",
    "phones",
    "times",
    "server",
    "routing",
)
