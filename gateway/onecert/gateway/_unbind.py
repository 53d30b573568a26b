"""``Gateway.Unbind`` and ``Gateway.GetUnbind``: a durable ticket, then its receipt.

Unbind checks the caller's assertion, opens the handle for the caller's
``sub``, commits a ticket and answers at once; the delivery workers
(:mod:`onecert.gateway._delivery`) take it from there. The ticket is keyed
on the binding the handle names, not on the handle's text: handles carry a
random nonce, so two lookups give two handles for the same account, and
unbinding it twice must give one ticket. The database never holds the
number or the account reference in clear: the ticket's payload is sealed
with the handle key, and the number appears only as a keyed digest.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import grpc
import structlog

from onecert.gateway._attribution import Attribution
from onecert.gateway._audit import Auditor
from onecert.gateway._config import ProviderConfig
from onecert.gateway._handles import MAX_HANDLE_CHARS, HandleClaims, HandleError, HandleSealer
from onecert.gateway._identity import AssertionVerifier, Citizen, IdentityError, bearer_token
from onecert.gateway.store import AuditDraft, ConflictError, Store, Ticket, TicketState
from onecert.sdk._msisdn import mask_msisdn
from onecert.v1 import common_pb2, gateway_pb2

__all__ = [
    "TICKET_ID",
    "UnbindService",
    "open_payload",
    "payload_sub",
    "reason_for",
    "ticket_pb",
]

_log = structlog.get_logger("onecert.gateway.unbind")

# Ticket ids are "ut_" and 24 URL-safe characters (the store's new_id); the
# pattern is a little looser so that a longer id format stays readable.
TICKET_ID = re.compile(r"ut_[A-Za-z0-9_-]{8,125}")

# A payload outlives its ticket by a day, so a late last attempt still opens it.
_PAYLOAD_MARGIN_S = 86_400.0

_STATES: Mapping[TicketState, gateway_pb2.TicketState.ValueType] = {
    TicketState.QUEUED: gateway_pb2.TICKET_STATE_QUEUED,
    TicketState.PENDING: gateway_pb2.TICKET_STATE_PENDING,
    TicketState.DONE: gateway_pb2.TICKET_STATE_DONE,
    TicketState.REJECTED: gateway_pb2.TICKET_STATE_REJECTED,
    TicketState.FAILED: gateway_pb2.TICKET_STATE_FAILED,
}
_OUTCOMES: Mapping[str, common_pb2.UnbindOutcome.ValueType] = {
    "DONE": common_pb2.UNBIND_OUTCOME_DONE,
    "PENDING": common_pb2.UNBIND_OUTCOME_PENDING,
    "REJECTED": common_pb2.UNBIND_OUTCOME_REJECTED,
}

UnbindContext = grpc.aio.ServicerContext[Any, Any]


def reason_for(attribution: Attribution) -> common_pb2.UnbindReason.ValueType:
    """The unbind reason a handle's attribution calls for.

    The citizen's own account (MINE, LEFT_BEHIND) is an owner request; a
    previous holder's account on the citizen's number is a release.
    """
    if attribution is Attribution.PREVIOUS_HOLDER:
        return common_pb2.UNBIND_REASON_PREVIOUS_HOLDER_RELEASE
    return common_pb2.UNBIND_REASON_OWNER_REQUEST


def payload_sub(ticket_key: str) -> str:
    """The associated data a ticket's payload is sealed under.

    Bound to the ticket's idempotency key, so a payload copied onto another
    ticket row does not open.
    """
    return "ticket:" + ticket_key


def open_payload(sealer: HandleSealer, ticket: Ticket) -> HandleClaims:
    """The number and account a ticket is about (raises :class:`HandleError`)."""
    return sealer.open(ticket.payload, sub=payload_sub(ticket.handle_digest), allow_expired=True)


def _stamp(target: Any, when: datetime | None) -> None:
    if when is not None:
        target.FromDatetime(when)


def ticket_pb(ticket: Ticket, *, provider_name: str) -> gateway_pb2.UnbindTicket:
    """The receipt of ``ticket`` as the contract spells it."""
    out = gateway_pb2.UnbindTicket(
        ticket_id=ticket.ticket_id,
        provider_id=ticket.provider_id,
        provider_name=provider_name,
        reason=common_pb2.UnbindReason.ValueType(ticket.reason),
        state=_STATES[ticket.state],
        attempts=ticket.attempts,
        provider_outcome=_OUTCOMES.get(
            ticket.provider_outcome or "", common_pb2.UNBIND_OUTCOME_UNSPECIFIED
        ),
        provider_reason=ticket.provider_reason or "",
        last_error=ticket.last_error or "",
    )
    _stamp(out.created_at, ticket.created_at)
    _stamp(out.answered_at, ticket.answered_at)
    _stamp(out.expires_at, ticket.expires_at)
    if not ticket.state.terminal:
        _stamp(out.next_attempt_at, ticket.next_attempt_at)
    return out


class UnbindService:
    """``Gateway.Unbind`` and ``Gateway.GetUnbind``; the servicer delegates to it.

    Args:
        verifier: checks the citizens' identity assertions.
        sealer: opens handles and seals ticket payloads.
        store: where tickets are committed.
        auditor: hashes identifiers and writes the audit rows.
        providers: the configured providers by id.
        ticket_ttl: seconds the gateway keeps trying to deliver a ticket.
        wake: called after a ticket is created, to wake the delivery workers.
        clock: the wall clock (seconds since the epoch).
    """

    def __init__(
        self,
        *,
        verifier: AssertionVerifier,
        sealer: HandleSealer,
        store: Store,
        auditor: Auditor,
        providers: Mapping[str, ProviderConfig],
        ticket_ttl: float,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._sealer = sealer
        self._store = store
        self._auditor = auditor
        self._providers = dict(providers)
        self._ticket_ttl = ticket_ttl
        self._wake = wake
        self._clock = clock

    def ticket_key(self, claims: HandleClaims, reason: int) -> str:
        """The idempotency key of the ticket for the binding ``claims`` name."""
        parts = (claims.sub, claims.provider_id, claims.msisdn, claims.account_ref, str(reason))
        return self._auditor.digest("ticket", "\x00".join(parts))

    async def unbind(
        self, request: gateway_pb2.GatewayUnbindRequest, context: UnbindContext
    ) -> gateway_pb2.GatewayUnbindResponse:
        """Commit (or find) the ticket for the handle's binding and answer at once."""
        handle = request.handle
        # Checked before the assertion, so a malformed request does not use it up.
        if not handle:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "handle is required")
        if len(handle) > MAX_HANDLE_CHARS:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "the handle is malformed; use a handle from a lookup",
            )
        citizen = await self._identify(context, "unbind")
        actor = self._auditor.citizen(citizen.sub)
        try:
            claims = self._sealer.open(handle, sub=citizen.sub, now=self._clock())
        except HandleError as exc:
            _log.info("unbind.refused", reason=exc.reason, code=exc.code.name)
            await self._audit(
                "unbind.refused", actor=actor, detail={"reason": exc.reason, "code": exc.code.name}
            )
            await _abort(context, exc.code, exc.message)
        provider = self._providers.get(claims.provider_id)
        if provider is None:
            _log.warning("unbind.refused", reason="provider_gone", provider=claims.provider_id)
            await self._audit(
                "unbind.refused",
                actor=actor,
                subject=f"provider:{claims.provider_id}",
                detail={"reason": "provider_gone", "code": "FAILED_PRECONDITION"},
            )
            await _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"provider {claims.provider_id!r} no longer takes part in onecert; look up again",
            )
        reason = reason_for(claims.attribution)
        key = self.ticket_key(claims, reason)
        now = datetime.fromtimestamp(self._clock(), UTC)
        expires_at = now + timedelta(seconds=self._ticket_ttl)
        requested = {
            "provider": provider.id,
            "msisdn": self._auditor.digest("msisdn", claims.msisdn),
            "account": self._auditor.digest("account", claims.account_ref),
            "reason": common_pb2.UnbindReason.Name(reason),
        }

        def audit_row(ticket: Ticket, created: bool) -> AuditDraft:
            # Written with the ticket, in its transaction: a crash cannot
            # keep the ticket and lose the row.
            return AuditDraft(
                kind="unbind.requested",
                actor=actor,
                subject=ticket.ticket_id,
                detail={**requested, "created": created, "state": ticket.state.value},
            )

        payload = self._sealer.seal(
            HandleClaims(
                sub=payload_sub(key),
                provider_id=claims.provider_id,
                msisdn=claims.msisdn,
                account_ref=claims.account_ref,
                attribution=claims.attribution,
                expires_at=expires_at.timestamp() + _PAYLOAD_MARGIN_S,
                query_id=claims.query_id,
            )
        )
        try:
            ticket, created = await self._store.tickets.create(
                handle_digest=key,
                sub_hash=self._auditor.digest("sub", citizen.sub),
                provider_id=claims.provider_id,
                reason=int(reason),
                payload=payload,
                msisdn_hash=self._auditor.digest("msisdn", claims.msisdn),
                expires_at=expires_at,
                now=now,
                audit=audit_row,
            )
        except ConflictError:
            # The key covers the citizen and the provider: only a bug gets here.
            _log.error("unbind.conflict", provider=provider.id)
            await _abort(context, grpc.StatusCode.INTERNAL, "the ticket could not be recorded")
        except Exception:  # noqa: BLE001 - any store failure: nothing committed
            _log.exception("unbind.store_failed", provider=provider.id)
            await _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the ticket could not be recorded; try again shortly",
            )
        if created:
            self._wake()
        _log.info(
            "unbind.accepted",
            ticket_id=ticket.ticket_id,
            provider=provider.id,
            msisdn=mask_msisdn(claims.msisdn),
            created=created,
            state=ticket.state.value,
        )
        return gateway_pb2.GatewayUnbindResponse(
            ticket_id=ticket.ticket_id, state=_STATES[ticket.state], created=created
        )

    async def get_unbind(
        self, request: gateway_pb2.GetUnbindRequest, context: UnbindContext
    ) -> gateway_pb2.GetUnbindResponse:
        """The receipt of one of the caller's tickets."""
        if not request.ticket_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "ticket_id is required")
        if not TICKET_ID.fullmatch(request.ticket_id):
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "ticket_id is malformed; use the id Unbind returned",
            )
        citizen = await self._identify(context, "get_unbind")
        try:
            ticket = await self._store.tickets.get(request.ticket_id)
        except Exception:  # noqa: BLE001 - any store failure is UNAVAILABLE
            _log.exception("get_unbind.store_failed")
            await _abort(
                context, grpc.StatusCode.UNAVAILABLE, "the ticket cannot be read; try again shortly"
            )
        # Another citizen's ticket is answered exactly like an unknown one.
        if ticket is None or ticket.sub_hash != self._auditor.digest("sub", citizen.sub):
            await _abort(context, grpc.StatusCode.NOT_FOUND, "no such ticket")
        provider = self._providers.get(ticket.provider_id)
        name = provider.display_name if provider is not None else ticket.provider_id
        return gateway_pb2.GetUnbindResponse(ticket=ticket_pb(ticket, provider_name=name))

    async def _identify(self, context: UnbindContext, rpc: str) -> Citizen:
        try:
            token = bearer_token(context.invocation_metadata())
            citizen = await self._verifier.verify(token)
        except IdentityError as exc:
            _log.info(f"{rpc}.refused", reason=exc.reason, code=exc.code.name)
            await _abort(context, exc.code, exc.message)
        return citizen

    async def _audit(
        self,
        kind: str,
        *,
        actor: str,
        subject: str = "",
        detail: Mapping[str, str | int | bool] | None = None,
    ) -> None:
        try:
            await self._auditor.record(kind, actor=actor, subject=subject, detail=detail)
        except Exception as exc:  # noqa: BLE001 - the audit must not undo a committed ticket
            # The ticket (if any) is committed and is what matters to the
            # citizen; a missing audit row is reported loudly instead.
            _log.error("audit.append_failed", kind=kind, error=type(exc).__name__)


async def _abort(context: UnbindContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises
