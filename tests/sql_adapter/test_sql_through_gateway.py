"""A site joined with the SQL adapter appears in a lookup, and an unbind through the
gateway really changes its users table."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tomllib
from datetime import UTC, datetime
from pathlib import Path

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

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sql-site"
NUMBER = "+8613800138000"  # zhangsan's (since 2021) and, before, lisi's (2014)
IDN = "ab" * 32


async def test_sql_site_in_a_lookup_and_unbound_through_the_gateway(tmp_path: Path) -> None:
    """The example site (config and schema as committed) answers a real gateway's lookup
    (zhangsan as the citizen's own account, lisi as a previous holder's, counted only);
    unbinding zhangsan through the gateway sets that row's phone to NULL, the row stays."""
    db = tmp_path / "site.db"
    with sqlite3.connect(db) as conn:
        conn.executescript((EXAMPLE / "schema.sql").read_text())
    warrant_key = SigningKey.generate("EdDSA")
    identity_key = SigningKey.generate("ES256")
    (tmp_path / "warrant.key.pem").write_bytes(warrant_key.to_pem())
    (tmp_path / "gateway.jwks.json").write_text(json.dumps(warrant_key.jwks()))
    (tmp_path / "identity.jwks.json").write_text(json.dumps(identity_key.jwks()))
    (tmp_path / "handle.key").write_text(os.urandom(32).hex())

    data = tomllib.loads((EXAMPLE / "site.toml").read_text())
    data["database"]["url"] = f"sqlite:///{db}"
    data["server"] = {
        "listen": "127.0.0.1:0",
        "gateway_jwks": str(tmp_path / "gateway.jwks.json"),
        "insecure": True,
        "idempotency_db": str(tmp_path / "answers.db"),
    }
    site = await SqlSite.open(parse_config(data, base_dir=EXAMPLE))
    site_server = build_server(site)
    await site_server.start()

    carrier = Carrier(carrier_id="cm")

    @carrier.list_numbers
    async def numbers(idn: str) -> list[Tenure]:
        held = datetime(2020, 1, 1, tzinfo=UTC)
        return [Tenure(NUMBER, held, state=TenureState.ACTIVE)] if idn == IDN else []

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
                id="example-forum",
                name="Example Forum",
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
    finally:
        await carrier_server.shutdown(0)
        await site_server.shutdown(0)
        await site.close()
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT nickname, phone FROM users WHERE id IN (1, 2)").fetchall())
    assert rows == {"zhangsan": None, "lisi": "138-0013-8000"}
