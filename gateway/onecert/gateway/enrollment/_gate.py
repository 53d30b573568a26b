"""The gate: a joining provider is activated only if the conformance kit passes against it.

The gate runs :func:`onecert.sdk.conformance.check_provider`, the very checks
``onecert conformance provider`` runs, against the provider's address, as
the gateway: over mutual TLS with the gateway's upstream client certificate,
expecting the provider's federation certificate
(:func:`~onecert.sdk._csr.provider_dns_name`), with warrants signed by the
gateway's warrant key. The run is bounded (``enrollment.gate_timeout_s``) and
so is the number of runs at once (``enrollment.max_concurrent_gates``): a run
that does not finish in time is a failed gate that says so.

A request that finds every slot taken waits for one, in arrival order, up to
``enrollment.max_waiting_gates`` waiting; past that it is refused
RESOURCE_EXHAUSTED with a ``retry-after-ms`` hint of the expected wait (from
how long recent runs took), so a burst of joins is served as fast as the
slots allow instead of sleeping on a fixed hint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import structlog

from onecert.gateway._config import EnrollmentConfig, UpstreamTLS
from onecert.gateway._refusal import Refusal
from onecert.sdk._csr import provider_dns_name
from onecert.sdk._keys import SigningKey
from onecert.sdk._tls import ClientTLS
from onecert.sdk.conformance import Report, check_provider

__all__ = ["Gate", "GateFailure", "GateOutcome"]

_log = structlog.get_logger("onecert.gateway.enrollment")

# How much a finished run moves the estimate of a run's length (for the hint).
_RUN_WEIGHT = 0.2
# The hint's floor, in seconds: asking again sooner only costs the gateway a refusal.
_MIN_HINT_S = 0.5


@dataclass(frozen=True)
class GateFailure:
    """One failing check: its rule of docs/contract.md, its name and what went wrong."""

    rule: str
    check: str
    message: str


@dataclass(frozen=True)
class GateOutcome:
    """What one gate run found."""

    passed: bool
    ran_at: datetime
    checks_passed: int = 0
    checks_failed: int = 0
    checks_skipped: int = 0
    failures: tuple[GateFailure, ...] = ()
    summary: str = ""

    @classmethod
    def of_report(cls, report: Report, ran_at: datetime) -> GateOutcome:
        """The outcome of a conformance report."""
        counts = report.counts()
        return cls(
            passed=report.ok,
            ran_at=ran_at,
            checks_passed=counts["passed"],
            checks_failed=counts["failed"],
            checks_skipped=counts["skipped"],
            failures=tuple(GateFailure(r.rule, r.name, r.detail) for r in report.failures),
            summary=report.summary(),
        )

    @classmethod
    def not_run(cls, ran_at: datetime, why: str) -> GateOutcome:
        """A failed gate that could not run its checks (``why`` says so)."""
        return cls(passed=False, ran_at=ran_at, summary=why)


class Gate:
    """Runs the conformance kit against joining providers.

    Args:
        config: ``[enrollment]``: how long one run may take in all
            (``gate_timeout_s``) and each of its calls (``gate_call_timeout_s``),
            runs at once (``max_concurrent_gates``), requests that wait for a
            slot (``max_waiting_gates``; one more is refused RESOURCE_EXHAUSTED,
            0: refused as soon as every slot is taken).
        warrant_key: the gateway's warrant signing key (providers trust its JWKS).
        issuer: the gateway id warrants name.
        upstream_tls: the gateway's client certificate and the CA it trusts
            for providers; None: plaintext (development mode only).
        clock: the current time (aware).
    """

    def __init__(
        self,
        config: EnrollmentConfig,
        *,
        warrant_key: SigningKey,
        issuer: str,
        upstream_tls: UpstreamTLS | None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._config = config
        self._warrant_key = warrant_key
        self._issuer = issuer
        self._upstream_tls = upstream_tls
        self._slots = asyncio.Semaphore(config.max_concurrent_gates)
        self._waiting = 0
        # The length of a run, estimated from the last ones (a moving average).
        self._run_s = config.gate_call_timeout_s
        self._clock = clock or (lambda: datetime.now(UTC))

    def _tls(self, provider_id: str) -> ClientTLS | None:
        upstream = self._upstream_tls
        if upstream is None:
            return None
        return ClientTLS(
            ca_file=upstream.ca,
            cert_file=upstream.cert,
            key_file=upstream.key,
            server_name=provider_dns_name(provider_id),
        )

    async def run(self, provider_id: str, address: str) -> GateOutcome:
        """Check the provider at ``address``; a failed outcome says why (never raises for it).

        Waits for a slot when ``max_concurrent_gates`` runs are going on.

        Raises:
            Refusal: RESOURCE_EXHAUSTED when ``max_waiting_gates`` requests already wait.
        """
        if self._slots.locked() and self._waiting >= self._config.max_waiting_gates:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "the gateway is running as many conformance gates as it may; ask again shortly",
                reason="gate_busy",
                trailing_metadata=(("retry-after-ms", str(int(self._hint_s() * 1000))),),
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            outcome = await self._checked(provider_id, address)
        finally:
            self._slots.release()
        _log.info(
            "gate.ran",
            provider=provider_id,
            passed=outcome.passed,
            failed=outcome.checks_failed,
            skipped=outcome.checks_skipped,
        )
        return outcome

    def _hint_s(self) -> float:
        """How long until a slot is likely free for one more request, in seconds."""
        slots = self._config.max_concurrent_gates
        rounds = (self._waiting + slots) / slots
        return min(max(_MIN_HINT_S, rounds * self._run_s), self._config.gate_timeout_s / 4)

    async def _checked(self, provider_id: str, address: str) -> GateOutcome:
        """One conformance run, bounded by the gate's timeout."""
        started = self._clock()
        clock = time.monotonic()
        timeout = self._config.gate_timeout_s
        try:
            async with asyncio.timeout(timeout):
                report = await check_provider(
                    target=address,
                    warrant_key=self._warrant_key,
                    issuer=self._issuer,
                    provider_id=provider_id,
                    tls=self._tls(provider_id),
                    call_timeout=self._config.gate_call_timeout_s,
                )
        except TimeoutError:
            outcome = GateOutcome.not_run(
                started,
                f"the conformance run against {address} did not finish within {timeout:g} s",
            )
        except ValueError as exc:
            outcome = GateOutcome.not_run(started, f"the conformance run could not start: {exc}")
        else:
            outcome = GateOutcome.of_report(report, started)
        elapsed = time.monotonic() - clock
        self._run_s += _RUN_WEIGHT * (elapsed - self._run_s)
        return outcome
