"""``onecert provider``: the regulator's commands against a running gateway."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from onecert.cli import CommandError
from onecert.cli._provider import parse_ttl
from onecert.gateway.store import RegistryStatus, token_digest
from tests.client.client_support import run_cli
from tests.registry.registry_support import RegistryWorld


async def _json(*argv: str) -> Any:
    status, out, err = await asyncio.to_thread(run_cli, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


async def test_invite_list_show_suspend_resume_remove(dev_world: RegistryWorld) -> None:
    """Each command does its change through the gateway and prints it; the token is printed
    once and only its hash is stored."""
    gateway = await dev_world.start("pay")
    target = ["--gateway", f"127.0.0.1:{gateway.port}", "--insecure"]
    status, text, _ = await asyncio.to_thread(
        run_cli, "provider", "invite", *target, "--id", "shop", "--name", "Small Shop",
        "--category", "ecommerce", "--ttl", "2h",
    )  # fmt: skip
    assert status == 0
    token = next(line.strip() for line in text.splitlines() if "onecert-enroll-" in line)
    entry = await dev_world.store.registry.get("shop")
    assert entry is not None
    assert entry.invited_at is not None
    assert entry.status is RegistryStatus.INVITED
    async with dev_world.store.engine.connect() as conn:
        stored = (await conn.exec_driver_sql("SELECT token_hash FROM enrollment_tokens")).all()
    assert [row[0] for row in stored] == [token_digest(token)]

    listed = await _json("provider", "list", *target)
    assert [(p["provider_id"], p["status"]) for p in listed] == [
        ("pay", "active"),
        ("shop", "invited"),
    ]
    status, table, _ = await asyncio.to_thread(run_cli, "provider", "list", *target)
    assert table.splitlines()[0].split()[:4] == ["id", "name", "category", "status"]
    suspended = await _json("provider", "suspend", "pay", "--reason", "late notices", *target)
    assert suspended["status"] == "suspended"
    assert suspended["status_reason"] == "late notices"
    assert (await _json("provider", "resume", "pay", *target))["status"] == "active"
    removed = await _json("provider", "remove", "shop", "--reason", "never joined", *target)
    assert removed["status"] == "removed"
    shown = await _json("provider", "show", "pay", *target)
    assert [c["action"] for c in shown["history"]] == ["seed", "suspend", "resume"]
    status, page, _ = await asyncio.to_thread(run_cli, "provider", "show", "pay", *target)
    assert "suspend active -> suspended by admin:dev (late notices)" in page


async def test_refusals_are_one_clear_line(dev_world: RegistryWorld) -> None:
    """A refused command exits 2 with the gateway's reason and no traceback."""
    gateway = await dev_world.start("pay")
    target = ["--gateway", f"127.0.0.1:{gateway.port}", "--insecure"]
    for argv, words in (
        (("provider", "suspend", "nobody", "--reason", "x"), "NOT_FOUND"),
        (("provider", "resume", "pay"), "FAILED_PRECONDITION"),
        (("provider", "invite", "--id", "pay", "--category", "payment"), "ALREADY_EXISTS"),
    ):
        status, _, err = await asyncio.to_thread(run_cli, *argv, *target)
        assert status == 2, argv
        assert words in err, err
        assert "Traceback" not in err
    version = await dev_world.store.registry.version()
    status, _, err = await asyncio.to_thread(
        run_cli, "provider", "invite", "--id", "x", "--category", "forum", "--ttl", "soon", *target
    )
    assert status == 2
    assert "--ttl" in err
    assert await dev_world.store.registry.version() == version


def test_ttl_forms() -> None:
    """Durations read as seconds, minutes, hours or days."""
    assert parse_ttl("90").total_seconds() == 90
    assert parse_ttl("90m").total_seconds() == 5400
    assert parse_ttl("24h").total_seconds() == 86400
    assert parse_ttl("7d").total_seconds() == 7 * 86400
    for bad in ("0", "-1h", "1w", ""):
        with pytest.raises(CommandError, match="--ttl"):
            parse_ttl(bad)
