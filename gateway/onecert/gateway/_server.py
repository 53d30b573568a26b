"""The gateway's gRPC server: wiring, health, reflection and shutdown."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from onecert.gateway._audit import Auditor, derive_audit_key, load_audit_key
from onecert.gateway._boundary import RPC, CallBoundary
from onecert.gateway._channels import ChannelPool
from onecert.gateway._config import ConfigError, GatewayConfig, check_transport
from onecert.gateway._delivery import DeliveryWorkers
from onecert.gateway._describe import DescribeCheck
from onecert.gateway._directory import ProviderDirectory
from onecert.gateway._fanout import FanOut, Router
from onecert.gateway._handles import HandleSealer, load_handle_key
from onecert.gateway._identity import (
    AssertionVerifier,
    MemoryReplayCache,
    ReplayCache,
    ReplayCacheUnavailableError,
)
from onecert.gateway._listen import bind_port
from onecert.gateway._lookup import QUERY_ID, LookupService
from onecert.gateway._metrics import Telemetry
from onecert.gateway._observers import NO_OBSERVER, Observer
from onecert.gateway._policy import Policy, current_caller
from onecert.gateway._principals import Principal, PrincipalResolver
from onecert.gateway._recycled import RecycledNumbers
from onecert.gateway._refusal import Refusal
from onecert.gateway._registry import LiveRegistry, RegistryChange
from onecert.gateway._registry_admin import RegistryAdminService
from onecert.gateway._unbind import UnbindService
from onecert.gateway.enrollment import Enrollment, EnrollmentService
from onecert.gateway.routing import RoutingService
from onecert.gateway.routing._rotation import configured_keyring, filter_sealer
from onecert.gateway.store import Store, StoreReplayCache
from onecert.sdk._keys import SigningKey, load_jwks
from onecert.sdk._lifecycle import AsyncResource
from onecert.sdk._tls import ServerTLS
from onecert.sdk._warrant import WarrantIssuer
from onecert.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["BackgroundWorker", "GatewayServer", "serve"]

_log = structlog.get_logger("onecert.gateway.server")

# Metadata carries the citizen's assertion (a few hundred bytes); see start().
_MAX_METADATA_BYTES = 16 * 1024

GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name


class BackgroundWorker(Protocol):
    """Work the gateway runs beside its RPCs (ticket delivery, notice delivery).

    Started once the store is migrated, after the server listens; stopped
    after the server has stopped taking calls and before channels and the
    store close. ``stop`` must finish or release the work in hand.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _FailClosedReplay:
    """A store-backed replay cache whose database failures refuse the assertion.

    Raised as "unavailable", the verifier answers UNAVAILABLE (the database,
    not the gateway's capacity, is the trouble) instead of letting an
    unknown error through, and never accepts an assertion it could not
    remember.
    """

    def __init__(self, inner: StoreReplayCache) -> None:
        self._inner = inner

    async def remember(self, jti: str, expires_at: float) -> bool:
        try:
            return await self._inner.remember(jti, expires_at)
        except Exception as exc:
            _log.error("replay_cache.unavailable", error=type(exc).__name__)
            raise ReplayCacheUnavailableError("the replay cache is unavailable") from exc


_Call = Callable[["_GatewayServicer", Any, Principal], Awaitable[Any]]


def _delegate(call: _Call) -> Callable[..., Awaitable[Any]]:
    """A unary RPC's handler whose whole work is ``call(servicer, request, caller)``."""

    async def handler(
        self: _GatewayServicer, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        return await call(self, request, current_caller())

    return handler


class _GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """The ``Gateway`` service: each RPC hands the caller and the request's values to
    the service that serves it (most in one line each, by :func:`_delegate`).

    The boundary (:class:`~onecert.gateway._boundary.CallBoundary`) has already
    checked the access policy and named the caller; it answers the services'
    refusals. Nothing here decides anything.
    """

    def __init__(
        self,
        lookup: LookupService,
        *,
        unbind: UnbindService | None = None,
        recycled: RecycledNumbers | None = None,
        routing: RoutingService | None = None,
        routing_off: bool = False,
        registry: RegistryAdminService | None = None,
        telemetry: Telemetry | None = None,
        enrollment: EnrollmentService | None = None,
    ) -> None:
        self._enrollment = enrollment
        self._lookup = lookup
        self._registry = registry
        self._unbind = unbind
        self._recycled = recycled
        self._routing = routing
        self._routing_off = routing_off
        self._telemetry = telemetry

    def _routing_service(self) -> RoutingService:
        if self._routing is None and self._routing_off:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                "routing is off at this gateway ([routing] enabled = false): "
                "every provider is asked about every number",
                reason="routing_off",
            )
        return _stateful(self._routing)

    async def Lookup(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.LookupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[gateway_pb2.LookupResponse]:
        # An async generator function itself: grpc.aio tells streaming
        # handlers apart by inspecting the function.
        metadata = context.invocation_metadata() or ()
        responses = self._lookup.lookup(
            metadata=metadata,
            client_request_id=request.client_request_id,
            time_remaining=context.time_remaining(),
            group_routed_out=request.group_routed_out,
            batch_results=request.batch_results,
        )
        if self._telemetry is not None:
            responses = self._telemetry.observe_lookup(
                responses, query_id=QUERY_ID.get(), metadata=metadata
            )
        async for response in responses:
            yield response

    async def Unbind(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.GatewayUnbindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.GatewayUnbindResponse:
        metadata = context.invocation_metadata() or ()
        return await _stateful(self._unbind).unbind(request.handle, metadata=metadata)

    async def GetUnbind(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.GetUnbindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.GetUnbindResponse:
        metadata = context.invocation_metadata() or ()
        return await _stateful(self._unbind).get_unbind(request.ticket_id, metadata=metadata)

    async def PollEvents(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.PollEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.PollEventsResponse:
        notices = _stateful(self._recycled).notices
        return await notices.poll_events(
            request, current_caller(), time_remaining=context.time_remaining()
        )

    async def GetRoutingKey(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.GetRoutingKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.GetRoutingKeyResponse:
        return self._routing_service().routing_key(current_caller())

    def _enrollment_service(self) -> EnrollmentService:
        if self._enrollment is None:
            raise Refusal(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{RPC.get()} needs self-service joining: this gateway has no [enrollment]",
                reason="no_enrollment",
            )
        return self._enrollment

    # The unary RPCs whose whole work is one service call with the request and the
    # caller the policy named, one line each: RPC = its service call. A missing service
    # (no store, routing off, no enrollment) is refused for the RPC being served.
    ReportNumberEvent = _delegate(
        lambda s, r, c: _stateful(s._recycled).notices.report_number_event(r, c)
    )
    CheckRecycled = _delegate(lambda s, r, c: _stateful(s._recycled).checks.check_recycled(r, c))
    ConfirmEventAction = _delegate(
        lambda s, r, c: _stateful(s._recycled).notices.confirm_event_action(r, c)
    )
    PublishFilter = _delegate(lambda s, r, c: s._routing_service().publish(r, c))
    GetComplianceReport = _delegate(
        lambda s, r, c: _stateful(s._recycled).compliance.get_report(r, c)
    )
    InviteProvider = _delegate(lambda s, r, c: _stateful(s._registry).invite(r, c))
    ListProviders = _delegate(lambda s, r, c: _stateful(s._registry).list_providers(r, c))
    GetProvider = _delegate(lambda s, r, c: _stateful(s._registry).get_provider(r, c))
    SuspendProvider = _delegate(lambda s, r, c: _stateful(s._registry).suspend(r, c))
    ResumeProvider = _delegate(lambda s, r, c: _stateful(s._registry).resume(r, c))
    RemoveProvider = _delegate(lambda s, r, c: _stateful(s._registry).remove(r, c))
    GetEnrollmentStatus = _delegate(lambda s, r, c: s._enrollment_service().status(c))
    RequestActivation = _delegate(lambda s, r, c: s._enrollment_service().request_activation(c))
    RenewCertificate = _delegate(lambda s, r, c: s._enrollment_service().renew(r, c))


_T = TypeVar("_T")


def _stateful(service: _T | None) -> _T:
    """``service``, or UNIMPLEMENTED for the RPC being served when there is no store."""
    if service is None:
        raise Refusal(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{RPC.get()} needs durable state: this gateway has no [store]",
            reason="no_store",
        )
    return service


def _auditor(config: GatewayConfig, store: Store, handle_key: bytes) -> Auditor:
    if config.keys.audit_key is None:
        return Auditor(store, key=derive_audit_key(handle_key))
    return Auditor(store, key=load_audit_key(config.keys.audit_key))


def _state(
    config: GatewayConfig,
    store: Store | None,
    replay_cache: ReplayCache | None,
    clock: Callable[[], datetime] | None,
) -> tuple[Store | None, ReplayCache]:
    """The store (opened from ``[store]`` unless given) and the replay cache over it."""
    if store is None and config.store is not None:
        # Replicas judge leases and expiry on the database's clock, unless
        # a test runs the gateway on a clock of its own.
        store = Store.open(
            config.store.url,
            schema=config.store.schema,
            database_clock=clock is None,
            timeout_s=config.store.timeout_s,
        )
    if replay_cache is None:
        replay_cache = (
            MemoryReplayCache()
            if store is None
            else _FailClosedReplay(StoreReplayCache(store.replay))
        )
    return store, replay_cache


def _listen_credentials(config: GatewayConfig) -> grpc.ServerCredentials | None:
    """The gateway's own TLS (clients must present a certificate with a client CA)."""
    tls = config.tls
    return None if tls is None else tls.server_tls().credentials()


def _verifier(config: GatewayConfig, replay: ReplayCache) -> AssertionVerifier:
    identity = config.identity
    return AssertionVerifier(
        issuers={i.issuer: load_jwks(i.jwks) for i in identity.issuers},
        audience=identity.audience,
        assurance_levels=identity.assurance_levels,
        required_assurance=identity.required_assurance,
        leeway=identity.leeway_s,
        max_lifetime=identity.max_lifetime_s,
        replay=replay,
    )


class GatewayServer(AsyncResource):
    """The gateway, ready to run in this event loop.

    Use it as ``async with GatewayServer(config) as server:`` (``server.port``
    is the bound port, handy with ``listen = "127.0.0.1:0"``), or call
    :meth:`start` and :meth:`stop`. Keys and certificates are read when it is
    constructed, so configuration mistakes surface before anything listens.

    Args:
        config: the validated configuration; plaintext is refused unless
            ``config.dev_plaintext``.
        router: chooses the providers to ask per number (all by default).
        replay_cache: where assertion ids are remembered; by default in the
            store when there is one (shared by replicas), else in memory.
        store: the durable state to use instead of opening ``config.store``
            (the caller then owns it: it is neither migrated nor closed here).
        clock: the current time (aware) for notice deadlines, receipts and
            the compliance report; the system clock by default (tests pass
            their own).
        span_exporter: where spans go instead of ``tracing.exporter``, when
            ``tracing.enabled`` (tests use an in-memory exporter).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        router: Router | None = None,
        replay_cache: ReplayCache | None = None,
        store: Store | None = None,
        clock: Callable[[], datetime] | None = None,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        check_transport(config)
        self.config = config
        self._owns_store = store is None and config.store is not None
        store, replay_cache = _state(config, store, replay_cache, clock)
        self.store: Store | None = store
        self._verifier = _verifier(config, replay_cache)
        self._warrants = WarrantIssuer(
            key=SigningKey.load(config.keys.warrant_key),
            issuer=config.id,
            lifetime=config.keys.warrant_lifetime_s,
        )
        handle_key = load_handle_key(config.keys.handle_key)
        self._sealer = HandleSealer(handle_key)
        self.auditor = None if store is None else _auditor(config, store, handle_key)
        self._credentials = _listen_credentials(config)
        self._channels = ChannelPool(
            upstream_tls=config.upstream_tls, max_message_bytes=config.max_message_bytes
        )
        # Metrics ([metrics] listen) and tracing ([tracing] enabled); None when both are off.
        self.telemetry = Telemetry.from_config(config, span_exporter=span_exporter)
        observer: Observer = NO_OBSERVER if self.telemetry is None else self.telemetry.observer
        # The providers called now: the configuration's until the registry is loaded.
        self.directory = ProviderDirectory(config.providers)
        self.fanout = FanOut(
            carriers=config.carriers,
            providers=config.providers,
            fanout=config.fanout,
            channels=self._channels,
            warrants=self._warrants,
            router=router,
            observer=observer,
            max_bindings=config.fanout.max_bindings_per_answer,
        )
        self._principals = PrincipalResolver.from_config(config)
        self._policy = Policy(self._principals)
        self.lookup = self._build_lookup(observer)
        # Background work, started after the store is migrated; each part of
        # the gateway that needs some appends its worker here.
        self._workers: list[BackgroundWorker] = []
        if self.telemetry is not None:
            # First in, last out: metrics are served while the others stop.
            self._workers.append(self.telemetry)
        self.unbind: UnbindService | None = None
        self.delivery: DeliveryWorkers | None = None
        self.recycled: RecycledNumbers | None = None
        self.routing: RoutingService | None = None
        self.enrollment = self._build_enrollment(store, clock)
        if store is not None and self.auditor is not None:
            self._build_stateful(store, self.auditor, observer, clock)
            self._wire_routing(store, handle_key, observer)
        # Ask every provider who it is; stop asking one that claims another id.
        self.describe_check = DescribeCheck(
            channels=self._channels, providers=config.providers, fanout=self.fanout
        )
        self._workers.append(self.describe_check)
        self._build_registry(store)
        if self.telemetry is not None and self.telemetry.metrics is not None:
            self.telemetry.metrics.watch(fanout=self.fanout, lookup=self.lookup, store=store)
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._port = 0
        self._stopped = asyncio.Event()

    def _build_lookup(self, observer: Observer) -> LookupService:
        config = self.config
        return LookupService(
            verifier=self._verifier,
            fanout=self.fanout,
            sealer=self._sealer,
            handle_ttl=config.keys.handle_ttl_s,
            lookup_deadline=config.lookup_deadline_s,
            summary_margin=config.fanout.summary_margin_s,
            batch_window=config.fanout.batch_window_s,
            max_concurrent_lookups=config.max_concurrent_lookups,
            auditor=self.auditor,
            observer=observer,
        )

    def _build_stateful(
        self,
        store: Store,
        auditor: Auditor,
        observer: Observer,
        clock: Callable[[], datetime] | None,
    ) -> None:
        """Unbind tickets and their delivery; notices, CheckRecycled and compliance."""
        config = self.config
        providers = self.directory
        self.delivery = DeliveryWorkers(
            store=store,
            providers=providers,
            channels=self._channels,
            warrants=self._warrants,
            sealer=self._sealer,
            auditor=auditor,
            config=config.delivery,
            observer=observer,
        )
        self._workers.append(self.delivery)
        self.unbind = UnbindService(
            verifier=self._verifier,
            sealer=self._sealer,
            store=store,
            auditor=auditor,
            providers=providers,
            ticket_ttl=config.delivery.ticket_ttl_s,
            wake=self.delivery.wake,
        )
        # Recycled-number notices (and their push worker), CheckRecycled, compliance.
        self.recycled = RecycledNumbers.build(
            config,
            store=store,
            auditor=auditor,
            channels=self._channels,
            providers=self.directory,
            clock=clock,
        )
        self.recycled.pusher.observer = observer
        self._workers.append(self.recycled.pusher)

    def _build_enrollment(
        self, store: Store | None, clock: Callable[[], datetime] | None
    ) -> Enrollment | None:
        """The join listener, the federation CA and the gate, with ``[enrollment]``."""
        config = self.config
        if config.enrollment is None:
            return None
        if store is None:
            raise ConfigError("[enrollment] needs [store]: the registry lives in the database")
        tls = config.tls
        join_credentials = None if tls is None else ServerTLS(tls.cert, tls.key).credentials()
        enrollment = Enrollment(
            config,
            registry=store.registry,
            warrant_key=self._warrants.key,
            credentials=join_credentials,
            auditor=self.auditor,
            gateway_address=self._advertised_address,
            reserved_ids=self._principals.reserved_cns(),
            after_change=self._registry_changed,
            clock=clock,
        )
        self._workers.append(enrollment)
        return enrollment

    async def _registry_changed(self) -> None:
        """Apply a join or an activation on this replica at once (others follow the version)."""
        if self.registry is not None:
            await self.registry.refresh()

    def _advertised_address(self) -> str:
        """Where joined providers reach ``gateway.listen`` (see ``enrollment.gateway_address``)."""
        enrollment = self.config.enrollment
        if enrollment is not None and enrollment.gateway_address:
            return enrollment.gateway_address
        return f":{self._port}"

    def _wire_routing(self, store: Store, handle_key: bytes, observer: Observer) -> None:
        """With ``[routing] enabled``: the routing service, asked by the fan-out and the
        notices, and its worker; without, none."""
        if not self.config.routing.enabled:
            return
        self.routing = self._build_routing(store, handle_key)
        self.routing.observer = observer
        self.fanout.routing = self.routing
        if self.recycled is not None:
            # Notices go where lookups go: to who may hold the number,
            # and to who shows it does later, before the deadline.
            self.recycled.notices.routing = self.routing
            self.routing.additions_listeners.append(self.recycled.notices.route_late)
        self._workers.append(self.routing)

    def _build_routing(self, store: Store, handle_key: bytes) -> RoutingService:
        """Filters published by providers, shared through the store, asked by the fan-out."""
        config = self.config
        return RoutingService(
            # The store's keyring, once an operator rotated, replaces it at start.
            keyring=configured_keyring(config, handle_key),
            store=store,
            sealer=filter_sealer(config, handle_key),
            providers=[p.id for p in config.providers],
            config=config.routing,
        )

    def _build_registry(self, store: Store | None) -> None:
        """The live registry (seeded from the configuration) and its admin RPCs; with no
        store, none (the configuration's providers are the whole list)."""
        self.registry: LiveRegistry | None = None
        self.registry_admin: RegistryAdminService | None = None
        if store is None:
            return
        config = self.config
        self.registry = LiveRegistry(
            store=store,
            config=config,
            directory=self.directory,
            poll_interval_s=config.registry.poll_interval_s,
        )
        self.registry.subscribe(self._follow_registry)
        self.registry_admin = RegistryAdminService(
            store=store,
            config=config.registry,
            reserved_cns=self._principals.reserved_cns,
            refresh=self.registry.refresh,
        )
        self._workers.append(self.registry)

    def _follow_registry(self, change: RegistryChange) -> None:
        """Apply a registry version to every part that keeps state per provider
        (the parts that read :attr:`directory` see it already)."""
        self.fanout.apply_providers(change.providers)
        self._principals.apply_registry(change.snapshot)
        if self.routing is not None:
            self.routing.set_providers(p.id for p in change.providers)
        self.describe_check.providers_changed(change.providers, change.added)
        if self.telemetry is not None and self.telemetry.metrics is not None:
            self.telemetry.metrics.add_providers([p.id for p in change.added])
        keep = {(p.address, p.plaintext) for p in change.providers if p.address is not None}
        keep.update((c.address, c.plaintext) for c in self.config.carriers)
        # Calls in flight to a provider that left get its longest deadline to end.
        config = self.config
        drain = max(
            config.fanout.provider_deadline_s,
            config.delivery.unbind_deadline_s,
            config.notices.push_deadline_s,
            *(p.deadline_s or 0.0 for p in change.providers),
        )
        self._channels.retire(keep, grace=drain)

    @property
    def port(self) -> int:
        """The port the server listens on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        return self._port

    @property
    def metrics_port(self) -> int | None:
        """The port of the Prometheus endpoint (after :meth:`start`; None without metrics)."""
        return None if self.telemetry is None else self.telemetry.metrics_port

    @property
    def tls(self) -> bool:
        """Whether callers must speak TLS to this gateway."""
        return self._credentials is not None

    async def start(self) -> None:
        """Bind, start serving and report SERVING."""
        if self._server is not None:
            raise RuntimeError("the gateway is already started")
        if self.store is not None and self.config.store is not None:
            if self.config.store.auto_migrate:
                await self.store.upgrade()
            elif await self.store.schema_revision() != Store.head_revision():
                raise ConfigError(
                    "the database schema is not up to date: run `onecert db upgrade` "
                    "(or set store.auto_migrate = true)"
                )
        if self.registry is not None:
            # Seeded and applied before the first call is served.
            await self.registry.load()
        limit = self.config.max_message_bytes
        server = grpc.aio.server(
            interceptors=[CallBoundary(self._policy, auditor=self.auditor)],
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                # gRPC's default metadata limit is soft (8 KiB, enforced at
                # random above it): a firm, larger one makes an oversized
                # token always reach the identity check, which refuses it.
                ("grpc.max_metadata_size", _MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", _MAX_METADATA_BYTES),
                # gRPC shares ports by default (SO_REUSEPORT): a second gateway
                # on a port in use would start and take half the calls.
                ("grpc.so_reuseport", 1 if self.config.reuse_port else 0),
            ],
        )
        gateway_pb2_grpc.add_GatewayServicer_to_server(
            _GatewayServicer(
                self.lookup,
                unbind=self.unbind,
                recycled=self.recycled,
                routing=self.routing,
                routing_off=not self.config.routing.enabled,
                registry=self.registry_admin,
                telemetry=self.telemetry,
                enrollment=None if self.enrollment is None else self.enrollment.service,
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (GATEWAY_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = self.config.listen
        port = bind_port(
            server, address, credentials=self._credentials, reuse_port=self.config.reuse_port
        )
        await server.start()
        self._server, self._port = server, port
        started: list[BackgroundWorker] = []
        try:
            for worker in self._workers:
                await worker.start()
                started.append(worker)
        except BaseException:
            for worker in reversed(started):
                await worker.stop()
            await server.stop(None)
            self._server = None
            raise
        for service in ("", GATEWAY_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        _log.info(
            "gateway.listening",
            address=address,
            port=port,
            tls=self.tls,
            mutual_tls=self.config.tls is not None and self.config.tls.client_ca is not None,
            dev_plaintext=self.config.dev_plaintext,
            carriers=len(self.config.carriers),
            providers=len(self.directory),
        )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, give running ones ``grace``
        seconds (the configured grace period by default), then close channels."""
        server = self._server
        if server is None or self._stopped.is_set():
            return
        grace = self.config.grace_period_s if grace is None else grace
        _log.info("gateway.stopping", grace_s=grace, active_lookups=self.lookup.active_lookups)
        await self._health.enter_graceful_shutdown()
        await server.stop(grace)
        for worker in reversed(self._workers):
            try:
                await worker.stop()
            except Exception:  # noqa: BLE001 - one worker failing to stop must not stop the rest
                _log.exception("gateway.worker_stop_failed", worker=type(worker).__name__)
        if self.auditor is not None:
            await self.auditor.drain()
        await self._channels.close()
        if self.store is not None and self._owns_store:
            await self.store.close()
        self._stopped.set()
        _log.info("gateway.stopped")

    async def wait_stopped(self) -> None:
        """Wait until :meth:`stop` has finished."""
        await self._stopped.wait()

    async def _enter(self) -> None:
        await self.start()

    async def _exit(self) -> None:
        await self.stop()


async def serve(
    config: GatewayConfig, *, ready: Callable[[GatewayServer], None] | None = None
) -> None:
    """Run the gateway until SIGTERM or SIGINT, then shut down gracefully.

    Args:
        config: the validated configuration.
        ready: called once the server listens (e.g. to print the port).
    """
    server = GatewayServer(config)  # reads keys and certificates: fails before listening
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with server:
            # Everything loaded so far (modules, keys, channels, the registry)
            # lives as long as the process: leave it out of the cyclic
            # collector's full passes, which otherwise walk it all and stall
            # the loop for 100 ms and more, mid-lookup.
            gc.freeze()
            if ready is not None:
                ready(server)
            await stop.wait()
            _log.info("gateway.signal", grace_s=config.grace_period_s)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
