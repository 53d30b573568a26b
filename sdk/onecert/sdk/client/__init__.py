"""Clients of the gateway: the portal's (citizen RPCs), and those of providers,
carriers and the regulator (:class:`ProviderGatewayClient`,
:class:`CarrierGatewayClient`, :class:`AdminGatewayClient`).

::

    async with GatewayClient("gateway.example:443", tls=ClientTLS(ca_file="ca.pem",
            cert_file="portal.pem", key_file="portal.key.pem")) as client:
        async for update in client.lookup(assertion, timeout=10):
            match update:
                case Started(): ...   # the numbers found, the calls planned
                case RoutedOut(): ... # providers routing ruled out of a number (a count)
                case Result(): ...    # one provider's answer for one number
                case Summary(): ...   # always last: coverage and time taken

        ticket = await client.unbind(fresh_assertion, account.handle)
        receipt = await client.get_unbind(another_fresh_assertion, ticket.ticket_id)

The updates are frozen dataclasses, not protobufs. The client asks the
gateway to send the results that are ready together in one message
(``LookupRequest.batch_results``, contract S-2) and yields them one
:class:`Result` at a time, so batching is invisible here. A refused or failed
call raises :class:`GatewayError` with the gRPC status code and the gateway's
explanation. An assertion is good for one call: mint a fresh one each time.
"""

from onecert.sdk.client._admin import (
    AdminGatewayClient,
    ComplianceReport,
    ComplianceStatus,
    ProviderCompliance,
)
from onecert.sdk.client._base import GatewayError, RateLimitedError
from onecert.sdk.client._carrier import CarrierGatewayClient, NumberEventType, ReportedEvent
from onecert.sdk.client._enrollment import ActivationResult, Certificate
from onecert.sdk.client._portal import (
    Account,
    Attribution,
    CallOutcome,
    CarrierStatus,
    Coverage,
    GatewayClient,
    LookupUpdate,
    NumberCoverage,
    NumberStatus,
    Receipt,
    Result,
    RoutedOut,
    Started,
    Summary,
    TicketInfo,
    TicketState,
)
from onecert.sdk.client._provider import (
    EventError,
    FilterReceipt,
    PolledEvent,
    PollResult,
    ProviderGatewayClient,
    RecycledAnswer,
    RecycledStatus,
    RoutingKey,
)
from onecert.sdk.client._registry import (
    GateResult,
    Invitation,
    ProviderRecord,
    ProviderStatus,
    RegistryChange,
)

__all__ = [
    "Account",
    "ActivationResult",
    "AdminGatewayClient",
    "Attribution",
    "CallOutcome",
    "CarrierGatewayClient",
    "CarrierStatus",
    "Certificate",
    "ComplianceReport",
    "ComplianceStatus",
    "Coverage",
    "EventError",
    "FilterReceipt",
    "GateResult",
    "GatewayClient",
    "GatewayError",
    "Invitation",
    "LookupUpdate",
    "NumberCoverage",
    "NumberEventType",
    "NumberStatus",
    "PollResult",
    "PolledEvent",
    "ProviderCompliance",
    "ProviderGatewayClient",
    "ProviderRecord",
    "ProviderStatus",
    "RateLimitedError",
    "Receipt",
    "RecycledAnswer",
    "RecycledStatus",
    "RegistryChange",
    "ReportedEvent",
    "Result",
    "RoutedOut",
    "RoutingKey",
    "Started",
    "Summary",
    "TicketInfo",
    "TicketState",
]
