"""`onecert demo --keep-running` starts the citizen's portal too and prints its address."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_keep_running_demo_prints_a_working_portal_address(tmp_path: Path) -> None:
    """After the story, the demo starts the portal, prints its address, the page
    answers there, and Ctrl-C stops it with everything else."""
    directory = tmp_path / "demo"
    lines: list[str] = []
    url = None
    with subprocess.Popen(
        [sys.executable, "-m", "onecert.cli", "demo", "--keep-running", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            deadline = time.monotonic() + 200
            while url is None and time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    break
                lines.append(line)
                match = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
                if match:
                    url = match.group(1)
            assert url is not None, "".join(lines)
            with urllib.request.urlopen(url) as page:  # a loopback address the demo printed
                html = page.read().decode("utf-8")
                assert page.headers["content-security-policy"]
            assert "查看哪些账号绑定了您的手机号码" in html
            assert "开发模式" in html
            pids = json.loads((directory / "pids").read_text())
            assert "portal" in pids
        finally:
            # Ctrl-C, as a person would: the demo stops every process it started.
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=60)
    pid = pids["portal"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
