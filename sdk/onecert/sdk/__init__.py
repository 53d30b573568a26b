"""onecert SDK: join the onecert federation as a provider or a carrier.

Write two async functions, hand them to a :class:`Provider`, call
``provider.main()``. The SDK checks the gateway's warrant on every call,
validates and converts messages, makes unbinds idempotent, serves health and
reflection over TLS, and logs with phone numbers masked. See
:mod:`onecert.sdk.testing` to test an adapter without a network.

Joining by invitation: :func:`join` (key pair made locally, CSR and token
sent, certificate saved), then :class:`CertificateRenewer` keeps the
certificate fresh while the provider runs.
"""

from onecert.sdk._quiet import quiet_grpc_core

# Before anything below imports grpc: its core reads GRPC_VERBOSITY once.
quiet_grpc_core()

from onecert.sdk._carrier import Carrier
from onecert.sdk._core import Unavailable
from onecert.sdk._enroll import EnrolledState, JoinResult, ProviderCredentials, join
from onecert.sdk._idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    SQLiteIdempotencyStore,
)
from onecert.sdk._keys import load_jwks
from onecert.sdk._logging import configure_logging
from onecert.sdk._poller import NoticePoller, PollRound
from onecert.sdk._provider import Provider
from onecert.sdk._publisher import FilterPublisher
from onecert.sdk._renew import CertificateRenewer
from onecert.sdk._server import Server
from onecert.sdk._set import SetError, SetIssuer, SetVerifier
from onecert.sdk._tls import ClientTLS, ServerTLS
from onecert.sdk._types import (
    Binding,
    BindingKind,
    CallInfo,
    ProviderCategory,
    RecycledNotice,
    Tenure,
    TenureState,
    UnbindOutcome,
    UnbindReason,
    UnbindRequest,
    UnbindResult,
)

__all__ = [
    "Binding",
    "BindingKind",
    "CallInfo",
    "Carrier",
    "CertificateRenewer",
    "ClientTLS",
    "EnrolledState",
    "FilterPublisher",
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
]
