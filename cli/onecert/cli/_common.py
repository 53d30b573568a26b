"""What several commands share: command groups, and the flags and checks of a TLS client."""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecert.cli import CommandError

if TYPE_CHECKING:
    from onecert.sdk._tls import ClientTLS
    from onecert.sdk.client import GatewayError

__all__ = [
    "add_citizen_call_flags",
    "add_command",
    "add_group",
    "add_tls_flags",
    "client_tls",
    "onecert_command",
    "read_assertion",
    "refused",
]


def add_group(
    sub: argparse._SubParsersAction[Any],
    name: str,
    documented: Callable[..., object],
    *,
    metavar: str,
) -> argparse._SubParsersAction[Any]:
    """Add the command ``onecert NAME`` and return where its sub-commands go.

    Its help and description are ``documented``'s docstring (the module's
    ``register``), read as :func:`add_command` reads a handler's. A sub-command
    is required; ``metavar`` names it in the usage line ("ACTION", "KIND").
    """
    help_text, description = _words(documented)
    parser = sub.add_parser(name, help=help_text, description=description)
    commands: argparse._SubParsersAction[Any] = parser.add_subparsers(
        dest=f"{name}_command", required=True, metavar=metavar
    )
    return commands


def add_command(
    sub: argparse._SubParsersAction[Any], name: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """Add the command ``name``, run by ``handler``, and return its parser for its flags.

    The command's words are the handler's docstring: its first paragraph is the
    help shown in the list of commands, the rest (if any) the description that
    ``--help`` prints (argparse reflows both).
    """
    help_text, description = _words(handler)
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description)
    parser.set_defaults(handler=handler)
    return parser


def _words(documented: Callable[..., object]) -> tuple[str, str | None]:
    """A docstring's first paragraph (the help) and the rest (the description, if any)."""
    help_text, _, description = inspect.cleandoc(documented.__doc__ or "").partition("\n\n")
    return help_text, description or None


def add_citizen_call_flags(parser: argparse.ArgumentParser, *, good_for: str, timeout: int) -> None:
    """Add what a call made with a citizen's assertion needs: ``--gateway``,
    ``--assertion``, the TLS flags, ``--json`` and ``--timeout`` (``timeout`` seconds
    by default); ``good_for`` says how often one assertion may be used ("one lookup").
    """
    parser.add_argument("--gateway", required=True, metavar="HOST:PORT", help="the gateway")
    parser.add_argument(
        "--assertion",
        required=True,
        metavar="FILE",
        help=f"file holding the identity assertion (a JWT; '-' for stdin); good for {good_for}",
    )
    add_tls_flags(parser, what="the gateway")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(timeout),
        metavar="SECONDS",
        help=f"give up after ({timeout})",
    )


def citizen_call_tls(args: argparse.Namespace) -> ClientTLS | None:
    """The TLS settings of a command with :func:`add_citizen_call_flags`, once its
    ``--timeout`` is checked (see :func:`client_tls`)."""
    if args.timeout <= 0:
        raise CommandError("--timeout must be more than zero")
    return client_tls(args)


def read_assertion(name: str) -> str:
    """The identity assertion in file ``name`` (``-``: stdin), stripped and not empty."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read the assertion {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"the assertion {name} is not text") from None
    token = text.strip()
    if not token:
        raise CommandError(f"the assertion {name} is empty")
    return token


def add_tls_flags(
    parser: argparse.ArgumentParser,
    *,
    what: str,
    client: str = "client",
    insecure_help: str = "plaintext (development only)",
    title: str | None = None,
) -> None:
    """Add ``--ca``, ``--cert``, ``--key``, ``--server-name`` and ``--insecure``.

    Args:
        parser: the command's parser; the flags go in a group of their own.
        what: the server, for help texts ("the gateway").
        client: who the client certificate is, for help texts ("admin client").
        insecure_help: the help of ``--insecure``.
        title: the group's title (default: transport to ``what``).
    """
    tls = parser.add_argument_group(
        title or f"transport to {what} (mutual TLS, or --insecure in development)"
    )
    tls.add_argument("--ca", type=Path, metavar="PEM", help=f"CA that signed {what}'s certificate")
    tls.add_argument(
        "--cert", type=Path, metavar="PEM", help=f"{client} certificate for mutual TLS"
    )
    tls.add_argument("--key", type=Path, metavar="PEM", help=f"{client} private key for mutual TLS")
    tls.add_argument("--server-name", metavar="NAME", help=f"name expected in {what}'s certificate")
    tls.add_argument("--insecure", action="store_true", help=insecure_help)


def client_tls(args: argparse.Namespace, *, client_cert: str | None = None) -> ClientTLS | None:
    """The TLS settings the flags of :func:`add_tls_flags` ask for; None for ``--insecure``.

    The files are read at once, so a missing or malformed one is a clear
    :class:`CommandError` before anything connects; plaintext is never implied.

    Args:
        args: the parsed flags.
        client_cert: when the server requires a client certificate, what it is
            ("an admin client certificate"): ``--cert`` and ``--key`` are then required.
    """
    from onecert.sdk._tls import ClientTLS, TLSConfigError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    if args.insecure:
        if args.ca or args.cert or args.key or args.server_name:
            raise CommandError(
                "--insecure cannot be combined with --ca, --cert, --key or --server-name"
            )
        return None
    if client_cert is not None and (args.ca is None or args.cert is None or args.key is None):
        raise CommandError(f"give --ca, --cert and --key ({client_cert}), or --insecure in dev")
    if args.ca is None:
        raise CommandError("give --ca (and --cert/--key for mutual TLS), or --insecure in dev")
    if (args.cert is None) != (args.key is None):
        raise CommandError("mutual TLS needs both --cert and --key")
    tls = ClientTLS(
        ca_file=args.ca, cert_file=args.cert, key_file=args.key, server_name=args.server_name
    )
    try:
        tls.credentials()  # read the files now, for a clear error before connecting
    except TLSConfigError as exc:
        raise CommandError(str(exc)) from None
    return tls


def onecert_command() -> str:
    """How to run ``onecert`` from here, as a user would type it.

    ``onecert`` when the one on PATH is this one; else the console script next
    to the running interpreter (``.venv/bin/onecert``, relative when it lies
    under the current directory); else ``PYTHON -m onecert.cli``.
    """
    script = Path(sys.executable).with_name("onecert")
    if not script.is_file():
        return f"{sys.executable} -m onecert.cli"
    on_path = shutil.which("onecert")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "onecert"
    relative = os.path.relpath(script)
    if relative.startswith(".."):
        return str(script)
    return relative if os.sep in relative else f".{os.sep}{relative}"


def refused(what: str, exc: GatewayError, tls: ClientTLS | None) -> CommandError:
    """The gateway's refusal of ``what`` as one line, with a hint where gRPC's words mislead.

    A server that requires a client certificate closes the connection of a
    client without one: gRPC says only "Socket closed". A plaintext client
    meeting a TLS server, or the reverse, fails just as vaguely.
    """
    message = f"{what} refused by the gateway: {exc}"
    if exc.code.name == "UNAVAILABLE":
        if tls is not None and tls.cert_file is None:
            message += " (if the gateway requires a client certificate, give --cert and --key)"
        elif tls is None and "Socket closed" in str(exc):
            message += " (if the gateway speaks TLS, give --ca, --cert and --key)"
    return CommandError(message)
