"""``onecert lookup`` numbers the rows that can be acted on; ``onecert unbind ROW`` acts on one,
with the handles kept in a private per-user file instead of on the command line."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from onecert.cli import main
from onecert.sdk import UnbindReason
from tests.unbind.unbind_support import UnbindWorld


def _runner(env: UnbindWorld, tmp_path: Path, port: int) -> Any:
    def run(*argv: str) -> int:
        assertion = tmp_path / "assertion.jwt"
        assertion.write_text(env.assertion())  # one use each: a fresh one per call
        target = ["--gateway", f"127.0.0.1:{port}", "--insecure", "--assertion", str(assertion)]
        return main([*argv, *target])

    async def run_async(*argv: str) -> int:
        return await asyncio.to_thread(run, *argv)

    return run_async


def _state_file() -> Path:
    return Path(os.environ["ONECERT_STATE_DIR"]) / "last-lookup.json"


async def test_lookup_numbers_rows_and_unbind_takes_a_row(
    env: UnbindWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows are numbered left behind first, then hers, then one per previous holder's
    account; `unbind 1` unbinds the left-behind account and `unbind 3` releases the number."""
    await env.provider("pay")
    gateway = await env.gateway()
    run = _runner(env, tmp_path, gateway.port)

    assert await run("lookup") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    left = next(line for line in lines if "!! left behind" in line)
    mine = next(line for line in lines if " mine " in line)
    assert left.split()[0] == "1"
    assert left.endswith("can be unbound")
    assert mine.split()[0] == "2"
    heading = "Previous holders' accounts on your current numbers (count only)"
    previous = lines[lines.index(heading) + 1]
    assert previous.split()[0] == "3"
    assert previous.endswith("1 can be released")
    assert "unbind ROW" in out
    saved = json.loads(_state_file().read_text())
    handles = [row["handle"] for row in saved["rows"]]
    assert [row["action"] for row in saved["rows"]] == ["unbind", "unbind", "release"]
    assert not any(handle in out for handle in handles)  # handles never reach the terminal

    assert await run("unbind", "1", "--json") == 0
    ticket = json.loads(capsys.readouterr().out)
    await env.wait_final(ticket["ticket_id"])
    assert await run("receipt", "--ticket", ticket["ticket_id"], "--json") == 0
    receipt = json.loads(capsys.readouterr().out)
    assert (receipt["reason"], receipt["state"]) == (UnbindReason.OWNER_REQUEST, "done")
    assert receipt["provider_id"] == "pay"

    assert await run("unbind", "3") == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"row 3: release {env.CURRENT} from a previous holder's account at Pay Inc"
    released = printed[1].split()[1].rstrip(":")
    await env.wait_final(released)
    assert await run("receipt", "--ticket", released, "--json") == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["reason"] == UnbindReason.PREVIOUS_HOLDER_RELEASE


async def test_rows_file_is_private(env: UnbindWorld, tmp_path: Path) -> None:
    """The rows file is mode 0600 in a 0700 directory, whatever the umask."""
    await env.provider("pay")
    gateway = await env.gateway(workers=0)
    run = _runner(env, tmp_path, gateway.port)
    previous = os.umask(0o000)
    try:
        assert await run("lookup") == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(_state_file().stat().st_mode) == 0o600
    assert stat.S_IMODE(_state_file().parent.stat().st_mode) == 0o700


async def test_unbind_row_refusals(
    env: UnbindWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No lookup yet, a row that does not exist, a lookup on another gateway, a file
    others can read, or neither ROW nor --handle: each is one line and status 2."""
    await env.provider("pay")
    gateway = await env.gateway(workers=0)
    run = _runner(env, tmp_path, gateway.port)

    assert await run("unbind", "1") == 2
    assert "run `onecert lookup` first" in capsys.readouterr().err
    assert await run("lookup") == 0
    capsys.readouterr()
    assert await run("unbind", "9") == 2
    assert "rows 1 to 3; there is no row 9" in capsys.readouterr().err
    assert await run("unbind") == 2
    assert "give a ROW" in capsys.readouterr().err
    assert await run("unbind", "1", "--handle", "h") == 2
    assert "not both" in capsys.readouterr().err

    other = await asyncio.to_thread(
        main,
        ["unbind", "1", "--gateway", "127.0.0.1:1", "--insecure", "--assertion", "-"],
    )
    assert other == 2
    assert "run `onecert lookup` on this gateway first" in capsys.readouterr().err

    _state_file().chmod(0o644)
    assert await run("unbind", "1") == 2
    assert "not private to you" in capsys.readouterr().err
    assert await env.ticket_count() == 0
