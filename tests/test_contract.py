"""The generated contract imports from the onecert namespace and follows its conventions."""

from __future__ import annotations

from google.protobuf import descriptor

from onecert.v1 import common_pb2, enrollment_pb2, gateway_pb2, provider_pb2, registry_pb2

_FILES = (common_pb2, enrollment_pb2, gateway_pb2, provider_pb2, registry_pb2)


def _enums() -> list[descriptor.EnumDescriptor]:
    found: list[descriptor.EnumDescriptor] = []
    for module in _FILES:
        found.extend(module.DESCRIPTOR.enum_types_by_name.values())
        for message in module.DESCRIPTOR.message_types_by_name.values():
            found.extend(message.enum_types)
    return found


def test_every_enum_starts_with_unspecified_zero() -> None:
    """Each enum's zero value is NAME_UNSPECIFIED, so an unset field is never meaningful."""
    for enum in _enums():
        zero = enum.values_by_number[0]
        assert zero.name.endswith("_UNSPECIFIED"), enum.full_name


def test_every_rpc_has_its_own_request_and_response() -> None:
    """No message is shared between two RPCs, so each can evolve on its own."""
    seen: set[str] = set()
    for module in _FILES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                for message in (method.input_type, method.output_type):
                    assert message.full_name not in seen, message.full_name
                    seen.add(message.full_name)
                    assert message.name.endswith(("Request", "Response")), message.full_name


def test_services_are_in_package_onecert_v1() -> None:
    """The three services exist with the RPCs the design names."""
    methods = {
        service.full_name: {m.name for m in service.methods}
        for module in _FILES
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    assert methods["onecert.v1.BindingProvider"] == {
        "Describe",
        "ListBindings",
        "Unbind",
        "ReceiveEvent",
        "ReceiveEvents",
    }
    assert methods["onecert.v1.NumberRegistry"] == {"ListNumbers"}
    assert {
        "Lookup",
        "Unbind",
        "GetUnbind",
        "ReportNumberEvent",
        "CheckRecycled",
        "PollEvents",
    } <= methods["onecert.v1.Gateway"]
    lookup = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods_by_name["Lookup"]
    assert lookup.server_streaming


def test_instants_are_timestamps() -> None:
    """Every field named *_at, held_from or held_until is a google.protobuf.Timestamp."""
    for module in _FILES:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            for field in message.fields:
                if field.name.endswith("_at") or field.name in {"held_from", "held_until"}:
                    assert field.message_type is not None, f"{message.name}.{field.name}"
                    assert field.message_type.full_name == "google.protobuf.Timestamp"
