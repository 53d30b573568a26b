"""An adapter process killed between applying an unbind and recording its answer."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from onecert.sdk.testing import FakeGateway
from onecert.v1 import common_pb2, provider_pb2
from onecert.v1.provider_pb2_grpc import BindingProviderStub
from tests.sdk.sdk_fakes import unbind_pb

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "sql-site"
NUMBER = "+8613700137000"  # account 5 of the example site

# Every change of a phone number, as the database saw it: an unbind applied
# twice would show two rows (or a second attempt changing nothing, none).
_APPLIED = """
CREATE TABLE applied (account INTEGER NOT NULL);
CREATE TRIGGER phone_changed AFTER UPDATE OF phone ON users
WHEN OLD.phone IS NOT NEW.phone
BEGIN INSERT INTO applied (account) VALUES (OLD.id); END;
"""


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway(audience="example-forum")


@pytest.fixture
def site(tmp_path: Path, gateway: FakeGateway) -> Path:
    """The example site with a trigger counting applies, served in plaintext on port 0."""
    directory = tmp_path / "sql-site"
    shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns("*.db", "keys"))
    with sqlite3.connect(directory / "site.db") as conn:
        conn.executescript((directory / "schema.sql").read_text() + _APPLIED)
    gateway.write_jwks(directory / "gateway.jwks.json")
    config = directory / "site.toml"
    head = config.read_text().split("[server]")[0]
    config.write_text(
        head + '[server]\nlisten = "127.0.0.1:0"\ngateway_jwks = "gateway.jwks.json"\n'
        "insecure = true\n"
    )
    return config


@asynccontextmanager
async def adapter(config: Path, *, kill_after_apply: bool) -> AsyncIterator[tuple[str, Any]]:
    """The crashing adapter in its own process; yields its address and the process."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "ONECERT_TEST_UNBIND_LOG": str(config.parent / "unbind-calls.log"),
    }
    env.pop("ONECERT_TEST_KILL_AFTER_APPLY", None)
    if kill_after_apply:
        env["ONECERT_TEST_KILL_AFTER_APPLY"] = "1"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.sql_adapter.crashing_adapter",
        str(config),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = ""
            while not line.startswith("listening on "):  # the adapter's log lines come first
                line = (await process.stdout.readline()).decode()
                assert line, "the adapter exited before it listened"
        yield line.removeprefix("listening on ").strip(), process
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 20)


async def _unbind(address: str, gateway: FakeGateway) -> provider_pb2.UnbindResponse:
    request = unbind_pb("ticket-crash-1", "5", msisdn=NUMBER)
    async with grpc.aio.insecure_channel(address) as channel:
        response: provider_pb2.UnbindResponse = await BindingProviderStub(channel).Unbind(
            request, metadata=gateway.metadata(NUMBER, purpose="unbind"), timeout=10
        )
        return response


async def test_killed_after_apply_is_resumed_applied_once_and_answered_done(
    site: Path, gateway: FakeGateway
) -> None:
    """A SIGKILL after the unbind commits and before its answer is recorded leaves a claim;
    the redelivery after a restart is told it resumes, applies nothing more and answers DONE."""
    async with adapter(site, kill_after_apply=True) as (address, process):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _unbind(address, gateway)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert await asyncio.wait_for(process.wait(), 20) == -9
    directory = site.parent
    with sqlite3.connect(directory / "site.db") as conn:
        assert conn.execute("SELECT account FROM applied").fetchall() == [(5,)]
    with sqlite3.connect(directory / "site.idempotency.db") as conn:
        rows = conn.execute("SELECT key, value FROM onecert_idempotency").fetchall()
    assert [key for key, _ in rows] == ["unbind:ticket-crash-1"]
    claim = json.loads(rows[0][1])
    assert claim["outcome"] == "claimed"
    assert claim["account_ref"] == "5"
    assert NUMBER.removeprefix("+") not in rows[0][1]

    async with adapter(site, kill_after_apply=False) as (address, _):
        first = await _unbind(address, gateway)
        again = await _unbind(address, gateway)
    assert first.outcome == common_pb2.UNBIND_OUTCOME_DONE
    assert again == first
    with sqlite3.connect(directory / "site.db") as conn:
        assert conn.execute("SELECT account FROM applied").fetchall() == [(5,)]
        assert conn.execute("SELECT phone FROM users WHERE id = 5").fetchone() == (None,)
    calls = (directory / "unbind-calls.log").read_text().splitlines()
    assert calls == ["ticket-crash-1 resumed=False", "ticket-crash-1 resumed=True"]
