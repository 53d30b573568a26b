"""The SQL adapter serves with the credentials `onecert provider join` wrote: the gate
passes against the example site, and the site answers the gateway's certificate only."""

from __future__ import annotations

from pathlib import Path

import pytest

from onecert.adapters.sql import ConfigError, SqlSite, build_server, parse_config
from onecert.gateway import GatewayServer
from onecert.gateway.store import Store
from onecert.gateway.testing import Federation
from onecert.sdk._server import free_port
from onecert.v1 import gateway_pb2
from tests.enrollment.enrollment_support import join_forum, request_activation
from tests.sql_adapter.sql_site import example_site


def _site_data(
    tmp_path: Path, federation: Federation, server: dict[str, object]
) -> dict[str, object]:
    data = example_site(tmp_path)
    data["server"] = {
        "gateway_jwks": str(federation.keys.dev.gateway_jwks),
        "idempotency_db": str(tmp_path / "answers.db"),
        **server,
    }
    return data


async def test_a_joined_sql_site_passes_the_gate(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """Join with the CLI's credentials directory, serve the example site from it, run
    the gate: ACTIVE."""
    # The site names its address when it joins, before it serves (a real site
    # knows its own): ask the OS for a free port.
    address = f"127.0.0.1:{free_port()}"
    await join_forum(gateway, store, federation, tmp_path / "creds", address, category="forum")
    data = _site_data(tmp_path, federation, {"listen": address, "credentials": "creds"})
    site = await SqlSite.open(parse_config(data, base_dir=tmp_path))
    server = build_server(site)
    await server.start()
    try:
        answer = await request_activation(gateway)
    finally:
        await server.shutdown(0)
        await site.close()
    assert answer.gate.passed, list(answer.gate.failures)
    assert answer.status == gateway_pb2.PROVIDER_STATUS_ACTIVE


def test_credentials_exclude_tls_and_insecure(tmp_path: Path, federation: Federation) -> None:
    """``credentials`` replaces [server.tls]: both at once is refused, naming them."""
    data = _site_data(
        tmp_path,
        federation,
        {"credentials": "creds", "tls": {"cert": "a.pem", "key": "a.key.pem"}},
    )
    with pytest.raises(ConfigError, match="contradict"):
        parse_config(data, base_dir=tmp_path)


async def test_credentials_before_joining_are_refused(
    tmp_path: Path, federation: Federation
) -> None:
    """A credentials directory the join never wrote is a start-up error that says so."""
    data = _site_data(tmp_path, federation, {"listen": "127.0.0.1:0", "credentials": "creds"})
    site = await SqlSite.open(parse_config(data, base_dir=tmp_path))
    try:
        with pytest.raises(ValueError, match="provider join"):
            build_server(site)
    finally:
        await site.close()
