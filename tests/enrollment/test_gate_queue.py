"""The gate's slots: a request that finds every slot busy waits its turn, and only one past
``max_waiting`` is refused, with a hint of how long to wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from onecert.gateway._refusal import Refusal
from onecert.gateway.enrollment import Gate, GateOutcome
from onecert.gateway.testing import FederationKeys, enrollment_config
from onecert.sdk import Binding, Provider, Server, UnbindRequest, UnbindResult

ID = "slow-forum"


class _Held:
    """A provider whose lookups wait until released (so a gate run stays in progress),
    served at ``address``."""

    address = ""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.provider = Provider(provider_id=ID, name="Slow Forum", category="forum")

        @self.provider.list_bindings
        async def list_bindings(msisdn: str) -> list[Binding]:
            self.entered.set()
            await self.release.wait()
            return []

        @self.provider.unbind
        async def unbind(request: UnbindRequest) -> UnbindResult:
            return UnbindResult.rejected("no such account")


@pytest.fixture
async def held(enroll_keys: FederationKeys) -> AsyncIterator[_Held]:
    """The slow forum, served on a free port."""
    site = _Held()
    server = Server(
        site.provider, gateway_keys=enroll_keys.dev.gateway_jwks, insecure=True, grace=0.1
    )
    await server.start()
    site.address = server.address
    yield site
    site.release.set()
    await server.shutdown(0)


def _gate(keys: FederationKeys, *, max_waiting: int) -> Gate:
    config = enrollment_config(
        keys, gate_call_timeout_s=5.0, max_concurrent_gates=1, max_waiting_gates=max_waiting
    )
    return Gate(config, warrant_key=keys.warrant, issuer="onecert-gateway", upstream_tls=None)


async def _occupied(
    keys: FederationKeys, site: _Held, *, max_waiting: int
) -> tuple[Gate, asyncio.Task[GateOutcome]]:
    """A gate of one slot, and a run on it against ``site`` holding that slot (inside the
    provider's call)."""
    gate = _gate(keys, max_waiting=max_waiting)
    first = asyncio.create_task(gate.run(ID, site.address))
    await asyncio.wait_for(site.entered.wait(), 10)
    return gate, first


async def test_a_request_finding_the_slots_busy_waits_its_turn_and_passes(
    enroll_keys: FederationKeys, held: _Held
) -> None:
    """With one slot taken, the next request waits (no refusal) and runs once the first ends."""
    gate, first = await _occupied(enroll_keys, held, max_waiting=1)
    second = asyncio.create_task(gate.run(ID, held.address))
    await asyncio.sleep(0.2)
    assert not second.done()
    held.release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(first, second), 30)
    assert all(o.passed for o in outcomes), [o.failures for o in outcomes]


async def test_one_request_past_the_waiting_room_is_refused_with_a_hint(
    enroll_keys: FederationKeys, held: _Held
) -> None:
    """Slot and waiting room full: RESOURCE_EXHAUSTED at once, with a positive retry-after-ms
    no longer than a quarter of the gate's timeout."""
    gate, first = await _occupied(enroll_keys, held, max_waiting=1)
    waiting = asyncio.create_task(gate.run(ID, held.address))
    await asyncio.sleep(0)
    with pytest.raises(Refusal) as refused:
        await gate.run(ID, held.address)
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    hint = dict(refused.value.trailing_metadata)["retry-after-ms"]
    assert 0 < int(hint) <= 30_000 / 4
    held.release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(first, waiting), 30)
    assert all(o.passed for o in outcomes)


async def test_without_a_waiting_room_a_busy_gate_refuses_at_once(
    enroll_keys: FederationKeys, held: _Held
) -> None:
    """``max_waiting = 0``: the request that finds the slot taken is refused (the old rule)."""
    gate, first = await _occupied(enroll_keys, held, max_waiting=0)
    with pytest.raises(Refusal) as refused:
        await gate.run(ID, held.address)
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    held.release.set()
    assert (await asyncio.wait_for(first, 30)).passed
