"""Results: what a scenario reports, the machine it ran on, the table and the JSON."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class Row:
    """One figure against its baseline.

    ``ratio`` is value / baseline; ``target`` reads like ``">= 0.75"`` or
    ``"<= 1.3"`` and applies to the ratio unless ``target_on`` says
    "value"; ``met`` is None when there is no target.
    """

    case: str
    metric: str
    unit: str
    value: float | None
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    target: str | None = None
    target_on: str = "ratio"
    met: bool | None = None

    def judge(self) -> Row:
        """Fill ``ratio`` and ``met`` from the other fields; returns itself."""
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline
        if self.target is not None:
            subject = self.ratio if self.target_on == "ratio" else self.value
            self.met = None if subject is None else _meets(subject, self.target)
        return self


def _meets(value: float, target: str) -> bool:
    op, _, bound = target.partition(" ")
    limit = float(bound)
    if op == ">=":
        return value >= limit
    if op == "<=":
        return value <= limit
    raise ValueError(f"unknown target {target!r}")


@dataclass
class ScenarioResult:
    """What one scenario measured."""

    name: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, kernel, load."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "memory_gib": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Python, grpcio, protobuf, onecert (and the git commit when there is one)."""
    out = {
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "onecert": _version("onecert"),
        "cryptography": _version("cryptography"),
        "pyjwt": _version("pyjwt"),
    }
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        out["git_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _git(*args: str) -> str:
    """What a read-only git command prints about this checkout, stripped."""
    return subprocess.run(
        ["git", *args],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=5,
    ).stdout.strip()


def document(
    results: list[ScenarioResult], *, mode: str, notes: list[str], started: dt.datetime
) -> dict[str, Any]:
    """The JSON document of a run."""
    return {
        "schema_version": SCHEMA_VERSION,
        "date": started.isoformat(timespec="seconds"),
        "mode": mode,
        "machine": machine_info(),
        "versions": versions(),
        "notes": notes,
        "scenarios": [asdict(r) for r in results],
    }


def write(doc: dict[str, Any], directory: Path, started: dt.datetime) -> list[Path]:
    """``latest.json`` (``latest-quick.json`` for quick runs) and a timestamped copy."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    latest = "latest.json" if doc["mode"] == "full" else f"latest-{doc['mode']}.json"
    paths = [directory / latest, directory / f"{stamp}-{doc['mode']}.json"]
    for path in paths:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    return paths


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "x" or abs(value) < 10:
        text = f"{value:.2f}"
    elif abs(value) < 1000:
        text = f"{value:.1f}"
    else:
        text = f"{value:,.0f}"
    return text


def table(doc: dict[str, Any]) -> str:
    """The run as a Markdown table (readable in a terminal too)."""
    machine, vers = doc["machine"], doc["versions"]
    lines = [
        f"onecert benchmark ({doc['mode']}) {doc['date']}",
        f"machine: {machine['cpu_model']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB; load at the end {machine['load_average'][0]:.2f}",
        "versions: "
        + ", ".join(f"{k} {v}" for k, v in vers.items() if k not in ("cryptography", "pyjwt")),
        "",
        "| scenario | case | metric | gateway | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario in doc["scenarios"]:
        if scenario["error"]:
            error = " ".join(scenario["error"].split()).replace("|", "/")
            lines.append(f"| {scenario['name']} | - | FAILED: {error[:100]} | - | - | - | - | - |")
        for row in scenario["rows"]:
            met = {True: "met", False: "MISSED", None: ""}[row["met"]]
            baseline = _fmt(row["baseline"], row["unit"])
            if row["baseline_name"] and row["baseline"] is not None:
                baseline = f"{baseline} ({row['baseline_name']})"
            target = row["target"] or ""
            if target and row["target_on"] == "value":
                target = f"{target} {row['unit']}"
            lines.append(
                f"| {scenario['name']} | {row['case']} | {row['metric']} ({row['unit']}) | "
                f"{_fmt(row['value'], row['unit'])} | {baseline} | "
                f"{_fmt(row['ratio'], 'x')} | {target} | {met} |"
            )
    notes = list(doc["notes"])
    for scenario in doc["scenarios"]:
        notes += [f"{scenario['name']}: {note}" for note in scenario["notes"]]
    if notes:
        lines.append("")
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines)
