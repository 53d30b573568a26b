"""Per-upstream guards: a circuit breaker and a retry budget; and the backoff
between attempts that every retrying worker shares.

Both exist so that one sick provider costs the gateway (and itself) as
little as possible: the breaker stops calling a provider that keeps failing
and probes it now and then; the budget caps retries to a fraction of recent
traffic, so retries cannot multiply the load on a provider that is already
struggling. Both are plain synchronous objects used from one event loop.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker", "RetryBudget"]

Clock = Callable[[], float]


class BreakerState(enum.Enum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Closed -> open after ``failure_threshold`` consecutive failures; open ->
    half-open after ``cooldown`` seconds, when exactly one probe call is let
    through; the probe's success closes the breaker, its failure reopens it.

    Callers ask :meth:`allow` before a call and report how it ended with
    exactly one of :meth:`record_success`, :meth:`record_failure` or
    :meth:`record_abandoned` (no verdict, e.g. the citizen cancelled).
    """

    def __init__(
        self, *, failure_threshold: int, cooldown: float, clock: Clock = time.monotonic
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown <= 0:
            raise ValueError("cooldown must be more than zero")
        self._threshold = failure_threshold
        self._cooldown = cooldown
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker past its cool-down reads as half-open)."""
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self._cooldown

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state only one probe may."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if not self._cooled_down():
                return False
            self._state = BreakerState.HALF_OPEN
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        """The upstream answered (even with an application error): it is alive."""
        self._failures = 0
        self._probe_in_flight = False
        self._state = BreakerState.CLOSED

    def record_failure(self) -> None:
        """The upstream failed (unavailable, timed out, internal error)."""
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
        self._probe_in_flight = False

    def record_abandoned(self) -> None:
        """The call ended without a verdict on the upstream's health."""
        if self._state is BreakerState.HALF_OPEN and self._probe_in_flight:
            # Let the next call probe instead of waiting for another cool-down.
            self._probe_in_flight = False


class RetryBudget:
    """Retries allowed: ``min_retries`` plus ``ratio`` of the calls made in the
    last ``window`` seconds, minus the retries already spent in it.

    Counts are kept in ten buckets over the window, so memory is constant
    whatever the traffic.
    """

    _BUCKETS = 10

    def __init__(
        self,
        *,
        ratio: float,
        min_retries: int,
        window: float,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError("ratio must be between 0 and 1")
        if window <= 0:
            raise ValueError("window must be more than zero")
        self._ratio = ratio
        self._min = min_retries
        self._width = window / self._BUCKETS
        self._clock = clock
        self._calls = [0] * self._BUCKETS
        self._retries = [0] * self._BUCKETS
        self._epochs = [-1] * self._BUCKETS

    def _bucket(self) -> int:
        epoch = math.floor(self._clock() / self._width)
        index = epoch % self._BUCKETS
        if self._epochs[index] != epoch:
            self._epochs[index] = epoch
            self._calls[index] = 0
            self._retries[index] = 0
        return index

    def _live(self) -> tuple[int, int]:
        oldest = math.floor(self._clock() / self._width) - self._BUCKETS + 1
        calls = retries = 0
        for i in range(self._BUCKETS):
            if self._epochs[i] >= oldest:
                calls += self._calls[i]
                retries += self._retries[i]
        return calls, retries

    def record_call(self) -> None:
        """A first attempt went out (retries are counted by :meth:`try_spend`)."""
        self._calls[self._bucket()] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget if there is one left."""
        calls, retries = self._live()
        if retries + 1 > self._min + self._ratio * calls:
            return False
        self._retries[self._bucket()] += 1
        return True


def backoff(
    attempts: int,
    *,
    initial: float,
    maximum: float,
    least: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: a random
    share, at least ``least``, of ``initial * 2**(attempts - 1)`` capped at
    ``maximum``.

    Full jitter (``least`` 0) spreads the retries of many callers that failed
    against the same upstream at once; with ``least`` 0.5 a wait is never less
    than half its step, so a worker that fails at once never spins.
    """
    step: float = min(maximum, initial * 2.0 ** max(0, min(attempts - 1, 62)))
    return step * (least + (1.0 - least) * rand())
