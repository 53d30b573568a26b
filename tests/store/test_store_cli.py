"""``onecert db upgrade`` and ``onecert audit verify``."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

from onecert.cli import main
from onecert.gateway.store import Store
from onecert.gateway.store.testing import Database


def _args(database: Database) -> list[str]:
    args = ["--url", database.url]
    if database.schema is not None:
        args += ["--schema", database.schema]
    return args


async def _main(argv: list[str]) -> int:
    # The CLI runs its own event loop (asyncio.run), so it needs a thread.
    return await asyncio.to_thread(main, argv)


async def test_db_upgrade_creates_the_schema(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """``onecert db upgrade`` migrates an empty database to the newest revision."""
    assert await _main(["db", "upgrade", *_args(database)]) == 0
    assert f"schema at revision {Store.head_revision()}" in capsys.readouterr().out
    store = database.open()
    try:
        assert await store.schema_revision() == Store.head_revision()
    finally:
        await store.close()
    assert await _main(["db", "upgrade", *_args(database)]) == 0


async def test_audit_verify_exit_codes(
    store: Store, database: Database, t0: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    """``onecert audit verify`` prints OK (status 0), or names the first broken row (status 1)."""
    for i in range(4):
        await store.audit.append(kind="lookup", actor="portal", subject=f"s{i}", now=t0)
    assert await _main(["audit", "verify", *_args(database)]) == 0
    assert capsys.readouterr().out.startswith("OK: 4 audit rows")
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE audit_log SET subject = 'forged' WHERE seq = 2")
    assert await _main(["audit", "verify", *_args(database)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN at row 2:")
    assert "1 rows verified" in out


async def test_audit_verify_needs_a_migrated_database(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verifying a database without the schema is a user error (status 2)."""
    empty = database.open()
    try:
        assert await empty.schema_revision() is None  # creates the SQLite file
    finally:
        await empty.close()
    assert await _main(["audit", "verify", *_args(database)]) == 2
    assert "onecert db upgrade" in capsys.readouterr().err


def test_cli_user_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing URL, a missing SQLite file or an unknown database exits with status 2."""
    monkeypatch.delenv("ONECERT_DB_URL", raising=False)
    assert main(["audit", "verify"]) == 2
    assert "--url" in capsys.readouterr().err
    missing = tmp_path / "none.db"
    assert main(["audit", "verify", "--url", f"sqlite:///{missing}"]) == 2
    assert "no such database file" in capsys.readouterr().err
    assert not missing.exists()
    assert main(["db", "upgrade", "--url", "mysql://h/db"]) == 2
    assert "unsupported database" in capsys.readouterr().err


def test_cli_reports_unreachable_postgres(capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable server is a clear error (status 2), without a traceback."""
    assert main(["db", "upgrade", "--url", "postgresql://u:secret@127.0.0.1:1/db"]) == 2
    err = capsys.readouterr().err
    assert "cannot use the database" in err
    assert "secret" not in err
