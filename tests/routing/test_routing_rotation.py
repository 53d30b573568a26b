"""Routing-key rotation and retirement by the operator: through the store, audited.

Rotating adds an active version while the previous one stays live, so
filters keyed with it keep routing; retiring is refused while a provider's
snapshot still uses the version (unless forced), then drops those filters
(their providers are asked about every number) and refuses new ones.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from onecert.cli import main
from onecert.gateway import GatewayServer, testing
from onecert.gateway.routing import FilterSealer, RoutingKeyring
from onecert.gateway.routing._rotation import (
    RotationError,
    key_statuses,
    operator_keys,
    retire_key,
    rotate_key,
)
from onecert.gateway.store import KeyState, Store
from onecert.gateway.testing import CURRENT, FORMER, Federation, at, binding
from onecert.sdk.client import GatewayError
from onecert.sdk.routing import RoutingFilter, build_filter
from onecert.v1 import gateway_pb2
from tests.routing.routing_support import (
    ELSEWHERE,
    ROUTED_OUT,
    audit_details,
    outcome,
    provider_client,
    publish,
    source,
)

ANSWERED = gateway_pb2.CALL_OUTCOME_ANSWERED
SKIPPED = gateway_pb2.CALL_OUTCOME_SKIPPED


def _keys(gateway: GatewayServer) -> tuple[Store, RoutingKeyring, FilterSealer]:
    assert gateway.store is not None
    return (gateway.store, *operator_keys(gateway.config))


async def test_rotation_keeps_old_filters_routing_until_retired(fed: Federation) -> None:
    """After a rotation providers get the new version and old filters still route;
    retiring is refused while a snapshot uses the old version, forced it drops
    that filter (its provider is asked again) and refuses filters under it; both
    changes are audited."""
    await fed.carrier("cm")
    await fed.provider("holder", {CURRENT: [binding("h1", "lin", at(2021))]})
    await fed.provider("other", {})
    gateway = await fed.gateway(store="sqlite")
    assert gateway.routing is not None
    store, base, sealer = _keys(gateway)
    async with (
        provider_client(fed, gateway, "other") as other,
        provider_client(fed, gateway, "holder") as holder,
    ):
        await publish(other, ELSEWHERE)
        await publish(holder, [CURRENT])
        assert await rotate_key(store, base=base, sealer=sealer) == 2
        await gateway.routing.sync()  # what each replica's poll does
        assert (await other.get_routing_key()).version == 2
        # Version 1 is still live: both filters keep routing.
        messages = await fed.lookup(gateway)
        assert outcome(messages, "other", CURRENT) == (SKIPPED, ROUTED_OUT)
        assert outcome(messages, "holder", FORMER) == (SKIPPED, ROUTED_OUT)
        with pytest.raises(RotationError, match="2 provider"):
            await retire_key(store, 1, sealer=sealer)
        await publish(other, ELSEWHERE)  # under version 2 now
        statuses = {s.version: s for s in await key_statuses(store, base=base, sealer=sealer)}
        assert (statuses[1].state, statuses[1].snapshots) == (KeyState.LIVE, 1)
        assert (statuses[2].state, statuses[2].snapshots) == (KeyState.ACTIVE, 1)
        with pytest.raises(RotationError, match="1 provider"):
            await retire_key(store, 1, sealer=sealer)
        assert await retire_key(store, 1, sealer=sealer, force=True) == 1
        await gateway.routing.sync()
        messages = await fed.lookup(gateway)
        assert outcome(messages, "other", CURRENT) == (SKIPPED, ROUTED_OUT)
        # The holder's filter was keyed with the retired version: asked again.
        assert outcome(messages, "holder", FORMER)[0] == ANSWERED
        with pytest.raises(GatewayError) as refused:
            await holder.publish_snapshot(await _v1_snapshot(base), interval=timedelta(hours=1))
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "not live" in refused.value.details
    rotated = await audit_details(gateway, "routing.key_rotated")
    assert [(r["version"], r["previous_active"], r["live"]) for r in rotated] == [(2, 1, "1,2")]
    retired = await audit_details(gateway, "routing.key_retired")
    assert [(r["version"], r["forced"], r["snapshots_still_keyed"]) for r in retired] == [
        (1, True, 1)
    ]
    # The retired key is erased from the store.
    assert [r.sealed for r in await store.routing.keys() if r.version == 1] == [b""]
    with pytest.raises(RotationError, match="active"):
        await retire_key(store, 2, sealer=sealer)


async def _v1_snapshot(base: RoutingKeyring) -> RoutingFilter:
    result = await build_filter(source([CURRENT]), key=base.key(1), key_version=1)
    return result.filter


async def test_a_gateway_starting_after_a_rotation_reads_the_keyring_from_the_store(
    fed: Federation,
) -> None:
    """A replica started after a rotation serves the stored active version, not its
    configuration's."""
    await fed.carrier("cm")
    await fed.provider("other", {})
    config = fed.config(store="sqlite")
    first = await fed.gateway(config)
    store, base, sealer = _keys(first)
    await rotate_key(store, base=base, sealer=sealer)
    await first.stop(0)
    second = await fed.gateway(config)
    async with provider_client(fed, second, "other") as other:
        key = await other.get_routing_key()
    assert key.version == 2
    assert key.key != base.key(1)


def test_the_operator_command_lists_rotates_and_retires(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`onecert routing keys|rotate-key|retire-key --config` drive the store's keyring,
    refuse to retire the active version (status 2, nothing changed), and leave an
    audit chain that verifies."""
    keys = testing.FederationKeys.create(tmp_path / "keys")
    database = tmp_path / "gateway.db"
    config = tmp_path / "gateway.toml"
    config.write_text(
        testing.gateway_toml(
            keys,
            store_url=f"sqlite:///{database}",
            carriers=[{"id": "cm", "address": "127.0.0.1:1", "prefixes": ["+86138"]}],
            providers=[{"id": "site", "address": "127.0.0.1:2"}],
        ),
        encoding="utf-8",
    )
    assert main(["routing", "keys", "--config", str(config)]) == 0
    assert "version 1: active (since configured)" in capsys.readouterr().out
    assert main(["routing", "rotate-key", "--config", str(config)]) == 0
    assert "routing key version 2 is active" in capsys.readouterr().out
    assert main(["routing", "retire-key", "2", "--config", str(config)]) == 2
    assert "active routing key cannot be retired" in capsys.readouterr().err
    assert main(["routing", "retire-key", "1", "--config", str(config)]) == 0
    assert "routing key version 1 retired" in capsys.readouterr().out
    assert main(["routing", "keys", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "version 1: retired" in listed
    assert "version 2: active" in listed
    assert main(["audit", "verify", "--url", str(database)]) == 0
    assert "chain intact" in capsys.readouterr().out
