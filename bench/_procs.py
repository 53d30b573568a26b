"""Processes of a benchmark: spawned in their own process groups, always ended.

Every process goes through :class:`Processes`, a context manager whose exit
(normal or not) sends SIGTERM to each process group, then SIGKILL to those
still alive after a timeout: a failed scenario leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from onecert.adapters.demo._procs import end_processes

_ROOT = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")
_POLL_S = 0.05
_GATEWAY_READY = re.compile(r"listening on port (\d+)")
_T = TypeVar("_T")


class ProcessError(RuntimeError):
    """A process exited or did not become ready; the message has its log tail."""


@dataclass
class Process:
    """One spawned process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, why: str) -> ProcessError:
        return ProcessError(f"{self.name} {why}; last lines of {self.log}:\n{self.log_tail()}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = text.rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line.
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def settled_cpu(
    pid: int, *, window_s: float = 0.5, busy: float = 0.05, timeout_s: float = 30.0
) -> float:
    """Wait until a process is quiet (less than ``busy`` of a core over ``window_s``:
    its start-up work, such as the gateway's ``Describe`` check of every provider,
    is over), at most ``timeout_s``; returns the seconds waited."""
    began = time.perf_counter()
    last = cpu_seconds(pid)
    while time.perf_counter() - began < timeout_s:
        await asyncio.sleep(window_s)
        now = cpu_seconds(pid)
        if now - last < busy * window_s:
            break
        last = now
    return time.perf_counter() - began


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ProcessError(f"no VmRSS for pid {pid}")


class Processes:
    """The processes of one scenario; all of them end when the block ends.

    Args:
        directory: where logs go (``NAME.log``).
        stop_timeout: seconds between SIGTERM and SIGKILL.
    """

    def __init__(self, directory: Path, *, stop_timeout: float = 5.0) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stop_timeout = stop_timeout
        self.processes: list[Process] = []

    def spawn(self, name: str, argv: Sequence[str]) -> Process:
        """Start ``argv`` in a new session (its own process group); output to the log."""
        log = self.directory / f"{name}.log"
        # The repository root on the path, so `-m bench._host` works from anywhere.
        path = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)
        with log.open("wb") as out:
            popen = subprocess.Popen(  # our own interpreter and arguments
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def python(self, name: str, *args: str) -> Process:
        """Spawn this interpreter with ``args``."""
        return self.spawn(name, [sys.executable, *args])

    def stop(self, process: Process) -> None:
        """End one process (and its group): SIGTERM, then SIGKILL after the timeout."""
        _stop_all([process], self.stop_timeout)
        self.processes.remove(process)

    def stop_all(self) -> None:
        """End every process still running; safe to call more than once."""
        processes, self.processes = self.processes, []
        _stop_all(processes, self.stop_timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _stop_all(processes: Sequence[Process], timeout: float) -> None:
    # Whatever a leader did, nothing of its group outlives the scenario.
    end_processes([p.popen for p in processes], timeout, groups=True)


def wait_json_file(process: Process, path: Path, timeout: float) -> dict[str, Any]:
    """Wait until ``process`` writes JSON to ``path`` (with :func:`write_json`); return it."""
    return _wait(process, lambda: read_json(path), timeout)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees all of it or nothing."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON another process wrote to ``path`` with :func:`write_json`, or None before it did."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def wait_gateway_port(process: Process, timeout: float) -> int:
    """Wait for ``onecert gateway serve``'s "listening on port N" line; return N."""

    def listening() -> int | None:
        try:
            text = process.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        match = _GATEWAY_READY.search(text)
        return int(match.group(1)) if match else None

    return _wait(process, listening, timeout)


def _wait(process: Process, ready: Callable[[], _T | None], timeout: float) -> _T:
    # What ready() returns once it returns something; ProcessError if the
    # process exits first or the time is up.
    deadline = time.monotonic() + timeout
    while (found := ready()) is None:
        if not process.alive():
            raise process.failure(f"exited with status {process.popen.returncode}")
        if time.monotonic() > deadline:
            raise process.failure(f"was not ready after {timeout:g} s")
        time.sleep(_POLL_S)
    return found
