"""Gateway.CheckRecycled: the three answers, who may ask, and the per-provider rate limit."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import pytest

from onecert.gateway._config import CheckRecycledConfig
from onecert.sdk.client import GatewayError, RateLimitedError, RecycledStatus
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from tests.notices.notices_support import NoticeWorld

UNUSED_NUMBER = "+8613800000077"


async def test_three_answers(world: NoticeWorld) -> None:
    """RECYCLED after the date, NOT_RECYCLED within the history, NO_DATA before it."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    recycled_at = world.T0 - timedelta(days=10)
    await world.caller(gateway, "carrier:cm").report(
        "ev-1", world.CM_NUMBER, effective_at=recycled_at
    )
    async with world.provider_client(gateway, "pay") as pay:
        before = await pay.check_recycled(world.CM_NUMBER, world.T0 - timedelta(days=30))
        assert before.status is RecycledStatus.RECYCLED
        assert before.recycled
        assert before.recycled_at == recycled_at
        after = await pay.check_recycled(world.CM_NUMBER, world.T0 - timedelta(days=5))
        assert after.status is RecycledStatus.NOT_RECYCLED
        assert after.recycled_at is None
        unknown = await pay.check_recycled(UNUSED_NUMBER, world.T0 - timedelta(days=5))
        assert unknown.status is RecycledStatus.NO_DATA
    rows = [r for r in await world.audit_rows() if r["kind"] == "recycled.checked"]
    assert [r["actor"] for r in rows] == ["provider:pay"] * 3
    assert all(r["subject"].startswith("msisdn:") for r in rows)


async def test_history_start_covers_quiet_numbers(dev_world: NoticeWorld) -> None:
    """With history_start, a number without events is NOT_RECYCLED for dates after it."""
    await dev_world.push_provider("pay")
    start = dev_world.T0 - timedelta(days=365)
    gateway = await dev_world.gateway(
        check_recycled=CheckRecycledConfig(history_start=start),
    )
    async with dev_world.provider_client(gateway, "pay") as pay:
        covered = await pay.check_recycled(UNUSED_NUMBER, start + timedelta(days=1))
        assert covered.status is RecycledStatus.NOT_RECYCLED
        earlier = await pay.check_recycled(UNUSED_NUMBER, start - timedelta(days=1))
        assert earlier.status is RecycledStatus.NO_DATA


async def test_rate_limit_per_provider(dev_world: NoticeWorld) -> None:
    """Past its burst a provider gets RESOURCE_EXHAUSTED with retry-after-ms; others do not."""
    await dev_world.push_provider("pay")
    await dev_world.push_provider("chat")
    gateway = await dev_world.gateway(check_recycled=CheckRecycledConfig(rate_per_s=0.5, burst=2))
    since = dev_world.T0 - timedelta(days=1)
    caller = dev_world.caller(gateway, "provider:pay")
    for _ in range(2):
        await caller.check(UNUSED_NUMBER, since)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await caller.check(UNUSED_NUMBER, since)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    hints = dict(err.value.trailing_metadata() or ())
    assert 1000 < int(hints["retry-after-ms"]) <= 2000
    async with dev_world.provider_client(gateway, "pay") as pay:
        with pytest.raises(RateLimitedError) as limited:
            await pay.check_recycled(UNUSED_NUMBER, since)
        assert limited.value.retry_after is not None
        assert 0 < limited.value.retry_after <= 2
    async with dev_world.provider_client(gateway, "chat") as chat:
        answer = await chat.check_recycled(UNUSED_NUMBER, since)
        assert answer.status is RecycledStatus.NO_DATA


async def test_invalid_checks(dev_world: NoticeWorld) -> None:
    """A bad number, a missing or future date: INVALID_ARGUMENT without the number."""
    await dev_world.push_provider("pay")
    gateway = await dev_world.gateway()
    caller = dev_world.caller(gateway, "provider:pay")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await caller.check("13800138000", dev_world.T0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "13800138000" not in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await caller.stub.CheckRecycled(
            gateway_pb2.CheckRecycledRequest(msisdn=UNUSED_NUMBER),
            metadata=caller.metadata,
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await caller.check(UNUSED_NUMBER, dev_world.T0 + timedelta(days=1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_providers_may_check(world: NoticeWorld) -> None:
    """Carriers and admins get PERMISSION_DENIED; unknown certificates UNAUTHENTICATED."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    since = world.T0 - timedelta(days=1)
    expected = {
        "carrier:cm": grpc.StatusCode.PERMISSION_DENIED,
        "admin": grpc.StatusCode.PERMISSION_DENIED,
        "cn:intruder": grpc.StatusCode.UNAUTHENTICATED,
    }
    assert await world.check_codes(gateway, list(expected), UNUSED_NUMBER, since) == expected
    async with world.provider_client(gateway, "pay") as pay:
        with pytest.raises(GatewayError):
            await pay.check_recycled("not a number", since)
