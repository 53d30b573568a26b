"""The fan-out's shared deadline timer: it ends hung calls as their own deadline would."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from onecert.gateway._config import FanoutConfig
from onecert.gateway._fanout import _Expiry, _Result, _Slots, _supervise, _Upstream
from onecert.gateway._observers import UpstreamOutcome

DEADLINE = 0.2


def _upstream(deadline: float = DEADLINE) -> _Upstream:
    return _Upstream(
        target_id="hung",
        address="127.0.0.1:1",
        plaintext=True,
        deadline=deadline,
        max_concurrency=4,
        fanout=FanoutConfig(breaker_failure_threshold=1),
    )


async def _hang(request: object, **_: object) -> bytes:
    # A call that ignores its timeout: only the shared timer can end it.
    await asyncio.sleep(3600)
    return b""


def _no_warrant() -> str:
    return "warrant"


def _supervised(upstream: _Upstream, expiry: _Expiry) -> Coroutine[Any, Any, _Result[bytes]]:
    loop = asyncio.get_running_loop()
    now = loop.time()
    return _supervise(
        upstream, _hang, None, _no_warrant, deadline=now + 60, anchor=now, expiry=expiry
    )


async def test_a_hung_call_ends_timed_out_at_its_deadline_and_counts_as_a_failure() -> None:
    """The timer ends a call that never returns with the detail its gRPC deadline
    would give, frees its slot and counts the timeout against its breaker."""
    upstream = _upstream()
    expiry = _Expiry(asyncio.get_running_loop())
    result = await asyncio.wait_for(_supervised(upstream, expiry), timeout=5)
    expiry.close()
    assert result.outcome is UpstreamOutcome.TIMED_OUT
    assert result.detail == "deadline 0.2s exceeded"
    assert result.attempts == 1
    assert upstream.breaker.consecutive_failures == 1
    assert upstream.slots.free == 4


async def test_calls_sharing_a_deadline_all_end_at_it() -> None:
    """Every call watched for the same deadline ends TIMED_OUT, none is left hanging."""
    upstreams = [_upstream() for _ in range(5)]
    expiry = _Expiry(asyncio.get_running_loop())
    results = await asyncio.wait_for(
        asyncio.gather(*(_supervised(u, expiry) for u in upstreams)), timeout=5
    )
    expiry.close()
    assert [r.outcome for r in results] == [UpstreamOutcome.TIMED_OUT] * 5


async def test_the_lookups_cancellation_still_cancels_a_watched_call() -> None:
    """A call cancelled from outside (the lookup ended) is cancelled, not turned into
    a timeout, and leaves no verdict on its upstream."""
    upstream = _upstream(deadline=30)
    expiry = _Expiry(asyncio.get_running_loop())
    task = asyncio.create_task(_supervised(upstream, expiry))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    expiry.close()
    assert upstream.breaker.consecutive_failures == 0
    assert upstream.slots.free == 4


async def test_a_cancellation_at_the_deadline_wins_over_the_timeout() -> None:
    """When the lookup is cancelled in the same turn as the deadline fires, the call
    is cancelled: the timer's own cancellation never swallows the lookup's."""
    upstream = _upstream(deadline=30)
    loop = asyncio.get_running_loop()
    expiry = _Expiry(loop)
    task = asyncio.create_task(_supervised(upstream, expiry))
    await asyncio.sleep(0.01)
    # The timer and the lookup's cancellation in one turn of the loop.
    end = loop.time()
    expiry.watch(end, task)
    # The timer's own callback, run now so that both cancellations share the turn.
    expiry._fire(end)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    expiry.close()
    assert upstream.breaker.consecutive_failures == 0


async def test_slots_cap_calls_and_hand_over_in_arrival_order() -> None:
    """A full upstream queues callers and gives each released slot to the first in
    line; the cap holds throughout."""
    slots = _Slots(2)
    assert slots.take()
    assert slots.take()
    assert not slots.take()
    order: list[int] = []

    async def queued(i: int) -> None:
        await slots.wait()
        order.append(i)

    waiters = [asyncio.create_task(queued(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert order == []
    slots.release()
    await asyncio.sleep(0)
    assert order == [0]
    slots.release()
    slots.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert slots.free == 0
    for _ in range(2):
        slots.release()
    assert slots.free == 2


async def test_a_cancelled_waiter_takes_no_slot_and_loses_none() -> None:
    """Cancelled while queued, a caller holds nothing; cancelled just after a slot
    was handed to it, it passes the slot on: no slot leaks either way."""
    slots = _Slots(1)
    assert slots.take()
    first = asyncio.create_task(slots.wait())
    second = asyncio.create_task(slots.wait())
    third = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    slots.release()  # handed to the second...
    second.cancel()  # ...cancelled before it ran: the third gets it
    with pytest.raises(asyncio.CancelledError):
        await second
    await asyncio.wait_for(third, timeout=1)
    slots.release()
    assert slots.free == 1
