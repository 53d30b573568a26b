"""Joining, activation and renewal: protobuf in, protobuf out, :class:`Refusal` for a no.

``Join`` (on the join listener, no client certificate): check the request's
fields and the CSR, sign, then redeem the token (``store.registry``: atomic,
single use across replicas; the provider becomes PENDING) and record the
certificate's serial and expiry. A refusal changes nothing; the token is
consumed only once the certificate exists, and a certificate is returned
only when its token was redeemed (one signed for a refused token is dropped,
never sent). Joins, gate runs and certificates are audited by the registry
(one row per change); refused joins are audited here.

``RequestActivation``, ``GetEnrollmentStatus`` and ``RenewCertificate`` are
``Gateway`` RPCs a joined provider makes over mutual TLS with its new
certificate; the access policy has already named the caller.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import grpc
import structlog
from cryptography import x509

from onecert.gateway._principals import Principal
from onecert.gateway._refusal import AuditNote, Refusal, invalid, store_call
from onecert.gateway._registry_admin import STATUS_PB, record_pb
from onecert.gateway.enrollment._ca import (
    CertificateAuthority,
    CsrRefusedError,
    IssuedCertificate,
    check_csr,
)
from onecert.gateway.enrollment._gate import Gate, GateFailure, GateOutcome
from onecert.gateway.store import (
    DeliveryMode,
    NotFoundError,
    RedeemOutcome,
    RegistryEntry,
    RegistryRepository,
    TransitionError,
)
from onecert.sdk._convert import timestamp
from onecert.v1 import enrollment_pb2, gateway_pb2

__all__ = ["EnrollmentService", "JoinPolicy"]

_log = structlog.get_logger("onecert.gateway.enrollment")

_ID = re.compile(r"[a-z0-9._-]{1,64}")
_ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):([0-9]{1,5})")
_MAX_TOKEN: Final = 512
_DELIVERY: Final = {
    enrollment_pb2.DELIVERY_MODE_PUSH: DeliveryMode.PUSH,
    enrollment_pb2.DELIVERY_MODE_POLL: DeliveryMode.POLL,
}
_POLL_ACTIVATION: Final = (
    "a polling provider has no server to test: activated by its own call over mutual "
    "TLS with its federation certificate"
)
# Why a token was not redeemed, in words for the caller.
_TOKEN_REFUSALS: Final = {
    RedeemOutcome.UNKNOWN: "the enrollment token is not known to this gateway",
    RedeemOutcome.OTHER_ID: "the enrollment token was issued for another provider id",
    RedeemOutcome.USED: "the enrollment token was already used: each token joins once",
    RedeemOutcome.EXPIRED: "the enrollment token has expired: ask the regulator for a new one",
    RedeemOutcome.REVOKED: (
        "the enrollment token was revoked (a newer invitation replaced it, or the provider "
        "was suspended or removed)"
    ),
}


@dataclass(frozen=True)
class JoinPolicy:
    """What the gateway tells joining providers, and the ids none may take.

    Attributes:
        lifetime: how long a certificate lives.
        gateway_identity: the CN of the certificate the gateway presents to
            providers ("" without one: development).
        issuer: the gateway id warrants name.
        reserved_ids: names that are other callers' certificates (the
            gateway's, the portal's, admins', carriers'): a provider holding
            a certificate with one of them as CN could act as that caller.
        gateway_address: where providers reach the mutual TLS listener
            (``HOST:PORT``, or ``:PORT`` for the host they joined at); a
            callable, since the port is known once the gateway listens.
    """

    lifetime: timedelta
    gateway_identity: str
    issuer: str
    reserved_ids: Collection[str] = ()
    gateway_address: Callable[[], str] = lambda: ""


def certificate_pb(issued: IssuedCertificate) -> gateway_pb2.IssuedCertificate:
    """The wire form of an issued certificate."""
    return gateway_pb2.IssuedCertificate(
        chain_pem=issued.chain_pem.decode(),
        ca_bundle_pem=issued.ca_bundle_pem.decode(),
        serial=issued.serial,
        not_before=timestamp(issued.not_before),
        not_after=timestamp(issued.not_after),
        renew_after=timestamp(issued.renew_after),
    )


def failure_text(failure: GateFailure) -> str:
    """One failing check as the registry keeps it: ``"L-2 list_bindings.unknown_number: ..."``."""
    return f"{failure.rule} {failure.check}: {failure.message}"


def _failure_lines(outcome: GateOutcome) -> list[str]:
    # A run that failed without a failing check (it did not finish) says why.
    lines = [failure_text(f) for f in outcome.failures]
    return lines if lines or outcome.passed else [outcome.summary]


def gate_pb(outcome: GateOutcome) -> gateway_pb2.GateResult:
    """The wire form of a gate run."""
    return gateway_pb2.GateResult(
        passed=outcome.passed, failures=_failure_lines(outcome), at=timestamp(outcome.ran_at)
    )


class EnrollmentService:
    """Joins, activations and renewals.

    Args:
        ca: signs the certificates.
        registry: the provider registry (``store.registry``).
        gate: runs the conformance kit against a provider's address.
        policy: lifetimes, the gateway's identity, reserved ids.
        after_change: awaited after a join and a gate run (the live registry's
            refresh, so this replica applies them at once).
        clock: the current time (aware).
    """

    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        registry: RegistryRepository,
        gate: Gate,
        policy: JoinPolicy,
        after_change: Callable[[], Awaitable[object]] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._after_change = after_change
        self._ca = ca
        self._registry = registry
        self._gate = gate
        self._policy = policy
        self._clock = clock or (lambda: datetime.now(UTC))

    # ------------------------------------------------------------ Join

    async def join(self, request: enrollment_pb2.JoinRequest) -> enrollment_pb2.JoinResponse:
        """Certify an invited provider; see the module docstring for the order of checks."""
        provider_id = request.provider_id
        delivery, address = _checked_join_fields(request)
        structlog.contextvars.bind_contextvars(provider=provider_id)
        csr = _checked_csr(request.csr_pem, provider_id)
        if provider_id in self._policy.reserved_ids:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"provider id {provider_id!r} is the name of another caller's certificate at "
                "this gateway; ask the regulator for an invitation under another id",
                reason="reserved_id",
            )
        issued = await self._ca.issue(csr, provider_id=provider_id, lifetime=self._policy.lifetime)
        # Shielded: once the token is being spent, the redemption and the
        # certificate's record finish even if the caller gives up meanwhile.
        await asyncio.shield(self._redeem(request, issued, delivery=delivery, address=address))
        _log.info("provider.joined", delivery=delivery.value, serial=issued.serial)
        return enrollment_pb2.JoinResponse(
            certificate=certificate_pb(issued),
            status=gateway_pb2.PROVIDER_STATUS_PENDING,
            next_step=_next_step(delivery, address),
            gateway_identity=self._policy.gateway_identity,
            gateway_issuer=self._policy.issuer,
            gateway_address=self._policy.gateway_address(),
        )

    async def _redeem(
        self,
        request: enrollment_pb2.JoinRequest,
        issued: IssuedCertificate,
        *,
        delivery: DeliveryMode,
        address: str,
    ) -> None:
        provider_id = request.provider_id
        redeemed = await store_call(
            self._registry.redeem_token(
                provider_id, request.token, address=address or None, delivery=delivery
            ),
            "redeem_token",
        )
        if redeemed.outcome is not RedeemOutcome.REDEEMED:
            raise _token_refused(provider_id, redeemed.outcome, redeemed.entry)
        await self._record_certificate(provider_id, issued)
        if self._after_change is not None:
            await self._after_change()

    async def _record_certificate(self, provider_id: str, issued: IssuedCertificate) -> None:
        # The token is spent: the certificate must reach the provider even if
        # its serial cannot be recorded now (it is at the next renewal).
        try:
            await self._registry.record_certificate(
                provider_id, serial=issued.serial, not_after=issued.not_after
            )
        except Exception as exc:  # noqa: BLE001 - the joined provider gets its certificate regardless
            _log.error("certificate.not_recorded", serial=issued.serial, error=type(exc).__name__)

    # ------------------------------------------------------------ the provider's own RPCs

    async def status(self, caller: Principal) -> gateway_pb2.GetEnrollmentStatusResponse:
        """Where the calling provider stands: its registry record."""
        return gateway_pb2.GetEnrollmentStatusResponse(
            provider=record_pb(await self._entry(caller))
        )

    async def request_activation(self, caller: Principal) -> gateway_pb2.RequestActivationResponse:
        """Run the gate now (or, for a polling provider, take this call as the proof)."""
        entry = await self._entry(caller)
        if entry.address is None:
            outcome = GateOutcome(passed=True, ran_at=self._clock(), summary=_POLL_ACTIVATION)
        else:
            outcome = await self._gate.run(entry.id, entry.address)
        try:
            after = await store_call(
                self._registry.record_gate(
                    entry.id,
                    passed=outcome.passed,
                    failures=_failure_lines(outcome),
                    actor=caller.actor,
                ),
                "record_gate",
            )
        except (NotFoundError, TransitionError) as exc:
            raise _changed_meanwhile(entry.id, exc) from None
        if self._after_change is not None:
            await self._after_change()
        return gateway_pb2.RequestActivationResponse(
            status=STATUS_PB[after.status], gate=gate_pb(outcome), summary=outcome.summary
        )

    async def renew(
        self, request: gateway_pb2.RenewCertificateRequest, caller: Principal
    ) -> gateway_pb2.RenewCertificateResponse:
        """A new certificate for the caller's own id, authenticated by its current one."""
        entry = await self._entry(caller)
        csr = _checked_csr(request.csr_pem, entry.id)
        issued = await self._ca.issue(csr, provider_id=entry.id, lifetime=self._policy.lifetime)
        try:
            await store_call(
                self._registry.record_certificate(
                    entry.id, serial=issued.serial, not_after=issued.not_after, actor=caller.actor
                ),
                "record_certificate",
            )
        except (NotFoundError, TransitionError) as exc:
            raise _changed_meanwhile(entry.id, exc) from None
        _log.info("provider.renewed", serial=issued.serial)
        return gateway_pb2.RenewCertificateResponse(certificate=certificate_pb(issued))

    async def _entry(self, caller: Principal) -> RegistryEntry:
        entry = await store_call(self._registry.get(caller.id), "get_provider")
        if entry is None:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"provider {caller.id!r} is not in the registry",
                reason="not_registered",
            )
        return entry


def _changed_meanwhile(provider_id: str, exc: Exception) -> Refusal:
    return Refusal(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"provider {provider_id!r} changed status meanwhile: {exc}",
        reason="status_changed",
    )


def _token_refused(
    provider_id: str, outcome: RedeemOutcome, entry: RegistryEntry | None
) -> Refusal:
    note = AuditNote(
        kind="enrollment.refused",
        actor=f"provider:{provider_id}",
        subject=provider_id,
        detail={"outcome": outcome.value},
    )
    if outcome is RedeemOutcome.NOT_INVITED:
        status = "not in the registry" if entry is None else entry.status.value
        return Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"provider {provider_id!r} cannot join: it is {status} (only an invited or "
            "pending provider joins)",
            reason="not_invited",
            audit=note,
        )
    return Refusal(
        grpc.StatusCode.UNAUTHENTICATED,
        _TOKEN_REFUSALS[outcome],
        reason=f"token_{outcome.value}",
        audit=note,
    )


def _checked_csr(csr_pem: str, provider_id: str) -> x509.CertificateSigningRequest:
    try:
        return check_csr(csr_pem, provider_id)
    except CsrRefusedError as exc:
        raise invalid(str(exc)) from None


def _checked_join_fields(request: enrollment_pb2.JoinRequest) -> tuple[DeliveryMode, str]:
    """The delivery mode and address of a join, or INVALID_ARGUMENT naming the field."""
    if not _ID.fullmatch(request.provider_id):
        raise invalid("provider_id is required: 1 to 64 characters of [a-z0-9._-]")
    if not request.token:
        raise invalid("token is required: the enrollment token of the invitation")
    if len(request.token) > _MAX_TOKEN:
        raise invalid(f"token is longer than {_MAX_TOKEN} characters: not an enrollment token")
    if not request.csr_pem:
        raise invalid("csr_pem is required: a PEM certificate signing request")
    address = request.address.strip()
    if request.delivery == enrollment_pb2.DELIVERY_MODE_UNSPECIFIED:
        delivery = DeliveryMode.PUSH if address else DeliveryMode.POLL
    elif request.delivery in _DELIVERY:
        delivery = _DELIVERY[request.delivery]
    else:
        raise invalid(f"delivery {request.delivery} is not a DeliveryMode")
    if delivery is DeliveryMode.PUSH and not address:
        raise invalid(
            "address is required with DELIVERY_MODE_PUSH: HOST:PORT where the provider "
            "serves BindingProvider"
        )
    if address:
        match = _ADDRESS.fullmatch(address)
        if match is None or not 0 < int(match.group(2)) <= 65535:
            raise invalid(f"address must be HOST:PORT where the provider serves, not {address!r}")
    return delivery, address


def _next_step(delivery: DeliveryMode, address: str) -> str:
    if not address:
        return (
            "save the certificate and key, then call Gateway.RequestActivation over mutual "
            "TLS with them: that call activates a polling provider; then poll with "
            "Gateway.PollEvents"
        )
    return (
        f"serve BindingProvider at {address} with this certificate and key (and accept "
        "calls only from the gateway's identity), then call Gateway.RequestActivation "
        "over mutual TLS with them: the gateway runs the conformance kit against you and "
        "activates you if it passes (Gateway.GetEnrollmentStatus shows the result)"
    )
