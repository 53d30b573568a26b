"""``onecert report compliance --gateway`` runs on the provider-side install:
without the ``gateway`` extra (no onecert.gateway, no SQLAlchemy)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from onecert.gateway.testing import Federation, FederationKeys

# Run in a child process: refuses every import of the gateway package and of
# SQLAlchemy, as an install of `onecert` without the gateway extra would.
_WITHOUT_GATEWAY_EXTRA = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "sqlalchemy" or name.startswith("onecert.gateway"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, NotInstalled())
from onecert.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.startswith(("onecert.gateway", "sqlalchemy"))]
sys.exit(code)
"""


async def _run(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WITHOUT_GATEWAY_EXTRA,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_report_from_a_gateway_needs_no_gateway_extra(tmp_path: Path) -> None:
    """With onecert.gateway and SQLAlchemy unimportable, the report is fetched from a
    running development gateway and printed as JSON, one line per configured provider."""
    async with Federation(FederationKeys.create(tmp_path / "keys"), tmp_path) as fed:
        await fed.carrier("cm")
        await fed.provider("pay", name="Pay Inc")
        gateway = await fed.gateway(store="sqlite")
        code, out, err = await _run(
            "report", "compliance", "--gateway", f"127.0.0.1:{gateway.port}", "--insecure", "--json"
        )

    assert code == 0, err
    report = json.loads(out)
    assert [(p["provider_id"], p["provider_name"]) for p in report["providers"]] == [
        ("pay", "Pay Inc")
    ]
    assert report["providers"][0]["status"] == "no notices"


async def test_report_module_imports_nothing_of_the_gateway() -> None:
    """Importing the report command, and printing its help, touch neither the
    gateway package nor SQLAlchemy."""
    code, out, err = await _run("report", "compliance", "--help")

    assert code == 0, err
    assert "--gateway" in out


async def test_reading_a_database_without_the_gateway_extra_says_what_to_install(
    tmp_path: Path,
) -> None:
    """Without the gateway extra, --url is refused with what to install (or to use
    --gateway), not a traceback."""
    code, _out, err = await _run(
        "report", "compliance", "--url", f"sqlite:///{tmp_path / 'gateway.db'}"
    )

    assert code != 0
    assert "install onecert[gateway], or ask a running gateway with --gateway" in err
    assert "Traceback" not in err
