"""The conformance gate: a joined provider is activated only if the kit passes against it,
over mutual TLS with the gateway's identity and the federation certificate it got."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from onecert.gateway import GatewayServer
from onecert.gateway._principals import Principal, Role
from onecert.gateway.enrollment.testing import serve_for_join
from onecert.gateway.store import RegistryStatus, Store
from onecert.gateway.testing import Federation
from onecert.sdk import Binding, Provider, UnbindRequest, UnbindResult, join
from onecert.v1 import gateway_pb2
from tests.enrollment.enrollment_support import (
    ID,
    join_forum,
    registry_entry,
    request_activation,
)


def _provider(*, broken: bool = False) -> Provider:
    """A small forum; ``broken`` fails every lookup (as an adapter with a bad query would)."""
    provider = Provider(provider_id=ID, name="Example Forum", category="forum")

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        if broken:
            raise RuntimeError("column phone does not exist")
        return []

    @provider.unbind
    async def unbind(request: UnbindRequest) -> UnbindResult:
        return UnbindResult.rejected("no such account")

    return provider


async def _nobody_at(federation: Federation, tmp_path: Path) -> str:
    """An address where nobody answers any more (a provider served there, then stopped)."""
    server = await serve_for_join(_provider(), federation.keys.dev, tmp_path / "creds")
    await server.shutdown(0)
    return server.address


async def _gate(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path, provider: Provider
) -> gateway_pb2.RequestActivationResponse:
    """Serve ``provider``, invite and join it, run the gate against it, stop it."""
    server = await serve_for_join(provider, federation.keys.dev, tmp_path / "creds")
    try:
        await join_forum(gateway, store, federation, tmp_path / "creds", server.address)
        return await request_activation(gateway)
    finally:
        await server.shutdown(0)


async def test_a_conformant_provider_passes_the_gate_and_becomes_active(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """The kit passes against a joined SDK provider (serving its new certificate, answering
    the gateway's identity only); the registry makes it ACTIVE."""
    answer = await _gate(gateway, federation, store, tmp_path, _provider())
    assert answer.gate.passed, list(answer.gate.failures)
    assert answer.status == gateway_pb2.PROVIDER_STATUS_ACTIVE
    assert "0 failed" in answer.summary
    entry = await registry_entry(store)
    assert entry.status is RegistryStatus.ACTIVE
    assert entry.gate_passed


async def test_a_broken_provider_fails_the_gate_and_its_status_says_why(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """An adapter whose lookups fail stays PENDING; its status lists each failing check
    with its rule and message."""
    answer = await _gate(gateway, federation, store, tmp_path, _provider(broken=True))
    assert not answer.gate.passed
    assert answer.status == gateway_pb2.PROVIDER_STATUS_PENDING
    assert gateway.enrollment is not None
    pending = Principal(Role.PROVIDER, ID, RegistryStatus.PENDING)
    record = (await gateway.enrollment.service.status(pending)).provider
    assert record.status == gateway_pb2.PROVIDER_STATUS_PENDING
    assert not record.last_gate.passed
    unknown = next(f for f in record.last_gate.failures if f.startswith("L-2 "))
    assert unknown.startswith("L-2 list_bindings.unknown_number: ")
    assert "INTERNAL" in unknown


async def test_a_provider_that_does_not_answer_fails_the_gate(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """Nobody at the address: the gate fails (every check), the provider stays PENDING."""
    address = await _nobody_at(federation, tmp_path)
    await join_forum(gateway, store, federation, tmp_path / "c", address)
    answer = await request_activation(gateway)
    assert not answer.gate.passed
    entry = await registry_entry(store)
    assert entry.status is RegistryStatus.PENDING
    assert entry.gate_failures


async def test_a_polling_provider_is_activated_by_its_own_call(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """A provider without an address has no server to test: its activation call, made
    with its certificate, is its gate."""
    await join_forum(gateway, store, federation, tmp_path / "c", address=None)
    answer = await request_activation(gateway)
    assert answer.gate.passed
    assert answer.status == gateway_pb2.PROVIDER_STATUS_ACTIVE


async def test_a_site_that_answers_lookups_but_polls_is_gated_at_its_address(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """Polling for notices does not spare a provider with an address the gate: the kit runs
    against that address (here nobody answers there, so the gate fails)."""
    address = await _nobody_at(federation, tmp_path)
    invitation = await store.registry.invite(
        ID, name="Forum", category="forum", ttl=timedelta(hours=1), actor="admin:x"
    )
    assert gateway.enrollment is not None
    await join(
        gateway=f"127.0.0.1:{gateway.enrollment.port}",
        gateway_ca=federation.keys.dev.ca_cert,
        provider_id=ID,
        token=invitation.token,
        address=address,
        poll=True,
        directory=tmp_path / "c",
    )
    entry = await registry_entry(store)
    assert entry.delivery.value == "poll"
    assert entry.address == address
    answer = await request_activation(gateway)
    assert not answer.gate.passed
    assert answer.status == gateway_pb2.PROVIDER_STATUS_PENDING
