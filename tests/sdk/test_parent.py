"""A child started with ``ONECERT_PARENT_PID`` ends with its parent (Linux: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from onecert.sdk._parent import PARENT_PID_ENV

_CHILD = (
    "from onecert.sdk._parent import follow_parent; follow_parent(); import time; time.sleep(60)"
)

# The parent starts the child naming itself, prints the child's pid, and waits to be killed.
_PARENT = f"""
import os, subprocess, sys, time
env = dict(os.environ, {PARENT_PID_ENV}=str(os.getpid()))
child = subprocess.Popen([sys.executable, "-c", {_CHILD!r}], env=env)
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by init) counts as ended.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_child_ends_when_its_parent_is_killed_outright() -> None:
    """SIGKILL leaves the parent no time to clean up; the kernel ends the child."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        time.sleep(0.5)  # let the child reach follow_parent
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_gone(child), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


def test_a_child_whose_named_parent_is_not_its_parent_ends_at_once() -> None:
    """The parent gone before the request (the child was re-parented): nobody would signal it."""
    env = dict(os.environ, **{PARENT_PID_ENV: "1"})
    child = subprocess.run([sys.executable, "-c", _CHILD], env=env, timeout=30, check=False)
    assert child.returncode == -signal.SIGTERM


def test_without_the_variable_nothing_changes() -> None:
    """A process not started by a federation is left alone (and exits normally)."""
    env = {k: v for k, v in os.environ.items() if k != PARENT_PID_ENV}
    code = "from onecert.sdk._parent import follow_parent; follow_parent(); print('ran')"
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "ran"
