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
from typing import Any

import grpc
import structlog

from onecert.gateway._attribution import Attribution
from onecert.gateway._audit import Auditor
from onecert.gateway._config import ProviderConfig
from onecert.gateway._handles import HandleClaims, HandleError, HandleSealer, check_handle_form
from onecert.gateway._identity import (
    AssertionVerifier,
    Citizen,
    IdentityError,
    Metadata,
    bearer_token,
)
from onecert.gateway._refusal import AuditNote, Refusal, invalid
from onecert.gateway.store import AuditDraft, ConflictError, Store, StoredTicketState, Ticket
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

_STATES: Mapping[StoredTicketState, gateway_pb2.TicketState.ValueType] = {
    StoredTicketState.QUEUED: gateway_pb2.TICKET_STATE_QUEUED,
    StoredTicketState.PENDING: gateway_pb2.TICKET_STATE_PENDING,
    StoredTicketState.DONE: gateway_pb2.TICKET_STATE_DONE,
    StoredTicketState.REJECTED: gateway_pb2.TICKET_STATE_REJECTED,
    StoredTicketState.FAILED: gateway_pb2.TICKET_STATE_FAILED,
}
_OUTCOMES: Mapping[str, common_pb2.UnbindOutcome.ValueType] = {
    "DONE": common_pb2.UNBIND_OUTCOME_DONE,
    "PENDING": common_pb2.UNBIND_OUTCOME_PENDING,
    "REJECTED": common_pb2.UNBIND_OUTCOME_REJECTED,
}


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
    """``Gateway.Unbind`` and ``Gateway.GetUnbind``, without the server.

    Refusals are raised as :class:`~onecert.gateway._refusal.Refusal`; those
    of an identified citizen carry their ``unbind.refused`` audit row.

    Args:
        verifier: checks the citizens' identity assertions.
        sealer: opens handles and seals ticket payloads.
        store: where tickets are committed.
        auditor: hashes identifiers and writes the audit rows.
        providers: the active providers by id (the gateway's live
            :class:`~onecert.gateway._directory.ProviderDirectory`).
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
        self._providers = providers
        self._ticket_ttl = ticket_ttl
        self._wake = wake
        self._clock = clock

    def ticket_key(self, claims: HandleClaims, reason: int) -> str:
        """The idempotency key of the ticket for the binding ``claims`` name."""
        parts = (claims.sub, claims.provider_id, claims.msisdn, claims.account_ref, str(reason))
        return self._auditor.digest("ticket", "\x00".join(parts))

    async def unbind(self, handle: str, *, metadata: Metadata) -> gateway_pb2.GatewayUnbindResponse:
        """Commit (or find) the ticket for the handle's binding and answer at once.

        Args:
            handle: the handle from the citizen's lookup.
            metadata: the call's metadata, holding the citizen's identity assertion
                (``authorization: Bearer <JWT>``).
        """
        # The handle's form is checked before the assertion, so a malformed
        # request does not use it up; its authenticity is checked after.
        try:
            check_handle_form(handle)
        except HandleError as exc:
            raise Refusal(exc.code, exc.message, reason=exc.reason) from None
        citizen = await self._identify(metadata)
        actor = self._auditor.citizen(citizen.sub)
        claims = self._open(handle, citizen.sub, actor)
        provider = self._providers.get(claims.provider_id)
        if provider is None:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"provider {claims.provider_id!r} no longer takes part in onecert; look up again",
                reason="provider_gone",
                audit=AuditNote(
                    "unbind.refused",
                    actor=actor,
                    subject=f"provider:{claims.provider_id}",
                    detail={"reason": "provider_gone", "code": "FAILED_PRECONDITION"},
                ),
            )
        ticket, created = await self._commit(claims, citizen.sub, actor)
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

    def _open(self, handle: str, sub: str, actor: str) -> HandleClaims:
        try:
            return self._sealer.open(handle, sub=sub, now=self._clock())
        except HandleError as exc:
            raise Refusal(
                exc.code,
                exc.message,
                reason=exc.reason,
                audit=AuditNote(
                    "unbind.refused",
                    actor=actor,
                    detail={"reason": exc.reason, "code": exc.code.name},
                ),
            ) from None

    async def _commit(self, claims: HandleClaims, sub: str, actor: str) -> tuple[Ticket, bool]:
        reason = reason_for(claims.attribution)
        key = self.ticket_key(claims, reason)
        now = datetime.fromtimestamp(self._clock(), UTC)
        expires_at = now + timedelta(seconds=self._ticket_ttl)
        requested = {
            "provider": claims.provider_id,
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
            return await self._store.tickets.create(
                handle_digest=key,
                sub_hash=self._auditor.digest("sub", sub),
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
            _log.error("unbind.conflict", provider=claims.provider_id)
            raise Refusal(
                grpc.StatusCode.INTERNAL, "the ticket could not be recorded", reason="conflict"
            ) from None
        except Exception as exc:
            _log.exception("unbind.store_failed", provider=claims.provider_id)
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                "the ticket could not be recorded; try again shortly",
                reason="store_failed",
            ) from exc

    async def get_unbind(
        self, ticket_id: str, *, metadata: Metadata
    ) -> gateway_pb2.GetUnbindResponse:
        """The receipt of one of the caller's tickets.

        Args:
            ticket_id: the id Unbind returned.
            metadata: the call's metadata, holding the citizen's identity assertion.
        """
        if not ticket_id:
            raise invalid("ticket_id is required")
        if not TICKET_ID.fullmatch(ticket_id):
            raise invalid("ticket_id is malformed; use the id Unbind returned")
        citizen = await self._identify(metadata)
        try:
            ticket = await self._store.tickets.get(ticket_id)
        except Exception as exc:
            _log.exception("get_unbind.store_failed")
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                "the ticket cannot be read; try again shortly",
                reason="store_failed",
            ) from exc
        # Another citizen's ticket is answered exactly like an unknown one.
        if ticket is None or ticket.sub_hash != self._auditor.digest("sub", citizen.sub):
            raise Refusal(grpc.StatusCode.NOT_FOUND, "no such ticket")
        name = await self._provider_name(ticket.provider_id)
        return gateway_pb2.GetUnbindResponse(ticket=ticket_pb(ticket, provider_name=name))

    async def _provider_name(self, provider_id: str) -> str:
        """The provider's name: from the directory while active, else from the registry
        (a suspended provider keeps its name), else its id."""
        provider = self._providers.get(provider_id)
        if provider is not None:
            return provider.display_name
        try:
            entry = await self._store.registry.get(provider_id)
        except Exception:  # noqa: BLE001 - a name is a courtesy: the receipt goes out anyway
            _log.warning("get_unbind.name_unread", provider=provider_id)
            return provider_id
        return entry.name if entry is not None and entry.name else provider_id

    async def _identify(self, metadata: Metadata) -> Citizen:
        try:
            return await self._verifier.verify(bearer_token(metadata))
        except IdentityError as exc:
            raise Refusal(exc.code, exc.message, reason=exc.reason) from None
