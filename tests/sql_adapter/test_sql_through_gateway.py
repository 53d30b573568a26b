"""A site joined with the SQL adapter appears in a lookup, and an unbind through the
gateway really changes its users table."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from onecert.adapters.sql import SqlSite, build_server, parse_config
from onecert.gateway import GatewayServer
from onecert.gateway._config import (
    CarrierConfig,
    GatewayConfig,
    IdentityConfig,
    IssuerConfig,
    KeysConfig,
    ProviderConfig,
    StoreConfig,
)
from onecert.gateway._identity import AssertionIssuer
from onecert.sdk import Carrier, Server, Tenure, TenureState
from onecert.sdk._keys import SigningKey
from onecert.sdk.client import Attribution, GatewayClient, Result, TicketState
from tests.sql_adapter.sql_site import example_site

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sql-site"
NUMBER = "+8613800138000"  # zhangsan's (since 2021) and, before, lisi's (2014)
IDN = "ab" * 32


@asynccontextmanager
async def federation(
    tmp_path: Path, data: dict[str, Any], base_dir: Path, tenures: list[Tenure]
) -> AsyncIterator[tuple[GatewayClient, Callable[[], str]]]:
    """A real gateway, one carrier reporting ``tenures`` for the citizen, and the
    site of config ``data`` served by the SQL adapter; the client and a fresh
    identity assertion for each call."""
    warrant_key = SigningKey.generate("EdDSA")
    identity_key = SigningKey.generate("ES256")
    (tmp_path / "warrant.key.pem").write_bytes(warrant_key.to_pem())
    (tmp_path / "gateway.jwks.json").write_text(json.dumps(warrant_key.jwks()))
    (tmp_path / "identity.jwks.json").write_text(json.dumps(identity_key.jwks()))
    (tmp_path / "handle.key").write_text(os.urandom(32).hex())
    data["server"] = {
        "listen": "127.0.0.1:0",
        "gateway_jwks": str(tmp_path / "gateway.jwks.json"),
        "insecure": True,
        "idempotency_db": str(tmp_path / "answers.db"),
    }
    site = await SqlSite.open(parse_config(data, base_dir=base_dir))
    site_server = build_server(site)
    await site_server.start()

    carrier = Carrier(carrier_id="cm")

    @carrier.list_numbers
    async def numbers(idn: str) -> list[Tenure]:
        return tenures if idn == IDN else []

    carrier_server = Server(
        carrier, gateway_keys=tmp_path / "gateway.jwks.json", listen="127.0.0.1:0", insecure=True
    )
    await carrier_server.start()
    config = GatewayConfig(
        id="onecert-gateway",
        listen="127.0.0.1:0",
        dev_plaintext=True,
        keys=KeysConfig(
            warrant_key=tmp_path / "warrant.key.pem", handle_key=tmp_path / "handle.key"
        ),
        identity=IdentityConfig(
            audience="onecert-gateway",
            issuers=(IssuerConfig(issuer="https://id.test", jwks=tmp_path / "identity.jwks.json"),),
        ),
        carriers=(CarrierConfig(id="cm", address=carrier_server.address, plaintext=True),),
        providers=(
            ProviderConfig(
                id=data["provider"]["id"],
                name=data["provider"]["name"],
                address=site_server.address,
                plaintext=True,
            ),
        ),
        store=StoreConfig(url=f"sqlite:///{tmp_path / 'gateway.db'}"),
    )
    issuer = AssertionIssuer(key=identity_key, issuer="https://id.test")

    def assertion() -> str:
        return issuer.mint(sub="citizen-1", idn=IDN, audience="onecert-gateway")

    try:
        async with (
            GatewayServer(config) as gateway,
            GatewayClient(f"127.0.0.1:{gateway.port}", insecure=True) as client,
        ):
            yield client, assertion
    finally:
        await carrier_server.shutdown(0)
        await site_server.shutdown(0)
        await site.close()


async def test_sql_site_in_a_lookup_and_unbound_through_the_gateway(tmp_path: Path) -> None:
    """The example site (config and schema as committed) answers a real gateway's lookup
    (zhangsan as the citizen's own account, lisi as a previous holder's, counted only);
    unbinding zhangsan through the gateway sets that row's phone to NULL, the row stays."""
    data = example_site(tmp_path)
    held = datetime(2020, 1, 1, tzinfo=UTC)
    tenures = [Tenure(NUMBER, held, state=TenureState.ACTIVE)]
    async with federation(tmp_path, data, EXAMPLE, tenures) as (client, assertion):
        results = [u async for u in client.lookup(assertion()) if isinstance(u, Result)]
        (result,) = results
        (mine,) = result.accounts
        assert mine.attribution is Attribution.MINE
        assert mine.display_name_masked == "zh***an"
        assert result.previous_holder_count == 1
        ticket = await client.unbind(assertion(), mine.handle)
        for _ in range(100):
            receipt = await client.get_unbind(assertion(), ticket.ticket_id)
            if receipt.state is TicketState.DONE:
                break
            await asyncio.sleep(0.05)
        assert receipt.state is TicketState.DONE
    with sqlite3.connect(tmp_path / "site.db") as conn:
        rows = dict(conn.execute("SELECT nickname, phone FROM users WHERE id IN (1, 2)").fetchall())
    assert rows == {"zhangsan": None, "lisi": "138-0013-8000"}


# A forum that knows when each account registered (unix seconds, 0 for
# never) and, for some, when the phone field last changed.
FORUM = """
CREATE TABLE members (
    uid INTEGER PRIMARY KEY, username TEXT NOT NULL, mobile TEXT NOT NULL DEFAULT '',
    regdate INTEGER NOT NULL DEFAULT 0, mobile_changed INTEGER NOT NULL DEFAULT 0
);
"""


def _unix(year: int, month: int = 1, day: int = 1) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


async def test_registration_date_as_a_lower_bound_never_shows_the_next_holders_account(
    tmp_path: Path,
) -> None:
    """Through a real gateway, for a number she held from 2015 to 2019, an account
    registered in 2016 whose number may have been typed in later by the next holder is
    neither shown nor counted, and one whose phone has not changed since 2017 is
    shown as LEFT_BEHIND."""
    db = tmp_path / "forum.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(FORUM)
        conn.executemany(
            "INSERT INTO members VALUES (?, ?, ?, ?, ?)",
            [
                (1, "nexthold", "138-0013-8000", _unix(2016, 5), 0),
                (2, "herownacct", "+86 138 0013 8000", _unix(2016, 6), _unix(2017, 3)),
                (3, "longago", "13800138000", 0, 0),
            ],
        )
    data: dict[str, Any] = {
        "provider": {"id": "forum", "name": "Forum", "category": "forum"},
        "database": {"url": f"sqlite:///{db}"},
        "queries": {
            "list_bindings": (
                "SELECT uid, username, mobile, regdate, mobile_changed FROM members "
                "WHERE {phone:mobile} IN :phones"
            ),
            "unbind": "UPDATE members SET mobile = '' WHERE uid = :account_ref "
            "AND {phone:mobile} IN :phones",
        },
        "columns": {
            "account_ref": "uid",
            "display_name": "username",
            "phone": "mobile",
            "bound_not_before": "regdate",
            "bound_not_after": "mobile_changed",
        },
        "times": {"bound_not_before": {"format": "unix"}, "bound_not_after": {"format": "unix"}},
    }
    tenures = [
        Tenure(
            NUMBER,
            datetime(2015, 1, 1, tzinfo=UTC),
            datetime(2019, 1, 1, tzinfo=UTC),
            TenureState.RECYCLED,
        )
    ]
    async with federation(tmp_path, data, tmp_path, tenures) as (client, assertion):
        (result,) = [u async for u in client.lookup(assertion()) if isinstance(u, Result)]
    (left,) = result.accounts
    assert left.attribution is Attribution.LEFT_BEHIND
    assert left.display_name_masked.startswith("he")
    # Only an interval is known: no binding date is shown as if it were one.
    assert left.bound_at is None
    assert result.previous_holder_count == 0
