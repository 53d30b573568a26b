"""``onecert adapter sql``: serve a site's own user database as a provider."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_group

if TYPE_CHECKING:
    from onecert.sdk import Server


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """run a ready-made provider adapter

    Run a ready-made provider adapter: a site joins onecert by configuration.
    """
    kinds = add_group(sub, "adapter", register, metavar="KIND")
    sql = add_command(kinds, "sql", _sql)
    sql.add_argument("--config", required=True, type=Path, metavar="FILE", help="TOML file")
    sql.add_argument(
        "--check",
        action="store_true",
        help="check the configuration, the database, the queries, keys and TLS files, "
        "then exit (0 when all is well) without serving",
    )


def _sql(args: argparse.Namespace) -> int:
    """serve BindingProvider from a site's own SQL user database

    Serve BindingProvider straight from the site's user database (SQLite, PostgreSQL, MySQL or
    MariaDB) as the configuration file says (see docs/sql-adapter.md). Before it listens it checks
    that the queries match the column mapping and exits with status 2, naming what is wrong, if not.
    SIGTERM or SIGINT stops it gracefully.
    """
    try:
        import sqlalchemy  # noqa: F401, PLC0415  # only to say clearly what is missing
    except ImportError:
        raise CommandError(
            "the SQL adapter needs SQLAlchemy and the database drivers: pip install 'onecert[sql]'"
        ) from None
    from onecert.adapters.sql import (  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
        ConfigError,
        DatabaseUnavailableError,
        check_report,
        load_config,
        serve,
    )
    from onecert.sdk import configure_logging  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    configure_logging(json=config.server.log_json, level=config.server.log_level)

    def ready(server: Server) -> None:
        tls = "plaintext, development only" if config.server.insecure else "TLS"
        # One line on stdout for scripts that wait for the port.
        print(
            f"onecert sql adapter {config.provider.id} listening on {server.address} ({tls})",
            flush=True,
        )

    try:
        if args.check:
            print(asyncio.run(check_report(config)))
            return 0
        asyncio.run(serve(config, ready=ready))
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    except DatabaseUnavailableError as exc:
        raise CommandError(f"cannot use the database {config.database.safe_url}: {exc}") from None
    except ValueError as exc:
        # The SDK's configuration errors (keys, TLS files, listen address).
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot start the adapter: {exc}") from None
    print("onecert sql adapter stopped", file=sys.stderr)
    return 0
