"""``onecert assertion``: identity assertions for development, demos and tests.

The real identity service is outside onecert. This command stands in for it:
it signs an assertion with the dev identity key so that ``onecert lookup``
and the demo can call the gateway as a citizen.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_group

# Above this the gateway refuses the assertion by default (DESIGN.md: at most 5 minutes).
_GATEWAY_MAX_LIFETIME = 300


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """mint citizens' identity assertions (development stand-in for the identity service)

    Identity assertions, as the identity service would sign them.
    """
    actions = add_group(sub, "assertion", register, metavar="ACTION")
    mint = add_command(actions, "mint", _mint)
    mint.add_argument(
        "--key",
        required=True,
        type=Path,
        help="the identity service's signing key, PEM (e.g. keys/identity.key.pem)",
    )
    mint.add_argument("--issuer", required=True, help="the identity service's id (iss)")
    mint.add_argument(
        "--audience", default="onecert-gateway", help="the gateway's id (aud; default %(default)s)"
    )
    mint.add_argument("--sub", required=True, help="the citizen's opaque id (sub)")
    who = mint.add_mutually_exclusive_group(required=True)
    who.add_argument("--idn", help="the idn: 64 hex characters")
    who.add_argument(
        "--document",
        metavar="NUMBER",
        help="an ID document number to hash into the idn with --idn-key ('-' reads stdin)",
    )
    mint.add_argument("--idn-key", type=Path, help="the idn HMAC key file, hex (e.g. keys/idn.key)")
    mint.add_argument(
        "--acr", default="substantial", help="the assurance level (default %(default)s)"
    )
    mint.add_argument(
        "--lifetime",
        type=int,
        default=120,
        help="seconds until the assertion expires (default %(default)s)",
    )
    mint.add_argument("--out", type=Path, help="write the assertion to this file (mode 0600)")


def _idn(args: argparse.Namespace) -> str:
    from onecert.sdk._idn import compute_idn, is_idn  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk._keys import KeyConfigError, load_hex_key  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    if args.idn is not None:
        idn = str(args.idn).strip().lower()
        if not is_idn(idn):
            raise CommandError("--idn must be 64 hex characters")
        return idn
    if args.idn_key is None:
        raise CommandError("--document needs --idn-key (the key shared with carriers)")
    document = sys.stdin.readline() if args.document == "-" else str(args.document)
    if not document.strip():
        raise CommandError("the document number is empty")
    try:
        key = load_hex_key(args.idn_key, what="idn key")
    except KeyConfigError as exc:
        raise CommandError(str(exc)) from None
    return compute_idn(key, document)


def _write_private(path: Path, text: str) -> None:
    # An assertion is a bearer credential: readable by its owner only.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(path, 0o600)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _mint(args: argparse.Namespace) -> int:
    # Imported when run, so --help stays fast and needs no crypto libraries.
    """sign an identity assertion for one citizen

    Sign an identity assertion (JWT, typ onecert-id+jwt) for one citizen and print it, or write it
    to --out. Pass the idn directly, or a document number and the idn key to compute it (use
    '--document -' to read the number from stdin, which keeps it out of the shell history).
    """
    from onecert.gateway._identity import AssertionIssuer  # noqa: PLC0415  # lazy on purpose
    from onecert.sdk._keys import KeyConfigError, SigningKey  # noqa: PLC0415  # lazy on purpose

    if args.lifetime <= 0:
        raise CommandError("--lifetime must be a positive number of seconds")
    if not args.sub:
        raise CommandError("--sub must not be empty")
    try:
        key = SigningKey.load(args.key)
    except KeyConfigError as exc:
        raise CommandError(str(exc)) from None
    idn = _idn(args)
    if args.lifetime > _GATEWAY_MAX_LIFETIME:
        print(
            f"onecert: warning: a lifetime over {_GATEWAY_MAX_LIFETIME} s is refused by "
            "a gateway with the default settings",
            file=sys.stderr,
        )
    token = AssertionIssuer(key=key, issuer=args.issuer).mint(
        sub=args.sub, idn=idn, audience=args.audience, acr=args.acr, lifetime=args.lifetime
    )
    if args.out is not None:
        _write_private(args.out, token + "\n")
    else:
        print(token)
    return 0
