"""Routing keys at the gateway: the key file, rotation across a restart, the sealing key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from onecert.gateway._config import RoutingConfig
from onecert.gateway.routing import (
    FilterSealer,
    derive_filter_key,
    derive_routing_key,
    load_routing_keys,
)
from onecert.gateway.store import FilterKind, FilterRow
from onecert.gateway.testing import CURRENT, FORMER, Federation, at, binding
from onecert.sdk._keys import KeyConfigError
from onecert.sdk.routing import build_filter
from onecert.v1 import gateway_pb2
from tests.routing.routing_support import ELSEWHERE, ROUTED_OUT, outcome, provider_client, source

KEY1, KEY2 = bytes(range(32)), bytes(range(1, 33))


def _key_file(path: Path, keys: dict[int, bytes]) -> Path:
    path.write_text("# routing keys\n" + "".join(f"{v} {k.hex()}\n" for v, k in keys.items()))
    return path


def test_the_key_file_names_the_active_and_live_versions(tmp_path: Path) -> None:
    """The highest version is active; every listed version is live."""
    ring = load_routing_keys(_key_file(tmp_path / "keys.txt", {1: KEY1, 2: KEY2}))
    assert ring.active_version == 2
    assert ring.versions == {1, 2}
    assert ring.key(1) == KEY1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no routing key"),
        ("1 zz\n", "expected 'VERSION HEX'"),
        (f"1 {KEY1.hex()}\n1 {KEY2.hex()}\n", "one key per version"),
        ("1 00ff\n", "shorter than 32 bytes"),
    ],
)
def test_a_bad_key_file_is_refused_without_quoting_keys(
    tmp_path: Path, text: str, message: str
) -> None:
    """A malformed key file is a configuration error that names the line, never a key."""
    path = tmp_path / "keys.txt"
    path.write_text(text)
    with pytest.raises(KeyConfigError, match=message) as caught:
        load_routing_keys(path)
    assert KEY1.hex() not in str(caught.value)


def test_derived_keys_are_separate_from_the_handle_key() -> None:
    """The sealing key and each routing key version differ from each other and from the
    handle key they are derived from."""
    handle = bytes(32)
    keys = {handle, derive_filter_key(handle), derive_routing_key(handle, 1)}
    keys.add(derive_routing_key(handle, 2))
    assert len(keys) == 4


def test_a_sealed_filter_opens_only_in_its_own_row() -> None:
    """The associated data binds a sealed filter to its provider: moved rows do not open."""
    sealer = FilterSealer(bytes(range(32)))
    sealed = sealer.seal(
        b"bits", provider_id="a", kind=FilterKind.SNAPSHOT, key_version=1, created_at=5
    )
    row = FilterRow(1, "a", FilterKind.SNAPSHOT, 1, 5, at(2026), 60, sealed)
    assert sealer.open(row) == b"bits"
    moved = FilterRow(1, "b", FilterKind.SNAPSHOT, 1, 5, at(2026), 60, sealed)
    with pytest.raises(InvalidTag):
        sealer.open(moved)


async def test_a_filter_under_a_retired_version_is_asked_after_a_restart(
    fed: Federation, tmp_path: Path
) -> None:
    """A filter keyed with version 1 routes while 1 is live; a replica started with only
    version 2 live holds no filter for it, so the provider is asked about every number."""
    await fed.carrier("cm")
    await fed.provider("holder", {CURRENT: [binding("h1", "lin", at(2021))]})
    both = RoutingConfig(key_file=_key_file(tmp_path / "both.txt", {1: KEY1, 2: KEY2}))
    gateway = await fed.gateway(store="sqlite", routing=both)
    async with provider_client(fed, gateway, "holder") as holder:
        key = await holder.get_routing_key()
        assert (key.version, key.live_versions) == (2, (1, 2))
        old = await build_filter(source([*ELSEWHERE, CURRENT]), key=KEY1, key_version=1)
        await holder.publish_snapshot(old.filter, interval=timedelta(hours=1))
    assert outcome(await fed.lookup(gateway), "holder", FORMER) == (
        gateway_pb2.CALL_OUTCOME_SKIPPED,
        ROUTED_OUT,
    )
    await gateway.stop(0)
    only2 = RoutingConfig(key_file=_key_file(tmp_path / "only2.txt", {2: KEY2}))
    restarted = await fed.gateway(store="sqlite", routing=only2)
    messages = await fed.lookup(restarted)
    assert outcome(messages, "holder", FORMER)[0] == gateway_pb2.CALL_OUTCOME_ANSWERED
    assert outcome(messages, "holder", CURRENT)[0] == gateway_pb2.CALL_OUTCOME_ANSWERED
