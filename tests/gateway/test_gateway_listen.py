"""The listening port: a port in use is refused unless sharing is asked for."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from onecert.gateway import GatewayServer, parse_config
from onecert.gateway._listen import port_in_use

if TYPE_CHECKING:
    from onecert.gateway.testing import Federation


async def test_a_second_gateway_on_a_port_in_use_is_refused(fed: Federation) -> None:
    """A gateway asked to listen where another already does refuses to start, naming
    the address and the way to share it on purpose; the first keeps serving."""
    await fed.carrier("cm", {})
    first = await fed.gateway()
    address = f"127.0.0.1:{first.port}"
    assert port_in_use(address)
    second = GatewayServer(fed.config(listen=address))
    with pytest.raises(OSError, match="already in use") as refused:
        await second.start()
    message = str(refused.value)
    assert address in message
    assert "gateway.reuse_port" in message
    # The first gateway still answers alone.
    messages = await fed.lookup(first)
    assert messages[-1].WhichOneof("update") == "summary"


async def test_gateways_share_a_port_when_both_ask_for_it(fed: Federation) -> None:
    """With ``reuse_port`` on both, two gateways listen on one port (the bench's
    two-process case)."""
    await fed.carrier("cm", {})
    first = await fed.gateway(reuse_port=True)
    address = f"127.0.0.1:{first.port}"
    second = await fed.gateway(fed.config(listen=address, reuse_port=True))
    assert second.port == first.port


def test_reuse_port_is_off_unless_configured(fed: Federation) -> None:
    """``gateway.reuse_port`` defaults to false and is read from ``[gateway]``."""
    assert fed.config().reuse_port is False
    base = {
        "keys": {"warrant_key": "w.pem", "handle_key": "h.key"},
        "identity": {"issuers": [{"issuer": "https://id.example", "jwks": "id.json"}]},
        "carriers": [{"id": "cm", "address": "127.0.0.1:1", "plaintext": True}],
    }
    off = parse_config({"gateway": {"dev_plaintext": True}, **base}, base_dir=".")
    on = parse_config(
        {"gateway": {"dev_plaintext": True, "reuse_port": True}, **base}, base_dir="."
    )
    assert (off.reuse_port, on.reuse_port) == (False, True)
    assert dataclasses.replace(off, reuse_port=True) == on
