"""A plain file path names a SQLite database wherever a database is taken."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onecert.cli import main
from onecert.gateway._config import parse_config
from onecert.gateway.store import Store, normalize_url
from onecert.sdk._dburl import database_url


def test_database_url_takes_urls_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """URLs pass unchanged; absolute, relative and ~ paths become absolute SQLite URLs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert database_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
    assert database_url("x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    assert database_url("x.db", base=tmp_path / "etc") == f"sqlite:///{tmp_path / 'etc' / 'x.db'}"
    assert database_url("~/x.db") == f"sqlite:///{tmp_path / 'home' / 'x.db'}"
    assert database_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
    with pytest.raises(ValueError, match="empty"):
        database_url("  ")


def test_store_opens_a_file_path(tmp_path: Path) -> None:
    """Store.open (through normalize_url) takes a path as SQLite."""
    assert normalize_url(str(tmp_path / "s.db")) == f"sqlite+aiosqlite:///{tmp_path / 's.db'}"


def test_db_upgrade_and_audit_verify_take_a_file_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``db upgrade --url PATH``, then ``audit verify`` with ``ONECERT_DB_URL=PATH``, succeed."""
    monkeypatch.chdir(tmp_path)
    assert main(["db", "upgrade", "--url", "onecert.db"]) == 0
    assert f"schema at revision {Store.head_revision()}" in capsys.readouterr().out
    assert (tmp_path / "onecert.db").exists()
    assert main(["audit", "verify", "--url", str(tmp_path / "onecert.db")]) == 0
    assert capsys.readouterr().out.startswith("OK: 0 audit rows")
    monkeypatch.setenv("ONECERT_DB_URL", "onecert.db")
    # The environment is read when the parser is built: run the command afresh.
    done = subprocess.run(
        [sys.executable, "-m", "onecert.cli", "audit", "verify"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: 0 audit rows")


def test_a_missing_file_path_and_a_bad_url_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path to no file and a malformed URL each end in one line, status 2, no traceback."""
    assert main(["audit", "verify", "--url", str(tmp_path / "none.db")]) == 2
    assert "no such database file" in capsys.readouterr().err
    assert main(["db", "upgrade", "--url", "mysql://x@h/db"]) == 2
    assert "unsupported database" in capsys.readouterr().err


def test_gateway_config_takes_a_store_path(tmp_path: Path) -> None:
    """``[store] url = "state/onecert.db"`` is a SQLite file next to the config."""
    data = {
        "gateway": {"dev_plaintext": True},
        "keys": {"warrant_key": "w.pem", "handle_key": "h.key"},
        "identity": {"issuers": [{"issuer": "https://id.test", "jwks": "id.json"}]},
        "carriers": [{"id": "c", "address": "127.0.0.1:1", "plaintext": True}],
        "store": {"url": "state/onecert.db"},
    }
    config = parse_config(data, base_dir=tmp_path)
    assert config.store is not None
    assert config.store.url == f"sqlite:///{tmp_path / 'state' / 'onecert.db'}"
