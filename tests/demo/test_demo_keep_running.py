"""`onecert demo --keep-running` prints commands that work as printed: mint an assertion,
look her up, unbind row 1, read the receipt, the report and the audit log."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def _run(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        shlex.split(command), capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_keep_running_hints_work_as_printed(tmp_path: Path) -> None:
    """Each printed command runs as printed (exit 0): the lookup numbers her accounts,
    row 1 is unbound with a ticket, and the ticket's receipt comes back."""
    argv = [sys.executable, "-m", "onecert.cli", "demo", "--keep-running"]
    demo = subprocess.Popen(
        [*argv, "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        for line in demo.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("  ") and "audit verify --url" in line:
                break  # the last hint
        heading = lines.index("Still running (Ctrl-C stops everything)")
        commands = [line.strip() for line in lines[heading + 2 :] if line.startswith("  ")]
        mint, lookup, unbind, receipt, report, audit = commands

        assert _run(mint).returncode == 0
        looked = _run(lookup)
        assert looked.returncode == 0, looked.stderr
        row_1 = next(line for line in looked.stdout.splitlines() if line.split()[:1] == ["1"])
        # The demo already unbound her left-behind wallet: row 1 is one of hers.
        assert row_1.endswith("can be unbound")
        assert "!! left behind" not in looked.stdout

        assert _run(mint).returncode == 0
        unbound = _run(unbind)
        assert unbound.returncode == 0, unbound.stderr
        ticket = re.search(r"ticket (ut_\S+):", unbound.stdout)
        assert ticket is not None, unbound.stdout

        assert _run(mint).returncode == 0
        read = _run(receipt.replace("TICKET", ticket.group(1)))
        assert read.returncode == 0, read.stderr
        assert ticket.group(1) in read.stdout

        assert _run(report).returncode == 0
        verified = _run(audit)
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.startswith("OK: ")
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=60)
    assert demo.returncode == 0
