"""Delivery of unbind tickets to providers: claimed from the store, retried until final.

Each worker loops: claim due tickets (a lease in the store, so workers in
this and other gateway processes never attempt the same ticket at once),
call ``BindingProvider.Unbind(request_id = ticket id)`` for each with a fresh
warrant and a deadline, and record how the attempt ended:

==========================================  ======================================
answer                                      ticket
==========================================  ======================================
DONE, REJECTED                              final, with the provider's reason
PENDING                                     asked again after ``pending_recheck_s``
UNAVAILABLE, DEADLINE_EXCEEDED,             retried with exponential backoff and
RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN,      full jitter, until the ticket expires
ABORTED, CANCELLED, no connection           (then FAILED with the last error)
any other status (INVALID_ARGUMENT,         FAILED at once ("dead letter"), with
UNAUTHENTICATED, PERMISSION_DENIED, ...)    the provider's explanation
==========================================  ======================================

A gateway that dies mid-attempt leaves a lease that runs out; the ticket is
then claimed again and delivered with the same request id, which the
provider answers from its idempotency record instead of applying twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import structlog

from onecert.gateway._audit import Auditor
from onecert.gateway._breaker import backoff
from onecert.gateway._channels import ChannelPool
from onecert.gateway._config import DeliveryConfig, ProviderConfig
from onecert.gateway._directory import status_of
from onecert.gateway._handles import HandleError, HandleSealer
from onecert.gateway._observers import NO_OBSERVER, Observer
from onecert.gateway._unbind import open_payload
from onecert.gateway.store import AttemptOutcome, AuditDraft, Store, StoredTicketState, Ticket
from onecert.gateway.store._registry_types import RegistryStatus
from onecert.sdk._msisdn import mask_msisdn, mask_numbers_in_text
from onecert.sdk._warrant import WarrantIssuer
from onecert.v1 import common_pb2, provider_pb2, provider_pb2_grpc

__all__ = ["RETRYABLE", "Attempt", "DeliveryWorkers", "backoff", "classify_status"]

_log = structlog.get_logger("onecert.gateway.delivery")

# No answer now, maybe later: the provider is down, slow, overloaded, or
# failed in a way it may not fail again. The call was cut short on our side
# (CANCELLED) only when the gateway is stopping.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
_MAX_REASON = 500
# The audit log takes detail texts of at most 1024 characters.
_AUDIT_TEXT = 1000


def classify_status(code: grpc.StatusCode) -> AttemptOutcome:
    """RETRY for statuses worth another attempt, FATAL for the rest."""
    return AttemptOutcome.RETRY if code in RETRYABLE else AttemptOutcome.FATAL


def _sanitise(text: str) -> str:
    # Providers' explanations end up in receipts and the audit log: one line,
    # nothing that reads like a phone number, bounded.
    stripped = text.strip()
    line = stripped.splitlines()[0] if stripped else ""
    line = mask_numbers_in_text(line)
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


@dataclass(frozen=True)
class Attempt:
    """How one delivery attempt ended, before it is recorded."""

    outcome: AttemptOutcome
    provider_reason: str = ""
    error: str = ""
    retry_in: float | None = None


class DeliveryWorkers:
    """The unbind delivery workers of one gateway process (a background worker).

    Args:
        store: where tickets are claimed and their attempts recorded.
        providers: the active providers by id (the gateway's live
            :class:`~onecert.gateway._directory.ProviderDirectory`, read at
            each attempt).
        channels: the gateway's channel pool.
        warrants: signs the warrant of every call.
        sealer: opens the tickets' sealed payloads.
        auditor: records final states in the audit log (None: no audit).
        config: how many workers, leases, backoff, deadlines.
        name: this process's name in leases (host and pid by default).
        observer: told how every attempt ended (metrics).
    """

    def __init__(
        self,
        *,
        store: Store,
        providers: Mapping[str, ProviderConfig],
        channels: ChannelPool,
        warrants: WarrantIssuer,
        sealer: HandleSealer,
        auditor: Auditor | None,
        config: DeliveryConfig,
        name: str | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._store = store
        self._observer = observer
        self._providers = providers
        self._channels = channels
        self._warrants = warrants
        self._sealer = sealer
        self._auditor = auditor
        self._config = config
        # Unique per start, so a restarted process never mistakes an old
        # lease (from before a crash) for its own.
        base = name or f"{socket.gethostname()[:60]}:{os.getpid()}"
        self._name = f"{base}:{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def worker_ids(self) -> tuple[str, ...]:
        """The lease owner names of this process's workers."""
        return tuple(f"{self._name}/{i}" for i in range(self._config.workers))

    def wake(self) -> None:
        """Look for due tickets now (a ticket was just created)."""
        self._wake.set()

    async def start(self) -> None:
        """Start the workers (none when ``config.workers`` is 0)."""
        if self._tasks:
            raise RuntimeError("the delivery workers are already started")
        self._stopping.clear()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(worker_id), name=f"onecert-delivery-{worker_id}")
            for worker_id in self.worker_ids
        ]
        _log.info("delivery.started", workers=len(self._tasks))

    async def stop(self) -> None:
        """Stop claiming; let attempts in flight finish (each within its deadline)."""
        self._stopping.set()
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        # An attempt ends within its deadline; past that (a hung store), cut
        # it: its lease runs out and another worker takes the ticket over.
        _, pending = await asyncio.wait(tasks, timeout=self._config.unbind_deadline_s + 5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _log.info("delivery.stopped", cut_short=len(pending))

    async def run_once(self, worker_id: str | None = None) -> int:
        """Claim due tickets once and attempt each; returns how many were attempted."""
        worker_id = worker_id or f"{self._name}/once"
        expired: list[Ticket] = []
        tickets = await self._store.tickets.claim_due(
            worker_id=worker_id,
            limit=self._config.batch,
            lease_s=self._config.lease_s,
            expired=expired,
            audit_expired=self._closed_row if self._auditor is not None else None,
        )
        for ticket in expired:
            _log.info("ticket.expired", ticket_id=ticket.ticket_id, provider=ticket.provider_id)
        if tickets:
            # All at once: a slow provider does not hold back the others'
            # tickets, and nothing claimed waits unattempted while its lease runs.
            await asyncio.gather(*(self._deliver(t, worker_id) for t in tickets))
        return len(tickets)

    async def _run(self, worker_id: str) -> None:
        poll = self._config.poll_interval_s
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                attempted = await self.run_once(worker_id)
            except Exception:  # noqa: BLE001 - a worker outlives any failure of one claim
                _log.exception("delivery.claim_failed", worker=worker_id)
                attempted = 0
            if attempted:
                continue
            # Nothing due: sleep until woken (a new ticket here), the poll
            # interval (tickets created elsewhere, retries falling due), or stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll * (0.75 + random.random() / 2)):  # noqa: S311 - jitter
                    await self._wake.wait()

    async def _deliver(self, ticket: Ticket, worker_id: str) -> None:
        structlog.contextvars.bind_contextvars(ticket_id=ticket.ticket_id)
        try:
            attempt = await self._attempt(ticket)
        except Exception as exc:  # noqa: BLE001 - any failure of an attempt is retried later
            # A bug or an unexpected failure on our side: try again later.
            _log.exception("delivery.attempt_crashed", provider=ticket.provider_id)
            attempt = Attempt(
                AttemptOutcome.RETRY,
                error=f"gateway error: {type(exc).__name__}",
                retry_in=self._backoff(ticket.attempts),
            )
        self._observer.unbind_attempted(attempt.outcome)
        now = datetime.now(UTC)
        next_at = None if attempt.retry_in is None else now + timedelta(seconds=attempt.retry_in)
        try:
            after = await self._store.tickets.finish_attempt(
                ticket.ticket_id,
                worker_id=worker_id,
                outcome=attempt.outcome,
                provider_reason=attempt.provider_reason,
                error=attempt.error,
                next_attempt_at=next_at,
                now=now,
                audit=self._closed_row if self._auditor is not None else None,
            )
        except Exception:  # noqa: BLE001 - the lease runs out; the attempt is redone
            # The lease runs out and the ticket is attempted again; the
            # provider answers that attempt from its idempotency record.
            _log.exception("delivery.record_failed", provider=ticket.provider_id)
            return
        _log.info(
            "delivery.attempted",
            provider=ticket.provider_id,
            attempt=ticket.attempts,
            outcome=attempt.outcome.value,
            state=after.state.value,
            error=attempt.error or None,
        )

    async def _attempt(self, ticket: Ticket) -> Attempt:
        provider = self._providers.get(ticket.provider_id)
        if provider is None or provider.address is None:
            return _not_callable(
                self._providers, ticket.provider_id, retry_in=self._config.pending_recheck_s
            )
        try:
            claims = open_payload(self._sealer, ticket)
        except HandleError as exc:
            # Sealed with a key this gateway no longer holds, or altered in
            # the database: nothing to deliver, ever.
            return Attempt(
                AttemptOutcome.FATAL, error=f"the ticket's payload cannot be opened ({exc.reason})"
            )
        structlog.contextvars.bind_contextvars(msisdn=mask_msisdn(claims.msisdn))
        request = provider_pb2.UnbindRequest(
            request_id=ticket.ticket_id,
            msisdn=claims.msisdn,
            account_ref=claims.account_ref,
            reason=common_pb2.UnbindReason.ValueType(ticket.reason),
        )
        warrant = self._warrants.issue(
            audience=provider.id, target=claims.msisdn, purpose="unbind", query_id=ticket.ticket_id
        )
        stub = provider_pb2_grpc.BindingProviderStub(
            self._channels.get(
                provider.address, plaintext=provider.plaintext, server_name=provider.server_name
            )
        )
        timeout = self._config.unbind_deadline_s
        try:
            response = await stub.Unbind(
                request, timeout=timeout, metadata=(("authorization", f"Bearer {warrant}"),)
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                error = f"DEADLINE_EXCEEDED: no answer within {timeout:g}s"
            else:
                details = _sanitise(exc.details() or "")
                error = f"{code.name}: {details}" if details else code.name
            outcome = classify_status(code)
            return Attempt(
                outcome,
                error=error,
                retry_in=self._backoff(ticket.attempts)
                if outcome is AttemptOutcome.RETRY
                else None,
            )
        reason = _sanitise(response.reason)
        if response.outcome == common_pb2.UNBIND_OUTCOME_DONE:
            return Attempt(AttemptOutcome.DONE, provider_reason=reason)
        if response.outcome == common_pb2.UNBIND_OUTCOME_REJECTED:
            return Attempt(AttemptOutcome.REJECTED, provider_reason=reason)
        if response.outcome == common_pb2.UNBIND_OUTCOME_PENDING:
            return Attempt(
                AttemptOutcome.PENDING,
                provider_reason=reason,
                retry_in=self._config.pending_recheck_s,
            )
        return Attempt(
            AttemptOutcome.RETRY,
            error="the provider answered without an outcome",
            retry_in=self._backoff(ticket.attempts),
        )

    def _backoff(self, attempts: int) -> float:
        return backoff(
            attempts,
            initial=self._config.backoff_initial_s,
            maximum=self._config.backoff_max_s,
        )

    @staticmethod
    def _closed_row(ticket: Ticket) -> AuditDraft:
        # Appended by the store in the transaction that makes the ticket
        # final: a crash cannot keep the final state and lose the row.
        detail: dict[str, str | int | bool] = {
            "provider": ticket.provider_id,
            "state": ticket.state.value,
            "attempts": ticket.attempts,
        }
        if ticket.provider_reason:
            detail["provider_reason"] = mask_numbers_in_text(ticket.provider_reason)[:_AUDIT_TEXT]
        if ticket.last_error and ticket.state is StoredTicketState.FAILED:
            detail["error"] = mask_numbers_in_text(ticket.last_error)[:_AUDIT_TEXT]
        return AuditDraft(
            kind="unbind.closed",
            actor=f"provider:{ticket.provider_id}",
            subject=ticket.ticket_id,
            detail=detail,
        )


def _not_callable(
    providers: Mapping[str, ProviderConfig], provider_id: str, *, retry_in: float
) -> Attempt:
    """The attempt for a ticket whose provider may not be called now.

    A suspended (or not yet active) provider's tickets wait, uncalled, for
    it to be resumed or for the ticket to expire; a removed or unknown
    provider will never answer, and one without an address cannot be called.
    """
    status = status_of(providers, provider_id)
    if status in (RegistryStatus.SUSPENDED, RegistryStatus.PENDING):
        return Attempt(
            AttemptOutcome.RETRY,
            error=f"provider {provider_id!r} is {status.value}: not called until it is active",
            retry_in=retry_in,
        )
    if status is RegistryStatus.ACTIVE:
        return Attempt(
            AttemptOutcome.FATAL, error=f"provider {provider_id!r} has no address to call"
        )
    return Attempt(
        AttemptOutcome.FATAL,
        error=f"provider {provider_id!r} is no longer in the registry",
    )
