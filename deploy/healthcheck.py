#!/usr/bin/env python3
"""Probe a gRPC health service (grpc.health.v1) over mutual TLS; exit 0 when SERVING.

The image installs this as ``onecert-healthcheck``; compose healthchecks and
the Kubernetes exec probes run it. It exists because the kubelet's built-in
``grpc:`` probe speaks plaintext only, and the gateway in production mode
serves nothing but mutual TLS.

    onecert-healthcheck --target 127.0.0.1:7443 --service onecert.v1.Gateway \\
        --ca ca.pem --cert client.pem --key client.key.pem --server-name onecert-gateway

Exit status: 0 SERVING, 1 anything else (NOT_SERVING, unknown service, no
answer in time), 2 bad arguments or unreadable files. The channel is the
SDK's (``onecert.sdk._channel``), so the certificate files get the same
checks as everywhere else in onecert; one call, then exit, is all a probe does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onecert.sdk._channel import open_channel
from onecert.sdk._tls import ClientTLS, TLSConfigError

SERVING = health_pb2.HealthCheckResponse.SERVING


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onecert-healthcheck",
        description="Ask a gRPC server's health service; exit 0 when it reports SERVING.",
    )
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--service", default="", help="the service to ask about ('' = the whole server)"
    )
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS")
    tls = parser.add_argument_group("transport (mutual TLS, or --insecure in development)")
    tls.add_argument("--ca", type=Path, metavar="PEM", help="CA of the server's certificate")
    tls.add_argument("--cert", type=Path, metavar="PEM", help="client certificate")
    tls.add_argument("--key", type=Path, metavar="PEM", help="client private key")
    tls.add_argument("--server-name", metavar="NAME", help="name expected in the server's cert")
    tls.add_argument("--insecure", action="store_true", help="plaintext (development only)")
    return parser


def _tls(args: argparse.Namespace) -> ClientTLS | None:
    if args.insecure:
        return None
    # The probe dials the loopback address, but the certificate names the service.
    return ClientTLS(args.ca, args.cert, args.key, server_name=args.server_name)


async def _check(args: argparse.Namespace, tls: ClientTLS | None) -> int:
    async with open_channel(args.target, tls=tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = await stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.aio.AioRpcError as exc:
            print(f"{args.target} {args.service!r}: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{args.target} {args.service!r}: {status}")
    return 0 if answer.status == SERVING else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one health check; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.insecure == (args.ca is not None):
        parser.error("give --ca (with --cert and --key for mutual TLS), or --insecure")
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    try:
        return asyncio.run(_check(args, _tls(args)))
    except TLSConfigError as exc:  # the files are read and checked before any call
        print(f"onecert-healthcheck: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
