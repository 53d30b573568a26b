"""Ending the child processes of a local federation: the demo's and the benchmark's.

Both start carriers, providers, the gateway and the portal as processes of
their own, and both end them the same way: SIGTERM to every one still
running, then, for those still alive when the grace time is up, SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence

__all__ = ["end_processes"]


def end_processes(
    popens: Sequence[subprocess.Popen[bytes]], grace: float, *, groups: bool = False
) -> list[subprocess.Popen[bytes]]:
    """SIGTERM each process still running, SIGKILL those alive after ``grace`` seconds
    (for all of them together); returns the ones killed. Blocks until all have ended.

    Args:
        popens: the processes.
        grace: seconds they get, together, to end after SIGTERM.
        groups: signal each one's whole process group (a process started in a
            session of its own); whatever the leader did, nothing of its group
            is left once this returns.
    """
    running = [p for p in popens if p.poll() is None]
    for popen in running:
        _signal(popen, signal.SIGTERM, groups=groups)
    deadline = time.monotonic() + grace
    killed = []
    for popen in running:
        try:
            popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(popen, signal.SIGKILL, groups=groups)
            popen.wait()
            killed.append(popen)
    if groups:
        # The leaders have ended; their children may not have (also the
        # children of a leader that had ended before).
        for popen in popens:
            _signal(popen, signal.SIGKILL, groups=True)
    return killed


def _signal(popen: subprocess.Popen[bytes], signum: signal.Signals, *, groups: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # it ended just now
        if groups:
            os.killpg(popen.pid, signum)
        else:
            popen.send_signal(signum)
