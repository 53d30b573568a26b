"""Demo providers that join by invitation instead of being configured by hand.

The provider's side: the process serves at once (port 0) over the files of
its credentials directory, filled with the dev server certificate, so it
knows its address before it joins. It then waits for its invitation (a small
JSON file the demo writes once the regulator has invited it: the join
listener's address and the token), joins with the SDK (key pair made here,
CSR and token sent) and asks for activation (the gateway runs the
conformance kit against it); the adapter process then renews its
certificate as it goes. Its server takes the federation certificate at the
next handshake, as it would a renewed one.

The regulator's side (:func:`invite_and_wait`): the demo invites it through
the gateway's admin RPC, hands it the token, and waits until the registry
holds it active.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from onecert.sdk import ProviderCredentials, join
from onecert.sdk.client import (
    ActivationResult,
    AdminGatewayClient,
    GatewayError,
    ProviderGatewayClient,
    ProviderRecord,
    ProviderStatus,
)

if TYPE_CHECKING:
    from onecert.adapters.demo._data import ProviderSpec
    from onecert.adapters.demo._federation import DemoFederation

__all__ = [
    "Invitation",
    "Joined",
    "bootstrap_credentials",
    "invite_and_wait",
    "join_argv",
    "join_when_invited",
    "write_invitation",
]

# The line `onecert gateway serve` prints for its join listener.
_JOINS_ON = re.compile(r"takes joins on port (\d+)")

_log = structlog.get_logger("onecert.adapters.demo")
_WAIT_S = 0.05
# A replica applies a join to its registry within its poll interval (2 s by
# default): until then the new certificate is not known yet.
_ACTIVATION_PATIENCE_S = 30.0
_ACTIVATION_RETRY_S = 0.5


@dataclass(frozen=True)
class Invitation:
    """What the demo hands a joining provider: where to join, and the token."""

    gateway: str
    token: str


def write_invitation(path: Path, invitation: Invitation) -> None:
    """Write ``invitation`` atomically (the provider's process polls for it)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"gateway": invitation.gateway, "token": invitation.token}))
    partial.chmod(0o600)
    partial.replace(path)


def _read_invitation(path: Path) -> Invitation | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Invitation(gateway=str(data["gateway"]), token=str(data["token"]))


def bootstrap_credentials(
    directory: Path, *, cert: Path, key: Path, ca: Path
) -> ProviderCredentials:
    """Fill ``directory`` with a certificate to serve with until the join replaces it."""
    credentials = ProviderCredentials.at(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(cert, credentials.cert_file)
    shutil.copyfile(key, credentials.key_file)
    shutil.copyfile(ca, credentials.ca_file)
    return credentials


async def _invitation(path: Path) -> Invitation:
    while True:
        found = _read_invitation(path)
        if found is not None:
            return found
        await asyncio.sleep(_WAIT_S)


async def _activate(credentials: ProviderCredentials) -> ActivationResult:
    state = credentials.state()
    deadline = asyncio.get_running_loop().time() + _ACTIVATION_PATIENCE_S
    async with ProviderGatewayClient(
        state.gateway_address, tls=credentials.gateway_tls()
    ) as client:
        while True:
            try:
                return await client.request_activation()
            except GatewayError as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                _log.info("activation.retry", status=exc.code.name, details=exc.details)
                await asyncio.sleep(_ACTIVATION_RETRY_S)


async def join_when_invited(
    *,
    provider_id: str,
    address: str,
    poll: bool,
    invitation_file: Path,
    gateway_ca: Path,
    directory: Path,
) -> ProviderCredentials:
    """Wait for the invitation, join, ask for activation; the credentials it got."""
    invitation = await _invitation(invitation_file)
    joined = await join(
        gateway=invitation.gateway,
        gateway_ca=gateway_ca,
        provider_id=provider_id,
        token=invitation.token,
        address=address,
        poll=poll,
        directory=directory,
    )
    _log.info("joined", status=str(joined.status), not_after=str(joined.not_after))
    result = await _activate(joined.credentials)
    gate = result.gate
    _log.info(
        "activation",
        status=str(result.status),
        passed=None if gate is None else gate.passed,
        failures=[] if gate is None else list(gate.failures),
        summary=result.summary,
    )
    return joined.credentials


# ------------------------------------------------------------------ the regulator's side


def _invitation_file(run: Path, provider_id: str) -> Path:
    return run / f"{provider_id}.invitation"


def credentials_dir(run: Path, provider_id: str) -> Path:
    """Where a joining demo provider keeps its key and certificate."""
    return run / f"{provider_id}-credentials"


def join_argv(run: Path, provider_id: str) -> list[str]:
    """The demo adapter's arguments that make it join by invitation."""
    return [
        "--join-invitation",
        str(_invitation_file(run, provider_id)),
        "--join-dir",
        str(credentials_dir(run, provider_id)),
    ]


@dataclass(frozen=True)
class Joined:
    """How one provider's joining went, as the registry tells the regulator."""

    spec: ProviderSpec
    record: ProviderRecord
    join_port: int
    seconds: float

    @property
    def active(self) -> bool:
        return self.record.status is ProviderStatus.ACTIVE


def join_port(federation: DemoFederation) -> int:
    """The gateway's join listener port (from the line its log holds)."""
    gateway = federation.gateway
    if gateway is None:
        raise RuntimeError("the gateway is not started")
    match = _JOINS_ON.search("\n".join(gateway.log_tail(400)))
    if match is None:
        raise RuntimeError("the gateway did not say where it takes joins ([enrollment] missing?)")
    return int(match.group(1))


async def invite_and_wait(
    federation: DemoFederation, spec: ProviderSpec, *, patience: float = 60.0
) -> Joined:
    """Invite ``spec`` as the regulator, hand it the token, wait until it is active
    (or its gate failed, or ``patience`` seconds passed)."""
    started = time.perf_counter()
    port = join_port(federation)
    tls = federation.client_tls()
    async with AdminGatewayClient(federation.gateway_address, tls=tls) as admin:
        invitation = await admin.invite_provider(
            spec.id, category=spec.category.value, name=spec.name
        )
        write_invitation(
            _invitation_file(federation.gateway_address_file.parent, spec.id),
            Invitation(gateway=f"127.0.0.1:{port}", token=invitation.token),
        )
        until = started + patience
        while True:
            record, _ = await admin.get_provider(spec.id)
            gate_failed = record.last_gate is not None and not record.last_gate.passed
            if record.status is ProviderStatus.ACTIVE or gate_failed or time.perf_counter() > until:
                return Joined(spec, record, port, time.perf_counter() - started)
            await asyncio.sleep(0.1)
