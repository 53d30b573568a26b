"""The gateway's configuration: one TOML file, validated into frozen dataclasses.

Every error names the key at fault (``fanout.provider_deadline_s``,
``providers[2].address``) and relative paths are resolved against the
directory of the file, so a config can travel with its keys. The full list
of keys, with an example, is in ``docs/configuration.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from onecert.sdk._dburl import database_url
from onecert.sdk._msisdn import in_number_ranges, parse_number_range
from onecert.sdk._tls import TLSFiles
from onecert.sdk._tomlconfig import ConfigError, load_toml, setting
from onecert.sdk._tomlconfig import Table as _Table
from onecert.v1 import common_pb2

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "CATEGORIES",
    "DELIVERY_MODES",
    "TRACING_EXPORTERS",
    "AdminConfig",
    "CarrierConfig",
    "CheckRecycledConfig",
    "ConfigError",
    "DeliveryConfig",
    "EnrollmentConfig",
    "FanoutConfig",
    "GatewayConfig",
    "IdentityConfig",
    "IssuerConfig",
    "KeysConfig",
    "MetricsConfig",
    "NoticesConfig",
    "PortalConfig",
    "ProviderConfig",
    "RegistryConfig",
    "RoutingConfig",
    "StoreConfig",
    "TracingConfig",
    "UpstreamTLS",
    "category_name",
    "check_transport",
    "load_config",
    "parse_config",
    "parse_number_range",
]


_ID_PATTERN = r"[a-z0-9._-]{1,64}"
_ID_TEXT = "1 to 64 characters of [a-z0-9._-]"
_ID = re.compile(_ID_PATTERN)
_C = TypeVar("_C", bound="DataclassInstance")
_LISTEN = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):([0-9]{1,5})")
_LOG_LEVELS = ("debug", "info", "warning", "error")

# Provider categories by the name used in the config file ("payment").
CATEGORIES: Final[Mapping[str, common_pb2.ProviderCategory.ValueType]] = {
    name.removeprefix("PROVIDER_CATEGORY_").lower(): number
    for name, number in common_pb2.ProviderCategory.items()
    if number != common_pb2.PROVIDER_CATEGORY_UNSPECIFIED
}
_CATEGORY_NAMES: Final = {number: name for name, number in CATEGORIES.items()}


@dataclass(frozen=True)
class UpstreamTLS:
    """How the gateway checks carriers and providers (``ca``) and the client
    certificate it presents to them (``cert`` and ``key``, mutual TLS)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    # Expected name in the upstream certificates when it differs from the host.
    server_name: str | None = None


@dataclass(frozen=True)
class KeysConfig:
    """The gateway's secrets: the warrant signing key and the handle sealing key."""

    warrant_key: Path
    handle_key: Path
    handle_ttl_s: float = setting(900.0, seconds=True)
    warrant_lifetime_s: float = setting(30.0, seconds=True, maximum=60, why="the contract's limit")
    # Key of the audit log's digests (32 bytes hex); derived from the handle key if absent.
    audit_key: Path | None = None
    # Key sealing routing filters at rest (32 bytes hex); derived from the handle key if absent.
    filter_key: Path | None = None


@dataclass(frozen=True)
class IssuerConfig:
    """An identity service whose assertions the gateway accepts."""

    issuer: str
    jwks: Path


@dataclass(frozen=True)
class IdentityConfig:
    """How citizens' identity assertions are checked."""

    audience: str
    issuers: tuple[IssuerConfig, ...]
    assurance_levels: tuple[str, ...] = ("low", "substantial", "high")
    required_assurance: str = "substantial"
    leeway_s: float = setting(30.0, seconds=True, allow_zero=True)
    max_lifetime_s: float = setting(300.0, seconds=True)


@dataclass(frozen=True)
class FanoutConfig:
    """Defaults and safety limits for the calls to carriers and providers."""

    provider_deadline_s: float = setting(3.0, seconds=True)
    carrier_deadline_s: float = setting(2.0, seconds=True)
    max_concurrency_per_provider: int = setting(32, minimum=1)
    breaker_failure_threshold: int = setting(5, minimum=1)
    breaker_cooldown_s: float = setting(30.0, seconds=True)
    retry_budget_ratio: float = setting(0.2, minimum=0.0, maximum=1.0)
    retry_budget_min_retries: int = setting(3, minimum=0)
    retry_budget_window_s: float = setting(10.0, seconds=True)
    retry_max_attempts: int = setting(2, minimum=1)
    summary_margin_s: float = setting(0.2, seconds=True, allow_zero=True)
    # For callers that take several results per message (batch_results): how
    # long the first answer of a batch waits for others to end with it.
    batch_window_s: float = setting(0.01, seconds=True, allow_zero=True, maximum=1.0)
    # Accounts one provider answer may contribute to a lookup; the rest are
    # dropped and the result says so (a number has a handful, not thousands).
    max_bindings_per_answer: int = setting(1000, minimum=1)


@dataclass(frozen=True)
class StoreConfig:
    """Where durable state lives (``[store]``).

    ``url`` is ``sqlite:///path`` (relative paths resolved next to the config
    file) or ``postgresql://...``. ``auto_migrate``: upgrade the schema at
    start-up (default: on for SQLite, off for PostgreSQL, where
    ``onecert db upgrade`` is run once per release).
    """

    url: str = "sqlite:///onecert.db"
    auto_migrate: bool = True
    # PostgreSQL only: the schema (search_path) to use.
    schema: str | None = None
    # PostgreSQL only: how long to wait to connect, for a pooled connection and
    # for any one statement before the database counts as unavailable (a call
    # answers UNAVAILABLE, a worker tries again later) instead of hanging on a
    # server that accepts but does not answer.
    timeout_s: float = setting(5.0, seconds=True)


@dataclass(frozen=True)
class DeliveryConfig:
    """How unbind tickets are delivered to providers (``[delivery]``)."""

    # Concurrent delivery workers in this process.
    workers: int = setting(2, minimum=0)
    # Tickets one worker claims at once.
    batch: int = setting(10, minimum=1)
    # How long a claim holds a ticket; a crashed worker's tickets are free after it.
    lease_s: float = setting(60.0, seconds=True)
    # How often idle workers look for due tickets (new local tickets wake them at once).
    poll_interval_s: float = setting(1.0, seconds=True)
    # Exponential backoff with full jitter between failed attempts.
    backoff_initial_s: float = setting(1.0, seconds=True)
    backoff_max_s: float = setting(300.0, seconds=True)
    # How long the gateway keeps trying; then the ticket is FAILED.
    ticket_ttl_s: float = setting(7 * 24 * 3600.0, seconds=True)
    # Deadline of one BindingProvider.Unbind call.
    unbind_deadline_s: float = setting(10.0, seconds=True)
    # When the provider answers PENDING, ask again after this long.
    pending_recheck_s: float = setting(60.0, seconds=True)


class _Identified(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def client_cn(self) -> str | None: ...


class Named:
    """What a carrier or a provider shows and is known by, in the configuration and in
    the registry alike (its class has ``id``, ``name`` and ``client_cn``)."""

    @property
    def display_name(self: _Identified) -> str:
        """Its name, or its id when it has none."""
        return self.name or self.id

    @property
    def cn(self: _Identified) -> str:
        """The client certificate CN that identifies it."""
        return self.client_cn or self.id


@dataclass(frozen=True)
class CarrierConfig(Named):
    """A carrier (``NumberRegistry``)."""

    id: str
    address: str
    name: str = ""
    deadline_s: float | None = setting(None, seconds=True)
    max_concurrency: int | None = setting(None, minimum=1)
    plaintext: bool = False
    # The numbers it may report events for: E.164 prefixes ("+86138") or
    # inclusive ranges of equal-length prefixes ("+861380-+861384").
    prefixes: tuple[str, ...] = ()
    # The CN of its client certificate; the id when None.
    client_cn: str | None = None

    def serves(self, msisdn: str) -> bool:
        """Whether ``msisdn`` (E.164) falls in one of :attr:`prefixes`."""
        return in_number_ranges(msisdn, self.prefixes)


DELIVERY_MODES = ("push", "poll")


@dataclass(frozen=True)
class ProviderConfig(Named):
    """An internet provider (``BindingProvider``).

    ``address`` is None for a provider that receives notices by polling and
    serves no ``BindingProvider`` (it is never dialed, so never asked in lookups).
    """

    id: str
    address: str | None
    name: str = ""
    category: common_pb2.ProviderCategory.ValueType = common_pb2.PROVIDER_CATEGORY_OTHER
    deadline_s: float | None = setting(None, seconds=True)
    max_concurrency: int | None = setting(None, minimum=1)
    plaintext: bool = False
    # How it receives recycled-number notices: "push" (ReceiveEvent) or
    # "poll" (it calls Gateway.PollEvents).
    delivery: str = setting("push", choices=DELIVERY_MODES)
    # The CN of its client certificate; the id when None.
    client_cn: str | None = None
    # The name its server certificate must bear when it differs from the
    # address's host (upstream_tls.server_name for this provider alone); a
    # provider the gateway issued a certificate to: <id>.provider.onecert.invalid.
    server_name: str | None = None


@dataclass(frozen=True)
class NoticesConfig:
    """Recycled-number notices (``[notices]``): deadlines and push delivery."""

    # Time to act after the event took effect, for every notice; None: the
    # rules below (act before the number can go to someone else).
    deadline_s: float | None = setting(None, seconds=True)
    # CANCELLED without quiet_period_ends_at: the quiet period assumed.
    default_quiet_period_s: float = setting(90 * 24 * 3600.0, seconds=True)
    # RECYCLED: time to act after the number went to its new subscriber.
    recycled_deadline_s: float = setting(3 * 24 * 3600.0, seconds=True)
    # A notice reported late still leaves providers at least this long.
    min_action_s: float = setting(24 * 3600.0, seconds=True, allow_zero=True)
    # How far in the future an effective_at (or a date asked about) may be.
    clock_skew_s: float = setting(60.0, seconds=True, allow_zero=True)
    # Push delivery: concurrent workers; each leases up to `batch` providers'
    # cursors at once and sends each up to `batch` notices in one ReceiveEvents
    # call (never more than 64 KiB), without waiting for the pushes it started
    # (at most `in_flight` of them); the lease on a provider's cursor.
    workers: int = setting(2, minimum=0)
    batch: int = setting(100, minimum=1, maximum=1000)
    # Providers being pushed to at once by this process (all workers together).
    in_flight: int = setting(1000, minimum=1, maximum=100000)
    lease_s: float = setting(60.0, seconds=True)
    # How often idle workers look for due pushes (new notices wake them).
    check_interval_s: float = setting(1.0, seconds=True)
    # Exponential backoff with jitter between failed pushes.
    backoff_initial_s: float = setting(1.0, seconds=True)
    backoff_max_s: float = setting(300.0, seconds=True)
    # Deadline of one BindingProvider.ReceiveEvent call.
    push_deadline_s: float = setting(5.0, seconds=True)
    # The longest PollEvents holds a call open waiting for notices.
    poll_wait_s: float = setting(10.0, seconds=True, allow_zero=True)


@dataclass(frozen=True)
class CheckRecycledConfig:
    """``Gateway.CheckRecycled`` (``[check_recycled]``)."""

    # Per provider, one token bucket shared by every replica (in the store).
    rate_per_s: float = setting(10.0, minimum=0.001)
    burst: int = setting(20, minimum=1)
    # Since when carriers report every event of every number they serve:
    # dates from then on get NOT_RECYCLED rather than NO_DATA.
    history_start: datetime | None = None


@dataclass(frozen=True)
class PortalConfig:
    """The portal's access (``[portal]``)."""

    # Client certificate CNs allowed to call Lookup, Unbind and GetUnbind
    # (under mutual TLS); the dev keys name the portal's certificate "portal".
    client_cns: tuple[str, ...] = ("portal",)


@dataclass(frozen=True)
class AdminConfig:
    """The regulator's access (``[admin]``)."""

    # Client certificate CNs with the admin role.
    client_cns: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (``[metrics]``): plain HTTP on a port of its own."""

    # HOST:PORT to serve /metrics on; None: no metrics at all.
    listen: str | None = None


TRACING_EXPORTERS = ("otlp", "console")


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry tracing (``[tracing]``): a span per lookup and per call it makes."""

    enabled: bool = False
    # "otlp" (OTLP over gRPC to ``endpoint``) or "console" (spans on stderr).
    exporter: str = setting("otlp", choices=TRACING_EXPORTERS)
    # The collector's address; None: the exporter's default (localhost:4317).
    endpoint: str | None = None
    service_name: str = "onecert-gateway"
    # Share of lookups traced (a caller's traceparent decides for its own calls).
    sample_ratio: float = setting(1.0, minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class RoutingConfig:
    """Routing (``[routing]``): ask only the providers whose filter may hold the number.

    Needs ``[store]`` (filters are shared by replicas through it). Off, every
    provider is asked about every number, as before routing existed; on, a
    provider is routed out only while it has a fresh filter, so with no
    filter published the lookups are the same.
    """

    enabled: bool = True
    # The routing keys, one "VERSION HEX" line each (the highest version is
    # active); None: version 1 derived from the handle key.
    key_file: Path | None = None
    # How often each replica looks for filters published to the others: a
    # filter published to one replica is applied by all within about this.
    poll_interval_s: float = setting(2.0, seconds=True, maximum=60)
    # A snapshot stays fresh this long past its promised interval.
    grace_s: float = setting(60.0, seconds=True, allow_zero=True)


@dataclass(frozen=True)
class EnrollmentConfig:
    """Self-service joining (``[enrollment]``): the federation CA, the join listener, the gate.

    Providers join with an invitation token and a CSR on ``listen`` (server
    TLS only: they have no certificate yet), get a certificate for their id
    signed by the CA below, and are activated once the conformance gate
    passes against them. See docs/registry.md.
    """

    # The federation CA: its certificate (also in gateway.tls.client_ca and
    # upstream_tls.ca) and its private key.
    ca_cert: Path
    ca_key: Path
    # HOST:PORT of the join listener (Enrollment service, server TLS only).
    listen: str = "[::]:50052"
    # HOST:PORT providers reach gateway.listen at (told to them when they
    # join); None: the host they joined at, with gateway.listen's port.
    gateway_address: str | None = None
    # Lifetime of a provider certificate; holders renew at two thirds of it.
    cert_lifetime_s: float = setting(24 * 3600.0, seconds=True, maximum=30 * 24 * 3600)
    # How long one conformance run against a joining provider may take.
    gate_timeout_s: float = setting(60.0, seconds=True, maximum=600)
    # Deadline of each call of the gate's conformance run.
    gate_call_timeout_s: float = setting(5.0, seconds=True)
    # Joins this listener serves at once; more are refused RESOURCE_EXHAUSTED.
    max_concurrent_joins: int = setting(16, minimum=1)
    # Join attempts per second across the listener (a token bucket), and its burst.
    joins_per_s: float = setting(20.0, minimum=0.01)
    join_burst: int = setting(40, minimum=1)
    # Gate runs at once (each opens a channel and makes about 90 calls).
    max_concurrent_gates: int = setting(8, minimum=1)
    # Activation requests that wait for a gate slot, in arrival order; one
    # more is refused RESOURCE_EXHAUSTED with the expected wait as a hint.
    max_waiting_gates: int = setting(256, minimum=0)


@dataclass(frozen=True)
class RegistryConfig:
    """The provider registry (``[registry]``): live changes, invitations.

    With ``[store]``, providers and carriers live in the database; the
    ``[[providers]]`` and ``[[carriers]]`` blocks seed it at every start.
    """

    # How often each replica looks for registry changes made elsewhere: a
    # provider suspended at one replica is no longer called by any within
    # about this.
    poll_interval_s: float = setting(2.0, seconds=True, maximum=5)
    # How long an enrollment token lives when the inviter does not say.
    invitation_ttl_s: float = setting(24 * 3600.0, seconds=True)
    # The longest an inviter may ask for.
    max_invitation_ttl_s: float = setting(7 * 24 * 3600.0, seconds=True)


@dataclass(frozen=True)
class GatewayConfig:
    """The whole gateway configuration.

    Build it with :func:`load_config` (a TOML file) or :func:`parse_config` (a
    mapping); constructing it directly is fine in tests and demos, and
    :class:`~onecert.gateway.GatewayServer` re-checks the transport rules.
    """

    keys: KeysConfig
    identity: IdentityConfig
    carriers: tuple[CarrierConfig, ...]
    providers: tuple[ProviderConfig, ...] = ()
    id: str = setting("onecert-gateway", pattern=_ID_PATTERN, pattern_text=_ID_TEXT)
    listen: str = "[::]:50051"
    # Share ``listen`` with other processes (SO_REUSEPORT); off: a port in use is refused.
    reuse_port: bool = False
    dev_plaintext: bool = False
    tls: TLSFiles | None = None
    upstream_tls: UpstreamTLS | None = None
    fanout: FanoutConfig = field(default_factory=FanoutConfig)
    max_concurrent_lookups: int = setting(100, minimum=1)
    lookup_deadline_s: float = setting(10.0, seconds=True)
    grace_period_s: float = setting(10.0, seconds=True, allow_zero=True)
    max_message_bytes: int = setting(4 * 1024 * 1024, minimum=1024)
    # None: JSON lines in production, readable lines in development.
    log_json: bool | None = None
    log_level: str = "info"
    # None: no durable state (tests of the lookup alone); Unbind is then unavailable.
    store: StoreConfig | None = None
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    notices: NoticesConfig = field(default_factory=NoticesConfig)
    check_recycled: CheckRecycledConfig = field(default_factory=CheckRecycledConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    # None: no self-service joining (providers come from [[providers]] only).
    enrollment: EnrollmentConfig | None = None
    registry: RegistryConfig = field(default_factory=RegistryConfig)

    @property
    def json_logs(self) -> bool:
        return (not self.dev_plaintext) if self.log_json is None else self.log_json

    def files(self) -> tuple[Path, ...]:
        """Every file this configuration names: certificates, keys and JWKS."""
        named = [
            *(() if self.tls is None else (self.tls.cert, self.tls.key, self.tls.client_ca)),
            self.keys.warrant_key,
            self.keys.handle_key,
            self.keys.audit_key,
            self.keys.filter_key,
            *(() if (up := self.upstream_tls) is None else (up.ca, up.cert, up.key)),
            *(issuer.jwks for issuer in self.identity.issuers),
        ]
        return tuple(path for path in named if path is not None)


def check_transport(config: GatewayConfig) -> None:
    """Refuse plaintext outside development mode; raise :class:`ConfigError`.

    Production mode (``dev_plaintext = false``) needs the gateway's own TLS
    with client certificates, and mutual TLS towards every carrier and
    provider; plaintext anywhere needs the explicit development flag.
    """
    if not config.dev_plaintext:
        if config.tls is None:
            raise ConfigError(
                "production mode (gateway.dev_plaintext = false) needs [gateway.tls] with "
                "cert, key and client_ca; plaintext is a development flag only"
            )
        if config.tls.client_ca is None:
            raise ConfigError(
                "production mode needs gateway.tls.client_ca: callers must present "
                "a client certificate"
            )
    upstreams: list[tuple[str, CarrierConfig | ProviderConfig]] = [
        *((f"carriers[{i}]", c) for i, c in enumerate(config.carriers)),
        *((f"providers[{i}]", p) for i, p in enumerate(config.providers)),
    ]
    for where, target in upstreams:
        if target.plaintext:
            if not config.dev_plaintext:
                raise ConfigError(
                    f"{where}.plaintext (id {target.id!r}) is allowed only with "
                    "gateway.dev_plaintext = true"
                )
            continue
        if config.upstream_tls is None:
            raise ConfigError(
                f"{where} (id {target.id!r}) needs [upstream_tls] (mutual TLS), "
                "or plaintext = true in development"
            )
        if not config.dev_plaintext and config.upstream_tls.cert is None:
            raise ConfigError(
                "production mode needs upstream_tls.cert and upstream_tls.key: "
                "carriers and providers identify the gateway by its client certificate"
            )


def load_config(path: str | Path, *, dev_plaintext: bool = False) -> GatewayConfig:
    """Read and validate a TOML configuration file.

    Args:
        path: the file; relative paths inside it are resolved against its directory.
        dev_plaintext: force development mode (the ``--dev-plaintext`` flag), as if
            ``gateway.dev_plaintext = true``.

    Raises:
        ConfigError: unreadable file, invalid TOML, or an invalid key (the
            message names the file and the key).
    """
    return load_toml(
        path, lambda data, base: parse_config(data, base_dir=base, dev_plaintext=dev_plaintext)
    )


# The keys of [gateway] that are fields of GatewayConfig as they are.
_GATEWAY_KEYS = (
    "id",
    "listen",
    "reuse_port",
    "dev_plaintext",
    "max_concurrent_lookups",
    "lookup_deadline_s",
    "grace_period_s",
    "max_message_bytes",
    "log_json",
)


def parse_config(
    data: Mapping[str, Any], *, base_dir: str | Path, dev_plaintext: bool = False
) -> GatewayConfig:
    """Validate a parsed TOML document (see :func:`load_config`)."""
    base = Path(base_dir)
    root = _Table(data, "", base)
    # A misspelt table reads better as "unknown" than as the required one missing.
    root.refuse_unknown(_TABLES)
    general = _parse_gateway(root.table("gateway"), dev_plaintext=dev_plaintext)
    keys = _finished(root.table("keys", required=True), KeysConfig)
    identity = _parse_identity(
        root.table("identity", required=True), default_audience=general["id"]
    )
    upstream_tls = _parse_upstream_tls(root.optional_table("upstream_tls"))
    fanout = _finished(root.table("fanout"), FanoutConfig)
    carriers = tuple(
        _parse_carrier(t) for t in root.tables("carriers", required=True, what="carrier")
    )
    providers = tuple(_parse_provider(t) for t in root.tables("providers", what="provider"))
    store = _parse_store(root.table("store"))
    delivery = _parse_delivery(root.table("delivery"))
    notices = _parse_notices(root.table("notices"))
    recycled_t = root.table("check_recycled")
    check_recycled = _finished(
        recycled_t, CheckRecycledConfig, history_start=_instant(recycled_t, "history_start")
    )
    admin = _finished(root.table("admin"), AdminConfig)
    portal = _finished(root.table("portal"), PortalConfig)
    metrics = _parse_metrics(root.table("metrics"), grpc_listen=general["listen"])
    tracing = _parse_tracing(root.table("tracing"))
    routing = _finished(root.table("routing"), RoutingConfig)
    enrollment = _parse_enrollment(root.optional_table("enrollment"), general["listen"])
    registry = _finished(root.table("registry"), RegistryConfig)
    if registry.invitation_ttl_s > registry.max_invitation_ttl_s:
        raise ConfigError("registry.invitation_ttl_s must not exceed registry.max_invitation_ttl_s")
    _unique("carriers", [c.id for c in carriers])
    _unique("providers", [p.id for p in providers])
    _unique_cns(carriers, providers, admin, portal)
    root.finish()

    config = GatewayConfig(
        keys=keys,
        identity=identity,
        upstream_tls=upstream_tls,
        fanout=fanout,
        carriers=carriers,
        providers=providers,
        store=store,
        delivery=delivery,
        notices=notices,
        check_recycled=check_recycled,
        admin=admin,
        portal=portal,
        metrics=metrics,
        tracing=tracing,
        routing=routing,
        enrollment=enrollment,
        registry=registry,
        **general,
    )
    check_transport(config)
    return config


def _finished(t: _Table, cls: type[_C], **given: Any) -> _C:
    return t.read_whole(cls, **given)


def _parse_gateway(gw: _Table, *, dev_plaintext: bool) -> dict[str, Any]:
    general = gw.read_fields(GatewayConfig, _GATEWAY_KEYS)
    _listen_port(general["listen"], "gateway.listen", example="[::]:50051")
    general["dev_plaintext"] = general["dev_plaintext"] or dev_plaintext
    tls_table = gw.optional_table("tls")
    general["tls"] = None if tls_table is None else _finished(tls_table, TLSFiles)
    log_level = gw.string("log_level", GatewayConfig.log_level).lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"gateway.log_level must be one of {', '.join(_LOG_LEVELS)}")
    general["log_level"] = log_level
    gw.finish()
    return general


def _parse_identity(t: _Table, *, default_audience: str) -> IdentityConfig:
    issuers = tuple(
        _finished(it, IssuerConfig) for it in t.tables("issuers", required=True, what="issuer")
    )
    _unique("identity.issuers", [i.issuer for i in issuers])
    config = t.read(
        IdentityConfig, issuers=issuers, audience=t.string("audience", default_audience)
    )
    levels = config.assurance_levels
    if not levels or len(set(levels)) != len(levels):
        raise ConfigError("identity.assurance_levels must be a non-empty list without duplicates")
    if config.required_assurance not in levels:
        raise ConfigError(
            f"identity.required_assurance {config.required_assurance!r} is not one of "
            "identity.assurance_levels"
        )
    t.finish()
    return config


def _parse_upstream_tls(t: _Table | None) -> UpstreamTLS | None:
    if t is None:
        return None
    upstream_tls = _finished(t, UpstreamTLS)
    if (upstream_tls.cert is None) != (upstream_tls.key is None):
        raise ConfigError("upstream_tls.cert and upstream_tls.key go together")
    return upstream_tls


def _parse_store(t: _Table) -> StoreConfig:
    # A plain path is a SQLite file next to the config, like sqlite:///PATH.
    try:
        url = database_url(t.string("url", StoreConfig.url), base=t.base)
    except ValueError as exc:
        raise ConfigError(f"store.url: {exc}") from None
    if url.startswith("sqlite"):
        scheme, sep, rest = url.partition(":///")
        if not sep or not rest:
            raise ConfigError("store.url must be sqlite:///PATH or postgresql://...")
        if rest != ":memory:":
            # sqlite:////abs is absolute; sqlite:///rel is next to the config file.
            path = Path(rest).expanduser()
            url = f"{scheme}:///{path if path.is_absolute() else t.base / path}"
        default_migrate = True
    elif url.startswith("postgresql"):
        default_migrate = False
    else:
        raise ConfigError("store.url must be sqlite:///PATH or postgresql://...")
    schema = t.string("schema", StoreConfig.schema)
    if schema is not None and not url.startswith("postgresql"):
        raise ConfigError("store.schema applies to PostgreSQL only")
    return _finished(
        t,
        StoreConfig,
        url=url,
        auto_migrate=t.boolean("auto_migrate", default_migrate),
        schema=schema,
    )


def _parse_delivery(t: _Table) -> DeliveryConfig:
    config = _finished(t, DeliveryConfig)
    if config.backoff_max_s < config.backoff_initial_s:
        raise ConfigError("delivery.backoff_max_s must be at least delivery.backoff_initial_s")
    if config.lease_s <= config.unbind_deadline_s:
        # A lease shorter than the call would let a second worker claim a
        # ticket whose attempt is still running.
        raise ConfigError("delivery.lease_s must be longer than delivery.unbind_deadline_s")
    return config


def _parse_carrier(t: _Table) -> CarrierConfig:
    return _finished(t, CarrierConfig, id=_checked_id(t), prefixes=_prefixes(t))


def _prefixes(t: _Table) -> tuple[str, ...]:
    values = t.strings("prefixes", CarrierConfig.prefixes)
    for i, text in enumerate(values):
        try:
            parse_number_range(text)
        except ValueError as exc:
            raise ConfigError(f"{t.where('prefixes')}[{i}]: {exc}") from None
    return tuple(v.strip() for v in values)


def _parse_provider(t: _Table) -> ProviderConfig:
    category_name = t.string("category", _CATEGORY_NAMES[ProviderConfig.category]).lower()
    if category_name not in CATEGORIES:
        raise ConfigError(f"{t.where('category')} must be one of {', '.join(CATEGORIES)}")
    address: str | None = t.string("address", None)
    provider = _finished(
        t, ProviderConfig, id=_checked_id(t), category=CATEGORIES[category_name], address=address
    )
    if address is None and provider.delivery != "poll":
        raise ConfigError(
            f'{t.where("address")} is required: only a provider with delivery = "poll" '
            "may have none (it is then never dialed)"
        )
    return provider


def category_name(category: common_pb2.ProviderCategory.ValueType) -> str:
    """The config name of a provider category (``"payment"``); "other" for unknown numbers."""
    return _CATEGORY_NAMES.get(category, "other")


def _parse_notices(t: _Table) -> NoticesConfig:
    config = _finished(t, NoticesConfig)
    if config.backoff_max_s < config.backoff_initial_s:
        raise ConfigError("notices.backoff_max_s must be at least notices.backoff_initial_s")
    if config.lease_s <= config.push_deadline_s:
        # A lease shorter than the call would let a second worker push the
        # same notice while the first push is still running.
        raise ConfigError("notices.lease_s must be longer than notices.push_deadline_s")
    return config


def _instant(t: _Table, key: str) -> datetime | None:
    # TOML has dates and date-times of its own; an ISO string works too.
    # Without a UTC offset the instant is taken as UTC.
    value = t.raw(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(
                f"{t.where(key)} must be a date or date-time (2024-01-01 or 2024-01-01T00:00:00Z)"
            ) from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise ConfigError(f"{t.where(key)} must be a date or date-time")


def _parse_metrics(t: _Table, *, grpc_listen: str) -> MetricsConfig:
    listen = t.raw("listen")
    if listen is not None and not isinstance(listen, str):
        raise ConfigError("metrics.listen must be a string (HOST:PORT, or empty for no metrics)")
    t.finish()
    if not listen:
        return MetricsConfig()
    port = _listen_port(listen, "metrics.listen", example="[::]:9464")
    if port and port == _listen_port(grpc_listen, "gateway.listen", example="[::]:50051"):
        raise ConfigError(f"metrics.listen must use another port than gateway.listen ({port})")
    return MetricsConfig(listen=listen)


def _listen_port(listen: str, key: str, *, example: str) -> int:
    match = _LISTEN.fullmatch(listen)
    if match is None or not 0 <= int(match.group(2)) <= 65535:
        raise ConfigError(f"{key} must be HOST:PORT (for example {example}), not {listen!r}")
    return int(match.group(2))


def _parse_enrollment(t: _Table | None, grpc_listen: str) -> EnrollmentConfig | None:
    if t is None:
        return None
    config = _finished(t, EnrollmentConfig)
    port = _listen_port(config.listen, "enrollment.listen", example="[::]:50052")
    if port and port == _listen_port(grpc_listen, "gateway.listen", example="[::]:50051"):
        raise ConfigError(
            f"enrollment.listen must use another port than gateway.listen ({port}): "
            "joining providers have no client certificate yet"
        )
    return config


def _parse_tracing(t: _Table) -> TracingConfig:
    config = _finished(t, TracingConfig)
    if config.endpoint is not None and config.exporter != "otlp":
        raise ConfigError('tracing.endpoint applies to exporter = "otlp" only')
    return config


def _unique_cns(
    carriers: Sequence[CarrierConfig],
    providers: Sequence[ProviderConfig],
    admin: AdminConfig,
    portal: PortalConfig,
) -> None:
    # One certificate, one role: a CN shared by two callers would let one
    # act as the other.
    owners: dict[str, str] = {}
    named = [
        *((c.cn, f"carrier {c.id!r}") for c in carriers),
        *((p.cn, f"provider {p.id!r}") for p in providers),
        *((cn, "admin") for cn in admin.client_cns),
        *((cn, "the portal") for cn in portal.client_cns),
    ]
    for cn, owner in named:
        if cn in owners:
            raise ConfigError(
                f"client certificate CN {cn!r} is claimed by {owners[cn]} and by {owner}: "
                "set client_cn so that each caller has its own"
            )
        owners[cn] = owner


def _checked_id(t: _Table) -> str:
    value: str = t.string("id")
    if not _ID.fullmatch(value):
        raise ConfigError(f"{t.where('id')} must be {_ID_TEXT}")
    return value


def _unique(where: str, ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise ConfigError(f"{where}: {value!r} appears twice")
        seen.add(value)


_TABLES = (
    "gateway",
    "keys",
    "identity",
    "upstream_tls",
    "fanout",
    "carriers",
    "providers",
    "store",
    "delivery",
    "notices",
    "check_recycled",
    "admin",
    "portal",
    "metrics",
    "tracing",
    "routing",
    "enrollment",
    "registry",
)
