"""Notices are routed like lookups: to providers whose fresh filter may hold the number
and to every provider without one; filter additions route an open notice late."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.notices.notices_support import NoticeWorld
from tests.routing.routing_support import ELSEWHERE, add, publish


async def test_a_notice_goes_to_holders_and_unfiltered_providers_only(
    dev_world: NoticeWorld,
) -> None:
    """A provider whose fresh filter holds the number and one without a filter get the
    notice; one whose fresh filter does not hold it gets nothing, not even a cursor."""
    number = dev_world.CM_NUMBER
    pay = await dev_world.push_provider("pay")
    chat = await dev_world.push_provider("chat")
    dev_world.poll_provider("blog")
    gateway = await dev_world.gateway()
    for provider_id, numbers in (("pay", [number, *ELSEWHERE]), ("chat", ELSEWHERE)):
        async with dev_world.provider_client(gateway, provider_id) as client:
            await publish(client, numbers)
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", number)
    assert answer.providers == 2
    await dev_world.settled(answer.notice_id, providers=["pay"], what="the holder's push")
    assert set(await dev_world.deliveries(answer.notice_id)) == {"pay", "blog"}
    assert [n.msisdn for n in pay.notices] == [number]
    assert chat.notices == []
    assert await dev_world.store.cursors.get("chat") is None


async def test_filter_additions_route_an_open_notice_late(dev_world: NoticeWorld) -> None:
    """A provider routed out whose additions then show the number gets the open notice
    (and is pushed it); additions after the deadline route nothing."""
    number, other = dev_world.CM_NUMBER, dev_world.CM_RANGE_NUMBER
    chat = await dev_world.push_provider("chat")
    gateway = await dev_world.gateway()
    async with dev_world.provider_client(gateway, "chat") as client:
        await publish(client, ELSEWHERE)
        carrier = dev_world.caller(gateway, "carrier:cm")
        first = await carrier.report("ev-1", number)
        late = await carrier.report("ev-2", other)
        assert (first.providers, late.providers) == (0, 0)
        await add(client, number)
        await dev_world.settled(first.notice_id, providers=["chat"], what="the late notice pushed")
        assert [n.msisdn for n in chat.notices] == [number]
        dev_world.clock.advance(timedelta(days=4))  # past the second notice's deadline
        await add(client, other)
    assert await dev_world.deliveries(late.notice_id) == {}
    await gateway.stop(0)
    rows = [r for r in await dev_world.audit_rows() if r["kind"] == "notice.routed_late"]
    assert [(r["subject"], json.loads(r["detail"])) for r in rows] == [
        ("provider:chat", {"notices": 1})
    ]
