"""The SQL adapter publishes its site's filter from ``queries.numbers`` on its schedule."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from onecert.adapters.sql import SqlSite, parse_config
from onecert.adapters.sql._config import ConfigError
from onecert.adapters.sql._serve import publishing
from onecert.gateway import GatewayServer
from onecert.gateway.testing import CURRENT, FORMER, Federation
from onecert.v1 import gateway_pb2
from tests.routing.routing_support import ROUTED_OUT, outcome
from tests.sql_adapter.sql_site import example_site

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sql-site"
NUMBERS = "SELECT phone FROM users WHERE phone IS NOT NULL"


def _site_config(tmp_path: Path, **routing: object) -> dict[str, Any]:
    """The example site's configuration on a copy of its database, with a numbers query."""
    data = example_site(tmp_path)
    data["queries"]["numbers"] = NUMBERS
    data["server"] = {
        "listen": "127.0.0.1:0",
        "gateway_jwks": str(tmp_path / "gateway.jwks.json"),
        "insecure": True,
        "idempotency_db": ":memory:",
    }
    if routing:
        data["routing"] = routing
    return data


async def _routed(gateway: GatewayServer, provider_id: str) -> None:
    """Wait until the gateway routes ``provider_id`` by a fresh filter."""
    assert gateway.routing is not None
    while gateway.routing.index.status(provider_id).reason is not None:  # noqa: ASYNC110 - the adapter's publisher runs in its own task
        await asyncio.sleep(0.02)


async def test_the_sql_adapter_publishes_the_numbers_query(fed: Federation, tmp_path: Path) -> None:
    """A site publishing from its numbers query is skipped for numbers it lacks, and asked
    once a row with the number is in its table and the next snapshot is out."""
    await fed.carrier("cm")
    served = await SqlSite.open(parse_config(_site_config(tmp_path), base_dir=EXAMPLE))
    await fed.adapter(served.provider)
    gateway = await fed.gateway(store="sqlite")
    config = _site_config(
        tmp_path, gateway=f"127.0.0.1:{gateway.port}", insecure=True, snapshot_interval_s=3600
    )
    site = await SqlSite.open(parse_config(config, base_dir=EXAMPLE))
    try:
        async with publishing(site) as publisher:
            assert publisher is not None
            await _routed(gateway, "example-forum")
            messages = await fed.lookup(gateway)
            assert outcome(messages, "example-forum", CURRENT) == (
                gateway_pb2.CALL_OUTCOME_SKIPPED,
                ROUTED_OUT,
            )
            with sqlite3.connect(tmp_path / "site.db") as conn:
                conn.execute(
                    "INSERT INTO users (id, nickname, phone) VALUES (9, 'new', ?)", (CURRENT[3:],)
                )
            await publisher.publish_snapshot()
            messages = await fed.lookup(gateway)
            assert (
                outcome(messages, "example-forum", CURRENT)[0] == gateway_pb2.CALL_OUTCOME_ANSWERED
            )
            assert outcome(messages, "example-forum", FORMER) == (
                gateway_pb2.CALL_OUTCOME_SKIPPED,
                ROUTED_OUT,
            )
    finally:
        await site.close()
        await served.close()


async def test_the_numbers_query_streams_e164_numbers(tmp_path: Path) -> None:
    """Stored formats are read as E.164 and rows without a number are left out."""
    site = await SqlSite.open(parse_config(_site_config(tmp_path), base_dir=EXAMPLE))
    try:
        numbers = [n async for n in site.list_numbers()]
    finally:
        await site.close()
    assert sorted(numbers) == sorted(
        ["+8613800138000", "+8613800138000", "+8613900139000", "+8613900139000", "+8613700137000"]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"numbers": "DELETE FROM users"}, "queries.numbers must start with SELECT or WITH"),
        ({"numbers": "SELECT phone FROM users WHERE id = :id"}, "queries.numbers uses :id"),
        ({"numbers": None}, r"\[routing\] needs queries.numbers"),
        ({"routing": {"gateway": "gw:443"}}, "routing.ca, routing.cert and routing.key"),
        ({"routing": {"gateway": "gw", "insecure": True}}, "routing.gateway must be HOST:PORT"),
        (
            {"routing": {"gateway": "gw:1", "insecure": True, "snapshot_interval_s": 5}},
            "routing.snapshot_interval_s must be from 60",
        ),
    ],
)
def test_numbers_and_routing_are_checked(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """A bad numbers query or [routing] section is a configuration error naming the key."""
    data = _site_config(tmp_path, gateway="gw:443", insecure=True)
    if "numbers" in change:
        if change["numbers"] is None:
            del data["queries"]["numbers"]
        else:
            data["queries"]["numbers"] = change["numbers"]
    if "routing" in change:
        data["routing"] = change["routing"]
    with pytest.raises(ConfigError, match=message):
        parse_config(data, base_dir=EXAMPLE)
