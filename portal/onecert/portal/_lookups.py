"""A citizen's lookup, running in the background while pages and streams watch it.

:class:`LookupState` collects the gateway's updates as they arrive; every
change bumps :attr:`LookupState.version` and wakes whoever waits in
:meth:`LookupState.changed`, so the results page (streamed or refreshed)
always renders what has arrived so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from onecert.portal._identity import SignInRequiredError
from onecert.sdk.client import (
    CallOutcome,
    GatewayClient,
    GatewayError,
    Result,
    RoutedOut,
    Started,
    Summary,
)

__all__ = ["LookupState", "start_lookup"]

log = structlog.get_logger("onecert.portal")


@dataclass
class LookupState:
    """What one lookup has produced so far.

    Attributes:
        started: the gateway's first update (numbers found, calls planned).
        results: one per provider and number, in arrival order.
        routed_out: per number, the providers routing ruled out (not asked:
            their filter says they do not hold it); counted, never listed.
        summary: the last update; None until the lookup ends.
        error: the gateway's status code name when the lookup failed.
        version: bumped on every change.
        first_result_at: monotonic time the first provider result arrived.
    """

    started: Started | None = None
    results: list[Result] = field(default_factory=list)
    routed_out: list[RoutedOut] = field(default_factory=list)
    summary: Summary | None = None
    error: str = ""
    version: int = 0
    begun_at: float = field(default_factory=time.monotonic)
    first_result_at: float | None = None
    # The same moment on the wall clock, logged so a benchmark can compare it
    # with when a browser showed the result.
    first_result_epoch: float | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def done(self) -> bool:
        return self.summary is not None or bool(self.error)

    def bump(self) -> None:
        self.version += 1
        self._wake.set()
        self._wake = asyncio.Event()

    async def changed(self, since: int, timeout: float) -> None:  # noqa: ASYNC109 - a wait, not an I/O deadline
        """Return once :attr:`version` differs from ``since``, or after ``timeout``."""
        if self.version != since or self.done:
            return
        wake = self._wake
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def answered(self) -> int:
        return sum(r.outcome is CallOutcome.ANSWERED for r in self.results)

    def accounted(self, msisdn: str | None = None) -> int:
        """Providers accounted for so far: results, and those routing ruled out."""
        results = sum(msisdn is None or r.msisdn == msisdn for r in self.results)
        return results + self.routed_out_count(msisdn)

    def routed_out_count(self, msisdn: str | None = None) -> int:
        """Providers routing ruled out (of one number, or of all)."""
        return sum(o.count for o in self.routed_out if msisdn is None or o.msisdn == msisdn)

    def total(self) -> int:
        return self.started.provider_calls if self.started is not None else 0


def start_lookup(
    client: GatewayClient,
    assertion: Callable[[], Awaitable[str]],
    *,
    timeout: float,
) -> LookupState:
    """Start a lookup in the background and return its state at once."""
    state = LookupState()

    async def run() -> None:
        try:
            token = await assertion()
            async for update in client.lookup(token, timeout=timeout):
                if isinstance(update, Started):
                    state.started = update
                elif isinstance(update, Result):
                    if state.first_result_at is None:
                        state.first_result_at = time.monotonic()
                        state.first_result_epoch = time.time()
                    state.results.append(update)
                elif isinstance(update, RoutedOut):
                    state.routed_out.append(update)
                else:
                    state.summary = update
                state.bump()
        except SignInRequiredError:
            # The identity service would not give an assertion: sign in again.
            state.error = "UNAUTHENTICATED"
            log.warning("lookup_failed", code="identity")
            state.bump()
        except GatewayError as exc:
            state.error = exc.code.name
            # The status code only: the gateway's details may name the citizen's numbers.
            log.warning("lookup_failed", code=exc.code.name)
            state.bump()
        except Exception as exc:  # noqa: BLE001 - whatever broke, the page must say the lookup ended
            state.error = type(exc).__name__
            log.warning("lookup_failed", error=type(exc).__name__)
            state.bump()
        else:
            if state.summary is None:
                state.error = "INCOMPLETE"
                state.bump()
            else:
                log.info(
                    "lookup_finished",
                    **dataclasses.asdict(state.summary.total),
                    seconds=round(time.monotonic() - state.begun_at, 3),
                    first_result_at=state.first_result_epoch,
                )

    state.task = asyncio.get_running_loop().create_task(run())
    return state
