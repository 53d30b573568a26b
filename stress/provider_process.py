"""A push provider of the crash scenarios, in a process of its own.

``python -m stress.provider_process --id pay --listen 127.0.0.1:PORT ...`` serves
the SDK's :class:`~onecert.sdk.Server` with :class:`FlakyAccounts`: it fails
and stalls at random, records every unbind it applies and every notice it acts
on in its :class:`~stress.ledger.Ledger` (a SQLite file that outlives
the process), keeps the SDK's unbind answers in a SQLite file of its own, and,
at the rate ``--crash-after-apply``, SIGKILLs itself right after applying an
unbind or acting on a notice: after the implementer's write, before the SDK
records the answer. The scenario restarts it on the same port; the SDK's claim
row tells the next delivery that an earlier call may have done it
(``resumed``).

It imports the SDK and the ledger only: it is started again and again. It
prints ``listening on port N`` on stdout once it serves (what
:class:`onecert.gateway.testing.ChildProcess` waits for), logs warnings and
errors on stderr, and stops gracefully on SIGTERM (the SDK drains unbinds and
notices still running).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from onecert.sdk import (
    Binding,
    Provider,
    RecycledNotice,
    Server,
    Unavailable,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk._logging import configure_logging
from onecert.sdk._server import ServerConfigError
from stress.ledger import Ledger

# The gateway's deadline for its calls to providers; slow answers come around it.
CALL_DEADLINE_S = 1.0


@dataclass(frozen=True)
class Rates:
    """How often a provider fails, stalls, and dies between applying and answering."""

    fail: float = 0.15
    slow: float = 0.1
    crash_after_apply: float = 0.05


class FlakyAccounts:
    """A provider's implementation that fails, stalls, dies and records what it does.

    The ledger is written synchronously right before the function returns
    DONE (or acts on a notice), with no await in between: a row means the
    function applied the unbind, so a second row for the same request id
    means it was applied twice.
    """

    def __init__(self, ledger: Ledger, rng: random.Random, rates: Rates) -> None:
        self.ledger = ledger
        self.rng = rng
        self.rates = rates

    def _latency(self) -> float:
        if self.rng.random() < self.rates.slow:
            # Around the gateway's deadline: some answers arrive just too late.
            return self.rng.uniform(0.85 * CALL_DEADLINE_S, 1.1 * CALL_DEADLINE_S)
        return self.rng.uniform(0.0, 0.1)

    async def list_bindings(self, msisdn: str) -> list[Binding]:
        return []

    async def unbind(self, request: UnbindRequest) -> UnbindResult:
        if self.rng.random() < self.rates.fail:
            raise Unavailable("flapping")
        await asyncio.sleep(self._latency())
        if request.account_ref.startswith("gone-"):
            return UnbindResult.rejected("no such account")
        if request.account_ref.startswith("review-") and self.ledger.first_sight(
            request.request_id
        ):
            return UnbindResult.pending("manual review")
        if request.resumed:
            # What the SDK asks of an implementer: an earlier call may have
            # applied it; answer DONE without applying it again.
            self.ledger.note_resumed(request.request_id)
            if self.ledger.applied(request.request_id):
                return UnbindResult.done()
        self.ledger.apply(
            request.request_id, request.account_ref, request.msisdn, request.reason.value
        )
        self._maybe_die()
        return UnbindResult.done()

    def _maybe_die(self) -> None:
        if self.rng.random() < self.rates.crash_after_apply:
            # Dead between the write and the SDK's record of the answer: the
            # SDK's claim stays without an answer.
            os.kill(os.getpid(), signal.SIGKILL)

    async def on_recycled(self, notice: RecycledNotice) -> int:
        if self.rng.random() < self.rates.fail:
            raise Unavailable("flapping")
        await asyncio.sleep(self._latency())
        if notice.resumed:
            # An earlier call may have acted on it: act only if it did not.
            self.ledger.note_resumed(notice.jti)
            if self.ledger.acted(notice.jti):
                return 1
        self.ledger.act_on_notice(notice.jti, notice.msisdn)
        self._maybe_die()
        return 1


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stress.provider_process")
    parser.add_argument("--id", required=True, help="the provider id")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--gateway-jwks", required=True, type=Path)
    parser.add_argument("--gateway-issuer", required=True)
    parser.add_argument("--ledger", required=True, type=Path)
    parser.add_argument("--answers", required=True, type=Path, help="the SDK's answer store")
    parser.add_argument("--seed", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--crash-after-apply", type=float, default=0.0)
    return parser.parse_args(argv)


async def _serve(provider: Provider, args: argparse.Namespace) -> None:
    # SIGTERM may come as soon as the port is announced: handled from the start.
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    server = Server(
        provider,
        gateway_keys=args.gateway_jwks,
        gateway_issuer=args.gateway_issuer,
        listen=args.listen,
        insecure=True,
        idempotency=args.answers,
        grace=0.0,
    )
    for _ in range(100):
        try:
            await server.start()
            break
        except ServerConfigError:  # the port is still held by the process before
            await asyncio.sleep(0.1)
    else:
        raise SystemExit(f"cannot listen on {args.listen}")
    print(f"listening on port {server.port}", flush=True)
    await stopping.wait()
    await server.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve one flaky provider until SIGTERM (or until it kills itself)."""
    args = _arguments(argv)
    configure_logging(level="warning")
    accounts = FlakyAccounts(
        Ledger(args.ledger),
        random.Random(args.seed),  # noqa: S311 - chaos to replay, not cryptography
        Rates(fail=args.fail_rate, slow=args.slow_rate, crash_after_apply=args.crash_after_apply),
    )
    provider = Provider(
        provider_id=args.id, name=args.id.title(), category="other", implementation=accounts
    )
    asyncio.run(_serve(provider, args))


if __name__ == "__main__":
    main()
