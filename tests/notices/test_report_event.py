"""Gateway.ReportNumberEvent: who may report what, validation, idempotency, deadlines."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest

from onecert.gateway._config import NoticesConfig
from onecert.gateway._notices import notice_deadline
from onecert.gateway.store import DeliveryMode, DeliveryState, StoredEventType
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from tests.notices.notices_support import NoticeWorld

CANCELLED = gateway_pb2.NUMBER_EVENT_TYPE_CANCELLED
RECYCLED = gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED


def _sha(msisdn: str) -> str:
    return hashlib.sha256(msisdn.encode()).hexdigest()


async def test_carrier_reports_its_number_once_per_provider(world: NoticeWorld) -> None:
    """A carrier's report over mutual TLS records one delivery per provider, by its mode."""
    await world.push_provider("pay")
    world.poll_provider("forum")
    gateway = await world.gateway()
    carrier = world.caller(gateway, "carrier:cm")
    answer = await carrier.report("ev-1", world.CM_NUMBER)
    assert answer.created
    assert answer.providers == 2
    assert answer.notice_id.startswith("nt_")
    notice = await world.store.notices.get(answer.notice_id)
    assert notice is not None
    assert notice.carrier_id == "cm"
    assert notice.event_type is StoredEventType.RECYCLED
    modes = {
        d.provider_id: d.mode for d in await world.store.deliveries.for_notice(notice.notice_id)
    }
    assert modes == {"pay": DeliveryMode.PUSH, "forum": DeliveryMode.POLL}
    # A number in the carrier's range (not only its prefixes) is its own too.
    ranged = await carrier.report("ev-2", world.CM_RANGE_NUMBER)
    assert ranged.created


async def test_foreign_number_is_refused_and_nothing_recorded(world: NoticeWorld) -> None:
    """A carrier reporting a number it does not serve gets PERMISSION_DENIED; nothing is kept."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.caller(gateway, "carrier:cm").report("ev-x", world.CT_NUMBER)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.CT_NUMBER not in (err.value.details() or "")
    assert await world.store.notices.history(_sha(world.CT_NUMBER)) == []
    # The carrier that does serve it may.
    answer = await world.caller(gateway, "carrier:ct").report("ev-x", world.CT_NUMBER)
    assert answer.created


@pytest.mark.parametrize("who", ["provider:pay", "admin"])
async def test_only_carriers_may_report(world: NoticeWorld, who: str) -> None:
    """A provider or an admin calling ReportNumberEvent gets PERMISSION_DENIED."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.caller(gateway, who).report("ev-1", world.CM_NUMBER)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await world.store.notices.history(_sha(world.CM_NUMBER)) == []


async def test_unregistered_certificate_is_unauthenticated(world: NoticeWorld) -> None:
    """A valid client certificate whose CN has no role at all is UNAUTHENTICATED."""
    gateway = await world.gateway()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.caller(gateway, "cn:intruder").report("ev-1", world.CM_NUMBER)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_portal_certificate_cannot_report_events(world: NoticeWorld) -> None:
    """The portal's certificate has a role, and it is not a carrier's: PERMISSION_DENIED."""
    gateway = await world.gateway()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.caller(gateway, "cn:portal").report("ev-1", world.CM_NUMBER)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_same_event_twice_and_conflicting_reuse(world: NoticeWorld) -> None:
    """The same event id returns the first notice; reused with other content, ALREADY_EXISTS."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    carrier = world.caller(gateway, "carrier:cm")
    effective = world.T0 - timedelta(hours=2)
    first = await carrier.report("ev-1", world.CM_NUMBER, effective_at=effective)
    again = await carrier.report("ev-1", world.CM_NUMBER, effective_at=effective)
    assert (again.notice_id, again.created, again.providers) == (first.notice_id, False, 1)
    assert len(await world.store.deliveries.for_notice(first.notice_id)) == 1
    for other in (
        {"msisdn": world.CM_RANGE_NUMBER, "effective_at": effective},
        {"msisdn": world.CM_NUMBER, "effective_at": effective - timedelta(seconds=1)},
        {"msisdn": world.CM_NUMBER, "effective_at": effective, "kind": CANCELLED},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await carrier.report("ev-1", **other)  # type: ignore[arg-type]  # test data
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # Another carrier's event id space is its own.
    mine = await world.caller(gateway, "carrier:ct").report("ev-1", world.CT_NUMBER)
    assert mine.created


async def test_invalid_reports_change_nothing(dev_world: NoticeWorld) -> None:
    """Malformed reports get INVALID_ARGUMENT with a message that never repeats the number."""
    world = dev_world
    await world.push_provider("pay")
    gateway = await world.gateway()
    carrier = world.caller(gateway, "carrier:cm")
    stub, md = carrier.stub, carrier.metadata
    past = world.stamp(world.T0 - timedelta(hours=1))

    def request(**fields: object) -> gateway_pb2.ReportNumberEventRequest:
        base: dict[str, object] = {
            "event_id": "ev-bad",
            "msisdn": world.CM_NUMBER,
            "type": RECYCLED,
            "effective_at": past,
        }
        base.update(fields)
        return gateway_pb2.ReportNumberEventRequest(**base)  # type: ignore[arg-type]  # test data

    no_time = request()
    no_time.ClearField("effective_at")
    bad = [
        request(event_id=""),
        request(event_id="x" * 129),
        request(msisdn="13800138000"),
        request(msisdn="+86 138 0013 8000"),
        request(type=gateway_pb2.NUMBER_EVENT_TYPE_UNSPECIFIED),
        no_time,
        request(effective_at=world.stamp(world.T0 + timedelta(hours=1))),
        request(type=CANCELLED, quiet_period_ends_at=past),
        request(quiet_period_ends_at=world.stamp(world.T0 + timedelta(days=90))),
    ]
    for item in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ReportNumberEvent(item, metadata=md, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, item
        assert "13800138000" not in (err.value.details() or "")
    assert await world.store.notices.history(_sha(world.CM_NUMBER)) == []


async def test_deadlines_follow_the_quiet_period(world: NoticeWorld) -> None:
    """CANCELLED: act before the quiet period ends; RECYCLED: within recycled_deadline_s."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    carrier = world.caller(gateway, "carrier:cm")
    effective = world.T0 - timedelta(days=1)
    quiet_end = effective + timedelta(days=60)
    cancelled = await carrier.report(
        "ev-c1",
        world.CM_NUMBER,
        kind=CANCELLED,
        effective_at=effective,
        quiet_period_ends_at=quiet_end,
    )
    default_quiet = await carrier.report(
        "ev-c2", world.CM_RANGE_NUMBER, kind=CANCELLED, effective_at=effective
    )
    recycled = await carrier.report("ev-r1", world.CM_NUMBER, effective_at=effective)
    deadlines = {}
    for name, answer in (("c1", cancelled), ("c2", default_quiet), ("r1", recycled)):
        notice = await world.store.notices.get(answer.notice_id)
        assert notice is not None
        deadlines[name] = notice.deadline
    assert deadlines["c1"] == quiet_end
    assert deadlines["c2"] == effective + timedelta(days=90)
    assert deadlines["r1"] == effective + timedelta(days=3)


def test_late_reports_still_leave_time_to_act() -> None:
    """A notice reported after its rule's deadline gets min_action_s from now; deadline_s wins."""
    config = NoticesConfig(min_action_s=3600)
    now = datetime(2025, 3, 1, tzinfo=UTC)
    old = now - timedelta(days=30)
    late = notice_deadline(
        config,
        event_type=StoredEventType.RECYCLED,
        effective_at=old,
        quiet_period_ends_at=None,
        now=now,
    )
    assert late == now + timedelta(hours=1)
    fixed = notice_deadline(
        NoticesConfig(deadline_s=86400.0, min_action_s=0),
        event_type=StoredEventType.CANCELLED,
        effective_at=now,
        quiet_period_ends_at=now + timedelta(days=60),
        now=now,
    )
    assert fixed == now + timedelta(days=1)


async def test_report_is_audited_with_hashed_number(world: NoticeWorld) -> None:
    """The audit row names the carrier and a digest of the number, never the number."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    answer = await world.caller(gateway, "carrier:cm").report("ev-1", world.CM_NUMBER)
    rows = [r for r in await world.audit_rows() if r["kind"] == "notice.reported"]
    assert len(rows) == 1
    assert rows[0]["actor"] == "carrier:cm"
    assert rows[0]["subject"].startswith("msisdn:")
    assert answer.notice_id in rows[0]["detail"]
    everything = repr(await world.audit_rows())
    assert "13800138000" not in everything


async def test_delivery_state_starts_pending(world: NoticeWorld) -> None:
    """A fresh notice's poll delivery waits, PENDING, for the provider to poll."""
    world.poll_provider("forum")
    gateway = await world.gateway()
    answer = await world.caller(gateway, "carrier:cm").report("ev-1", world.CM_NUMBER)
    found = await world.deliveries(answer.notice_id)
    assert found["forum"].state is DeliveryState.PENDING
    assert found["forum"].delivered_at is None
