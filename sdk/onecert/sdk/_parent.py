"""A child process that ends with the process that started it (Linux).

A demo federation, a benchmark or a test starts gateways, portals and
adapters as child processes; if the parent is killed outright (SIGKILL
leaves it no time to clean up), its children must not run on. The parent
names itself in ``ONECERT_PARENT_PID``; the child, first thing, asks the
kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``) and ends at
once if the parent is already gone.

This runs in the child after ``exec``, not between ``fork`` and ``exec``
(``subprocess``'s ``preexec_fn``): a process with gRPC's threads running
must not run Python code in a forked copy of itself, where a lock or a
``malloc`` arena another thread held at the fork stays held or half-written
(children then died with SIGABRT before they logged a line).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["PARENT_PID_ENV", "follow_parent"]

PARENT_PID_ENV = "ONECERT_PARENT_PID"

_PR_SET_PDEATHSIG = 1


def follow_parent() -> None:
    """End this process (SIGTERM) when the parent named in ``ONECERT_PARENT_PID`` ends.

    Does nothing without the variable, with a value that is not a process id,
    or off Linux. The variable is taken out of the environment, so this
    process's own children do not inherit a parent that is not theirs.
    """
    value = os.environ.pop(PARENT_PID_ENV, "")
    if not value.isdigit() or sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(value):
        # The parent ended before the request above: nobody will signal us.
        os.kill(os.getpid(), signal.SIGTERM)
