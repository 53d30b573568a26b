"""What the registry tests share: a federation with a carrier and fake providers, the
regulator's stub, each provider's own stub, and ways to watch who is asked."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc

from onecert.gateway import GatewayServer
from onecert.gateway.store import Store
from onecert.gateway.testing import ADMIN_CN, FakeProvider, Federation
from onecert.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, provider_pb2_grpc

__all__ = ["RegistryWorld", "code_of"]


async def code_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    """The status a call ends with (OK when it answers) and its details."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


class RegistryWorld:
    """A carrier, fake providers, gateways on one store, and callers in each role."""

    def __init__(self, fed: Federation, store: Store) -> None:
        self.fed = fed
        self.store = store
        # Providers served but not configured, by id.
        self.addresses: dict[str, str] = {}

    async def start(self, *providers: str) -> GatewayServer:
        """A carrier and ``providers`` (fakes holding the story's bindings), and a gateway."""
        await self.fed.carrier()
        for provider_id in providers:
            await self.provider(provider_id)
        return await self.gateway()

    async def provider(self, provider_id: str, *, configured: bool = True) -> FakeProvider:
        """A fake provider with the story's bindings, in the configuration unless told."""
        bindings = {
            self.fed.CURRENT: [self.fed.binding(f"{provider_id}-1", "xiaoyu", self.fed.at(2021, 2))]
        }
        if configured:
            return await self.fed.provider(provider_id, bindings)
        fake = FakeProvider(provider_id, self.fed.keys, bindings)
        add = provider_pb2_grpc.add_BindingProviderServicer_to_server
        self.addresses[provider_id] = await self.fed.serve(add, fake)
        return fake

    async def gateway(self, **overrides: Any) -> GatewayServer:
        """A gateway on the shared store."""
        return await self.fed.gateway(
            self.fed.config(**overrides), server_options={"store": self.store}
        )

    def admin(self, gateway: GatewayServer) -> gateway_pb2_grpc.GatewayAsyncStub:
        """The regulator's stub (its client certificate)."""
        return self.fed.stub(gateway, client=ADMIN_CN)

    def as_provider(
        self, gateway: GatewayServer, provider_id: str
    ) -> gateway_pb2_grpc.GatewayAsyncStub:
        """A stub carrying ``provider_id``'s own client certificate."""
        return self.fed.stub(gateway, client=provider_id)

    async def asked(self, gateway: GatewayServer) -> set[str]:
        """The providers one lookup asked (answered or not)."""
        messages = await self.fed.lookup(gateway)
        return {r.provider_id for r in self.fed.results(messages)}

    async def invite(
        self, gateway: GatewayServer, provider_id: str, **fields: Any
    ) -> gateway_pb2.InviteProviderResponse:
        request = gateway_pb2.InviteProviderRequest(
            provider_id=provider_id,
            name=fields.get("name", provider_id.title()),
            category=fields.get("category", common_pb2.PROVIDER_CATEGORY_FORUM),
        )
        response: gateway_pb2.InviteProviderResponse = await self.admin(gateway).InviteProvider(
            request, timeout=10
        )
        return response

    async def enroll(
        self, gateway: GatewayServer, provider_id: str, address: str | None, *, delivery: str
    ) -> None:
        """Invite, join with the token and pass the gate, as the enrollment flow will."""
        invitation = await self.invite(gateway, provider_id)
        result = await self.store.registry.redeem_token(
            provider_id,
            invitation.enrollment_token,
            address=address,
            delivery=delivery,
            plaintext=not self.fed.tls,
        )
        assert result.entry is not None, result.outcome
        await self.store.registry.record_gate(provider_id, passed=True)
