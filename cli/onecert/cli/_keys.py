"""``onecert keys``: keys and certificates for a development federation."""

from __future__ import annotations

import argparse
from typing import Any

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_group


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """keys and certificates for development"""
    actions = add_group(sub, "keys", register, metavar="ACTION")
    init = add_command(actions, "init", _init)
    init.add_argument("directory", metavar="DIR", help="where to write (created if missing)")
    init.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="also make a client certificate with CN=NAME (repeatable); "
        "gateway, portal and admin are always made",
    )
    init.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME",
        help="extra host name or IP address for the server certificate (repeatable)",
    )
    init.add_argument("--force", action="store_true", help="replace existing files")


def _init(args: argparse.Namespace) -> int:
    # Imported here so `onecert --help` stays fast.
    """create a dev keys directory (signing keys, JWKS, dev CA, TLS certificates)

    Create the keys a development federation needs: the identity service's signing key, the
    gateway's warrant key and JWKS, the idn and handle keys, and a dev CA with a server certificate
    and client certificates. Private keys are written with mode 0600. Not for production.
    """
    from onecert.sdk.devkeys import (  # noqa: PLC0415 - see above
        DEFAULT_CLIENTS,
        DevKeysExistError,
        init_dev_keys,
    )

    try:
        keys = init_dev_keys(
            args.directory,
            clients=(*DEFAULT_CLIENTS, *args.client),
            extra_sans=args.san,
            force=args.force,
        )
    except DevKeysExistError as exc:
        names = ", ".join(p.name for p in exc.existing[:3])
        if len(exc.existing) > 3:
            names += f" and {len(exc.existing) - 3} more"
        raise CommandError(
            f"{exc.directory} already holds {names}; pass --force to replace them"
        ) from exc
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    private = set(keys.private_files())
    print(f"wrote {len(keys.files())} files to {keys.directory}:")
    for path in keys.files():
        print(f"  {path.name:<28} {'private, 0600' if path in private else 'public'}")
    print("development keys only: the CA key is stored next to the certificates")
    return 0
