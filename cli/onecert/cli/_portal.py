"""``onecert portal serve``: the citizen's web portal (needs ``onecert[portal]``)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_group


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """serve the citizen's web portal over the gateway

    The reference citizen's portal: sign in, look up, unbind, receipts.
    """
    actions = add_group(sub, "portal", register, metavar="ACTION")
    serve = add_command(actions, "serve", _serve)
    serve.add_argument("--config", required=True, type=Path, help="the portal's TOML file")


def _serve(args: argparse.Namespace) -> int:
    """serve the portal (prints its address once it listens)

    Serve the portal as portal.toml says (see docs/portal.md). Production mode, the default, needs
    OpenID Connect and TLS and refuses the development identity step.
    """
    try:
        from onecert.portal import ConfigError, load_config, serve  # noqa: PLC0415 - lazy: the portal's dependencies are an extra
    except ModuleNotFoundError as exc:
        raise CommandError(
            f"the portal needs the portal extra: pip install 'onecert[portal]' ({exc.name} missing)"
        ) from None
    from onecert.sdk._logging import configure_logging  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CommandError(f"{args.config}: {exc}") from None
    configure_logging(json=config.log_json)
    import httpx2  # noqa: PLC0415 - with the portal's other dependencies

    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError, httpx2.HTTPError) as exc:
        # Keys, certificates or the identity service's metadata could not be had.
        raise CommandError(f"the portal cannot start: {exc}") from None
    return 0
