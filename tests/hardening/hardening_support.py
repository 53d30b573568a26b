"""Helpers of the hardening tests: the harness federation with a SQLite store and
the story's data at every fake, the dev CA with bad client certificates, and an
attacker's key server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from onecert.gateway import GatewayServer
from onecert.gateway._config import FanoutConfig, GatewayConfig, StoreConfig
from onecert.gateway._principals import DEV_PRINCIPAL_HEADER
from onecert.gateway.store._models import (
    audit_log,
    deliveries,
    number_events,
    replay_cache,
    unbind_tickets,
)
from onecert.gateway.testing import (
    CITIZEN_SUB,
    CURRENT,
    FORMER,
    IDN,
    OTHER_IDN,
    OTHER_NUMBER,
    FakeProvider,
    Federation,
    at,
    binding,
)
from onecert.sdk._keys import SigningKey

# One certificate builder for the dev CA and the tests' bad certificates.
from onecert.sdk.devkeys import DevKeys
from onecert.v1 import gateway_pb2, gateway_pb2_grpc, provider_pb2

# Display names that must never reach the citizen: a previous holder's
# account on her current number, and the next holder's on her former one.
PREVIOUS_HOLDER_NAME = "gaojun_1987"
NEXT_HOLDER_NAME = "zhoupeng_runs"


def story_bindings(prefix: str) -> dict[str, list[provider_pb2.Binding]]:
    """One left-behind account, one of hers and one of a previous holder's; on the
    former number also the next holder's; one account of the other citizen's."""
    return {
        FORMER: [
            binding(f"{prefix}-left", "linxiaoyu", at(2014, 5)),
            binding(f"{prefix}-next", NEXT_HOLDER_NAME, at(2019, 2)),
        ],
        CURRENT: [
            binding(f"{prefix}-mine", "xiaoyu.lin", at(2021, 2)),
            binding(f"{prefix}-prev", PREVIOUS_HOLDER_NAME, at(2019, 2)),
        ],
        OTHER_NUMBER: [binding(f"{prefix}-other", "someone_else", at(2021, 3))],
    }


Snapshot = dict[str, list[tuple[Any, ...]]]
_TABLES = {
    "unbind_tickets": unbind_tickets,
    "number_events": number_events,
    "deliveries": deliveries,
    "audit_log": audit_log,
    "replay_cache": replay_cache,
}


class Harness(Federation):
    """The federation with a SQLite store and the story's bindings at every fake
    provider, and ways to look at everything the gateway stored."""

    PREVIOUS_HOLDER_NAME = PREVIOUS_HOLDER_NAME
    NEXT_HOLDER_NAME = NEXT_HOLDER_NAME

    async def provider(
        self,
        provider_id: str,
        bindings: Mapping[str, Sequence[provider_pb2.Binding]] | None = None,
        **options: Any,
    ) -> FakeProvider:
        """The federation's fake provider, holding the story's bindings unless told others."""
        stored = story_bindings(provider_id) if bindings is None else bindings
        return await super().provider(provider_id, stored, **options)

    def config(
        self,
        *,
        store: str | StoreConfig | None = "sqlite",
        fanout: FanoutConfig | None = None,
        **options: Any,
    ) -> GatewayConfig:
        fanout = fanout or FanoutConfig(
            provider_deadline_s=2.0, carrier_deadline_s=2.0, retry_max_attempts=2
        )
        return super().config(store=store, fanout=fanout, **options)

    def address_of(self, provider_id: str) -> str:
        return next(address for p, address in self.providers if p.id == provider_id)

    def reroute(self, provider_id: str, address: str) -> None:
        """Configure a fake provider at another address (a proxy in front of it)."""
        self.providers = [(p, address if p.id == provider_id else old) for p, old in self.providers]

    def stub(
        self,
        gateway: GatewayServer | int,
        credentials: grpc.ChannelCredentials | None = None,
        *,
        client: str = "portal",
    ) -> gateway_pb2_grpc.GatewayAsyncStub:
        if credentials is None:
            return super().stub(gateway, client=client)
        port = gateway if isinstance(gateway, int) else gateway.port
        channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)
        self._channels.append(channel)
        return gateway_pb2_grpc.GatewayStub(channel)

    async def handle_of(
        self, gateway: GatewayServer, provider_id: str, sub: str = CITIZEN_SUB
    ) -> str:
        """The handle of the citizen's left-behind account at a provider (a fresh lookup)."""
        idn = IDN if sub == CITIZEN_SUB else OTHER_IDN
        messages = await self.lookup(gateway, self.assertion(sub=sub, idn=idn))
        number = FORMER if sub == CITIZEN_SUB else OTHER_NUMBER
        result = self.result_of(messages, provider_id, number)
        assert result.outcome == gateway_pb2.CALL_OUTCOME_ANSWERED, result.detail
        handles = [b.handle for b in result.bindings if b.handle]
        assert handles
        return handles[0]

    async def snapshot(self, gateway: GatewayServer) -> Snapshot:
        """Every row of the durable state (after pending audit rows are written)."""
        assert gateway.store is not None
        if gateway.auditor is not None:
            await gateway.auditor.drain()
        out: Snapshot = {}
        async with gateway.store.engine.connect() as conn:
            for name, table in _TABLES.items():
                rows = (await conn.execute(select(table))).all()
                out[name] = sorted((tuple(r) for r in rows), key=repr)
        return out


@dataclass(frozen=True)
class Pki:
    """The federation's dev CA and certificates, plus bad client certificates."""

    dev: DevKeys
    other: DevKeys
    bad: Mapping[str, tuple[Path, Path]] = field(default_factory=dict)

    def client(self, name: str) -> tuple[Path, Path]:
        """(cert, key) of a client: a dev one by CN, or a bad one by its label."""
        if name in self.bad:
            return self.bad[name]
        return self.dev.client_cert(name), self.dev.client_key(name)

    def credentials(self, name: str | None) -> grpc.ChannelCredentials:
        """Channel credentials trusting the dev CA, presenting client ``name`` (None: none)."""
        ca = self.dev.ca_cert.read_bytes()
        if name is None:
            return grpc.ssl_channel_credentials(ca)
        cert, key = self.client(name)
        return grpc.ssl_channel_credentials(ca, key.read_bytes(), cert.read_bytes())


def principal(who: str) -> tuple[tuple[str, str], ...]:
    """The metadata naming ``who`` ("carrier:cm") to a development gateway."""
    return ((DEV_PRINCIPAL_HEADER, who),)


async def status_of(invoke: Callable[[], Awaitable[Any]]) -> tuple[grpc.StatusCode, str]:
    """The status and details ``invoke()`` ends with (OK and "" when it answers)."""
    try:
        await invoke()
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def issue_client_cert(
    directory: Path,
    label: str,
    *,
    ca: DevKeys,
    common_name: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
) -> tuple[Path, Path]:
    """A certificate signed by the dev CA, valid when told, for ``usage``: (cert, key)."""
    return ca.issue(
        directory,
        label,
        name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
        usage=usage,
        not_before=not_before,
        not_after=not_after,
    )


@dataclass
class KeyServer:
    """An HTTP server on 127.0.0.1 that would hand out the attacker's JWKS (and
    certificate) to anyone who asked; ``requests`` counts who did."""

    url: str
    key: SigningKey
    requests: list[str]
