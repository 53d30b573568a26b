"""``python -m onecert.adapters.demo provider|carrier``: one demo adapter per process.

Each process serves one provider or carrier over mutual TLS and, once it
listens, writes its port to ``--ready-file`` (atomically), so whoever
started it learns the port without racing for one.

A provider with ``--poll-notices FILE`` also fetches its recycled-number
notices from the gateway (``Gateway.PollEvents`` with its client
certificate), as a site that hosts no server would; the gateway starts after
the adapters, so the process waits for ``FILE`` to name the gateway's
address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from onecert.adapters.demo._adapters import build_carrier, build_provider
from onecert.adapters.demo._data import DEFAULT_SEED
from onecert.adapters.demo._join import bootstrap_credentials, join_when_invited
from onecert.sdk import (
    Carrier,
    CertificateRenewer,
    NoticePoller,
    Provider,
    Server,
    ServerTLS,
    configure_logging,
)
from onecert.sdk._parent import follow_parent
from onecert.sdk._tls import ClientTLS
from onecert.sdk.client import ProviderGatewayClient
from onecert.sdk.devkeys import read_hex_key

_log = structlog.get_logger("onecert.adapters.demo")
# How often a polling provider looks for the gateway's address file, and
# pauses after a failed poll.
_WAIT_S = 0.05
_RETRY_S = 0.5
# How long one poll may be held open by the gateway.
_POLL_WAIT_S = 5.0


def write_ready_file(path: Path, value: int | str) -> None:
    """Write ``value`` (a port, an address) to ``path`` so that a reader never
    sees a partial file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{value}\n", encoding="ascii")
    os.replace(partial, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m onecert.adapters.demo",
        description="Serve one demo provider or carrier (synthetic data) over mutual TLS.",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    for role in ("provider", "carrier"):
        p = roles.add_parser(role, help=f"serve a demo {role}")
        p.add_argument("--id", required=True, help=f"the {role} id (a demo id, or any id)")
        p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the filler data")
        p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
        p.add_argument("--gateway-jwks", required=True, type=Path, metavar="PATH")
        p.add_argument("--gateway-issuer", default="onecert-gateway")
        p.add_argument("--tls-cert", required=True, type=Path, metavar="PEM")
        p.add_argument("--tls-key", required=True, type=Path, metavar="PEM")
        p.add_argument(
            "--client-ca", required=True, type=Path, metavar="PEM", help="CA of the gateway's cert"
        )
        p.add_argument(
            "--ready-file", type=Path, metavar="PATH", help="write the bound port here once serving"
        )
        p.add_argument("--grace", type=float, default=2.0, help="seconds to drain on shutdown")
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        if role == "provider":
            p.add_argument(
                "--delay", type=float, metavar="SECONDS", help="answer lookups this much later"
            )
            p.add_argument("--users", type=int, metavar="N", help="N filler users instead")
            p.add_argument(
                "--ignore-notices",
                action="store_const",
                const=True,
                default=None,
                help="acknowledge recycled-number notices, never act on them",
            )
            p.add_argument(
                "--poll-notices",
                type=Path,
                metavar="FILE",
                help="fetch notices from the gateway whose HOST:PORT appears in FILE",
            )
            p.add_argument(
                "--client-cert", type=Path, metavar="PEM", help="client certificate for polling"
            )
            p.add_argument("--client-key", type=Path, metavar="PEM", help="its private key")
            p.add_argument(
                "--join-invitation",
                type=Path,
                metavar="FILE",
                help="join by invitation: wait for FILE (join address and token), join, "
                "ask for activation, renew; serves from --join-dir meanwhile",
            )
            p.add_argument(
                "--join-dir", type=Path, metavar="DIR", help="the joined provider's credentials"
            )
        else:
            p.add_argument(
                "--idn-key", required=True, type=Path, metavar="PATH", help="the shared idn key"
            )
    return parser


@dataclass(frozen=True)
class _Polling:
    """How a provider polls the gateway for its notices."""

    address_file: Path
    tls: ClientTLS
    gateway_keys: Path
    gateway_issuer: str


def _adapter(args: argparse.Namespace) -> Provider | Carrier:
    if args.role == "carrier":
        return build_carrier(args.id, idn_key=read_hex_key(args.idn_key), seed=args.seed)
    users = None
    if args.users is not None:
        from onecert.adapters.demo._data import make_provider_data  # noqa: PLC0415  # only for benchmarks

        users = make_provider_data(args.id, args.seed, args.users)
    return build_provider(
        args.id,
        seed=args.seed,
        delay_s=args.delay,
        users=users,
        ignore_notices=args.ignore_notices,
    )


def _polling(args: argparse.Namespace) -> _Polling | None:
    if args.role != "provider" or args.poll_notices is None:
        return None
    if args.client_cert is None or args.client_key is None:
        raise ValueError("--poll-notices needs --client-cert and --client-key")
    tls = ClientTLS(ca_file=args.client_ca, cert_file=args.client_cert, key_file=args.client_key)
    tls.credentials()  # read the files now: a bad path is a start-up error
    return _Polling(args.poll_notices, tls, args.gateway_jwks, args.gateway_issuer)


def _read_address(path: Path) -> str:
    # A few bytes of a local file, written atomically: reading it in the
    # loop costs less than handing it to a thread.
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""


async def _gateway_address(path: Path) -> str:
    # Another process writes the file: there is nothing in this one to wait on.
    while True:
        address = _read_address(path)
        if address:
            return address
        await asyncio.sleep(_WAIT_S)


async def poll_notices(provider: Provider, polling: _Polling) -> None:
    """Fetch and handle notices until cancelled, once the gateway's address is known."""
    address = await _gateway_address(polling.address_file)
    _log.info("polling the gateway for notices", gateway=address)
    async with ProviderGatewayClient(address, tls=polling.tls) as client:
        await _poll_with(provider, client, polling)


async def _poll_with(provider: Provider, client: ProviderGatewayClient, polling: _Polling) -> None:
    poller = NoticePoller(
        provider,
        client,
        gateway_keys=polling.gateway_keys,
        gateway_issuer=polling.gateway_issuer,
        wait=_POLL_WAIT_S,
        retry_interval=_RETRY_S,
    )
    await poller.run()


async def _joined_life(
    adapter: Provider | Carrier, server: Server, args: argparse.Namespace, polling: _Polling | None
) -> None:
    """Join when invited, then (with the certificate it got, renewed as it goes) poll
    for notices if it polls, until cancelled."""
    credentials = await join_when_invited(
        provider_id=adapter.id,
        address=server.address,
        poll=polling is not None,
        invitation_file=args.join_invitation,
        gateway_ca=args.client_ca,
        directory=args.join_dir,
    )
    state = credentials.state()
    async with (
        ProviderGatewayClient(state.gateway_address, tls=credentials.gateway_tls()) as client,
        CertificateRenewer(credentials, clients=[client]),
    ):
        if polling is not None and isinstance(adapter, Provider):
            await _poll_with(adapter, client, polling)
        else:
            await asyncio.Event().wait()  # until cancelled: the renewer works meanwhile


async def _serve(
    server: Server,
    adapter: Provider | Carrier,
    args: argparse.Namespace,
    polling: _Polling | None,
) -> None:
    await server.start()
    if args.ready_file is not None:
        write_ready_file(args.ready_file, server.port)
    background = []
    if getattr(args, "join_invitation", None) is not None:
        joining = _joined_life(adapter, server, args, polling)
        background.append(asyncio.create_task(joining, name="join"))
    elif polling is not None and isinstance(adapter, Provider):
        background.append(asyncio.create_task(poll_notices(adapter, polling), name="poll-notices"))
    try:
        await server.run(handle_signals=True)
    finally:
        # A poll held open by the gateway ends with the process: the notices
        # it would bring come again with the next poll.
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """Fixed dev certificates, or, joining, the credentials directory (reloaded as the
    join and each renewal replace it) and calls from the gateway's certificate only."""
    if getattr(args, "join_invitation", None) is None:
        return {"tls": ServerTLS(args.tls_cert, args.tls_key, args.client_ca)}
    if args.join_dir is None:
        raise ValueError("--join-invitation needs --join-dir")
    credentials = bootstrap_credentials(
        args.join_dir, cert=args.tls_cert, key=args.tls_key, ca=args.client_ca
    )
    return {"tls": credentials.server_tls(), "gateway_identity": "gateway"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one demo adapter until SIGTERM or SIGINT; the exit status."""
    follow_parent()
    args = build_parser().parse_args(argv)
    configure_logging(json=False, level=args.log_level)
    try:
        adapter = _adapter(args)
        polling = _polling(args)
        server = Server(
            adapter,
            gateway_keys=args.gateway_jwks,
            listen=args.listen,
            gateway_issuer=args.gateway_issuer,
            grace=args.grace,
            **_tls_options(args),
        )
        asyncio.run(_serve(server, adapter, args, polling))
    except (OSError, ValueError) as exc:
        # Configuration errors (unreadable keys, a taken port) as one line.
        print(f"demo {args.role} {args.id}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
