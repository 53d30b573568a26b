"""Who is calling: certificates in production, the dev principal header in development only."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import grpc

from onecert.gateway._principals import (
    DEV_PRINCIPAL_HEADER,
    Principal,
    PrincipalResolver,
    Role,
)

if TYPE_CHECKING:
    from tests.notices.notices_support import NoticeWorld


class _Peer:
    """What a resolver reads of a call: the TLS peer's CN and the metadata."""

    def __init__(self, cn: str | None = None, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.cn = cn
        self.metadata = metadata


def _resolver(*, dev: bool) -> PrincipalResolver:
    return PrincipalResolver(
        carriers={"cm-cert": "cm"},
        providers={"pay": "pay"},
        admin_cns=("regulator",),
        dev_principals=dev,
    )


def _identify(resolver: PrincipalResolver, peer: _Peer) -> Principal | str:
    return resolver.identify(common_name=peer.cn, metadata=peer.metadata)


def test_certificates_map_to_roles() -> None:
    """The certificate's CN names a carrier (through client_cn), a provider or an admin."""
    resolver = _resolver(dev=False)
    assert _identify(resolver, _Peer("cm-cert")) == Principal(Role.CARRIER, "cm")
    assert _identify(resolver, _Peer("pay")) == Principal(Role.PROVIDER, "pay")
    assert _identify(resolver, _Peer("regulator")) == Principal(Role.ADMIN, "regulator")
    assert Principal(Role.CARRIER, "cm").actor == "carrier:cm"
    # The carrier's id is not its CN when client_cn says otherwise.
    assert isinstance(_identify(resolver, _Peer("cm")), str)


def test_dev_header_only_in_development() -> None:
    """The dev principal header works in development mode only, and never over a certificate."""
    header = ((DEV_PRINCIPAL_HEADER, "admin"),)
    refused = _identify(_resolver(dev=False), _Peer(None, header))
    assert isinstance(refused, str)
    assert "development mode only" in refused
    dev = _resolver(dev=True)
    assert _identify(dev, _Peer(None, header)) == Principal(Role.ADMIN, "dev")
    provider = ((DEV_PRINCIPAL_HEADER, "provider:pay"),)
    assert _identify(dev, _Peer(None, provider)) == Principal(Role.PROVIDER, "pay")
    # A certificate wins over the header.
    assert _identify(dev, _Peer("pay", header)) == Principal(Role.PROVIDER, "pay")
    for claim in ("provider:nobody", "carrier:pay", "root", "admin:x", ""):
        assert isinstance(_identify(dev, _Peer(None, ((DEV_PRINCIPAL_HEADER, claim),))), str)
    assert isinstance(_identify(dev, _Peer(None)), str)


async def test_dev_principals_over_plaintext(dev_world: NoticeWorld) -> None:
    """In development mode callers name themselves; without a name they are UNAUTHENTICATED."""
    await dev_world.push_provider("pay")
    gateway = await dev_world.gateway()
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
    assert answer.created
    report = await dev_world.caller(gateway, "admin").compliance()
    assert [p.provider_id for p in report.providers] == ["pay"]
    since = dev_world.T0 - timedelta(days=1)
    expected = {
        "cn:anonymous": grpc.StatusCode.UNAUTHENTICATED,
        "provider:stranger": grpc.StatusCode.UNAUTHENTICATED,
        "carrier:cm": grpc.StatusCode.PERMISSION_DENIED,
    }
    codes = await dev_world.check_codes(gateway, list(expected), dev_world.CM_NUMBER, since)
    assert codes == expected


async def test_roles_over_mutual_tls(world: NoticeWorld) -> None:
    """Each role is known by its certificate: carrier reports, provider checks, admin reads."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    assert (await world.caller(gateway, "carrier:cm").report("ev-1", world.CM_NUMBER)).created
    checked = await world.caller(gateway, "provider:pay").check(
        world.CM_NUMBER, world.T0 - timedelta(days=1)
    )
    assert checked.status
    report = await world.caller(gateway, "admin").compliance()
    assert [p.provider_id for p in report.providers] == ["pay"]
