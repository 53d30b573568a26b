"""The ``onecert`` command: one CLI for every role.

Each role's subcommands live in their own module with a ``register(sub)``
function; heavy imports happen inside the handlers, so a provider that only
installed the SDK can run ``onecert keys`` and ``onecert conformance``. A
command's help and description are its handler's docstring
(``_common.add_command``): the words a user reads sit on the code they describe.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["CommandError", "main"]

# Subcommand modules, in the order they appear in --help.
_COMMANDS = (
    "onecert.cli._keys",
    "onecert.cli._identity",
    "onecert.cli._conformance",
    "onecert.cli._gateway",
    "onecert.cli._lookup",
    "onecert.cli._unbind",
    "onecert.cli._demo",
    "onecert.cli._portal",
    "onecert.cli._db",
    "onecert.cli._routing",
    "onecert.cli._report",
    "onecert.cli._provider",
    "onecert.cli._adapter",
)


class CommandError(Exception):
    """A user-facing failure: printed as ``onecert: <message>``, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onecert",
        description="onecert: federated one-certificate lookup of numbers and bound accounts.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet in this checkout
                continue
            raise
        module.register(sub)
    return parser


def _quiet_grpc() -> None:
    """Keep gRPC's own C-core log lines ("E1205 ... handshake failed") off the terminal.

    The commands say what went wrong in their own words; whoever debugs the
    transport sets GRPC_VERBOSITY (or GRPC_TRACE) and sees them again. Must run
    before grpc is first imported: the core reads the variable once. The rule
    is ``onecert.sdk._quiet``'s (which adapter programs get by importing the
    SDK); it is not imported from there, because importing the SDK would cost
    every command, ``--help`` included, a third of a second.
    """
    if "GRPC_VERBOSITY" not in os.environ and "GRPC_TRACE" not in os.environ:
        os.environ["GRPC_VERBOSITY"] = "NONE"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status.

    Ctrl-C at any moment, also while the commands' modules are still being
    imported, ends with status 130 and no traceback.
    """
    try:
        _quiet_grpc()
        if "ONECERT_PARENT_PID" in os.environ:
            # Started by a demo federation or a harness: end with it.
            from onecert.sdk._parent import follow_parent  # noqa: PLC0415 - only then

            follow_parent()
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            status: int = args.handler(args)
        except CommandError as exc:
            print(f"onecert: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        return 130
    return status
