"""What a joining provider gets from the gateway besides its registry record: issued
certificates and activation results, as frozen dataclasses (see
:meth:`ProviderGatewayClient.request_activation`); the record itself is the
registry's :class:`~onecert.sdk.client.ProviderRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from onecert.sdk.client._base import time_of
from onecert.sdk.client._registry import GateResult, ProviderStatus
from onecert.v1 import gateway_pb2

__all__ = ["ActivationResult", "Certificate", "certificate_of"]


@dataclass(frozen=True)
class Certificate:
    """A certificate the federation CA issued (PEM), and when to renew it."""

    chain_pem: bytes
    ca_bundle_pem: bytes
    serial: str
    not_before: datetime | None
    not_after: datetime | None
    renew_after: datetime | None


@dataclass(frozen=True)
class ActivationResult:
    """What :meth:`ProviderGatewayClient.request_activation` answers.

    ``gate.failures`` has one line per failing check, its rule first
    (``"L-2 list_bindings.unknown_number: ..."``); ``summary`` is the run's one line.
    """

    status: ProviderStatus | None
    gate: GateResult | None
    summary: str


def certificate_of(message: gateway_pb2.IssuedCertificate) -> Certificate:
    """An issued certificate from its wire form."""
    return Certificate(
        chain_pem=message.chain_pem.encode(),
        ca_bundle_pem=message.ca_bundle_pem.encode(),
        serial=message.serial,
        not_before=time_of(message, "not_before"),
        not_after=time_of(message, "not_after"),
        renew_after=time_of(message, "renew_after"),
    )
