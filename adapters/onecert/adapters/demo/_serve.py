"""``python -m onecert.adapters.demo provider|carrier``: one demo adapter per process.

Each process serves one provider or carrier over mutual TLS and, once it
listens, writes its port to ``--ready-file`` (atomically), so whoever
started it learns the port without racing for one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from onecert.adapters.demo._adapters import build_carrier, build_provider
from onecert.adapters.demo._data import DEFAULT_SEED
from onecert.sdk import Carrier, Provider, Server, ServerTLS, configure_logging
from onecert.sdk.devkeys import read_hex_key


def write_ready_file(path: Path, port: int) -> None:
    """Write ``port`` to ``path`` so that a reader never sees a partial file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{port}\n", encoding="ascii")
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
        else:
            p.add_argument(
                "--idn-key", required=True, type=Path, metavar="PATH", help="the shared idn key"
            )
    return parser


def _adapter(args: argparse.Namespace) -> Provider | Carrier:
    if args.role == "carrier":
        return build_carrier(args.id, idn_key=read_hex_key(args.idn_key), seed=args.seed)
    users = None
    if args.users is not None:
        from onecert.adapters.demo._data import make_provider_data  # noqa: PLC0415  # only for benchmarks

        users = make_provider_data(args.id, args.seed, args.users)
    return build_provider(args.id, seed=args.seed, delay_s=args.delay, users=users)


async def _serve(server: Server, ready_file: Path | None) -> None:
    await server.start()
    if ready_file is not None:
        write_ready_file(ready_file, server.port)
    await server.run(handle_signals=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one demo adapter until SIGTERM or SIGINT; the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(json=False, level=args.log_level)
    try:
        adapter = _adapter(args)
        server = Server(
            adapter,
            gateway_keys=args.gateway_jwks,
            listen=args.listen,
            gateway_issuer=args.gateway_issuer,
            tls=ServerTLS(args.tls_cert, args.tls_key, args.client_ca),
            grace=args.grace,
        )
        asyncio.run(_serve(server, args.ready_file))
    except (OSError, ValueError) as exc:
        # Configuration errors (unreadable keys, a taken port) as one line.
        print(f"demo {args.role} {args.id}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
