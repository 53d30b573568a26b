"""``onecert db`` and ``onecert audit``: the gateway's database and its audit chain."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_group

if TYPE_CHECKING:
    from onecert.gateway.store import AuditVerification, Store

_URL_ENV = "ONECERT_DB_URL"
_T = TypeVar("_T")


def _add_db_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get(_URL_ENV),
        help=f"database URL: sqlite:///path/to/onecert.db or postgresql://user@host/db; "
        f"a plain file path is a SQLite file (default: ${_URL_ENV})",
    )
    parser.add_argument(
        "--schema", default=None, help="PostgreSQL schema to use (default: the search_path)"
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    _register_db(sub)
    _register_audit(sub)


def _register_db(sub: argparse._SubParsersAction[Any]) -> None:
    """the gateway's database"""
    db_sub = add_group(sub, "db", _register_db, metavar="ACTION")
    _add_db_options(add_command(db_sub, "upgrade", _upgrade))


def _register_audit(sub: argparse._SubParsersAction[Any]) -> None:
    """the gateway's audit log"""
    audit_sub = add_group(sub, "audit", _register_audit, metavar="ACTION")
    _add_db_options(add_command(audit_sub, "verify", _verify))


def _url(args: argparse.Namespace) -> str:
    """``--url`` (or ``$ONECERT_DB_URL``) as a URL; a plain file path is SQLite."""
    from onecert.sdk._dburl import database_url  # noqa: PLC0415 - keeps `onecert --help` light

    if not args.url or not args.url.strip():
        raise CommandError(f"no database: pass --url or set {_URL_ENV}")
    return database_url(args.url)


def _open(args: argparse.Namespace) -> Store:
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415 - see _url

    from onecert.gateway.store import Store  # noqa: PLC0415 - see _url

    url = _url(args)
    try:
        return Store.open(url, schema=args.schema)
    except ArgumentError:
        raise CommandError(
            f"not a database URL: {args.url!r} (give sqlite:///PATH, postgresql://USER@HOST/DB, "
            "or the path of a SQLite file)"
        ) from None
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _describe(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=True)


def _upgrade(args: argparse.Namespace) -> int:
    """create or migrate the schema to the newest version

    Create the gateway's tables, or migrate them to the newest version. Safe to run again; safe
    while gateways run (migrations are additive).
    """
    store = _open(args)

    async def run() -> str | None:
        try:
            await store.upgrade()
            return await store.schema_revision()
        finally:
            await store.close()

    revision = _run(run(), store)
    print(f"{_describe(store)}: schema at revision {revision}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    """check the audit log's hash chain

    Check that every audit row is present, unchanged and chained to the one before. Prints OK, or
    names the first broken row and exits with status 1.
    """
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - see _url
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415 - see _url

    try:
        url = make_url(_url(args))
    except ArgumentError:
        url = None  # _open says what is wrong with it
    # Opening a missing SQLite file would create an empty database.
    path = url.database if url is not None and url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).exists():
        raise CommandError(f"no such database file: {path}")
    store = _open(args)

    async def run() -> AuditVerification:
        try:
            if await store.schema_revision() is None:
                raise CommandError("the database has no onecert schema: run `onecert db upgrade`")
            return await store.audit.verify()
        finally:
            await store.close()

    result = _run(run(), store)
    if result.ok:
        print(f"OK: {result.rows_checked} audit rows, chain intact")
        return 0
    where = "" if result.first_broken_seq is None else f" at row {result.first_broken_seq}"
    print(f"BROKEN{where}: {result.reason} ({result.rows_checked} rows verified before it)")
    return 1


def _run(coro: Coroutine[Any, Any, _T], store: Store) -> _T:
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415 - see _url

    from onecert.sdk._msisdn import mask_numbers_in_text  # noqa: PLC0415 - see _url

    try:
        return asyncio.run(coro)
    except (OSError, DBAPIError) as exc:
        # The driver's own message, without SQLAlchemy's statement and
        # parameters.
        cause = getattr(exc, "orig", None) or exc
        first = (str(cause).splitlines() or [type(cause).__name__])[0]
        raise CommandError(
            f"cannot use the database {_describe(store)}: {mask_numbers_in_text(first)}"
        ) from None
