"""`onecert demo` end to end: real processes, mutual TLS, the story's merged list, the
unbind and its receipt, a recycled-number notice one provider ignores, the compliance
report, the audit chain, and nothing left running afterwards."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from onecert.adapters.demo import PROVIDERS, STORY, DemoFederation, StartupError, number_to_recycle
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


@dataclass(frozen=True)
class DemoRun:
    """One `onecert demo` run: its exit status, output and directory."""

    returncode: int
    out: str
    err: str
    directory: Path

    def section(self, heading: str) -> list[str]:
        """The lines under ``heading`` up to the next heading."""
        lines = self.out.splitlines()
        start = lines.index(heading) + 2
        end = next(
            (i - 1 for i in range(start + 1, len(lines)) if re.fullmatch(r"-+", lines[i])),
            len(lines),
        )
        return lines[start:end]

    def logs(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted((self.directory / "logs").glob("*.log"))}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`onecert demo`, run once for this module's tests."""
    directory = tmp_path_factory.mktemp("demo") / "demo"
    run = subprocess.run(
        demo_command(directory), capture_output=True, text=True, timeout=170, check=False
    )
    return DemoRun(run.returncode, run.stdout, run.stderr, directory)


def compliance_rows(lines: list[str]) -> dict[str, dict[str, str]]:
    """The compliance table's rows, by provider id."""
    columns = (
        "notices", "delivered", "acked", "on_time", "late", "not_received", "ignored",
        "awaiting", "done", "rejected", "failed", "median",
    )  # fmt: skip
    rows = {}
    for line in lines:
        match = re.fullmatch(r"\s*.+? \(([a-z0-9._-]+)\)\s{2,}(\S+(?: \S+)?)\s{2,}(.*)", line)
        if match and not line.strip().startswith("provider "):
            values = dict(zip(columns, match.group(3).split(), strict=True))
            rows[match.group(1)] = {"status": match.group(2), **values}
    return rows


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_shows_the_story(demo: DemoRun) -> None:
    """`onecert demo` exits 0 having shown the left-behind payment account first, hers
    next, the previous holder's as counts only, nothing of the next holder's, and the
    down provider as failed."""
    out, directory = demo.out, demo.directory
    assert demo.returncode == 0, out + demo.err

    lines = out.splitlines()
    left = [i for i, line in enumerate(lines) if "!! left behind" in line]
    mine = [i for i, line in enumerate(lines) if " mine " in line]
    assert len(left) == 1
    assert len(mine) == len(STORY.mine)
    assert left[0] < min(mine)
    assert "Coinpurse Pay" in lines[left[0]]
    assert FORMER in lines[left[0]]
    assert "payment" in lines[left[0]]

    document = json.loads((directory / "lookup.json").read_text())
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
    assert re.search(rf"{DOWN.name}.*could not be reached; try again later", out)
    # The citizen's view speaks plainly; lookup.json keeps the gRPC status.
    citizen = demo.section("The lookup, as the portal runs it") + demo.section("Her merged list")
    assert not [line for line in citizen if "UNAVAILABLE" in line or "breaker" in line]
    assert by_key[DOWN.id, FORMER]["detail"].startswith("UNAVAILABLE")
    assert document["summary"]["total"]["failed"] == 2
    assert "Total:" in out


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_unbinds_with_a_receipt(demo: DemoRun) -> None:
    """She unbinds the left-behind payment account: the receipt says DONE from the
    payment provider after one attempt, and a second lookup no longer lists it."""
    assert demo.returncode == 0, demo.out + demo.err
    section = demo.section("She unbinds the left-behind wallet")
    receipt = {
        m.group(1): m.group(2)
        for line in section
        if (m := re.fullmatch(r"    (\S+(?: \S+)?)\s{2,}(.+)", line))
    }
    assert receipt["provider"] == "Coinpurse Pay (coinpurse)"
    assert receipt["state"] == "done (final)"
    assert receipt["provider's answer"] == "done"
    assert receipt["reason"] == "owner request"
    assert receipt["attempts"] == "1"
    assert re.fullmatch(r"ut_[A-Za-z0-9_-]+", receipt["ticket"])
    assert receipt["answered"] != "-"
    assert any(
        "looked up again: Coinpurse Pay lists nothing on " + FORMER in line for line in section
    )

    after = json.loads((demo.directory / "lookup-after-unbind.json").read_text())
    by_key = {(r["provider_id"], r["msisdn"]): r for r in after["results"]}
    assert by_key["coinpurse", FORMER]["outcome"] == "answered"
    assert by_key["coinpurse", FORMER]["accounts"] == []
    attributions = [a["attribution"] for r in after["results"] for a in r["accounts"]]
    assert "left_behind" not in attributions
    # Her own accounts are untouched.
    assert attributions.count("mine") == len(STORY.mine)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_notice_and_compliance(demo: DemoRun) -> None:
    """A carrier reports a recycled number: every running provider but the one that
    ignores notices acts on time, and the regulator's report names that one (and the
    down provider) as never having acted, with the payment provider's unbind done."""
    assert demo.returncode == 0, demo.out + demo.err
    notice = demo.section("A recycled number: the notice, and who acts on it")
    assert any(re.search(r"notice nt_\S+ recorded, going to 7 providers", x) for x in notice)
    assert any("Kindred Hearts" in x and "no action confirmed" in x for x in notice)
    assert any("Teahouse Forum" in x and "fetched by polling" in x and "acted" in x for x in notice)
    assert any("the deadline passed" in x for x in notice)

    rows = compliance_rows(demo.section("The regulator's compliance report"))
    assert set(rows) == {p.id for p in PROVIDERS}
    ignoring = {p.id for p in PROVIDERS if p.ignores_notices}
    assert ignoring == {"kindred"}
    for spec in PROVIDERS:
        row = rows[spec.id]
        assert row["notices"] == "1"
        missed = (row["not_received"], row["ignored"])
        if spec.id in ignoring:
            assert (row["status"], row["acked"], *missed) == ("non-compliant", "1", "0", "1")
        elif spec.down:
            assert (row["status"], row["delivered"], *missed) == ("unreachable", "0", "1", "0")
        else:
            assert (row["status"], row["on_time"], *missed) == ("ok", "1", "0", "0"), spec.id
    assert rows["coinpurse"]["done"] == "1"
    assert all(rows[p]["done"] == "0" for p in rows if p != "coinpurse")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_check_recycled_agrees_with_the_lookup(demo: DemoRun) -> None:
    """A provider's CheckRecycled on her former number answers RECYCLED at the next
    holder's start, as her lookup shows it recycled."""
    assert demo.returncode == 0, demo.out + demo.err
    lines = demo.section("At login: was this number recycled since?")
    assert any(
        line.startswith(f"  RECYCLED on {STORY.next_holder_from:%Y-%m-%d}: ") for line in lines
    )
    document = json.loads((demo.directory / "lookup.json").read_text())
    (former,) = [n for n in document["numbers"] if n["msisdn"] == FORMER]
    assert former["state"] == "recycled"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_verifies_the_audit_log(demo: DemoRun) -> None:
    """The demo ends by verifying the audit chain of the gateway's database."""
    assert demo.returncode == 0, demo.out + demo.err
    [line] = demo.section("The audit log")[:1]
    match = re.fullmatch(r"  onecert audit verify: OK, (\d+) rows, .*", line)
    assert match
    assert int(match.group(1)) >= 5  # two lookups, an unbind, a notice at least
    assert (demo.directory / "onecert.db").exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_shows_nothing_of_other_people(demo: DemoRun) -> None:
    """Neither the output nor any log nor the lookups' JSON holds the other holders'
    names or account names, and the only raw numbers shown are hers."""
    assert demo.returncode == 0, demo.out + demo.err
    texts = {
        "stdout": demo.out,
        "stderr": demo.err,
        "lookup.json": (demo.directory / "lookup.json").read_text(),
        "lookup-after-unbind.json": (demo.directory / "lookup-after-unbind.json").read_text(),
        **demo.logs(),
    }
    hidden = [
        STORY.next_holder.name,
        STORY.previous_holder.name,
        *STORY.display_names(STORY.next_holder_accounts),
        *STORY.display_names(STORY.previous_holder_accounts),
    ]
    others = [
        STORY.next_holder_other_number,
        STORY.previous_holder_new_number,
        number_to_recycle().msisdn,
    ]
    for where, text in texts.items():
        for name in hidden:
            assert name not in text, where
            assert mask_display_name(name) not in text, where
        for number in others:
            assert number.removeprefix("+86") not in text, where
    # The only numbers shown are hers; the logs show none at all.
    assert set(re.findall(r"\+?86\d{11}", demo.out)) <= {FORMER, CURRENT}
    for name, log in demo.logs().items():
        assert not re.search(r"\+?86\d{11}", log), name


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_leaves_nothing_running(demo: DemoRun) -> None:
    """After the demo every process it started has exited."""
    assert demo.returncode == 0, demo.out + demo.err
    assert_all_stopped(demo.directory)
    assert "Stopping 9 processes" in demo.out


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
    federation = DemoFederation(tmp_path / "demo", python=str(broken), startup_timeout=20)
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
