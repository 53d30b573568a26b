"""Notices reach providers: pushed to real SDK providers, or polled and acknowledged."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import pytest

from onecert.gateway._channels import ChannelPool
from onecert.gateway._notice_delivery import NoticePusher
from onecert.gateway.store import DeliveryState
from onecert.sdk import SetIssuer, SetVerifier
from onecert.sdk._keys import SigningKey
from onecert.sdk._poller import NoticePoller
from onecert.sdk.client import EventError, GatewayError
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from onecert.gateway.store.testing import Database
    from tests.notices.notices_support import NoticeWorld


async def test_push_reaches_sdk_providers_once(world: NoticeWorld) -> None:
    """Over mutual TLS each push provider gets one valid SET; its handler runs once."""
    pay = await world.push_provider("pay", acts=2)
    chat = await world.push_provider("chat", acts=None)
    gateway = await world.gateway()
    effective = world.T0 - timedelta(hours=3)
    answer = await world.caller(gateway, "carrier:cm").report(
        "ev-1", world.CM_NUMBER, effective_at=effective
    )
    found = await world.settled(answer.notice_id, what="both pushes acknowledged")
    notice = found["pay"].notice
    assert len(pay.notices) == 1
    got = pay.notices[0]
    assert (got.jti, got.msisdn, got.recycled_at, got.act_by) == (
        found["pay"].jti,
        world.CM_NUMBER,
        effective,
        notice.deadline,
    )
    assert found["pay"].bindings_removed == 2
    assert found["pay"].acted_at is not None
    assert world.T0 <= found["pay"].acted_at <= world.clock()
    assert [n.jti for n in chat.notices] == [found["chat"].jti]
    assert found["chat"].acted_at is None
    # Settled deliveries are not pushed again.
    await asyncio.sleep(0.3)
    assert len(pay.notices) == 1
    assert len(chat.notices) == 1


async def test_push_acted_notices_are_audited_like_confirmed_ones(dev_world: NoticeWorld) -> None:
    """A provider that acted on a pushed notice gets the same ``notice.confirmed`` audit
    row as one confirming after a poll; one that only acknowledged gets none."""
    await dev_world.push_provider("pay", acts=3)
    await dev_world.push_provider("chat", acts=None)
    gateway = await dev_world.gateway()
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
    await dev_world.settled(answer.notice_id, what="both pushes acknowledged")
    await gateway.stop(0)  # drains background audit rows
    found = await dev_world.deliveries(answer.notice_id)
    rows = [r for r in await dev_world.audit_rows() if r["kind"] == "notice.confirmed"]
    assert [(r["actor"], r["subject"]) for r in rows] == [
        ("provider:pay", f"jti:{found['pay'].jti}")
    ]
    assert json.loads(rows[0]["detail"]) == {
        "bindings_removed": 3,
        "recorded": True,
        "via": "push",
    }


async def test_push_is_retried_until_acknowledged(dev_world: NoticeWorld) -> None:
    """A provider answering UNAVAILABLE gets the notice again after a backoff."""
    pay = await dev_world.push_provider("pay", fail_first=2)
    gateway = await dev_world.gateway()
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
    found = await dev_world.settled(answer.notice_id, what="the push to succeed")
    delivery = found["pay"]
    assert delivery.attempts == 3
    assert len(pay.notices) == 1


async def test_push_gives_up_at_the_deadline(world: NoticeWorld) -> None:
    """A provider that never answers is given up at the deadline and shows as never acted."""
    down = await world.refusing_provider("pay", grpc.StatusCode.UNAVAILABLE)
    gateway = await world.gateway()
    answer = await world.caller(gateway, "carrier:cm").report("ev-1", world.CM_NUMBER)

    async def tried() -> bool:
        return down.calls >= 1

    await world.eventually(tried, what="a first push")
    world.clock.advance(timedelta(days=4))
    found = await world.settled(
        answer.notice_id, DeliveryState.FAILED, what="the delivery to be given up"
    )
    delivery = found["pay"]
    assert "deadline" in (delivery.last_error or "")
    report = await world.caller(gateway, "admin").compliance()
    line = {p.provider_id: p for p in report.providers}["pay"]
    assert (line.notices_delivered, line.never_acted, line.acted_on_time) == (0, 1, 0)
    assert line.never_received == 1  # unreachable: never received, not ignored


async def test_permanent_refusal_is_not_retried(dev_world: NoticeWorld) -> None:
    """A provider that does not implement ReceiveEvent is marked FAILED after one try."""
    refusing = await dev_world.refusing_provider("pay", grpc.StatusCode.UNIMPLEMENTED)
    gateway = await dev_world.gateway()
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
    await dev_world.settled(answer.notice_id, DeliveryState.FAILED, what="the delivery to fail")
    await asyncio.sleep(0.2)
    assert refusing.calls == 1
    assert "UNIMPLEMENTED" in (
        (await dev_world.deliveries(answer.notice_id))["pay"].last_error or ""
    )


async def test_poll_returns_sets_until_acknowledged(world: NoticeWorld) -> None:
    """A poll provider gets a valid SET on every poll until it acks; acks never cross providers."""
    world.poll_provider("forum")
    world.poll_provider("chat")
    gateway = await world.gateway()
    answer = await world.caller(gateway, "carrier:cm").report("ev-1", world.CM_NUMBER)
    verifier = SetVerifier(keys=world.gateway_keys, issuer=world.GATEWAY_ID, audience="forum")
    async with (
        world.provider_client(gateway, "forum") as forum,
        world.provider_client(gateway, "chat") as chat,
    ):
        first = await forum.poll_events()
        assert len(first.events) == 1
        assert not first.more_available
        notice = verifier.verify(first.events[0].token)
        assert notice.jti == first.events[0].jti
        assert notice.msisdn == world.CM_NUMBER
        again = await forum.poll_events()
        assert [e.jti for e in again.events] == [notice.jti]
        # Another provider acking forum's jti, or an unknown one, changes nothing.
        other = await chat.poll_events(acks=[notice.jti, "no-such-jti"])
        assert len(other.events) == 1
        assert other.events[0].jti != notice.jti
        found = await world.deliveries(answer.notice_id)
        assert found["forum"].state is DeliveryState.PENDING
        assert found["forum"].delivered_at is not None
        done = await forum.poll_events(acks=[notice.jti])
        assert done.events == ()
    found = await world.deliveries(answer.notice_id)
    assert found["forum"].state is DeliveryState.ACKNOWLEDGED
    assert found["chat"].state is DeliveryState.PENDING


async def test_poll_batches_and_reports_more(dev_world: NoticeWorld) -> None:
    """max_events bounds a poll and more_available says the rest is waiting."""
    dev_world.poll_provider("forum")
    gateway = await dev_world.gateway()
    carrier = dev_world.caller(gateway, "carrier:cm")
    for i in range(3):
        await carrier.report(f"ev-{i}", dev_world.CM_NUMBER)
    async with dev_world.provider_client(gateway, "forum") as forum:
        first = await forum.poll_events(max_events=2)
        assert len(first.events) == 2
        assert first.more_available
        rest = await forum.poll_events(acks=[e.jti for e in first.events], max_events=2)
        assert len(rest.events) == 1
        assert not rest.more_available
        with pytest.raises(GatewayError) as err:
            await forum.poll_events(max_events=1001)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_poll_waits_for_a_new_notice(dev_world: NoticeWorld) -> None:
    """Without return_immediately a poll is held until a notice arrives, within its deadline."""
    dev_world.poll_provider("forum")
    gateway = await dev_world.gateway()
    async with dev_world.provider_client(gateway, "forum") as forum:
        started = time.monotonic()
        empty = await forum.poll_events(return_immediately=False, timeout=1.5)
        held = time.monotonic() - started
        assert empty.events == ()
        # Held open, but answered before the caller's deadline.
        assert 0.5 < held < 1.5
        waiting = asyncio.create_task(forum.poll_events(return_immediately=False, timeout=5))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
        result = await asyncio.wait_for(waiting, 3)
        assert len(result.events) == 1


async def test_poll_errors_fail_the_delivery(dev_world: NoticeWorld) -> None:
    """A SET reported in errors is not handed out again and keeps the provider's reason."""
    dev_world.poll_provider("forum")
    gateway = await dev_world.gateway()
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
    async with dev_world.provider_client(gateway, "forum") as forum:
        (event,) = (await forum.poll_events()).events
        after = await forum.poll_events(
            errors=[EventError(event.jti, "invalid_key", "unknown kid")]
        )
        assert after.events == ()
    delivery = (await dev_world.deliveries(answer.notice_id))["forum"]
    assert delivery.state is DeliveryState.FAILED
    assert delivery.last_error == "invalid_key: unknown kid"


async def test_who_may_poll(world: NoticeWorld) -> None:
    """Push providers are told to use ReceiveEvent; carriers and strangers may not poll."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    async with world.provider_client(gateway, "pay") as pay:
        with pytest.raises(GatewayError) as err:
            await pay.poll_events()
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    for who, code in (
        ("carrier:cm", grpc.StatusCode.PERMISSION_DENIED),
        ("cn:intruder", grpc.StatusCode.UNAUTHENTICATED),
    ):
        caller = world.caller(gateway, who)
        with pytest.raises(grpc.aio.AioRpcError) as rpc_err:
            await caller.stub.PollEvents(
                gateway_pb2.PollEventsRequest(),
                metadata=caller.metadata,
                timeout=5,
            )
        assert rpc_err.value.code() == code


async def test_confirm_event_action(dev_world: NoticeWorld) -> None:
    """A provider confirms its own notice once; another's or an unknown jti is NOT_FOUND."""
    dev_world.poll_provider("forum")
    dev_world.poll_provider("chat")
    gateway = await dev_world.gateway()
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
    found = await dev_world.deliveries(answer.notice_id)
    async with (
        dev_world.provider_client(gateway, "forum") as forum,
        dev_world.provider_client(gateway, "chat") as chat,
    ):
        for client, jti in ((chat, found["forum"].jti), (forum, "no-such-jti")):
            with pytest.raises(GatewayError) as err:
                await client.confirm_event_action(jti, 1)
            assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert await forum.confirm_event_action(found["forum"].jti, 3)
        assert not await forum.confirm_event_action(found["forum"].jti, 3)
        with pytest.raises(GatewayError) as err:
            await forum.confirm_event_action("", 1)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    delivery = (await dev_world.deliveries(answer.notice_id))["forum"]
    assert delivery.bindings_removed == 3
    assert delivery.acted_at is not None
    # Confirming implies receipt: the notice is no longer handed out.
    assert delivery.state is DeliveryState.ACKNOWLEDGED


async def test_sdk_poller_hands_notices_to_on_recycled(world: NoticeWorld) -> None:
    """The SDK poller verifies each SET, runs on_recycled once, acks and confirms the action."""
    world.poll_provider("forum")
    gateway = await world.gateway()
    answer = await world.caller(gateway, "carrier:cm").report("ev-1", world.CM_NUMBER)
    handle = world.sdk_provider("forum", acts=1)
    async with world.provider_client(gateway, "forum") as client:
        poller = NoticePoller(
            handle.provider,
            client,
            gateway_keys=world.gateway_keys,
            gateway_issuer=world.GATEWAY_ID,
        )
        first = await poller.poll_once()
        assert (first.received, first.handled, first.confirmed) == (1, 1, 1)
        assert [n.msisdn for n in handle.notices] == [world.CM_NUMBER]
        second = await poller.poll_once()  # carries the ack
        assert second.received == 0
    delivery = (await world.deliveries(answer.notice_id))["forum"]
    assert delivery.state is DeliveryState.ACKNOWLEDGED
    assert delivery.bindings_removed == 1
    assert len(handle.notices) == 1


async def test_two_gateways_share_the_pushes(dev_world: NoticeWorld, database: Database) -> None:
    """Push workers of two gateways on one database push every notice exactly once."""
    counting = await dev_world.counting_provider("pay")
    config = dev_world.config()
    store = dev_world.store
    for i in range(24):
        await store.notices.record(
            carrier_id="cm",
            event_id=f"ev-{i}",
            msisdn=dev_world.CM_NUMBER,
            msisdn_hash=hashlib.sha256(dev_world.CM_NUMBER.encode()).hexdigest(),
            event_type="RECYCLED",
            effective_at=dev_world.T0 - timedelta(hours=1),
            quiet_period_ends_at=None,
            deadline=dev_world.T0 + timedelta(days=3),
            providers=[("pay", "push")],
            now=dev_world.clock(),
        )
    other_store = database.open()
    sets = SetIssuer(key=SigningKey.load(config.keys.warrant_key), issuer=dev_world.GATEWAY_ID)
    pools = [ChannelPool(upstream_tls=None, max_message_bytes=1 << 20) for _ in range(2)]
    pushers = [
        NoticePusher(
            store=s,
            providers=config.providers,
            sets=sets,
            channels=pool,
            config=replace(config.notices, batch=3),
            clock=dev_world.clock,
        )
        for s, pool in zip((store, other_store), pools, strict=True)
    ]
    try:
        for pusher in pushers:
            await pusher.start()

        async def all_pushed() -> bool:
            return len(counting.pushes) == 24

        await dev_world.eventually(all_pushed, what="every notice pushed")
    finally:
        for pusher in pushers:
            await pusher.stop()
        for pool in pools:
            await pool.close()
        await other_store.close()
    assert set(counting.pushes.values()) == {1}


async def test_a_dead_workers_lease_runs_out(dev_world: NoticeWorld) -> None:
    """A provider's cursor leased by a gateway that died is pushed to by another once the
    lease has run out, each notice once."""
    counting = await dev_world.counting_provider("pay")
    notices = replace(dev_world.config().notices, workers=0, lease_s=60)
    gateway = await dev_world.gateway(notices=notices)
    assert gateway.recycled is not None
    pusher = gateway.recycled.pusher
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
    leased = await dev_world.store.cursors.claim_due(
        worker_id="killed-gateway", lease_s=60, now=dev_world.clock()
    )
    assert [c.provider_id for c in leased] == ["pay"]
    assert await pusher.run_once() == 0
    dev_world.clock.advance(timedelta(seconds=61))
    assert await pusher.run_once() == 1
    delivery = (await dev_world.deliveries(answer.notice_id))["pay"]
    assert counting.pushes == {delivery.jti: 1}
    assert delivery.state is DeliveryState.ACKNOWLEDGED
    assert delivery.attempts == 1
    cursor = await dev_world.store.cursors.get("pay")
    assert cursor is not None
    assert (cursor.acked_seq, cursor.head_seq, cursor.lease_owner) == (1, 1, None)


async def test_a_batch_is_settled_per_notice(dev_world: NoticeWorld) -> None:
    """Notices waiting for a provider go in one ReceiveEvents call, in log order; each is
    settled by its own answer: acknowledged, refused (FAILED, received, not sent again),
    or tried again later (UNAVAILABLE) while the others stay settled."""
    numbers = [f"+8613800138{i:03d}" for i in range(5)]
    refused, flaky = numbers[1], numbers[3]
    pay = await dev_world.batch_provider(
        "pay", {refused: grpc.StatusCode.INVALID_ARGUMENT, flaky: grpc.StatusCode.UNAVAILABLE}
    )
    notices = replace(dev_world.config().notices, workers=0)
    gateway = await dev_world.gateway(notices=notices)
    assert gateway.recycled is not None
    carrier = dev_world.caller(gateway, "carrier:cm")
    ids = [(await carrier.report(f"ev-{i}", n)).notice_id for i, n in enumerate(numbers)]
    assert await gateway.recycled.pusher.run_once() == 1
    assert pay.batches == [numbers]
    states = [(await dev_world.deliveries(i))["pay"] for i in ids]
    assert [d.state for d in states] == [
        DeliveryState.ACKNOWLEDGED,
        DeliveryState.FAILED,
        DeliveryState.ACKNOWLEDGED,
        DeliveryState.PENDING,
        DeliveryState.ACKNOWLEDGED,
    ]
    assert states[1].delivered_at is not None  # received, and refused
    assert "INVALID_ARGUMENT" in (states[1].last_error or "")
    dev_world.clock.advance(timedelta(seconds=1))  # past the backoff
    assert await gateway.recycled.pusher.run_once() == 1
    assert pay.batches[1:] == [[flaky]]
    assert (await dev_world.deliveries(ids[3]))["pay"].state is DeliveryState.ACKNOWLEDGED
    cursor = await dev_world.store.cursors.get("pay")
    assert cursor is not None
    assert cursor.acked_seq == cursor.head_seq
