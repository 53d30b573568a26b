"""ListProviders in pages (contract A-9): page_size at a time by id, a token that only
continues the list it came from, and everything at once when no page_size is asked."""

from __future__ import annotations

import grpc

from onecert.gateway import GatewayServer
from onecert.gateway.testing import ADMIN_CN
from onecert.sdk.client import AdminGatewayClient, ProviderStatus
from onecert.v1 import gateway_pb2
from tests.registry.registry_support import RegistryWorld, code_of

INVITED = gateway_pb2.PROVIDER_STATUS_INVITED
IDS = ["site-a", "site-b", "site-c", "site-d", "site-e"]


async def _world(world: RegistryWorld) -> GatewayServer:
    gateway = await world.start()
    for provider_id in reversed(IDS):
        await world.invite(gateway, provider_id)
    return gateway


async def test_pages_cover_every_provider_once_by_id(world: RegistryWorld) -> None:
    """page_size 2 over five invited providers: pages of 2, 2 and 1, by id, the last
    without a next_page_token; no page_size: all five in one answer."""
    gateway = await _world(world)
    admin = world.admin(gateway)
    pages: list[list[str]] = []
    request = gateway_pb2.ListProvidersRequest(status=INVITED, page_size=2)
    while True:
        answer = await admin.ListProviders(request, timeout=10)
        pages.append([p.provider_id for p in answer.providers])
        if not answer.next_page_token:
            break
        request.page_token = answer.next_page_token
    assert pages == [IDS[:2], IDS[2:4], IDS[4:]]
    whole = await admin.ListProviders(gateway_pb2.ListProvidersRequest(status=INVITED), timeout=10)
    assert [p.provider_id for p in whole.providers] == IDS
    assert not whole.next_page_token


async def test_a_token_continues_only_its_own_list(world: RegistryWorld) -> None:
    """A token used with another status, a made-up token and a negative page_size are
    INVALID_ARGUMENT."""
    gateway = await _world(world)
    admin = world.admin(gateway)
    first = await admin.ListProviders(
        gateway_pb2.ListProvidersRequest(status=INVITED, page_size=2), timeout=10
    )
    assert first.next_page_token
    requests = [
        gateway_pb2.ListProvidersRequest(page_size=2, page_token=first.next_page_token),
        gateway_pb2.ListProvidersRequest(status=INVITED, page_size=2, page_token="not-a-token"),
        gateway_pb2.ListProvidersRequest(page_size=-1),
    ]
    for request in requests:
        code, _ = await code_of(admin.ListProviders(request, timeout=10))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, request


async def test_the_sdk_client_follows_the_pages(world: RegistryWorld) -> None:
    """AdminGatewayClient.list_providers fetches page after page and returns them all."""
    gateway = await _world(world)
    tls = world.fed.keys.client_tls(ADMIN_CN)
    async with AdminGatewayClient(f"127.0.0.1:{gateway.port}", tls=tls) as client:
        records = await client.list_providers(status=ProviderStatus.INVITED, page_size=2)
    assert [r.provider_id for r in records] == IDS
