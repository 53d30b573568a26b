"""The access policy: one table covers every RPC served, and each role is refused elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from onecert.gateway._policy import POLICY, PUBLIC
from onecert.gateway._principals import Role
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from onecert.gateway import GatewayServer
    from tests.notices.notices_support import NoticeWorld

# Every service a gateway registers on its server.
SERVED: tuple[ServiceDescriptor, ...] = (
    gateway_pb2.DESCRIPTOR.services_by_name["Gateway"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)
GATEWAY_METHODS: tuple[MethodDescriptor, ...] = tuple(SERVED[0].methods)
# Callers in each role, as the test worlds name them.
CALLERS = {Role.CARRIER: "carrier:cm", Role.PROVIDER: "provider:pay", Role.ADMIN: "admin"}


def _full_name(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _roles(method: MethodDescriptor) -> frozenset[Role]:
    return POLICY[_full_name(method)]


async def _call(
    world: NoticeWorld, gateway: GatewayServer, who: str, method: MethodDescriptor
) -> grpc.StatusCode:
    """Call ``method`` with an empty request as ``who``; the status it ends with."""
    caller = world.caller(gateway, who)
    call: Any = getattr(caller.stub, method.name)
    request_class = message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(method.input_type.full_name)
    )
    try:
        answer = call(request_class(), metadata=caller.metadata, timeout=5)
        if method.server_streaming:
            async for _ in answer:
                pass
        else:
            await answer
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_every_served_rpc_has_a_policy() -> None:
    """Each RPC of each service the gateway serves is in the table, and nothing else is."""
    served = {_full_name(m) for service in SERVED for m in service.methods}
    assert served - set(POLICY) == set(), "RPCs without an access policy"
    assert set(POLICY) - served == set(), "policy entries for RPCs nobody serves"
    for method in GATEWAY_METHODS:
        assert _roles(method) != PUBLIC, f"{method.name} must not be open to anyone"


async def test_each_role_is_refused_on_rpcs_not_its_own(world: NoticeWorld) -> None:
    """Over mutual TLS, a carrier, a provider, an admin and the portal each get
    PERMISSION_DENIED on every Gateway RPC that is not theirs, and pass the policy on
    their own; an unregistered certificate is UNAUTHENTICATED (PERMISSION_DENIED on
    the portal's RPCs, as a certificate that is not a portal's)."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    who = {**CALLERS, Role.PORTAL: "cn:portal"}
    for method in GATEWAY_METHODS:
        allowed = _roles(method)
        for role, name in who.items():
            code = await _call(world, gateway, name, method)
            if role in allowed:
                # Past the policy: the service answers (the empty request, or
                # the missing citizen assertion, is what it refuses).
                assert code is not grpc.StatusCode.PERMISSION_DENIED, (method.name, role)
                if role is not Role.PORTAL:
                    assert code is not grpc.StatusCode.UNAUTHENTICATED, (method.name, role)
            else:
                assert code is grpc.StatusCode.PERMISSION_DENIED, (method.name, role)
        stranger = await _call(world, gateway, "cn:intruder", method)
        expected = (
            grpc.StatusCode.PERMISSION_DENIED
            if Role.PORTAL in allowed
            else grpc.StatusCode.UNAUTHENTICATED
        )
        assert stranger is expected, method.name


@pytest.mark.parametrize("role", [Role.CARRIER, Role.PROVIDER, Role.ADMIN])
async def test_dev_principals_are_held_to_the_same_table(
    dev_world: NoticeWorld, role: Role
) -> None:
    """In development mode a caller naming itself in the header is refused with
    PERMISSION_DENIED on other roles' RPCs, with the message naming both roles; a
    caller naming nobody is UNAUTHENTICATED on every RPC but the portal's."""
    await dev_world.push_provider("pay")
    gateway = await dev_world.gateway()
    for method in GATEWAY_METHODS:
        allowed = _roles(method)
        if Role.PORTAL in allowed or role in allowed:
            continue
        assert await _call(dev_world, gateway, CALLERS[role], method) is (
            grpc.StatusCode.PERMISSION_DENIED
        ), method.name
        assert await _call(dev_world, gateway, "cn:anonymous", method) is (
            grpc.StatusCode.UNAUTHENTICATED
        ), method.name


async def test_refusal_message_names_the_role_and_the_caller(dev_world: NoticeWorld) -> None:
    """The wrong-role message says whom the call is for and who called, as before."""
    gateway = await dev_world.gateway()
    caller = dev_world.caller(gateway, "carrier:cm")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await caller.compliance()
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "this call is for an admin; the caller is carrier 'cm'"
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await dev_world.caller(gateway, "cn:anonymous").compliance()
    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert anonymous.value.details() == "a client certificate is required"
