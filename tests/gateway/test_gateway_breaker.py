"""Circuit breakers and retry budgets, alone and inside real lookups."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onecert.gateway._breaker import BreakerState, CircuitBreaker, RetryBudget
from onecert.gateway._config import FanoutConfig
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from onecert.gateway.testing import Federation


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> BreakerState:
    # A function call, so the type checker does not narrow the property between reads.
    return breaker.state


def test_breaker_opens_after_consecutive_failures_only() -> None:
    """A success resets the count; N failures in a row open the breaker."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.allow()
    breaker.record_success()
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()


def test_breaker_half_opens_with_one_probe_after_cooldown() -> None:
    """After the cool-down exactly one probe goes; its success closes, its failure reopens."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=10, clock=clock)
    assert breaker.allow()
    breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.allow()


def test_abandoned_probe_lets_the_next_call_probe() -> None:
    """A probe cancelled without a verdict does not leave the breaker stuck half-open."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=1, clock=clock)
    breaker.allow()
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    breaker.record_abandoned()
    assert breaker.allow()


@given(st.lists(st.sampled_from(["allow", "ok", "fail", "drop", "tick"]), max_size=60))
def test_breaker_never_lets_two_probes_out(events: list[str]) -> None:
    """Whatever happens, a half-open breaker has at most one probe in flight, and an
    open breaker lets nothing through before its cool-down."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown=5, clock=clock)
    in_flight = 0
    for event in events:
        if event == "allow":
            before = breaker.state
            allowed = breaker.allow()
            if before is BreakerState.OPEN:
                assert not allowed
            if allowed:
                in_flight += 1
            if breaker.state is BreakerState.HALF_OPEN:
                assert in_flight <= 1 or before is BreakerState.CLOSED
        elif event == "tick":
            clock.now += 3
        elif in_flight:
            in_flight -= 1
            {"ok": breaker.record_success, "fail": breaker.record_failure}.get(
                event, breaker.record_abandoned
            )()


def test_retry_budget_is_a_share_of_recent_calls() -> None:
    """Retries are allowed up to min_retries plus ratio x calls in the window."""
    clock = Clock()
    budget = RetryBudget(ratio=0.5, min_retries=1, window=10, clock=clock)
    assert budget.try_spend()
    assert not budget.try_spend()
    for _ in range(4):
        budget.record_call()
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.now += 11  # the window slides past every call and retry
    assert budget.try_spend()
    assert not budget.try_spend()


@given(st.integers(0, 200), st.floats(0, 1), st.integers(0, 5))
def test_retry_budget_never_exceeds_its_share(calls: int, ratio: float, reserve: int) -> None:
    """In one window, retries granted never exceed reserve + ratio x calls."""
    clock = Clock()
    budget = RetryBudget(ratio=ratio, min_retries=reserve, window=10, clock=clock)
    for _ in range(calls):
        budget.record_call()
    granted = 0
    while budget.try_spend():
        granted += 1
        assert granted <= reserve + ratio * calls
    assert granted >= int(reserve + ratio * calls) - 1


async def test_breaker_opens_skips_then_half_opens_in_lookups(fed: Federation) -> None:
    """A provider failing repeatedly is SKIPPED with "breaker open" (and not called),
    then after the cool-down one probe goes through and its success closes the breaker."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    sick = await fed.provider("sick", {})
    sick.behaviour.abort = grpc.StatusCode.INTERNAL
    healthy = await fed.provider("healthy", {})
    fanout = FanoutConfig(
        breaker_failure_threshold=2, breaker_cooldown_s=0.3, provider_deadline_s=2
    )
    gateway = await fed.gateway(fanout=fanout)

    first = await fed.lookup(gateway)
    assert [r.outcome for r in fed.results(first) if r.provider_id == "sick"] == [
        gateway_pb2.CALL_OUTCOME_FAILED
    ] * 2
    calls = sick.record.calls

    second = await fed.lookup(gateway)
    skipped = [r for r in fed.results(second) if r.provider_id == "sick"]
    assert [(r.outcome, r.detail) for r in skipped] == [
        (gateway_pb2.CALL_OUTCOME_SKIPPED, "breaker open")
    ] * 2
    assert sick.record.calls == calls
    assert second[-1].summary.total.skipped == 2
    assert all(
        r.outcome == gateway_pb2.CALL_OUTCOME_ANSWERED
        for r in fed.results(second)
        if r.provider_id == "healthy"
    )

    await asyncio.sleep(0.35)
    sick.behaviour.abort = None
    third = await fed.lookup(gateway)
    outcomes = sorted(r.outcome for r in fed.results(third) if r.provider_id == "sick")
    # Half-open: one probe for the two numbers, the other call still skipped.
    assert outcomes == [gateway_pb2.CALL_OUTCOME_ANSWERED, gateway_pb2.CALL_OUTCOME_SKIPPED]

    fourth = await fed.lookup(gateway)
    assert [r.outcome for r in fed.results(fourth) if r.provider_id == "sick"] == [
        gateway_pb2.CALL_OUTCOME_ANSWERED
    ] * 2
    assert healthy.record.calls == 8


@pytest.mark.parametrize(
    ("fanout", "attempts"),
    [
        pytest.param(
            FanoutConfig(retry_budget_ratio=0.0, retry_budget_min_retries=0), 1, id="no-budget"
        ),
        pytest.param(
            FanoutConfig(retry_max_attempts=3, retry_budget_min_retries=100), 3, id="max-attempts"
        ),
    ],
)
async def test_retries_stop_at_the_budget_or_max_attempts(
    fed: Federation, fanout: FanoutConfig, attempts: int
) -> None:
    """With no retry budget, UNAVAILABLE is not retried; however large the budget, a call
    makes at most retry_max_attempts attempts. Either way the provider's result is FAILED
    with the provider's error."""
    await fed.carrier("cm", {fed.IDN: [fed.tenure(fed.CURRENT, "cm", fed.at(2020))]})
    flaky = await fed.provider("flaky", {})
    flaky.behaviour.fail_first = 10
    gateway = await fed.gateway(fanout=fanout)
    messages = await fed.lookup(gateway)
    assert flaky.record.calls == attempts
    (result,) = fed.results(messages)
    assert result.outcome == gateway_pb2.CALL_OUTCOME_FAILED
    assert result.detail == "UNAVAILABLE: warming up"


@pytest.mark.parametrize("cap", [1, 2])
async def test_concurrency_cap_per_provider(fed: Federation, cap: int) -> None:
    """No more than the provider's cap of calls are in flight at once."""
    tenures = [fed.tenure(f"+86138001380{i:02d}", "cm", fed.at(2020)) for i in range(6)]
    await fed.carrier("cm", {fed.IDN: tenures})
    busy = await fed.provider("busy", {})
    busy.behaviour.latency = 0.05
    gateway = await fed.gateway(fanout=FanoutConfig(max_concurrency_per_provider=cap))
    messages = await fed.lookup(gateway)
    assert messages[-1].summary.total.answered == 6
    assert busy.record.peak == cap


async def test_a_call_waiting_for_a_slot_past_its_deadline_times_out(fed: Federation) -> None:
    """With the provider's one slot held by a call that runs to the deadline, the
    call queued behind it ends TIMED_OUT saying it got no slot, and both are counted."""
    tenures = [fed.tenure(f"+86138001380{i:02d}", "cm", fed.at(2020)) for i in range(2)]
    await fed.carrier("cm", {fed.IDN: tenures})
    stuck = await fed.provider("stuck", {})
    stuck.behaviour.latency = 2.0
    fanout = FanoutConfig(max_concurrency_per_provider=1, provider_deadline_s=0.3)
    gateway = await fed.gateway(fanout=fanout)
    messages = await fed.lookup(gateway)
    results = fed.results(messages)
    assert [r.outcome for r in results] == [gateway_pb2.CALL_OUTCOME_TIMED_OUT] * 2
    assert sum(r.detail.startswith("no free slot") for r in results) == 1
    assert messages[-1].summary.total.timed_out == 2
    assert stuck.record.calls == 1
