"""Privacy: a full demo run (``onecert demo``: real processes, mutual TLS, a SQLite
store) leaves no raw number, no ID data and no account name in its logs, audit rows,
database or other files, and shows the citizen her own numbers and masked names only;
the gateway's metrics hold none of it either."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from onecert.adapters.demo import STORY
from onecert.gateway._config import MetricsConfig
from onecert.gateway._masking import mask_display_name
from onecert.sdk._idn import compute_idn
from onecert.sdk.devkeys import read_hex_key
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from tests.hardening.hardening_support import Harness
else:
    Harness = Any

# A full demo run takes seconds to tens of seconds on a busy machine.
DEMO = (pytest.mark.slow, pytest.mark.timeout(300))


@dataclass(frozen=True)
class DemoRun:
    directory: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One full demo run, shared by the tests of this module."""
    directory = tmp_path_factory.mktemp("privacy") / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "onecert.cli", "demo", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return DemoRun(directory, run.stdout, run.stderr)


def _number_forms(msisdn: str) -> list[str]:
    national = msisdn.removeprefix("+86")
    return [
        msisdn,
        msisdn.removeprefix("+"),
        national,
        f"{national[:3]} {national[3:7]} {national[7:]}",
        f"{national[:3]}-{national[3:7]}-{national[7:]}",
    ]


PEOPLE = (STORY.citizen, STORY.next_holder, STORY.previous_holder)
OWN_NUMBERS = (STORY.former_number, STORY.current_number)
OTHER_NUMBERS = tuple(sorted(STORY.numbers - set(OWN_NUMBERS)))
HIDDEN_NAMES = STORY.display_names((*STORY.previous_holder_accounts, *STORY.next_holder_accounts))
OWN_NAMES = STORY.display_names((*STORY.left_behind, *STORY.mine))


def _id_data(demo: DemoRun) -> dict[str, str]:
    """Document numbers, their keyed hashes (idn) and the citizen's sub, by label."""
    key = read_hex_key(demo.directory / "keys" / "idn.key")
    out = {"sub": STORY.citizen_sub}
    for person in PEOPLE:
        out[f"document of {person.name}"] = person.document_number
        out[f"idn of {person.name}"] = compute_idn(key, person.document_number)
    return out


def _never(demo: DemoRun) -> dict[str, str]:
    """What no log, audit row or stored byte may ever hold."""
    secrets: dict[str, str] = {}
    for number in STORY.numbers:
        for form in _number_forms(number):
            secrets[f"number {form}"] = form
    secrets.update(_id_data(demo))
    for name in (*HIDDEN_NAMES, *OWN_NAMES):
        secrets[f"account name {name}"] = name
    for name in HIDDEN_NAMES:
        secrets[f"masked name {name}"] = mask_display_name(name)
    for person in PEOPLE:
        secrets[f"person {person.name}"] = person.name
    return secrets


def _found(text: str, secrets: dict[str, str]) -> list[str]:
    return sorted(label for label, value in secrets.items() if value in text)


def _stored_files(demo: DemoRun) -> list[Path]:
    """Every file the run left, but the keys and the citizen's own lookups."""
    return sorted(
        p
        for p in demo.directory.rglob("*")
        if p.is_file()
        and "keys" not in p.relative_to(demo.directory).parts
        and not _citizens_view(p)
    )


def _citizens_view(path: Path) -> bool:
    # lookup.json, lookup-after-unbind.json: what the portal showed her.
    return path.name.startswith("lookup") and path.suffix == ".json"


@DEMO[0]
@DEMO[1]
def test_logs_and_files_hold_no_personal_data(demo: DemoRun) -> None:
    """No log line of any process (gateway, carriers, providers), no stderr, and no
    stored file (config, database, pids) holds a number of the story in any format,
    a document number, an idn, the citizen's sub, an account name or a person's name."""
    secrets = _never(demo)
    logs = sorted((demo.directory / "logs").glob("*.log"))
    assert len(logs) >= 9
    leaks = {"stderr": _found(demo.stderr, secrets)}
    for path in _stored_files(demo):
        text = path.read_bytes().decode("utf-8", "replace")
        leaks[str(path.relative_to(demo.directory))] = _found(text, secrets)
    assert {where: found for where, found in leaks.items() if found} == {}
    # The logs did record the lookup, with the numbers masked.
    gateway_log = (demo.directory / "logs" / "gateway.log").read_text()
    assert "lookup.finished" in gateway_log
    assert re.search(r"\+861\*+\d\d", gateway_log)


@DEMO[0]
@DEMO[1]
def test_audit_rows_hold_digests_only(demo: DemoRun) -> None:
    """The audit log recorded the lookup, with the citizen as a digest and no number,
    ID data or name in any column."""
    with sqlite3.connect(demo.directory / "onecert.db") as db:
        rows = db.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()
        other = [
            row
            for table in ("unbind_tickets", "number_events", "deliveries", "replay_cache")
            for row in db.execute(f"SELECT * FROM {table}").fetchall()
        ]
    kinds = [row[2] for row in rows]
    assert "lookup" in kinds
    text = repr(rows) + repr(other)
    assert _found(text, _never(demo)) == []
    assert re.search(r"citizen:[0-9a-f]{64}", text)


@DEMO[0]
@DEMO[1]
def test_citizens_output_shows_her_own_data_only(demo: DemoRun) -> None:
    """What the citizen sees (the printed list and her lookups' JSON) holds her own numbers and
    masked names, and nothing of anyone else: no other number, no ID data, no previous
    or next holder's account name, masked or not, and no raw name of her own accounts."""
    views = sorted(p for p in demo.directory.iterdir() if _citizens_view(p))
    assert views
    lookup = "".join(p.read_text() for p in views)
    allowed = {f"number {form}" for n in OWN_NUMBERS for form in _number_forms(n)}
    allowed.add(f"person {STORY.citizen.name}")  # the demo's narrative names her
    never = {k: v for k, v in _never(demo).items() if k not in allowed}
    assert _found(demo.stdout, never) == []
    assert (
        _found(lookup, {k: v for k, v in never.items() if k != f"person {STORY.citizen.name}"})
        == []
    )
    for number in OWN_NUMBERS:
        assert number in demo.stdout
        assert number in lookup
    for name in OWN_NAMES:
        assert mask_display_name(name) in demo.stdout
    # Any number at all in the output is one of hers.
    assert set(re.findall(r"\+?86\d{11}", demo.stdout + lookup)) <= {
        *OWN_NUMBERS,
        *(n.removeprefix("+") for n in OWN_NUMBERS),
    }


async def test_metrics_hold_no_personal_data(hz: Harness) -> None:
    """After lookups, an unbind, a refused assertion and a recycled-number notice, the
    gateway's Prometheus metrics name providers and outcomes, and no number, ID data,
    citizen or account name."""
    await hz.carrier()
    await hz.provider("pay")
    gateway = await hz.gateway(metrics=MetricsConfig(listen="127.0.0.1:0"))
    assert gateway.metrics_port
    handle = await hz.handle_of(gateway, "pay")
    await hz.unbind(gateway, handle)
    await hz.lookup(gateway, hz.assertion(sub=hz.OTHER_SUB, idn=hz.OTHER_IDN))
    with pytest.raises(grpc.aio.AioRpcError):
        await hz.lookup(gateway, hz.assertion(audience="elsewhere"))
    report = gateway_pb2.ReportNumberEventRequest(
        event_id="ev-metrics",
        msisdn=hz.FORMER,
        type=gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED,
        effective_at=hz.stamp(hz.at(2024)),
    )
    await hz.stub(gateway).ReportNumberEvent(
        report, metadata=(("x-onecert-dev-principal", "carrier:cm"),), timeout=5
    )
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert "pay" in text
    secrets = {
        "sub": hz.CITIZEN_SUB,
        "other sub": hz.OTHER_SUB,
        "idn": hz.IDN,
        "other idn": hz.OTHER_IDN,
        "document": hz.DOCUMENT,
        "previous holder": hz.PREVIOUS_HOLDER_NAME,
        "next holder": hz.NEXT_HOLDER_NAME,
        "own account": "linxiaoyu",
    }
    for number in (hz.CURRENT, hz.FORMER, hz.OTHER_NUMBER):
        for form in _number_forms(number):
            secrets[f"number {form}"] = form
    assert _found(text, secrets) == []
