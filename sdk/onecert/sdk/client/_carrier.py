"""A carrier's client: report cancelled and recycled numbers."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from onecert.sdk._tls import ClientTLS
from onecert.sdk._types import coerce_enum
from onecert.sdk.client._base import DEFAULT_MAX_MESSAGE_BYTES, ClientBase, dev_principal, stamp
from onecert.v1 import gateway_pb2


class NumberEventType(enum.StrEnum):
    """What happened to a carrier's number."""

    CANCELLED = "cancelled"
    """The subscriber cancelled it; the quiet period starts."""
    RECYCLED = "recycled"
    """It was given to a new subscriber."""


_NUMBER_EVENT_TYPES = {
    NumberEventType.CANCELLED: gateway_pb2.NUMBER_EVENT_TYPE_CANCELLED,
    NumberEventType.RECYCLED: gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED,
}


@dataclass(frozen=True)
class ReportedEvent:
    """What the gateway answers a carrier's event.

    ``created`` is False when this event id had already been reported (the
    notice recorded then is returned); ``providers`` is how many providers
    the notice goes to.
    """

    notice_id: str
    created: bool
    providers: int


class CarrierGatewayClient(ClientBase):
    """A carrier's client of the gateway: report cancelled and recycled numbers.

    ::

        async with CarrierGatewayClient("gateway.example:443", tls=ClientTLS(
                ca_file="ca.pem", cert_file="me.pem", key_file="me.key.pem")) as gw:
            await gw.report_number_event(event_id="ev-1042", msisdn="+8613800138000",
                                         event_type="recycled", effective_at=handed_over)

    The gateway knows you by your client certificate and accepts only
    numbers in your configured prefixes.

    Args:
        target: ``host:port`` of the gateway.
        tls: the CA to check the gateway and your client certificate.
        insecure: plaintext, for a development gateway only.
        dev_carrier_id: with ``insecure``: the carrier id to claim.
        max_message_bytes: the largest message accepted from the gateway.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTLS | None = None,
        insecure: bool = False,
        dev_carrier_id: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._dev_principal = dev_principal("carrier", dev_carrier_id, insecure=insecure)
        super().__init__(target, tls=tls, insecure=insecure, max_message_bytes=max_message_bytes)

    async def report_number_event(
        self,
        *,
        event_id: str,
        msisdn: str,
        event_type: NumberEventType | str,
        effective_at: datetime,
        quiet_period_ends_at: datetime | None = None,
        history: bool = False,
        timeout: float = 10.0,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ReportedEvent:
        """Report that ``msisdn`` was cancelled or recycled at ``effective_at``.

        Idempotent on ``event_id``: report again after a timeout with the
        same id and content.

        Args:
            event_id: your id for the event (1 to 128 characters).
            msisdn: the number (E.164), one you serve.
            event_type: CANCELLED or RECYCLED (or "cancelled", "recycled").
            effective_at: when it took effect (timezone-aware, not in the future).
            quiet_period_ends_at: CANCELLED only: when the number may go to
                someone else (the gateway's default quiet period otherwise).
            history: a past event, from before the gateway's
                ``check_recycled.history_start``, reported to complete the
                number's history for CheckRecycled: recorded, no notice sent.
            timeout: seconds the call may take.

        Raises:
            ValueError: an unknown ``event_type`` or a naive datetime.
            GatewayError: PERMISSION_DENIED (not your number), INVALID_ARGUMENT,
                ALREADY_EXISTS (the same id with other content), UNAUTHENTICATED, ...
        """
        kind = coerce_enum(NumberEventType, event_type, "event_type")
        request = gateway_pb2.ReportNumberEventRequest(
            event_id=event_id, msisdn=msisdn, type=_NUMBER_EVENT_TYPES[kind], history=history
        )
        request.effective_at.CopyFrom(stamp(effective_at, "effective_at"))
        if quiet_period_ends_at is not None:
            request.quiet_period_ends_at.CopyFrom(
                stamp(quiet_period_ends_at, "quiet_period_ends_at")
            )
        response = await self._unary(self._stub.ReportNumberEvent, request, timeout=timeout)
        return ReportedEvent(response.notice_id, response.created, response.providers)
