"""The compliance report: how each provider handled notices and unbind tickets."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from onecert.gateway.store import (
    AttemptOutcome,
    DeliveryMode,
    NoticeStatus,
    ProviderComplianceRow,
    PushResult,
    Store,
    classify_notice,
)
from tests.store.store_support import record_notice

DAY = timedelta(days=1)


async def _notice(
    store: Store,
    event_id: str,
    *,
    recorded: datetime,
    deadline: datetime,
    providers: list[tuple[str, DeliveryMode]],
) -> dict[str, str]:
    notice, _ = await record_notice(
        store, recorded, event_id, effective_at=recorded, deadline=deadline, providers=providers
    )
    return {d.provider_id: d.jti for d in await store.deliveries.for_notice(notice.notice_id)}


def _by_id(rows: list[ProviderComplianceRow]) -> dict[str, ProviderComplianceRow]:
    return {r.provider_id: r for r in rows}


async def test_on_time_late_never_and_awaiting(store: Store, t0: datetime) -> None:
    """Each provider's notices are counted as acted on time, late, never, or awaiting."""
    push, poll = DeliveryMode.PUSH, DeliveryMode.POLL
    jtis = await _notice(
        store,
        "n1",
        recorded=t0,
        deadline=t0 + 7 * DAY,
        providers=[("ontime", push), ("late", poll), ("never", push)],
    )
    await _notice(store, "n2", recorded=t0, deadline=t0 + 20 * DAY, providers=[("waiting", poll)])
    (cursor,) = [
        c for c in await store.cursors.claim_due(worker_id="w", now=t0) if c.provider_id == "ontime"
    ]
    (d,) = await store.cursors.pending(cursor, limit=10)
    await store.cursors.settle(
        cursor,
        [PushResult.acknowledged(d.jti)],
        worker_id="w",
        now=t0 + timedelta(minutes=1),
    )
    await store.deliveries.confirm_action(
        "ontime", jtis["ontime"], bindings_removed=1, now=t0 + DAY
    )
    await store.deliveries.poll("late", now=t0 + DAY)
    await store.deliveries.ack("late", [jtis["late"]], now=t0 + DAY)
    await store.deliveries.confirm_action(
        "late", jtis["late"], bindings_removed=0, now=t0 + 8 * DAY
    )

    report = _by_id(await store.compliance.report(now=t0 + 10 * DAY, providers=["idle"]))
    assert set(report) == {"ontime", "late", "never", "waiting", "idle"}
    counts = {
        p: (r.notices, r.notices_delivered, r.notices_acknowledged) for p, r in report.items()
    }
    assert counts == {
        "ontime": (1, 1, 1),
        "late": (1, 1, 1),
        "never": (1, 0, 0),
        "waiting": (1, 0, 0),
        "idle": (0, 0, 0),
    }
    standing = {
        p: (r.acted_on_time, r.acted_late, r.never_acted, r.awaiting_action)
        for p, r in report.items()
    }
    assert standing == {
        "ontime": (1, 0, 0, 0),
        "late": (0, 1, 0, 0),
        "never": (0, 0, 1, 0),
        "waiting": (0, 0, 0, 1),
        "idle": (0, 0, 0, 0),
    }
    # Before the deadline nobody is "never" yet.
    early = _by_id(await store.compliance.report(now=t0 + 6 * DAY))
    assert (early["never"].never_acted, early["never"].awaiting_action) == (0, 1)
    # At the deadline itself a provider can still act on time.
    edge = _by_id(await store.compliance.report(now=t0 + 7 * DAY))
    assert (edge["never"].never_acted, edge["never"].awaiting_action) == (0, 1)


async def _ticket(store: Store, handle: str, now: datetime) -> str:
    ticket, _ = await store.tickets.create(
        handle_digest=hashlib.sha256(handle.encode()).hexdigest(),
        sub_hash="sub",
        provider_id="pay",
        reason=1,
        payload="sealed",
        msisdn_hash="h",
        expires_at=now + DAY,
        now=now,
    )
    return ticket.ticket_id


async def test_unbind_counts_and_median(store: Store, t0: datetime) -> None:
    """Tickets are counted by final state, with the median time to the provider's answer."""
    answers = [("DONE", 10), ("DONE", 30), ("REJECTED", 20), ("FATAL", 5)]
    for i, (outcome, seconds) in enumerate(answers):
        ticket_id = await _ticket(store, f"h{i}", t0)
        await store.tickets.claim_due(worker_id="w", now=t0)
        at = t0 + timedelta(seconds=seconds)
        await store.tickets.finish_attempt(
            ticket_id, worker_id="w", outcome=AttemptOutcome(outcome), error="x", now=at
        )
    await _ticket(store, "open", t0)
    (row,) = await store.compliance.report(now=t0 + DAY)
    assert (row.unbinds_done, row.unbinds_rejected, row.unbinds_failed, row.unbinds_open) == (
        2,
        1,
        1,
        1,
    )
    assert row.unbind_median_time == timedelta(seconds=20)
    assert row.notices == 0


async def test_since_limits_the_report(store: Store, t0: datetime) -> None:
    """Only notices recorded and tickets created at or after ``since`` count."""
    await _notice(
        store,
        "old",
        recorded=t0 - 30 * DAY,
        deadline=t0 - 20 * DAY,
        providers=[("pay", DeliveryMode.POLL)],
    )
    await _notice(
        store, "new", recorded=t0, deadline=t0 + DAY, providers=[("pay", DeliveryMode.POLL)]
    )
    await _ticket(store, "old", t0 - 30 * DAY)
    (row,) = await store.compliance.report(now=t0, since=t0)
    assert (row.notices, row.awaiting_action, row.never_acted, row.unbinds_open) == (1, 1, 0, 0)
    (everything,) = await store.compliance.report(now=t0)
    assert (everything.notices, everything.never_acted, everything.unbinds_open) == (2, 1, 1)


async def test_report_agrees_with_the_classification(store: Store, t0: datetime) -> None:
    """The SQL aggregates count exactly what classify_notice says, on varied data."""
    rng = random.Random(4)
    now = t0 + 10 * DAY
    expected: dict[str, Counter[NoticeStatus]] = {p: Counter() for p in ("a", "b", "c")}
    for i in range(25):
        deadline = t0 + timedelta(hours=rng.randint(0, 480))
        jtis = await _notice(
            store,
            f"e{i}",
            recorded=t0,
            deadline=deadline,
            providers=[(p, DeliveryMode.POLL) for p in expected],
        )
        for provider, jti in jtis.items():
            acted_at = None
            if rng.random() < 0.6:
                acted_at = t0 + timedelta(hours=rng.randint(0, 240))
                await store.deliveries.confirm_action(
                    provider, jti, bindings_removed=1, now=acted_at
                )
            expected[provider][classify_notice(acted_at=acted_at, deadline=deadline, now=now)] += 1
    for row in await store.compliance.report(now=now):
        counts = expected[row.provider_id]
        assert row.acted_on_time == counts[NoticeStatus.ON_TIME]
        assert row.acted_late == counts[NoticeStatus.LATE]
        assert row.never_acted == counts[NoticeStatus.NEVER]
        assert row.awaiting_action == counts[NoticeStatus.AWAITING]
        assert row.notices == 25


_instants = st.datetimes(
    # hypothesis takes naive bounds and adds the zone itself.
    min_value=datetime(2020, 1, 1),  # noqa: DTZ001 - see above
    max_value=datetime(2030, 1, 1),  # noqa: DTZ001 - see above
    timezones=st.just(UTC),
)


@given(st.one_of(st.none(), _instants), _instants, _instants)
def test_classify_notice_rule(acted_at: datetime | None, deadline: datetime, now: datetime) -> None:
    """Acted: on time iff at or before the deadline; not acted: never iff the deadline passed."""
    status = classify_notice(acted_at=acted_at, deadline=deadline, now=now)
    if acted_at is None:
        assert status is (NoticeStatus.NEVER if now > deadline else NoticeStatus.AWAITING)
    else:
        assert status is (NoticeStatus.ON_TIME if acted_at <= deadline else NoticeStatus.LATE)


@given(_instants, _instants, _instants)
def test_waiting_only_ever_turns_into_never(deadline: datetime, a: datetime, b: datetime) -> None:
    """As time passes an unacted notice goes from AWAITING to NEVER, never back."""
    early, late = sorted((a, b))
    before = classify_notice(acted_at=None, deadline=deadline, now=early)
    after = classify_notice(acted_at=None, deadline=deadline, now=late)
    assert (before, after) != (NoticeStatus.NEVER, NoticeStatus.AWAITING)
