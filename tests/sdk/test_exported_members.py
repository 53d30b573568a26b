"""The public surface of onecert.sdk is exactly what is intended, and all of it imports."""

from __future__ import annotations

import onecert.sdk
import onecert.sdk.client
import onecert.sdk.testing

SDK_API = {
    "Binding",
    "BindingKind",
    "CallInfo",
    "Carrier",
    "CertificateRenewer",
    "EnrolledState",
    "FilterPublisher",
    "ClientTLS",
    "IdempotencyStore",
    "JoinResult",
    "MemoryIdempotencyStore",
    "NoticePoller",
    "PollRound",
    "Provider",
    "ProviderCategory",
    "ProviderCredentials",
    "RecycledNotice",
    "SQLiteIdempotencyStore",
    "Server",
    "ServerTLS",
    "SetError",
    "SetIssuer",
    "SetVerifier",
    "Tenure",
    "TenureState",
    "Unavailable",
    "UnbindOutcome",
    "UnbindReason",
    "UnbindRequest",
    "UnbindResult",
    "configure_logging",
    "join",
    "load_jwks",
}

# The clients of the gateway (a package split by caller; the same names as the
# module it was, plus ComplianceStatus, which the compliance report's lines carry).
CLIENT_API = {
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
    "GatewayClient",
    "GatewayError",
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
    "GateResult",
    "Invitation",
    "RegistryChange",
    "RateLimitedError",
    "Receipt",
    "RecycledAnswer",
    "RecycledStatus",
    "ReportedEvent",
    "Result",
    "RoutedOut",
    "RoutingKey",
    "Started",
    "Summary",
    "TicketInfo",
    "TicketState",
}

TESTING_API = {
    "CallError",
    "CarrierEnvironment",
    "FakeGateway",
    "InProcessServer",
    "ProviderEnvironment",
    "serve_in_process",
}


def test_sdk_exports_exactly_the_intended_names() -> None:
    """onecert.sdk.__all__ is the intended public API, and each name is defined."""
    assert set(onecert.sdk.__all__) == SDK_API
    assert len(onecert.sdk.__all__) == len(SDK_API)
    for name in onecert.sdk.__all__:
        assert getattr(onecert.sdk, name) is not None


def test_testing_exports_exactly_the_intended_names() -> None:
    """onecert.sdk.testing.__all__ is the intended test-helper API."""
    assert set(onecert.sdk.testing.__all__) == TESTING_API
    for name in onecert.sdk.testing.__all__:
        assert getattr(onecert.sdk.testing, name) is not None


def test_exported_members_say_where_they_belong() -> None:
    """Every exported class is documented (the names are the API a provider reads)."""
    for name in onecert.sdk.__all__:
        member = getattr(onecert.sdk, name)
        assert member.__doc__, name


def test_client_exports_exactly_the_intended_names() -> None:
    """onecert.sdk.client.__all__ is the clients' public API, and each name is defined
    and documented."""
    assert set(onecert.sdk.client.__all__) == CLIENT_API
    for name in onecert.sdk.client.__all__:
        member = getattr(onecert.sdk.client, name)
        assert member is not None
        assert member.__doc__, name
