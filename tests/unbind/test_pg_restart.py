"""A gateway riding out a restart of its PostgreSQL: UNAVAILABLE meanwhile, nothing lost after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest

from onecert.gateway.store.testing import Database, PrivatePostgres
from onecert.gateway.testing import Federation, FederationKeys
from onecert.v1 import gateway_pb2
from tests.unbind.unbind_support import UnbindWorld

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PrivatePostgres.find() is None, reason="no PostgreSQL server installed"),
]


@pytest.fixture
async def world(tmp_path: Path, private_pg: PrivatePostgres) -> AsyncIterator[UnbindWorld]:
    """A carrier and the world's gateways on the private server."""
    async with Database.postgres(private_pg.url) as database:
        world = UnbindWorld(
            Federation(FederationKeys.create(tmp_path / "keys"), tmp_path), database
        )
        await world.carrier()
        try:
            yield world
        finally:
            await world.close()


async def _code(call: Awaitable[object]) -> tuple[grpc.StatusCode, bool]:
    """The call's status, and whether its message says the database is unavailable."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), "database is unavailable" in (exc.details() or "")
    return grpc.StatusCode.OK, False


async def test_gateway_rides_out_a_database_crash_and_restart(
    world: UnbindWorld, private_pg: PrivatePostgres
) -> None:
    """While its PostgreSQL is down (crashed, then restarted), the gateway answers UNAVAILABLE
    and keeps running; after the restart, without restarting the gateway, a ticket opened
    before the crash is delivered by the same workers, the same handle gives the same ticket,
    and new lookups and unbinds work."""
    accounts = await world.provider("pay")
    gateway = await world.gateway()
    handle = await world.left_behind_handle(gateway)
    await world.stop_provider("pay")  # the ticket cannot be delivered before the crash
    ticket = await world.unbind(gateway, handle)

    private_pg.stop(crash=True)
    stub = world.fed.stub(gateway)
    during = {
        "Unbind": await _code(world.unbind(gateway, handle)),
        "GetUnbind": await _code(
            stub.GetUnbind(
                gateway_pb2.GetUnbindRequest(ticket_id=ticket.ticket_id),
                metadata=world.metadata(),
                timeout=10,
            )
        ),
        "Lookup": await _code(world.lookup(gateway)),
    }
    await world.start_provider("pay")
    await asyncio.sleep(2.0)  # the database stays down a while; the workers keep failing
    private_pg.start()

    assert during == dict.fromkeys(during, (grpc.StatusCode.UNAVAILABLE, True))
    final = await world.wait_final(ticket.ticket_id, within=30)
    assert final.state.value == "DONE"
    assert [c.request_id for c in accounts.calls] == [ticket.ticket_id]
    again = await world.unbind(gateway, handle)
    assert again.ticket_id == ticket.ticket_id
    assert (await world.lookup(gateway)) is not None
    store = await world.store()
    assert (await store.audit.verify()).ok
