"""Test an adapter: without a network, in-process over gRPC, with test warrants.

Without a network, through the same checks and conversions as a real call::

    env = ProviderEnvironment(provider)
    assert await env.list_bindings("+8613800138000") == [...]
    result = await env.unbind("+8613800138000", "u1")

    with pytest.raises(CallError) as err:
        await env.list_bindings("+86 138")
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT

Over a real gRPC server on 127.0.0.1 with a fresh gateway key::

    async with serve_in_process(provider) as running:
        stub = running.provider_stub()
        await stub.ListBindings(ListBindingsRequest(msisdn=n), metadata=running.metadata(n))
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from onecert.sdk._carrier import Carrier, CarrierCore
from onecert.sdk._channel import open_channel
from onecert.sdk._convert import (
    UNBIND_REASONS,
    binding_from_pb,
    tenure_from_pb,
    unbind_result_from_pb,
)
from onecert.sdk._core import CallError
from onecert.sdk._idempotency import IdempotencyStore, MemoryIdempotencyStore
from onecert.sdk._keys import KeySet, SigningKey, parse_jwks
from onecert.sdk._provider import Provider, ProviderCore
from onecert.sdk._server import Server
from onecert.sdk._set import SetIssuer
from onecert.sdk._types import (
    Binding,
    Tenure,
    UnbindReason,
    UnbindRequest,
    UnbindResult,
    coerce_enum,
)
from onecert.sdk._warrant import WarrantIssuer
from onecert.v1 import provider_pb2, provider_pb2_grpc, registry_pb2, registry_pb2_grpc

if TYPE_CHECKING:
    from grpc_health.v1.health_pb2_grpc import HealthStub

    from onecert.v1.provider_pb2_grpc import BindingProviderAsyncStub
    from onecert.v1.registry_pb2_grpc import NumberRegistryAsyncStub

__all__ = [
    "CallError",
    "CarrierEnvironment",
    "FakeGateway",
    "InProcessServer",
    "ProviderEnvironment",
    "empty_provider",
    "serve_in_process",
]

Metadata = tuple[tuple[str, str], ...]


def empty_provider(
    provider_id: str, *, name: str = "", category: str = "other", **options: Any
) -> Provider:
    """A provider that holds no account: it lists nothing and rejects every unbind.

    For tests and benchmarks where a provider only has to exist (to join, be
    routed, receive notices). ``options`` go to :class:`~onecert.sdk.Provider`
    (``list_numbers``, ``snapshot_interval``, ...); ``name`` defaults to the id.
    """
    provider = Provider(
        provider_id=provider_id, name=name or provider_id, category=category, **options
    )

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        return []

    @provider.unbind
    async def unbind(request: UnbindRequest) -> UnbindResult:
        return UnbindResult.rejected("no such account")

    return provider


class FakeGateway:
    """The gateway's signing side for tests: a fresh key, warrants and notices.

    Args:
        audience: the provider or carrier id warrants are addressed to by default.
        issuer: the gateway id (``iss``).
        key: the signing key; a fresh EdDSA key when omitted.
    """

    def __init__(
        self,
        *,
        audience: str = "",
        issuer: str = "onecert-gateway",
        key: SigningKey | None = None,
    ) -> None:
        self.audience = audience
        self.issuer = issuer
        self.key = key or SigningKey.generate("EdDSA")
        self._warrants = WarrantIssuer(key=self.key, issuer=issuer)
        self._sets = SetIssuer(key=self.key, issuer=issuer)

    @property
    def keys(self) -> KeySet:
        """The public key set an adapter under test trusts (``gateway_keys=``)."""
        return parse_jwks(self.key.jwks())

    def write_jwks(self, path: str | Path) -> Path:
        """Write the public JWKS (for ``--gateway-jwks``) and return its path."""
        path = Path(path)
        path.write_text(json.dumps(self.key.jwks()))
        return path

    def warrant(
        self,
        target: str,
        *,
        purpose: str = "lookup",
        audience: str | None = None,
        query_id: str = "",
        lifetime: float | None = None,
        now: float | None = None,
    ) -> str:
        """A signed warrant for a call about ``target`` (an msisdn or an idn)."""
        return self._warrants.issue(
            audience=self.audience if audience is None else audience,
            target=target,
            purpose=purpose,
            query_id=query_id,
            lifetime=lifetime,
            now=now,
        )

    def metadata(
        self, target: str, *, purpose: str = "lookup", audience: str | None = None
    ) -> Metadata:
        """gRPC metadata carrying a fresh warrant: ``metadata=gateway.metadata(n)``."""
        token = self.warrant(target, purpose=purpose, audience=audience)
        return (("authorization", f"Bearer {token}"),)

    def recycled_notice(
        self,
        msisdn: str,
        *,
        recycled_at: datetime | None = None,
        deadline: datetime | None = None,
        jti: str | None = None,
        audience: str | None = None,
    ) -> str:
        """A signed recycled-number notice (Security Event Token)."""
        return self._sets.issue(
            audience=self.audience if audience is None else audience,
            msisdn=msisdn,
            recycled_at=recycled_at or datetime.now(UTC),
            deadline=deadline,
            jti=jti,
        )


class ProviderEnvironment:
    """Calls a provider's functions as the gateway would, with no network.

    Every call goes through the same checks as over gRPC (number format,
    warrant, idempotency, what your function returns); a refusal raises
    :class:`CallError` with the status the gateway would see.

    Args:
        provider: the provider under test.
        gateway: who signs warrants; a fresh :class:`FakeGateway` by default.
        idempotency: the answer store; a fresh memory store by default.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        gateway: FakeGateway | None = None,
        idempotency: IdempotencyStore | None = None,
    ) -> None:
        self.gateway = gateway or FakeGateway(audience=provider.id)
        self.store = idempotency if idempotency is not None else MemoryIdempotencyStore()
        self._core = ProviderCore(
            provider, keys=self.gateway.keys, issuer=self.gateway.issuer, store=self.store
        )

    async def list_bindings(
        self, msisdn: str, *, warrant: str | None = None, time_limit: float | None = 10.0
    ) -> list[Binding]:
        """What ``ListBindings(msisdn)`` answers.

        Args:
            msisdn: the number asked about.
            warrant: the token to send; a valid one by default, "" for none.
            time_limit: seconds the gateway gives the call (None: no deadline).
        """
        token = self.gateway.warrant(msisdn) if warrant is None else warrant
        response = await self._core.list_bindings(
            provider_pb2.ListBindingsRequest(msisdn=msisdn), token=token, remaining=time_limit
        )
        return [binding_from_pb(b) for b in response.bindings]

    async def unbind(
        self,
        msisdn: str,
        account_ref: str,
        *,
        request_id: str | None = None,
        reason: UnbindReason | str = UnbindReason.OWNER_REQUEST,
        warrant: str | None = None,
        time_limit: float | None = 10.0,
    ) -> UnbindResult:
        """What ``Unbind`` answers; a random ``request_id`` unless given."""
        token = self.gateway.warrant(msisdn, purpose="unbind") if warrant is None else warrant
        request = provider_pb2.UnbindRequest(
            request_id=request_id or secrets.token_hex(8),
            msisdn=msisdn,
            account_ref=account_ref,
            reason=UNBIND_REASONS.to_pb(coerce_enum(UnbindReason, reason, "reason")),
        )
        response = await self._core.unbind(request, token=token, remaining=time_limit)
        return unbind_result_from_pb(response)

    async def notify_recycled(
        self,
        msisdn: str,
        *,
        recycled_at: datetime | None = None,
        deadline: datetime | None = None,
        jti: str | None = None,
        token: str | None = None,
        time_limit: float | None = 10.0,
    ) -> int | None:
        """Deliver a recycled-number notice; the bindings removed, or None if not acted.

        ``token`` replaces the notice the fake gateway would sign.
        """
        set_token = token or self.gateway.recycled_notice(
            msisdn, recycled_at=recycled_at, deadline=deadline, jti=jti
        )
        response = await self._core.receive_event(
            provider_pb2.ReceiveEventRequest(set=set_token), remaining=time_limit
        )
        return response.bindings_removed if response.acted else None


class CarrierEnvironment:
    """Calls a carrier's ``list_numbers`` as the gateway would, with no network."""

    def __init__(self, carrier: Carrier, *, gateway: FakeGateway | None = None) -> None:
        self.gateway = gateway or FakeGateway(audience=carrier.id)
        self._core = CarrierCore(carrier, keys=self.gateway.keys, issuer=self.gateway.issuer)

    async def list_numbers(
        self, idn: str, *, warrant: str | None = None, time_limit: float | None = 10.0
    ) -> list[Tenure]:
        """What ``ListNumbers(idn)`` answers; raises :class:`CallError` on refusal."""
        token = self.gateway.warrant(idn) if warrant is None else warrant
        response = await self._core.list_numbers(
            registry_pb2.ListNumbersRequest(idn=idn), token=token, remaining=time_limit
        )
        return [tenure_from_pb(t) for t in response.tenures]


@dataclass(frozen=True)
class InProcessServer:
    """A running adapter server, the gateway that may call it, and a channel to it."""

    server: Server
    gateway: FakeGateway
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return self.server.address

    def metadata(self, target: str, *, purpose: str = "lookup") -> Metadata:
        """Metadata with a fresh warrant for ``target``."""
        return self.gateway.metadata(target, purpose=purpose)

    def provider_stub(self) -> BindingProviderAsyncStub:
        return provider_pb2_grpc.BindingProviderStub(self.channel)

    def registry_stub(self) -> NumberRegistryAsyncStub:
        return registry_pb2_grpc.NumberRegistryStub(self.channel)

    def health_stub(self) -> HealthStub:
        stub: HealthStub = health_pb2_grpc.HealthStub(self.channel)
        return stub


@asynccontextmanager
async def serve_in_process(
    adapter: Provider | Carrier,
    *,
    gateway: FakeGateway | None = None,
    idempotency: IdempotencyStore | str | Path | None = None,
) -> AsyncIterator[InProcessServer]:
    """Serve ``adapter`` on 127.0.0.1 (plaintext, a free port) while the block runs.

    Yields an :class:`InProcessServer` with a channel to it and the
    :class:`FakeGateway` whose key it trusts.
    """
    gateway = gateway or FakeGateway(audience=adapter.id)
    server = Server(
        adapter,
        gateway_keys=gateway.keys,
        gateway_issuer=gateway.issuer,
        listen="127.0.0.1:0",
        insecure=True,
        idempotency=idempotency,
        grace=1.0,
    )
    async with server, open_channel(server.address, tls=None) as channel:
        yield InProcessServer(server=server, gateway=gateway, channel=channel)
