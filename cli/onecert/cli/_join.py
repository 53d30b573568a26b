"""``onecert provider join | status | activate``: a provider joins by invitation.

``join`` makes the key pair here (the private key never leaves this machine),
sends a CSR with the regulator's token to the gateway's join listener and
writes the key, the certificate and what the gateway said to ``--dir``.
``activate`` asks the gateway to run the conformance gate now (a polling
provider is activated by it at once); ``status`` shows where the provider
stands, the last gate's failures and the certificate's expiry. Both talk to
the gateway's mutual TLS listener with the certificate in ``--dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from onecert.cli import CommandError
from onecert.cli._common import add_command

if TYPE_CHECKING:
    from datetime import datetime

    from onecert.sdk.client import (
        GateResult,
        ProviderGatewayClient,
        ProviderRecord,
        ProviderStatus,
    )

__all__ = ["add_enrollment_commands"]

_T = TypeVar("_T")


def add_enrollment_commands(group: argparse._SubParsersAction[Any]) -> None:
    """Add ``join``, ``status`` and ``activate`` to the ``onecert provider`` group."""
    join = add_command(group, "join", _join)
    join.add_argument("--gateway", required=True, metavar="HOST:PORT", help="the join listener")
    join.add_argument("--ca", type=Path, metavar="PEM", help="CA of the gateway's certificate")
    join.add_argument("--id", required=True, metavar="ID", help="the provider id invited")
    join.add_argument("--token", required=True, help="the one-time enrollment token")
    join.add_argument(
        "--address", metavar="HOST:PORT", help="where you serve BindingProvider (lookups, notices)"
    )
    join.add_argument(
        "--poll",
        action="store_true",
        help="fetch notices with PollEvents (without --address: no server at all)",
    )
    join.add_argument("--dir", type=Path, required=True, metavar="DIR", help="credentials go here")
    join.add_argument("--insecure", action="store_true", help="a development gateway without TLS")
    for name, helptext, handler in (
        ("status", "where this provider stands: status, last gate, certificate", _status),
        ("activate", "ask the gateway to run the conformance gate now", _activate),
    ):
        parser = group.add_parser(
            name, help=helptext, description=helptext[:1].upper() + helptext[1:] + "."
        )
        parser.add_argument(
            "--dir", type=Path, required=True, metavar="DIR", help="what join wrote"
        )
        parser.add_argument(
            "--gateway", metavar="HOST:PORT", help="the gateway (default: as told at join)"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON document")
        parser.set_defaults(handler=handler)


def _join(args: argparse.Namespace) -> int:
    """join the federation with an invitation token (key pair made here)

    Make a key pair here, send a certificate signing request with the regulator's one-time token to
    the gateway's join listener, and write the key (mode 0600), the certificate and the gateway's
    answers to --dir. The private key never leaves this machine.
    """
    from onecert.sdk import join  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk.client import GatewayError  # noqa: PLC0415 - lazy CLI import

    if args.address is None and not args.poll:
        raise CommandError("give --address HOST:PORT (where you serve), or --poll, or both")
    if (args.ca is None) != args.insecure:
        raise CommandError("give --ca (the CA of the gateway's certificate), or --insecure in dev")
    try:
        joined = asyncio.run(
            join(
                gateway=args.gateway,
                gateway_ca=args.ca,
                provider_id=args.id,
                token=args.token,
                address=args.address,
                poll=args.poll,
                directory=args.dir,
                insecure=args.insecure,
            )
        )
    except GatewayError as exc:
        raise CommandError(f"the join was refused: {exc}") from None
    except OSError as exc:
        raise CommandError(f"cannot write to {args.dir}: {exc.strerror or exc}") from None
    credentials = joined.credentials
    print(f"joined as {args.id!r}: {_status_word(joined.status)}")
    print(f"  certificate  {credentials.cert_file} (until {_when(joined.not_after)})")
    print(f"  private key  {credentials.key_file} (mode 0600; never sent)")
    print(f"  renew after  {_when(joined.renew_after)}")
    print(f"next: {joined.next_step}")
    then = f"onecert provider activate --dir {args.dir}; onecert provider status --dir {args.dir}"
    print(f"      ({then})")
    return 0


def _client(args: argparse.Namespace) -> ProviderGatewayClient:
    from onecert.sdk import ProviderCredentials  # noqa: PLC0415 - lazy CLI import
    from onecert.sdk.client import ProviderGatewayClient  # noqa: PLC0415 - lazy CLI import

    credentials = ProviderCredentials.at(args.dir)
    try:
        state = credentials.state()
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"{args.dir} holds no joined provider ({exc}): run join first") from None
    target = args.gateway or state.gateway_address
    if state.plaintext:
        return ProviderGatewayClient(target, insecure=True, dev_provider_id=state.provider_id)
    return ProviderGatewayClient(target, tls=credentials.gateway_tls())


def _ask(
    args: argparse.Namespace, what: str, call: Callable[[ProviderGatewayClient], Awaitable[_T]]
) -> _T:
    """``call`` with the provider's client of the gateway; a refusal is one line."""
    from onecert.sdk.client import GatewayError  # noqa: PLC0415 - lazy CLI import

    async def ask() -> _T:
        async with _client(args) as client:
            return await call(client)

    try:
        return asyncio.run(ask())
    except GatewayError as exc:
        raise CommandError(f"{what} refused by the gateway: {exc}") from None


def _status(args: argparse.Namespace) -> int:
    record = _ask(args, "status", lambda client: client.enrollment_status())
    if args.json:
        print(json.dumps(_record_dict(record), indent=2, sort_keys=True))
        return 0
    print(f"status       {_status_word(record.status)}")
    where = f" at {record.address}" if record.address else ""
    print(f"delivery     {record.delivery}{where}")
    serial = record.certificate_serial or "-"
    print(f"certificate  serial {serial}, until {_when(record.certificate_not_after)}")
    _print_gate(record.last_gate)
    return 0


def _activate(args: argparse.Namespace) -> int:
    result = _ask(args, "activation", lambda client: client.request_activation())
    if args.json:
        gate = None if result.gate is None else _gate_dict(result.gate)
        status = _status_word(result.status)
        print(json.dumps({"status": status, "gate": gate, "summary": result.summary}, indent=2))
    else:
        print(f"status       {_status_word(result.status)}")
        _print_gate(result.gate)
        if result.summary:
            print(f"             {result.summary}")
    return 0 if result.gate is None or result.gate.passed else 1


def _print_gate(gate: GateResult | None) -> None:
    if gate is None:
        print("gate         not run yet (onecert provider activate)")
        return
    verdict = "passed" if gate.passed else "FAILED"
    print(f"gate         {verdict} at {_when(gate.at)}")
    for failure in gate.failures:
        # One line per failing check, its rule first ("L-2 list_bindings...: ...").
        print(f"  FAIL {failure}")


def _status_word(status: ProviderStatus | None) -> str:
    return "unknown" if status is None else status.value


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def _gate_dict(gate: GateResult) -> dict[str, Any]:
    return {
        "passed": gate.passed,
        "at": None if gate.at is None else gate.at.isoformat(),
        "failures": list(gate.failures),
    }


def _record_dict(record: ProviderRecord) -> dict[str, Any]:
    return {
        "status": _status_word(record.status),
        "delivery": record.delivery,
        "address": record.address,
        "certificate_serial": record.certificate_serial,
        "certificate_not_after": None
        if record.certificate_not_after is None
        else record.certificate_not_after.isoformat(),
        "last_gate": None if record.last_gate is None else _gate_dict(record.last_gate),
    }
