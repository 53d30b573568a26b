"""The config-only SQL adapter: a site joins onecert with a TOML file.

``onecert adapter sql --config site.toml`` serves ``BindingProvider``
straight from the site's own user database (SQLite, PostgreSQL, MySQL or
MariaDB): the config names a SELECT that lists the accounts bound to a
phone number, maps its columns, and names the UPDATE or DELETE that
unbinds. See ``docs/sql-adapter.md``.

From Python::

    config = load_config("site.toml")
    async with await SqlSite.open(config) as site:   # checks the queries
        ...  # serve site.provider, or: await serve(config)

Importing this package does not import SQLAlchemy; opening a site does.
"""

from onecert.adapters.sql._config import (
    ColumnsConfig,
    DatabaseConfig,
    DefaultsConfig,
    PhonesConfig,
    ProviderSection,
    QueriesConfig,
    ServerSection,
    SiteConfig,
    TimeFormat,
    TLSFiles,
    load_config,
    parse_config,
)
from onecert.adapters.sql._errors import (
    ConfigError,
    DatabaseUnavailableError,
    MappingError,
    QueryFailedError,
)
from onecert.adapters.sql._phone import normalize_phone, phone_variants
from onecert.adapters.sql._serve import build_server, check, check_report, serve
from onecert.adapters.sql._site import NO_SUCH_ACCOUNT, SqlSite
from onecert.adapters.sql._values import to_utc

__all__ = [
    "NO_SUCH_ACCOUNT",
    "ColumnsConfig",
    "ConfigError",
    "DatabaseConfig",
    "DatabaseUnavailableError",
    "DefaultsConfig",
    "MappingError",
    "PhonesConfig",
    "ProviderSection",
    "QueriesConfig",
    "QueryFailedError",
    "ServerSection",
    "SiteConfig",
    "SqlSite",
    "TLSFiles",
    "TimeFormat",
    "build_server",
    "check",
    "check_report",
    "load_config",
    "normalize_phone",
    "parse_config",
    "phone_variants",
    "serve",
    "to_utc",
]
