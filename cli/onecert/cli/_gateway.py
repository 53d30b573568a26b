"""``onecert gateway serve``: run the gateway from a configuration file."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_group

if TYPE_CHECKING:
    from onecert.gateway import GatewayServer


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """run the onecert gateway

    Run the onecert gateway.
    """
    commands = add_group(sub, "gateway", register, metavar="COMMAND")
    serve = add_command(commands, "serve", _serve)
    serve.add_argument("--config", required=True, type=Path, metavar="FILE", help="TOML file")
    serve.add_argument(
        "--dev-plaintext",
        action="store_true",
        help="development mode: allow plaintext (same as gateway.dev_plaintext = true)",
    )


def _serve(args: argparse.Namespace) -> int:
    """serve Gateway.Lookup until SIGTERM or SIGINT

    Serve the gateway as the configuration file says (see docs/configuration.md). Production mode
    needs TLS with client certificates and mutual TLS towards carriers and providers; SIGTERM or
    SIGINT stops it gracefully.
    """
    from onecert.gateway._config import ConfigError, load_config  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.gateway._server import serve  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk._keys import KeyConfigError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk._logging import configure_logging  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk._tls import TLSConfigError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    try:
        config = load_config(args.config, dev_plaintext=args.dev_plaintext)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    configure_logging(json=config.json_logs, level=config.log_level)

    def ready(server: GatewayServer) -> None:
        mode = "development, plaintext allowed" if config.dev_plaintext else "production"
        # One line on stdout for scripts that wait for the port.
        print(f"onecert gateway {config.id} listening on port {server.port} ({mode})", flush=True)
        if server.enrollment is not None:
            print(
                f"onecert gateway {config.id} takes joins on port {server.enrollment.port}",
                flush=True,
            )

    try:
        asyncio.run(serve(config, ready=ready))
    except (KeyConfigError, TLSConfigError, ConfigError) as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot start the gateway: {exc}") from None
    print("onecert gateway stopped", file=sys.stderr)
    return 0
