"""Push workers do not wait for the pushes they start: a hung provider holds back only
its own notices, at most ``in_flight`` pushes run at once, and finished pushes are
recorded together (group commits)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest

from onecert.gateway import _notice_delivery
from onecert.gateway._notice_delivery import GroupCommit
from onecert.gateway._notices import Doorbell
from onecert.gateway.store import (
    DeliveryMode,
    DeliveryState,
    NoticeCursor,
    PushResult,
    Settlement,
)
from onecert.v1 import provider_pb2
from tests.notices.notices_support import RefusingProvider

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tests.notices.notices_support import NoticeWorld


class Gate:
    """Shared by held providers: how many calls are inside now (and at most), and the
    event that lets them answer."""

    def __init__(self) -> None:
        self.inside = 0
        self.peak = 0
        self.open = asyncio.Event()


class HeldProvider(RefusingProvider):
    """Acknowledges each batch once the gate opens; records every ``jti`` it got."""

    def __init__(self, gate: Gate) -> None:
        super().__init__(grpc.StatusCode.UNIMPLEMENTED)
        self.gate = gate
        self.jtis: list[str] = []

    async def ReceiveEvents(  # noqa: N802 - the gRPC method name
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        self.gate.inside += 1
        self.gate.peak = max(self.gate.peak, self.gate.inside)
        try:
            await self.gate.open.wait()
        finally:
            self.gate.inside -= 1
        results = []
        for token in request.sets:
            jti = jwt.decode(token, options={"verify_signature": False})["jti"]
            self.jtis.append(jti)
            results.append(
                provider_pb2.EventResult(
                    jti=jti, response=provider_pb2.ReceiveEventResponse(acknowledged=True)
                )
            )
        return provider_pb2.ReceiveEventsResponse(results=results)


async def _held(world: NoticeWorld, provider_id: str, gate: Gate) -> HeldProvider:
    fake = HeldProvider(gate)
    await world._serve_fake(provider_id, fake)
    return fake


async def test_a_hung_provider_holds_back_only_its_own_notices(dev_world: NoticeWorld) -> None:
    """While one provider's push hangs, another gets the next notices at once; the hung
    one gets each notice once when it answers, the later ones in its next call."""
    gate = Gate()
    hung = await _held(dev_world, "hung", gate)
    pay = await dev_world.counting_provider("pay")
    notices = replace(dev_world.config().notices, push_deadline_s=30.0, lease_s=60.0)
    gateway = await dev_world.gateway(notices=notices)
    carrier = dev_world.caller(gateway, "carrier:cm")
    first = await carrier.report("ev-1", dev_world.CM_NUMBER)

    async def hung_called() -> bool:
        return gate.inside == 1

    await dev_world.eventually(hung_called, what="the push to the hung provider")
    second = await carrier.report("ev-2", dev_world.CM_RANGE_NUMBER)

    async def pay_has_both() -> bool:
        found = [(await dev_world.deliveries(n.notice_id))["pay"] for n in (first, second)]
        return all(d.state is DeliveryState.ACKNOWLEDGED for d in found)

    await dev_world.eventually(pay_has_both, what="both notices acknowledged by pay")
    assert gate.inside == 1  # still hung meanwhile
    gate.open.set()

    async def hung_has_both() -> bool:
        found = [(await dev_world.deliveries(n.notice_id))["hung"] for n in (first, second)]
        return all(d.state is DeliveryState.ACKNOWLEDGED for d in found)

    await dev_world.eventually(hung_has_both, what="both notices acknowledged by hung")
    expected = [(await dev_world.deliveries(n.notice_id))["hung"].jti for n in (first, second)]
    assert hung.jtis == expected
    assert set(pay.pushes.values()) == {1}
    assert len(pay.pushes) == 2


async def test_pushes_in_flight_are_bounded(dev_world: NoticeWorld) -> None:
    """With ``in_flight = 2``, two workers never have more than two pushes running, and
    every provider still gets its notice once."""
    gate = Gate()
    held = [await _held(dev_world, f"p{i}", gate) for i in range(5)]
    notices = replace(dev_world.config().notices, workers=2, in_flight=2, push_deadline_s=30.0)
    gateway = await dev_world.gateway(notices=notices)
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)

    async def two_inside() -> bool:
        return gate.inside == 2

    await dev_world.eventually(two_inside, what="two pushes running")
    await asyncio.sleep(0.3)  # room for a third, were it allowed
    assert gate.peak == 2
    gate.open.set()

    async def all_acknowledged() -> bool:
        found = await dev_world.deliveries(answer.notice_id)
        return all(d.state is DeliveryState.ACKNOWLEDGED for d in found.values())

    await dev_world.eventually(all_acknowledged, what="every provider acknowledged")
    assert gate.peak == 2
    found = await dev_world.deliveries(answer.notice_id)
    assert [p.jtis for p in held] == [[found[f"p{i}"].jti] for i in range(5)]


def _settlement(provider_id: str) -> Settlement:
    now = datetime.now(UTC)
    cursor = NoticeCursor(provider_id, DeliveryMode.PUSH, 0, 1, 1, now, "w", now, None)
    return Settlement(cursor, [PushResult.acknowledged(f"jti-{provider_id}")])


async def test_results_that_finish_during_a_commit_share_the_next_one() -> None:
    """The group commit writes what waits in one go: results that come in while one
    group is being written go together into the next."""
    groups: list[list[str]] = []
    writing = asyncio.Event()
    proceed = asyncio.Event()

    async def record(group: Sequence[Settlement]) -> None:
        groups.append([s.cursor.provider_id for s in group])
        writing.set()
        await proceed.wait()

    commits = GroupCommit(record)
    runner = asyncio.create_task(commits.run())
    commits.put(_settlement("a"))
    await writing.wait()
    for provider_id in ("b", "c", "d"):
        commits.put(_settlement(provider_id))
    proceed.set()
    commits.close()
    await asyncio.wait_for(runner, 5)
    assert groups == [["a"], ["b", "c", "d"]]


async def test_a_group_holds_a_bounded_number_of_notices() -> None:
    """Providers with many notices each are split over several groups (each group holds
    its providers' cursors until it commits), never splitting one provider's results."""
    groups: list[list[str]] = []

    async def record(group: Sequence[Settlement]) -> None:
        groups.append([s.cursor.provider_id for s in group])

    commits = GroupCommit(record)
    for provider_id in ("a", "b", "c"):
        many = _settlement(provider_id)
        commits.put(replace(many, results=list(many.results) * 200))
    commits.close()
    await asyncio.wait_for(commits.run(), 5)
    assert groups == [["a", "b"], ["c"]]


async def test_a_group_gathers_while_pushes_run_and_not_after() -> None:
    """While other pushes still run, results wait a moment to share a transaction; the
    result that leaves nothing running is written at once, with what waited."""
    groups: list[list[str]] = []
    running = [2]

    async def record(group: Sequence[Settlement]) -> None:
        groups.append([s.cursor.provider_id for s in group])

    commits = GroupCommit(record, lambda: running[0])
    runner = asyncio.create_task(commits.run())
    commits.put(_settlement("a"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert groups == []  # gathering: another push may answer now
    running[0] = 0
    commits.put(_settlement("b"))
    commits.close()
    await asyncio.wait_for(runner, 5)
    assert groups == [["a", "b"]]


@pytest.mark.parametrize("notices_each", [1, 100])
async def test_a_full_group_is_written_without_waiting_for_the_window(
    monkeypatch: pytest.MonkeyPatch, notices_each: int
) -> None:
    """While pushes run, a group is written as soon as it is full (by providers, or by
    notices when each provider has many), not after the gathering window; one short
    of full, it waits."""
    monkeypatch.setattr(_notice_delivery, "_GATHER_S", 3600.0)
    limit = (
        _notice_delivery._GROUP_MAX
        if notices_each == 1
        else -(-_notice_delivery._GROUP_NOTICES // notices_each)
    )
    groups: list[int] = []
    written = asyncio.Event()

    async def record(group: Sequence[Settlement]) -> None:
        groups.append(len(group))
        written.set()

    commits = GroupCommit(record, lambda: 1000)
    runner = asyncio.create_task(commits.run())
    settlements = [
        replace(one, results=list(one.results) * notices_each)
        for one in (_settlement(f"p{i}") for i in range(limit))
    ]
    for one in settlements[:-1]:
        commits.put(one)
    for _ in range(5):
        await asyncio.sleep(0)
    assert groups == []  # one short of full: still gathering
    commits.put(settlements[-1])
    await asyncio.wait_for(written.wait(), 5)
    assert groups == [limit]
    commits.close()
    await asyncio.wait_for(runner, 5)


async def test_a_gathering_group_is_written_without_more_answers() -> None:
    """A group waiting for answers that never come is written all the same."""
    groups: list[list[str]] = []
    written = asyncio.Event()

    async def record(group: Sequence[Settlement]) -> None:
        groups.append([s.cursor.provider_id for s in group])
        written.set()

    commits = GroupCommit(record, lambda: 5)
    runner = asyncio.create_task(commits.run())
    commits.put(_settlement("a"))
    await asyncio.wait_for(written.wait(), 5)
    commits.close()
    await asyncio.wait_for(runner, 5)
    assert groups == [["a"]]


async def test_the_recording_replica_pushes_a_reports_copies_itself(
    dev_world: NoticeWorld,
) -> None:
    """The copies a report makes due are leased with it and pushed by the replica that
    recorded it: no worker has to claim them, and each provider gets its notice once."""
    providers = [await dev_world.counting_provider(p) for p in ("pay", "chat", "forum")]
    gateway = await dev_world.gateway()
    claimed: list[str] = []
    claim_due = dev_world.store.cursors.claim_due

    async def counting_claim(**kwargs: Any) -> list[NoticeCursor]:
        found = await claim_due(**kwargs)
        claimed.extend(c.provider_id for c in found)
        return found

    dev_world.store.cursors.claim_due = counting_claim  # type: ignore[method-assign]  # watched
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)

    async def all_acknowledged() -> bool:
        found = await dev_world.deliveries(answer.notice_id)
        return all(d.state is DeliveryState.ACKNOWLEDGED for d in found.values())

    await dev_world.eventually(all_acknowledged, what="every provider acknowledged")
    assert claimed == []
    assert [sorted(p.pushes.values()) for p in providers] == [[1], [1], [1]]


async def test_a_doorbell_rung_while_nobody_waits_is_heard_by_who_looked_before() -> None:
    """A ring between a worker's look at the bell and its wait (while it claims) wakes
    that wait at once; a wait that looked after the ring sleeps until the next."""
    bell = Doorbell()
    seen = bell.rings
    bell.ring()
    assert await bell.wait(3600, since=seen)
    assert not await bell.wait(0, since=bell.rings)


async def test_a_worker_claims_again_when_a_settled_provider_had_more_while_it_claimed(
    dev_world: NoticeWorld,
) -> None:
    """A group commit that finds a provider with more to push rings while the worker is
    busy claiming: the worker claims again at once, not after ``check_interval_s``."""
    config = replace(dev_world.config().notices, check_interval_s=3600.0, workers=1)
    gateway = await dev_world.gateway(notices=config)
    assert gateway.recycled is not None
    assert gateway.recycled.pusher is not None
    pusher = gateway.recycled.pusher
    claim_due = dev_world.store.cursors.claim_due
    claims = 0
    claimed_again = asyncio.Event()

    async def ringing_claim(**kwargs: Any) -> list[NoticeCursor]:
        nonlocal claims
        claims += 1
        if claims == 1:
            pusher._more.ring()  # as _commit rings it, while this claim runs
        else:
            claimed_again.set()
        return await claim_due(**kwargs)

    dev_world.store.cursors.claim_due = ringing_claim  # type: ignore[method-assign]  # watched
    pusher._more.ring()  # wake the idle worker: its next claim is the first watched
    await asyncio.wait_for(claimed_again.wait(), 30)
