"""The benchmark suite keeps working: its quick mode runs every scenario end to end.

These tests check shapes and bookkeeping, never timings: a benchmark's
figures are measurements, not assertions.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import notice_store
from bench._load import percentile
from bench._procs import Processes, cpu_seconds, rss_bytes
from bench._report import Row, ScenarioResult, document, table
from bench._scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]


def _ended(pid: int, within: float = 5.0) -> bool:
    # A SIGKILLed process may take a moment to go; a zombie has ended.
    deadline = time.monotonic() + within
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def test_row_judges_ratio_against_target() -> None:
    """A row's ratio is value over baseline, and its target is checked on the ratio."""
    row = Row("N=10", "throughput", "lookups/s", 60.0, 100.0, "floor", target=">= 0.75").judge()
    assert row.ratio == pytest.approx(0.6)
    assert row.met is False
    row = Row("N=10", "p99", "ms", 12.0, 10.0, "floor", target="<= 1.3").judge()
    assert row.met is True


def test_row_target_on_value_and_missing_baseline() -> None:
    """A target may apply to the value itself; without a baseline there is no ratio."""
    row = Row("end", "p99", "ms", 1049.0, 1000.0, target="<= 1050", target_on="value").judge()
    assert row.met is True
    bare = Row("total", "RSS", "MiB", 90.0).judge()
    assert bare.ratio is None
    assert bare.met is None


def test_percentile_is_nearest_rank() -> None:
    """Percentiles are nearest-rank over the samples, None for no samples."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) is None


def test_table_shows_failures_and_rows() -> None:
    """The table has one line per row and says which scenario failed."""
    ok = ScenarioResult(
        "overhead",
        "o",
        rows=[Row("N=10", "throughput", "lookups/s", 5.0, 10.0, "floor", target=">= 0.75").judge()],
    )
    broken = ScenarioResult("tail", "t", error="ProcessError: boom")
    doc = document([ok, broken], mode="quick", notes=["n"], started=_now())
    lines = table(doc).splitlines()
    row = next(line for line in lines if line.startswith("| overhead | N=10 | throughput"))
    assert row.split(" | ")[3:] == ["5.00", "10.0 (floor)", "0.50", ">= 0.75", "MISSED |"]
    assert any(line.startswith("| tail | - | FAILED: ProcessError: boom") for line in lines)


def _spawn_family_then_fail(procs: Processes, child_pid_file: Path, pids: list[int]) -> None:
    leader = procs.spawn("shell", ["sh", "-c", f"sleep 60 & echo $! > {child_pid_file}; wait"])
    deadline = time.monotonic() + 10
    while not child_pid_file.exists() or not child_pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the shell did not start its child"
        time.sleep(0.02)
    assert cpu_seconds(leader.pid) >= 0
    assert rss_bytes(leader.pid) > 0
    pids.append(leader.pid)
    raise RuntimeError("scenario failed")


def test_processes_end_whole_groups_on_error(tmp_path: Path) -> None:
    """Leaving a Processes block by an exception ends each process and its children."""
    child_pid_file = tmp_path / "child.pid"
    procs = Processes(tmp_path)
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="scenario failed"), procs:
        _spawn_family_then_fail(procs, child_pid_file, pids)
    assert _ended(pids[0])
    child = int(child_pid_file.read_text())
    assert _ended(child)
    assert procs.processes == []


def test_processes_kill_what_ignores_sigterm(tmp_path: Path) -> None:
    """A process that ignores SIGTERM is killed after the stop timeout."""
    with Processes(tmp_path, stop_timeout=0.2) as procs:
        stubborn = procs.python(
            "stubborn",
            "-c",
            f"import signal, time; signal.signal({int(signal.SIGTERM)}, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        )
        deadline = time.monotonic() + 10
        while "ready" not in stubborn.log_tail():
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.02)
    assert stubborn.popen.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_run_reports_every_scenario(tmp_path: Path) -> None:
    """`python -m bench --quick` runs every scenario and writes a complete JSON document."""
    pg_url = os.environ.get("ONECERT_TEST_PG_URL", "")
    out = tmp_path / "results"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
            "--pg-url",
            pg_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    doc = json.loads((out / "latest-quick.json").read_text())
    assert len(list(out.glob("*-quick.json"))) == 2  # latest and its timestamped copy
    assert doc["schema_version"] == 1
    assert doc["mode"] == "quick"
    assert {"cpu_model", "cores", "memory_bytes"} <= doc["machine"].keys()
    assert {"python", "grpcio", "protobuf", "onecert"} <= doc["versions"].keys()
    assert [s["name"] for s in doc["scenarios"]] == list(SCENARIOS)
    for scenario in doc["scenarios"]:
        assert scenario["error"] is None, scenario["error"]
        assert scenario["rows"], f"{scenario['name']} reported no figures"
        for row in scenario["rows"]:
            where = f"{scenario['name']} {row['case']} {row['metric']}"
            assert isinstance(row["value"], int | float), where
            assert math.isfinite(row["value"]), where
            if row["baseline_name"]:
                assert isinstance(row["baseline"], int | float), where
                assert isinstance(row["ratio"], int | float), where
            if row["target"] is not None:
                assert isinstance(row["met"], bool), where
    notices = next(s for s in doc["scenarios"] if s["name"] == "notices")
    backends = {row["case"] for row in notices["rows"]}
    assert backends == ({"SQLite", "PostgreSQL"} if pg_url else {"SQLite"})
    assert "| scenario | case | metric |" in completed.stdout


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_notice_store_records_and_settles_a_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench.notice_store records a notice to a few providers, settles every copy in
    group commits (the audit chain verifies, or it fails) and prints its figures."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert (
        notice_store.main(["--url", url, "--providers", "5", "--group", "2", "--reports", "2"]) == 0
    )
    printed = capsys.readouterr().out
    assert "recording 5 copies" in printed
    assert "settling them in 3 group commits" in printed
