"""``onecert provider join | activate | status``: a provider's own commands against a running
gateway, over the join listener and then mutual TLS with the certificate they wrote."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import timedelta
from pathlib import Path

from onecert.gateway import GatewayServer
from onecert.gateway.store import RegistryStatus, Store
from onecert.gateway.testing import Federation
from tests.client.client_support import run_cli


async def test_join_activate_status_for_a_polling_site(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """A site without a server joins with --poll, is activated by `activate`, and `status`
    shows it active with its certificate's serial."""
    invitation = await store.registry.invite(
        "small-site", name="Small Site", category="forum", ttl=timedelta(hours=1), actor="admin:x"
    )
    assert gateway.enrollment is not None
    creds = tmp_path / "creds"
    status, out, err = await asyncio.to_thread(
        run_cli, "provider", "join", "--gateway", f"127.0.0.1:{gateway.enrollment.port}",
        "--ca", str(federation.keys.dev.ca_cert), "--id", "small-site",
        "--token", invitation.token, "--poll", "--dir", str(creds),
    )  # fmt: skip
    assert status == 0, err
    assert "joined as 'small-site': pending" in out
    assert stat.S_IMODE((creds / "provider.key.pem").stat().st_mode) == 0o600
    status, out, err = await asyncio.to_thread(run_cli, "provider", "activate", "--dir", str(creds))
    assert status == 0, err
    assert out.startswith("status       active")
    status, out, err = await asyncio.to_thread(
        run_cli, "provider", "status", "--dir", str(creds), "--json"
    )
    assert status == 0, err
    shown = json.loads(out)
    entry = await store.registry.get("small-site")
    assert entry is not None
    assert entry.status is RegistryStatus.ACTIVE
    assert shown["status"] == "active"
    assert shown["certificate_serial"] == entry.cert_serial
    assert shown["last_gate"]["passed"] is True


async def test_a_refused_join_is_one_line(
    gateway: GatewayServer, federation: Federation, tmp_path: Path
) -> None:
    """A made-up token: exit status 2 and the gateway's reason, no traceback, no files."""
    assert gateway.enrollment is not None
    status, _, err = await asyncio.to_thread(
        run_cli, "provider", "join", "--gateway", f"127.0.0.1:{gateway.enrollment.port}",
        "--ca", str(federation.keys.dev.ca_cert), "--id", "small-site",
        "--token", "onecert-enroll-made-up", "--address", "127.0.0.1:50999",
        "--dir", str(tmp_path / "creds"),
    )  # fmt: skip
    assert status == 2
    assert "the join was refused" in err
    assert "UNAUTHENTICATED" in err
    assert "Traceback" not in err
    assert not (tmp_path / "creds" / "provider.pem").exists()


def test_status_before_joining_says_so(tmp_path: Path) -> None:
    """`status` on a directory the join never wrote names the problem."""
    status, _, err = run_cli("provider", "status", "--dir", str(tmp_path))
    assert status == 2
    assert "run join first" in err
