"""One demo per directory (a lock, and what to do instead); hints that can be run as printed."""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from onecert.adapters.demo import DemoFederation, DirectoryInUseError, ManagedProcess
from onecert.cli import main
from onecert.cli._common import onecert_command
from onecert.cli._demo import _keep_running_help, _Out


def test_a_second_federation_in_a_directory_is_refused(tmp_path: Path) -> None:
    """While one federation holds the directory another cannot take it; after stop it can."""
    first = DemoFederation(tmp_path / "d")
    first.lock()
    second = DemoFederation(tmp_path / "d")
    with pytest.raises(DirectoryInUseError) as refused:
        second.lock()
    assert refused.value.holder == os.getpid()
    first.stop()
    second.lock()
    second.stop()


def test_second_demo_changes_nothing_and_says_use_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`onecert demo` in a directory a running demo holds exits 2 naming --dir, and leaves
    the running demo's keys, config and database as they were."""
    directory = tmp_path / "demo"
    running = DemoFederation(directory)
    running.lock()
    (directory / "keys").mkdir()
    files = {
        directory / "keys" / "ca.pem": "the running demo's CA",
        directory / "gateway.toml": "# the running demo's config",
        directory / "onecert.db": "the running demo's database",
    }
    for path, text in files.items():
        path.write_text(text)
    try:
        assert main(["demo", "--dir", str(directory)]) == 2
    finally:
        running.stop()
    err = capsys.readouterr().err
    assert f"another onecert demo is running in {directory} (pid {os.getpid()})" in err
    assert f"demo --dir {directory}-2" in err
    assert {path: path.read_text() for path in files} == files


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    """A demo killed outright (SIGKILL) leaves no stale lock behind."""
    code = (
        "import sys, time\n"
        "from onecert.adapters.demo import DemoFederation\n"
        f"DemoFederation({str(tmp_path)!r}).lock()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryInUseError):
            DemoFederation(tmp_path).lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    after = DemoFederation(tmp_path)
    after.lock()
    after.stop()


def test_printed_command_runs() -> None:
    """The command the hints print is one a shell can run from here."""
    done = subprocess.run(
        [*shlex.split(onecert_command()), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: onecert")


def test_keep_running_hints_cover_lookup_unbind_and_receipt(tmp_path: Path) -> None:
    """The --keep-running hints use the runnable command and cover mint, lookup, unbind,
    receipt, the report and the audit log, each with the portal's certificate where needed,
    then inviting and joining another provider at the gateway's join port."""
    federation = DemoFederation(tmp_path)
    log = tmp_path / "g.log"
    log.write_text("onecert gateway onecert-gateway takes joins on port 7444\n")
    federation.gateway = ManagedProcess("gateway", "gateway", [], log, port=7443)
    buffer = io.StringIO()
    _keep_running_help(federation, _Out(buffer))
    commands = [line.strip() for line in buffer.getvalue().splitlines() if line.startswith("  ")]
    prefix = onecert_command() + " "
    assert commands
    assert all(command.startswith(prefix) for command in commands)
    actions = [command.removeprefix(prefix).split(" --")[0] for command in commands]
    assert actions == [
        "assertion mint",
        "lookup",
        "unbind 1",
        "receipt",
        "report compliance",
        "audit verify",
        "provider invite",
        "provider join",
        "provider activate",
        "provider status",
    ]
    assert "--gateway 127.0.0.1:7444" in commands[7]
    portal = str(federation.keys.client_cert("portal"))
    assert all(portal in c for c in commands if c.split()[1] in ("lookup", "unbind", "receipt"))
