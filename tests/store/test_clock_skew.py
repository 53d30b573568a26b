"""Two replicas whose clocks disagree by seconds, on one PostgreSQL with the database clock."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from onecert.gateway.store import DeliveryMode, Store, StoredTicketState, Ticket
from onecert.gateway.store.testing import Database
from tests.store.store_support import record_notice

SKEW = timedelta(seconds=5)


@pytest.fixture
async def replicas(pg_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one fresh PostgreSQL schema, each judging time on the database's clock."""
    async with Database.postgres(pg_url) as database:
        first = Store.open(database.url, schema=database.schema, database_clock=True)
        await first.upgrade()
        second = Store.open(database.url, schema=database.schema, database_clock=True)
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


def _now() -> datetime:
    return datetime.now(UTC)


async def _ticket(store: Store, now: datetime, *, lifetime: timedelta) -> str:
    ticket, _ = await store.tickets.create(
        handle_digest=hashlib.sha256(b"handle").hexdigest(),
        sub_hash="sub-a",
        provider_id="example-pay",
        reason=1,
        payload="sealed:opaque",
        msisdn_hash=hashlib.sha256(b"+8613800138000").hexdigest(),
        expires_at=now + lifetime,
        now=now,
    )
    return ticket.ticket_id


async def test_a_replica_ahead_cannot_take_a_lease_another_holds(
    replicas: tuple[Store, Store],
) -> None:
    """A lease taken by one replica is live for its whole length on the database's clock:
    a replica whose clock runs 5 s ahead (past the lease's end on its own clock) cannot
    claim the same ticket, for tickets and for providers' notice cursors alike."""
    honest, ahead = replicas
    ticket_id = await _ticket(honest, _now(), lifetime=timedelta(hours=1))
    (claimed,) = await honest.tickets.claim_due(worker_id="honest", lease_s=3.0, now=_now())
    assert claimed.ticket_id == ticket_id
    assert await ahead.tickets.claim_due(worker_id="ahead", lease_s=3.0, now=_now() + SKEW) == []

    await record_notice(honest, _now(), providers=[("pay", DeliveryMode.PUSH)])
    assert len(await honest.cursors.claim_due(worker_id="honest", lease_s=3.0)) == 1
    assert await ahead.cursors.claim_due(worker_id="ahead", lease_s=3.0, now=_now() + SKEW) == []


async def test_a_ticket_opened_by_a_replica_behind_does_not_expire_early(
    replicas: tuple[Store, Store],
) -> None:
    """A ticket opened by a replica whose clock is 5 s behind lives its whole lifetime from
    the database's now: a replica with the right time claims it instead of failing it."""
    behind, honest = replicas
    ticket_id = await _ticket(behind, _now() - SKEW, lifetime=timedelta(seconds=4))
    expired: list[Ticket] = []
    (claimed,) = await honest.tickets.claim_due(worker_id="honest", now=_now(), expired=expired)
    assert claimed.ticket_id == ticket_id
    assert expired == []
    ticket = await honest.tickets.get(ticket_id)
    assert ticket is not None
    assert ticket.state is not StoredTicketState.FAILED
    assert ticket.expires_at - ticket.created_at == timedelta(seconds=4)
