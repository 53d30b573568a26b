"""`onecert demo` end to end: real processes, mutual TLS, the story's merged list,
and nothing left running afterwards."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onecert.adapters.demo import PROVIDERS, STORY, Federation, StartupError
from onecert.gateway._masking import mask_display_name

FORMER, CURRENT = STORY.former_number, STORY.current_number
DOWN = next(p for p in PROVIDERS if p.down)


def demo_command(directory: Path) -> list[str]:
    return [sys.executable, "-m", "onecert.cli", "demo", "--dir", str(directory)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def recorded_pids(directory: Path) -> dict[str, int]:
    pids: dict[str, int] = json.loads((directory / "pids").read_text())
    return pids


def assert_all_stopped(directory: Path) -> None:
    pids = recorded_pids(directory)
    assert pids
    # The demo waits for its children, so an ended child is gone, not a zombie.
    still = {name: pid for name, pid in pids.items() if alive(pid)}
    assert still == {}


@pytest.mark.slow
def test_demo_shows_the_story(tmp_path: Path) -> None:
    """`onecert demo` exits 0 having shown the left-behind payment account first, hers
    next, the previous holder's as counts only, nothing of the next holder's, the down
    provider as failed, and with every process it started stopped."""
    directory = tmp_path / "demo"
    run = subprocess.run(
        demo_command(directory), capture_output=True, text=True, timeout=120, check=False
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr

    lines = out.splitlines()
    left = [i for i, line in enumerate(lines) if "!! left behind" in line]
    mine = [i for i, line in enumerate(lines) if line.strip().startswith("mine ")]
    assert len(left) == 1
    assert len(mine) == len(STORY.mine)
    assert left[0] < min(mine)
    assert "Coinpurse Pay" in lines[left[0]]
    assert FORMER in lines[left[0]]
    assert "payment" in lines[left[0]]

    hidden = [
        *STORY.display_names(STORY.next_holder_accounts),
        *STORY.display_names(STORY.previous_holder_accounts),
    ]
    lookup = (directory / "lookup.json").read_text()
    for name in hidden:
        for text in (out, run.stderr, lookup):
            assert name not in text
            assert mask_display_name(name) not in text
    # The only numbers shown are hers.
    assert set(re.findall(r"\+?86\d{11}", out)) <= {FORMER, CURRENT}
    for number in (STORY.next_holder_other_number, STORY.previous_holder_new_number):
        digits = number.removeprefix("+86")
        assert digits not in out
        assert digits not in lookup

    document = json.loads(lookup)
    results = document["results"]
    by_key = {(r["provider_id"], r["msisdn"]): r for r in results}
    assert [a["attribution"] for a in by_key["coinpurse", FORMER]["accounts"]] == ["left_behind"]
    # On the former number, nothing but the left-behind account, and no counts.
    former = [r for r in results if r["msisdn"] == FORMER]
    assert sum(len(r["accounts"]) for r in former) == 1
    assert sum(r["previous_holder_count"] for r in former) == 0
    assert by_key["chirpline", CURRENT]["previous_holder_count"] == 1
    assert by_key["bazaarly", CURRENT]["previous_holder_count"] == 2
    mine_found = {
        (r["provider_id"], r["msisdn"]) for r in results for a in r["accounts"]
        if a["attribution"] == "mine"
    }  # fmt: skip
    assert mine_found == {(p, CURRENT) for p, _ in STORY.mine}
    assert by_key[DOWN.id, FORMER]["outcome"] == "failed"
    assert by_key[DOWN.id, CURRENT]["outcome"] == "failed"
    assert re.search(rf"failed\s+{DOWN.name}", out)
    assert document["summary"]["total"]["failed"] == 2

    assert "Total:" in out
    assert_all_stopped(directory)


@pytest.mark.slow
def test_demo_interrupted_cleans_up(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while the federation starts stops every process it started
    and exits 130."""
    directory = tmp_path / "demo"
    process = subprocess.Popen(
        demo_command(directory), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        adapters = sum(not p.down for p in PROVIDERS) + 2
        while True:
            assert process.poll() is None
            assert time.monotonic() < deadline
            try:
                if len(recorded_pids(directory)) >= adapters:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, out
    assert "Interrupted" in out
    assert_all_stopped(directory)


async def test_startup_failure_names_the_process(tmp_path: Path) -> None:
    """A process that dies before it is ready is reported with its exit status and
    the tail of its log, and stop() leaves nothing running."""
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'cannot bind: the port is taken' >&2\nexit 3\n")
    broken.chmod(0o755)
    federation = Federation(tmp_path / "demo", python=str(broken), startup_timeout=20)
    try:
        with pytest.raises(StartupError) as err:
            await federation.start()
    finally:
        report = federation.stop()
    message = str(err.value)
    assert "bluefinch exited with status 3 before it was ready" in message
    assert "cannot bind: the port is taken" in message
    assert str(tmp_path / "demo" / "logs" / "bluefinch.log") in message
    assert report.killed == ()
    assert_all_stopped(tmp_path / "demo")
