"""Following the store: one background task that runs a step every interval.

Replicas share state through the database and each applies what the others
wrote by polling a one-row counter (routing filters, the provider
registry). :class:`Follower` is that loop, once: it outlives a failing step
(a database restart) and stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

__all__ = ["Follower"]

_log = structlog.get_logger("onecert.gateway.follow")


class Follower:
    """Runs ``step`` every ``interval_s`` seconds between :meth:`start` and :meth:`stop`.

    Args:
        step: what to do at each tick (its result is ignored).
        interval_s: the pause before each tick.
        name: the task's name, and the log event of a failed step (``<name>.failed``).
    """

    def __init__(
        self, step: Callable[[], Awaitable[object]], *, interval_s: float, name: str
    ) -> None:
        self._step = step
        self._interval_s = interval_s
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ticking (once; a second call does nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Stop ticking; a step in progress is cancelled."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._step()
            except Exception:  # noqa: BLE001 - a database hiccup must not stop following
                _log.exception(f"{self._name}.failed")
