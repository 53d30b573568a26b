"""A carrier completes a number's history (``history = true``) so that CheckRecycled agrees
with what the carrier's registry shows in lookups, without sending anyone a notice."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest

from onecert.gateway._config import CheckRecycledConfig
from onecert.sdk.client import RecycledStatus
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from onecert.gateway import GatewayServer
    from tests.notices.notices_support import NoticeWorld as World


def _history(
    msisdn: str, when: datetime, kind: gateway_pb2.NumberEventType.ValueType
) -> gateway_pb2.ReportNumberEventRequest:
    request = gateway_pb2.ReportNumberEventRequest(
        event_id=f"history-{kind}-{when:%Y%m%d}", msisdn=msisdn, type=kind, history=True
    )
    request.effective_at.FromDatetime(when)
    return request


async def _report(
    world: World, gateway: GatewayServer, request: gateway_pb2.ReportNumberEventRequest
) -> gateway_pb2.ReportNumberEventResponse:
    carrier = world.caller(gateway, "carrier:cm")
    answer: gateway_pb2.ReportNumberEventResponse = await carrier.stub.ReportNumberEvent(
        request, metadata=carrier.metadata, timeout=10
    )
    return answer


async def test_history_answers_check_recycled_and_notifies_no_one(dev_world: World) -> None:
    """A number cancelled and recycled years before history_start, reported as history:
    CheckRecycled answers RECYCLED with the date, no delivery exists, the compliance
    report counts no notice, and the audit log records the report as history."""
    world = dev_world
    await world.push_provider("pay")
    start = world.T0 - timedelta(days=30)
    gateway = await world.gateway(check_recycled=CheckRecycledConfig(history_start=start))
    cancelled, recycled = world.T0 - timedelta(days=900), world.T0 - timedelta(days=700)
    for when, kind in (
        (cancelled, gateway_pb2.NUMBER_EVENT_TYPE_CANCELLED),
        (recycled, gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED),
    ):
        answer = await _report(world, gateway, _history(world.CM_NUMBER, when, kind))
        assert (answer.created, answer.providers) == (True, 0)
        assert await world.deliveries(answer.notice_id) == {}
    async with world.provider_client(gateway, "pay") as pay:
        before = await pay.check_recycled(world.CM_NUMBER, world.T0 - timedelta(days=800))
        after = await pay.check_recycled(world.CM_NUMBER, world.T0 - timedelta(days=600))
    assert (before.status, before.recycled_at) == (RecycledStatus.RECYCLED, recycled)
    assert after.status is RecycledStatus.NOT_RECYCLED
    report = await world.caller(gateway, "admin").compliance()
    assert [(p.provider_id, p.notices_delivered, p.never_acted) for p in report.providers] == [
        ("pay", 0, 0)
    ]
    rows = [r for r in await world.audit_rows() if r["kind"] == "notice.reported"]
    assert len(rows) == 2
    assert all(json.loads(r["detail"])["history"] is True for r in rows)


@pytest.mark.parametrize("history_start", [None, "after"])
async def test_history_is_refused_for_live_events(
    dev_world: World, history_start: str | None
) -> None:
    """Without history_start, or for an event after it, history = true is refused
    (INVALID_ARGUMENT) and nothing is recorded: live events must reach providers."""
    world = dev_world
    await world.push_provider("pay")
    start = world.T0 - timedelta(days=30)
    config = CheckRecycledConfig(history_start=None if history_start is None else start)
    gateway = await world.gateway(check_recycled=config)
    when = world.T0 - timedelta(days=1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _report(
            world, gateway, _history(world.CM_NUMBER, when, gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "check_recycled.history_start" in (refused.value.details() or "")
    async with world.provider_client(gateway, "pay") as pay:
        check = await pay.check_recycled(world.CM_NUMBER, world.T0 - timedelta(days=60))
    assert check.status is RecycledStatus.NO_DATA


async def test_history_keeps_no_raw_number(dev_world: World) -> None:
    """A history event is stored by the number's hash alone: no delivery needs the number."""
    world = dev_world
    gateway = await world.gateway(
        check_recycled=CheckRecycledConfig(history_start=world.T0 - timedelta(days=30))
    )
    when = world.T0 - timedelta(days=700)
    answer = await _report(
        world, gateway, _history(world.CM_NUMBER, when, gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED)
    )
    notice = await world.store.notices.get(answer.notice_id)
    assert notice is not None
    assert notice.msisdn == ""
    assert [e.effective_at for e in await world.store.notices.history(notice.msisdn_hash)] == [when]
