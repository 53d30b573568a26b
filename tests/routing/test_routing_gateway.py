"""Routing end to end: providers publish filters to a real gateway; lookups ask who may hold."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import select

from onecert.gateway._config import RoutingConfig
from onecert.gateway.store._models import routing_filters
from onecert.gateway.testing import CURRENT, FORMER, Federation, at, binding
from onecert.sdk.client import GatewayError
from onecert.sdk.routing import FilterAdditions, RoutingFilter
from onecert.v1 import gateway_pb2
from tests.routing.routing_support import (
    ELSEWHERE,
    ROUTED_OUT,
    add,
    applied,
    audit_details,
    outcome,
    provider_client,
    publish,
    snapshot_of,
    summary,
    two_replicas,
)

ANSWERED = gateway_pb2.CALL_OUTCOME_ANSWERED
SKIPPED = gateway_pb2.CALL_OUTCOME_SKIPPED


async def _federation(fed: Federation) -> None:
    """The story's carrier; "holder" holds the current number, "other" holds nothing of it."""
    await fed.carrier("cm")
    await fed.provider("holder", {CURRENT: [binding("h1", "lin", at(2021))]})
    await fed.provider("other", {})
    await fed.provider("silent", {})


async def test_a_provider_is_asked_only_about_numbers_its_filter_holds(fed: Federation) -> None:
    """A filter without the number skips its provider (SKIPPED, routing); one with it is asked."""
    await _federation(fed)
    gateway = await fed.gateway(store="sqlite")
    async with provider_client(fed, gateway, "other") as other:
        await publish(other, ELSEWHERE)
    async with provider_client(fed, gateway, "holder") as holder:
        await publish(holder, [*ELSEWHERE[:50], CURRENT])
    messages = await fed.lookup(gateway)
    assert outcome(messages, "other", CURRENT) == (SKIPPED, ROUTED_OUT)
    assert outcome(messages, "other", FORMER) == (SKIPPED, ROUTED_OUT)
    assert outcome(messages, "holder", CURRENT)[0] == ANSWERED
    assert fed.result_of(messages, "holder", CURRENT).bindings
    assert outcome(messages, "holder", FORMER) == (SKIPPED, ROUTED_OUT)
    # "silent" never published: asked about everything.
    assert outcome(messages, "silent", CURRENT)[0] == ANSWERED
    fakes = {fake.id: fake for fake, _ in fed.providers}
    assert fakes["other"].record.calls == 0
    assert fakes["holder"].record.targets == [CURRENT]
    total = summary(messages).total
    assert (total.asked, total.answered, total.skipped) == (6, 3, 3)
    started = messages[0].started
    assert started.provider_calls == 6


async def test_an_addition_published_before_a_lookup_is_seen(fed: Federation) -> None:
    """A number bound after the snapshot and published as an addition routes the lookup in."""
    await _federation(fed)
    gateway = await fed.gateway(store="sqlite")
    async with provider_client(fed, gateway, "holder") as holder:
        await publish(holder, ELSEWHERE)
        assert outcome(await fed.lookup(gateway), "holder", CURRENT) == (SKIPPED, ROUTED_OUT)
        await add(holder, CURRENT)
    assert outcome(await fed.lookup(gateway), "holder", CURRENT)[0] == ANSWERED


async def test_no_filter_stale_filter_and_opt_out_are_asked(fed: Federation) -> None:
    """Providers the gateway cannot rule out by a fresh filter are asked about every number."""
    await _federation(fed)
    gateway = await fed.gateway(store="sqlite")
    async with provider_client(fed, gateway, "other") as other:
        # Read ten minutes ago with a one-minute promise (plus the 60 s grace): stale at once.
        receipt = await publish(
            other, ELSEWHERE, interval=timedelta(minutes=1), created_at=int(time.time()) - 600
        )
        assert receipt.fresh_until is None
    async with provider_client(fed, gateway, "holder") as holder:
        await publish(holder, ELSEWHERE)
        assert outcome(await fed.lookup(gateway), "holder", FORMER) == (SKIPPED, ROUTED_OUT)
        opted = await holder.opt_out_of_routing()
        assert opted.fresh_until is None
    messages = await fed.lookup(gateway)
    for provider_id in ("other", "holder", "silent"):
        for msisdn in (CURRENT, FORMER):
            assert outcome(messages, provider_id, msisdn)[0] == ANSWERED
    assert summary(messages).total.skipped == 0


async def test_routing_is_audited_with_the_lookup(fed: Federation) -> None:
    """The lookup's audit row counts calls made and routed out; each publication is a row."""
    await _federation(fed)
    gateway = await fed.gateway(store="sqlite")
    async with provider_client(fed, gateway, "other") as other:
        await publish(other, ELSEWHERE)
    await fed.lookup(gateway)
    lookups = await audit_details(gateway, "lookup")
    assert lookups[-1]["routed_out"] == 2
    assert lookups[-1]["asked"] == 4
    published = await audit_details(gateway, "routing.publish")
    assert published == [
        {
            "accepted": True,
            "count_k": 1,
            "created_at": published[0]["created_at"],
            "interval_s": 3600,
            "key_version": 1,
            "kind": "snapshot",
            "m_log2": 14,  # about 1,000 numbers at the SDK's 0.01% for small sets
        }
    ]


async def _refused(call: object) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await call  # type: ignore[misc]  # an awaitable of the client
    return caught.value


async def test_bad_publications_are_refused_precisely_and_change_nothing(fed: Federation) -> None:
    """Malformed, wrongly keyed, future, older and intervalless filters get their status, no row."""
    await _federation(fed)
    gateway = await fed.gateway(store="sqlite")
    assert gateway.store is not None
    async with provider_client(fed, gateway, "holder") as holder:
        now = int(time.time())
        await publish(holder, [CURRENT], created_at=now - 10)
        good = await snapshot_of(holder, [CURRENT])
        wrong_key = dataclasses.replace(good, key_check=bytes(8))
        future = await snapshot_of(holder, [CURRENT], created_at=now + 3600)
        older = await snapshot_of(holder, ELSEWHERE, created_at=now - 100)
        cases = [
            (
                holder.publish_snapshot(wrong_key, interval=timedelta(hours=1)),
                "FAILED_PRECONDITION",
            ),
            (holder.publish_snapshot(future, interval=timedelta(hours=1)), "INVALID_ARGUMENT"),
            (holder.publish_snapshot(older, interval=timedelta(hours=1)), "FAILED_PRECONDITION"),
            (holder.publish_snapshot(good, interval=timedelta(seconds=5)), "INVALID_ARGUMENT"),
            (
                holder.publish_additions(
                    FilterAdditions(
                        key_version=7, key_check=bytes(8), created_at=now, elements=(bytes(16),)
                    )
                ),
                "FAILED_PRECONDITION",
            ),
        ]
        for call, code in cases:
            error = await _refused(call)
            assert error.code.name == code, error.details
        stub = fed.stub(gateway, client="holder")
        bad = gateway_pb2.PublishFilterRequest(
            snapshot=gateway_pb2.RoutingSnapshot(filter=b"OCRF nonsense")
        )
        bad.snapshot.snapshot_interval.FromTimedelta(timedelta(hours=1))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PublishFilter(
                bad, metadata=(("x-onecert-dev-principal", "provider:holder"),), timeout=5
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed filter" in (caught.value.details() or "")
    async with gateway.store.engine.connect() as conn:
        assert len((await conn.execute(select(routing_filters.c.seq))).all()) == 1
    messages = await fed.lookup(gateway)
    assert outcome(messages, "holder", CURRENT)[0] == ANSWERED
    assert outcome(messages, "holder", FORMER) == (SKIPPED, ROUTED_OUT)


async def test_filters_are_sealed_at_rest(fed: Federation) -> None:
    """The stored row holds no byte run of the published filter: a dump reveals nothing."""
    await _federation(fed)
    gateway = await fed.gateway(store="sqlite")
    assert gateway.store is not None
    async with provider_client(fed, gateway, "holder") as holder:
        snapshot = await snapshot_of(holder, ELSEWHERE)
        await holder.publish_snapshot(snapshot, interval=timedelta(hours=1))
    async with gateway.store.engine.connect() as conn:
        (sealed,) = (await conn.execute(select(routing_filters.c.sealed))).one()
    published = snapshot.to_bytes()
    assert published[:16] not in sealed
    assert published[48:80] not in sealed
    assert RoutingFilter.from_bytes(published) == snapshot


async def test_routing_off_asks_everyone_and_refuses_publications(fed: Federation) -> None:
    """With ``[routing] enabled = false`` every provider is asked and publishing is refused."""
    await _federation(fed)
    gateway = await fed.gateway(store="sqlite", routing=RoutingConfig(enabled=False))
    async with provider_client(fed, gateway, "holder") as holder:
        error = await _refused(holder.get_routing_key())
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "routing is off" in error.details
    messages = await fed.lookup(gateway)
    assert summary(messages).total.skipped == 0
    assert summary(messages).total.answered == 6


async def test_a_second_replica_sees_a_filter_published_to_the_first(
    fed: Federation, pg_url: str
) -> None:
    """Two gateways on one PostgreSQL: a filter published to one routes the other's lookups."""
    await _federation(fed)
    async with two_replicas(fed, pg_url) as (first, second):
        async with provider_client(fed, first, "other") as other:
            await publish(other, ELSEWHERE)
            async with provider_client(fed, second, "holder") as holder:
                await publish(holder, [CURRENT])
                await add(holder, FORMER)
        # Within the stated delay (the poll interval), each replica applies the other's.
        await applied(first, second)
        for gateway in (first, second):
            messages = await fed.lookup(gateway)
            assert outcome(messages, "other", CURRENT) == (SKIPPED, ROUTED_OUT)
            assert outcome(messages, "holder", CURRENT)[0] == ANSWERED
            assert outcome(messages, "holder", FORMER)[0] == ANSWERED


async def test_without_a_store_there_is_no_routing(fed: Federation) -> None:
    """A gateway without [store] asks every provider and answers routing calls UNIMPLEMENTED."""
    await _federation(fed)
    gateway = await fed.gateway(store=None)
    async with provider_client(fed, gateway, "holder") as holder:
        error = await _refused(holder.get_routing_key())
    assert error.code is grpc.StatusCode.UNIMPLEMENTED
    assert summary(await fed.lookup(gateway)).total.skipped == 0
