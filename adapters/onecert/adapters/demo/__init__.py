"""The demo federation: fictional carriers and providers with synthetic data.

``onecert demo`` starts it, looks up the citizen of :data:`STORY`, unbinds
her left-behind account, has a carrier report a recycled number
(:func:`number_to_recycle`) that one provider ignores, and shows the
regulator's compliance report; a benchmark can start many more providers
with :class:`DemoFederation` and :func:`make_provider_data`. Each adapter is its own process::

    python -m onecert.adapters.demo provider --id coinpurse --gateway-jwks ... \\
        --tls-cert ... --tls-key ... --client-ca ... --ready-file run/coinpurse.port

Everything here is made up: companies, people, document and phone numbers.
"""

from onecert.adapters.demo._adapters import (
    DemoCarrier,
    DemoProvider,
    build_carrier,
    build_provider,
)
from onecert.adapters.demo._data import (
    CARRIERS,
    DEFAULT_SEED,
    PROVIDERS,
    STORY,
    CarrierSpec,
    HistoryEvent,
    Person,
    ProviderSpec,
    Story,
    Subscription,
    UserRecord,
    carrier_of,
    carrier_subscriptions,
    document_number,
    history_events,
    make_provider_data,
    number_to_recycle,
    population,
    provider_users,
)
from onecert.adapters.demo._federation import (
    ADMIN_CN,
    GATEWAY_ID,
    IDENTITY_ISSUER,
    DemoFederation,
    DirectoryInUseError,
    ManagedProcess,
    StartupError,
    StopReport,
)

__all__ = [
    "ADMIN_CN",
    "CARRIERS",
    "DEFAULT_SEED",
    "GATEWAY_ID",
    "IDENTITY_ISSUER",
    "PROVIDERS",
    "STORY",
    "CarrierSpec",
    "DemoCarrier",
    "DemoFederation",
    "DemoProvider",
    "DirectoryInUseError",
    "HistoryEvent",
    "ManagedProcess",
    "Person",
    "ProviderSpec",
    "StartupError",
    "StopReport",
    "Story",
    "Subscription",
    "UserRecord",
    "build_carrier",
    "build_provider",
    "carrier_of",
    "carrier_subscriptions",
    "document_number",
    "history_events",
    "make_provider_data",
    "number_to_recycle",
    "population",
    "provider_users",
]
