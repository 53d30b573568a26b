"""Routing: ask only the providers whose keyed membership filter may hold the number.

Providers publish Bloom filters of the numbers bound at them, keyed with the
federation's routing key (format: ``docs/routing.md``, reference code in
:mod:`onecert.sdk.routing`). :class:`RoutingIndex` keeps every registered
provider's filter bit-sliced and answers, for one number, which providers may
hold it and which must be asked anyway (no fresh filter, opted out).
:class:`RoutingKeyring` holds the key versions a number is hashed with.
"""

from onecert.gateway.routing._index import (
    AskReason,
    FilterRejectedError,
    ProviderRouting,
    Route,
    RoutingIndex,
    UnknownProviderError,
)
from onecert.gateway.routing._keyring import RoutingKeyring
from onecert.gateway.routing._service import (
    FilterSealer,
    RoutingService,
    derive_filter_key,
    derive_routing_key,
    load_routing_keys,
)

__all__ = [
    "AskReason",
    "FilterRejectedError",
    "FilterSealer",
    "ProviderRouting",
    "Route",
    "RoutingIndex",
    "RoutingKeyring",
    "RoutingService",
    "UnknownProviderError",
    "derive_filter_key",
    "derive_routing_key",
    "load_routing_keys",
]
