"""A provider's client: recycled-number checks, polled notices and routing filters."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypedDict, Unpack

from google.protobuf.duration_pb2 import Duration

from onecert.sdk._filter import FORMAT_V1, SNAPSHOT_FORMATS, FilterAdditions, RoutingFilter
from onecert.sdk._tls import ClientTLS
from onecert.sdk.client._base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ClientBase,
    dev_principal,
    enum_from_pb,
    stamp,
    time_of,
)
from onecert.sdk.client._enrollment import ActivationResult, Certificate, certificate_of
from onecert.sdk.client._registry import (
    ProviderRecord,
    gate_from_pb,
    record_from_pb,
    status_of_pb,
)
from onecert.v1 import gateway_pb2

# ------------------------------------------------------------------ providers


class RecycledStatus(enum.StrEnum):
    """The gateway's answer to "was this number recycled after a date?"."""

    RECYCLED = "recycled"
    """Recycled after the date: an account bound before it is a previous holder's."""
    NOT_RECYCLED = "not_recycled"
    """The gateway holds the number's history over the date, and it was not."""
    NO_DATA = "no_data"
    """The gateway has no history covering the date: decide by your own rules."""
    UNKNOWN = "unknown"
    """A value this client does not know (a newer gateway)."""


@dataclass(frozen=True)
class RecycledAnswer:
    """The answer of :meth:`ProviderGatewayClient.check_recycled`.

    ``recycled_at`` is the most recent recycling, with RECYCLED.
    """

    status: RecycledStatus
    recycled_at: datetime | None = None

    @property
    def recycled(self) -> bool:
        return self.status is RecycledStatus.RECYCLED


@dataclass(frozen=True)
class PolledEvent:
    """A notice fetched by polling: its ``jti`` and the SET to verify.

    Verify ``token`` with :class:`onecert.sdk.SetVerifier` before trusting it.
    """

    jti: str
    token: str


@dataclass(frozen=True)
class PollResult:
    """One poll's notices, and whether more are waiting."""

    events: tuple[PolledEvent, ...]
    more_available: bool


@dataclass(frozen=True)
class EventError:
    """A notice you could not process (RFC 8936 ``setErrs``).

    ``code`` is an RFC 8935 error code ("invalid_request", "invalid_key",
    "invalid_issuer", "invalid_audience", "authentication_failed").
    """

    jti: str
    code: str
    description: str = ""


@dataclass(frozen=True)
class RoutingKey:
    """The federation's routing key to build filters with (a secret: never log it).

    Attributes:
        version: its version, written in the filter's header.
        key: the key.
        live_versions: every version the gateway still accepts.
        filter_formats: the snapshot format versions the gateway accepts;
            empty from a gateway that predates format 2 (it accepts 1).
    """

    version: int
    key: bytes = field(repr=False)
    live_versions: tuple[int, ...] = ()
    filter_formats: tuple[int, ...] = ()

    @property
    def filter_format(self) -> int:
        """The format to build snapshots in: the highest both sides support."""
        common = set(self.filter_formats or (FORMAT_V1,)).intersection(SNAPSHOT_FORMATS)
        return max(common, default=FORMAT_V1)


@dataclass(frozen=True)
class FilterReceipt:
    """The gateway's answer to a publication.

    Attributes:
        fresh_until: when the provider turns stale without a new snapshot
            (None without a snapshot in place, or opted out).
        active_key_version: the version to build the next snapshot with.
    """

    fresh_until: datetime | None
    active_key_version: int


class _Publication(TypedDict, total=False):
    """What one ``PublishFilter`` call carries: exactly one of these."""

    snapshot: gateway_pb2.RoutingSnapshot
    additions: bytes
    opt_out: gateway_pb2.RoutingOptOut


class ProviderGatewayClient(ClientBase):
    """A provider's client of the gateway: recycled checks and polled notices.

    ::

        async with ProviderGatewayClient("gateway.example:443", tls=ClientTLS(
                ca_file="ca.pem", cert_file="me.pem", key_file="me.key.pem")) as gw:
            answer = await gw.check_recycled("+8613800138000", since=account.bound_at)
            if answer.recycled:
                ...  # refuse the SMS login: the number changed hands

    The gateway knows you by your client certificate. A development gateway
    without TLS takes ``insecure=True, dev_provider_id="your-id"`` instead.

    Args:
        target: ``host:port`` of the gateway.
        tls: the CA to check the gateway and your client certificate.
        insecure: plaintext, for a development gateway only.
        dev_provider_id: with ``insecure``: the provider id to claim.
        max_message_bytes: the largest message accepted from the gateway.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTLS | None = None,
        insecure: bool = False,
        dev_provider_id: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._dev_principal = dev_principal("provider", dev_provider_id, insecure=insecure)
        super().__init__(target, tls=tls, insecure=insecure, max_message_bytes=max_message_bytes)

    async def check_recycled(
        self,
        msisdn: str,
        since: datetime,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> RecycledAnswer:
        """Was ``msisdn`` recycled after ``since`` (typically when the account bound it)?

        Raises:
            RateLimitedError: too many checks; wait ``retry_after`` seconds.
            GatewayError: refused (INVALID_ARGUMENT, UNAUTHENTICATED, ...).
        """
        request = gateway_pb2.CheckRecycledRequest(msisdn=msisdn)
        request.specified_date.CopyFrom(stamp(since, "since"))
        response = await self._unary(self._stub.CheckRecycled, request, timeout=timeout)
        status = enum_from_pb(
            RecycledStatus,
            gateway_pb2.RecycledStatus,
            response.status,
            "RECYCLED_STATUS_",
            RecycledStatus.UNKNOWN,
        )
        assert status is not None
        return RecycledAnswer(status, time_of(response, "recycled_at"))

    async def poll_events(
        self,
        *,
        acks: Sequence[str] = (),
        errors: Sequence[EventError] = (),
        max_events: int = 0,
        return_immediately: bool = True,
        timeout: float = 15.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> PollResult:
        """Acknowledge notices, report the ones you could not process, fetch pending ones.

        A notice comes back in every poll until it is acknowledged: ack it
        once you have recorded it durably. With ``return_immediately=False``
        the gateway holds the call (within ``timeout``) until a notice arrives.

        Raises:
            GatewayError: refused (UNAUTHENTICATED, FAILED_PRECONDITION for a
                provider configured for push, INVALID_ARGUMENT, ...).
        """
        request = gateway_pb2.PollEventsRequest(
            max_events=max_events,
            return_immediately=return_immediately,
            acks=list(acks),
            errors=[
                gateway_pb2.EventError(jti=e.jti, code=e.code, description=e.description)
                for e in errors
            ],
        )
        response = await self._unary(self._stub.PollEvents, request, timeout=timeout)
        return PollResult(
            events=tuple(PolledEvent(e.jti, e.set) for e in response.events),
            more_available=response.more_available,
        )

    async def confirm_event_action(
        self,
        jti: str,
        bindings_removed: int,
        *,
        acted_at: datetime | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> bool:
        """Tell the gateway you acted on notice ``jti``; False if already confirmed.

        Raises:
            GatewayError: NOT_FOUND for a notice not sent to you, or another refusal.
        """
        request = gateway_pb2.ConfirmEventActionRequest(jti=jti, bindings_removed=bindings_removed)
        if acted_at is not None:
            request.acted_at.CopyFrom(stamp(acted_at, "acted_at"))
        response = await self._unary(self._stub.ConfirmEventAction, request, timeout=timeout)
        return response.recorded

    async def get_routing_key(
        self,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> RoutingKey:
        """The routing key to build filters with (``Gateway.GetRoutingKey``).

        Raises:
            GatewayError: FAILED_PRECONDITION when routing is off at the gateway,
                or another refusal.
        """
        response = await self._unary(
            self._stub.GetRoutingKey, gateway_pb2.GetRoutingKeyRequest(), timeout=timeout
        )
        return RoutingKey(
            response.key_version,
            response.key,
            tuple(response.live_versions),
            tuple(response.filter_formats),
        )

    async def publish_snapshot(
        self,
        snapshot: RoutingFilter,
        *,
        interval: timedelta,
        timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> FilterReceipt:
        """Publish a full filter, promising the next one within ``interval`` (1 min to 7 days).

        Raises:
            GatewayError: INVALID_ARGUMENT (malformed, ``created_at`` in the
                future, interval out of bounds), FAILED_PRECONDITION (key not
                live or another key, older than the snapshot in place), ...
        """
        duration = Duration()
        duration.FromTimedelta(interval)
        published = gateway_pb2.RoutingSnapshot(
            filter=snapshot.to_bytes(), snapshot_interval=duration
        )
        return await self._publish(timeout, snapshot=published)

    async def publish_additions(
        self,
        additions: FilterAdditions,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> FilterReceipt:
        """Publish numbers bound since the snapshot (keyed with the snapshot's version).

        Raises:
            GatewayError: INVALID_ARGUMENT, FAILED_PRECONDITION (another key
                version than the snapshot in place), ...
        """
        return await self._publish(timeout, additions=additions.to_bytes())

    async def opt_out_of_routing(
        self,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> FilterReceipt:
        """Be asked about every number (drops the filter in place; a snapshot opts back in)."""
        return await self._publish(timeout, opt_out=gateway_pb2.RoutingOptOut())

    async def _publish(
        self,
        timeout: float,  # noqa: ASYNC109 - the gRPC deadline
        **publication: Unpack[_Publication],
    ) -> FilterReceipt:
        """One ``PublishFilter`` call (a snapshot, additions or the opt-out) and its receipt."""
        request = gateway_pb2.PublishFilterRequest(**publication)
        response = await self._unary(self._stub.PublishFilter, request, timeout=timeout)
        return FilterReceipt(time_of(response, "fresh_until"), response.active_key_version)

    async def enrollment_status(
        self,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ProviderRecord:
        """Where you stand: your registry record (status, the last gate run with each
        failing check, your certificate's serial and expiry).

        Raises:
            GatewayError: PERMISSION_DENIED (suspended, removed), FAILED_PRECONDITION
                (you did not join by enrollment), UNIMPLEMENTED (no enrollment here).
        """
        request = gateway_pb2.GetEnrollmentStatusRequest()
        response = await self._unary(self._stub.GetEnrollmentStatus, request, timeout=timeout)
        return record_from_pb(response.provider)

    async def request_activation(
        self,
        *,
        timeout: float = 90.0,  # noqa: ASYNC109 - the gRPC deadline; the gate takes seconds
    ) -> ActivationResult:
        """Ask to be activated: the gateway runs the conformance kit against you now.

        Raises:
            RateLimitedError: too many gates run at once; try after ``retry_after``.
            GatewayError: another refusal.
        """
        request = gateway_pb2.RequestActivationRequest()
        response = await self._unary(self._stub.RequestActivation, request, timeout=timeout)
        gate = gate_from_pb(response.gate) if response.HasField("gate") else None
        return ActivationResult(status_of_pb(response.status), gate, response.summary)

    async def renew_certificate(
        self,
        csr_pem: bytes,
        *,
        timeout: float = 15.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> Certificate:
        """A new certificate for your id, for the CSR (PEM) of a new key pair.

        Raises:
            GatewayError: INVALID_ARGUMENT (the CSR), PERMISSION_DENIED, ...
        """
        request = gateway_pb2.RenewCertificateRequest(csr_pem=csr_pem.decode())
        response = await self._unary(self._stub.RenewCertificate, request, timeout=timeout)
        return certificate_of(response.certificate)
