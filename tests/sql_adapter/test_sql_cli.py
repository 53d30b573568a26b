"""``onecert adapter sql``: the example site end to end, the check mode, and refusals."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from onecert.cli import main
from onecert.sdk._keys import SigningKey
from onecert.sdk._tls import ClientTLS
from onecert.sdk.conformance import check_provider
from onecert.sdk.devkeys import DevKeys, init_dev_keys

EXAMPLE = Path(__file__).parents[2] / "examples" / "sql-site"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures structlog to print to the stderr of the moment (a capture that
    closes with the test), so the previous setup is put back after each test."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="module")
def dev_keys(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    """A dev keys directory (gateway keys, CA, server and gateway client certificates)."""
    return init_dev_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def example_site(tmp_path: Path, dev_keys: DevKeys) -> Path:
    """The shipped example (site.toml and its SQLite database from schema.sql), with keys."""
    site = tmp_path / "sql-site"
    shutil.copytree(EXAMPLE, site, ignore=shutil.ignore_patterns("*.db", "keys"))
    with sqlite3.connect(site / "site.db") as conn:
        conn.executescript((site / "schema.sql").read_text())
    shutil.copytree(dev_keys.directory, site / "keys")
    return site / "site.toml"


def _set_server(config: Path, server: str) -> None:
    # Replace the example's [server] table (the last one in the file).
    head = config.read_text().split("[server]")[0]
    config.write_text(head + server)


def test_example_site_check_passes(example_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check on the shipped example finds the database, the columns and the keys in order."""
    assert main(["adapter", "sql", "--config", str(example_site), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: example-forum:")
    assert "id, nickname, phone, phone_bound_at, last_login_at" in out


def test_config_error_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid configuration stops the command with status 2 and the key named."""
    config = tmp_path / "site.toml"
    config.write_text('[provider]\nid = "x"\nname = "X"\n')
    assert main(["adapter", "sql", "--config", str(config)]) == 2
    assert "[database] is required" in capsys.readouterr().err


def test_mismatched_mapping_exits_2_naming_the_columns(
    example_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mapped columns the query lacks stop the start with status 2 and their names."""
    text = example_site.read_text()
    example_site.write_text(
        text.replace('display_name = "nickname"', 'display_name = "nick_name"').replace(
            'bound_at = "phone_bound_at"', 'bound_at = "verified_at"'
        )
    )
    assert main(["adapter", "sql", "--config", str(example_site), "--check"]) == 2
    err = capsys.readouterr().err
    assert "'nick_name' (columns.display_name)" in err
    assert "'verified_at' (columns.bound_at)" in err
    # Serving refuses in the same way, before it listens.
    assert main(["adapter", "sql", "--config", str(example_site)]) == 2
    assert "'nick_name' (columns.display_name)" in capsys.readouterr().err


def test_missing_database_or_keys_exit_2(
    example_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing JWKS file, a missing SQLite file (not created) or one without the table
    is refused with status 2."""
    (example_site.parent / "keys" / "gateway.jwks.json").unlink()
    assert main(["adapter", "sql", "--config", str(example_site), "--check"]) == 2
    assert "gateway.jwks.json" in capsys.readouterr().err
    database = example_site.parent / "site.db"
    database.unlink()
    assert main(["adapter", "sql", "--config", str(example_site), "--check"]) == 2
    assert f"the SQLite database file {database} does not exist" in capsys.readouterr().err
    assert not database.exists()
    sqlite3.connect(database).close()
    assert main(["adapter", "sql", "--config", str(example_site), "--check"]) == 2
    assert "queries.list_bindings fails against the database" in capsys.readouterr().err


async def test_served_over_mutual_tls_passes_conformance(
    example_site: Path, dev_keys: DevKeys
) -> None:
    """The example served by the CLI over mutual TLS passes the conformance kit, its unbind
    really changes the table, and SIGTERM stops it cleanly."""
    _set_server(
        example_site,
        '[server]\nlisten = "127.0.0.1:0"\ngateway_jwks = "keys/gateway.jwks.json"\n'
        '[server.tls]\ncert = "keys/server.pem"\nkey = "keys/server.key.pem"\n'
        'client_ca = "keys/ca.pem"\n',
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "onecert.cli",
        "adapter",
        "sql",
        "--config",
        str(example_site),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert "listening on 127.0.0.1:" in line, line
        address = line.split("listening on ")[1].split()[0]
        report = await check_provider(
            target=address,
            warrant_key=SigningKey.load(dev_keys.warrant_key),
            provider_id="example-forum",
            known_numbers=["+8613800138000", "+8613900139000"],
            unbind=("+8613700137000", "5"),
            tls=ClientTLS(
                ca_file=str(dev_keys.ca_cert),
                cert_file=str(dev_keys.client_cert("gateway")),
                key_file=str(dev_keys.client_key("gateway")),
                server_name="localhost",
            ),
        )
        assert all(r.passed for r in report.results), report.to_table()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(process.wait(), 20)
    assert status == 0
    with sqlite3.connect(example_site.parent / "site.db") as conn:
        rows = dict(conn.execute("SELECT id, phone FROM users").fetchall())
    assert rows[5] is None  # unbound; the account row stays
    assert rows[1] == "+8613800138000"
    assert (example_site.parent / "site.idempotency.db").exists()
