"""Self-service joining: the federation CA, the join listener, the conformance gate, renewal.

An invited provider joins with its enrollment token and a CSR
(``Enrollment.Join`` on ``[enrollment] listen``), gets a short-lived
certificate for its id from the federation CA, and is activated only once
the conformance kit passes against it (``Gateway.RequestActivation``). It
renews its certificate with ``Gateway.RenewCertificate``. See
docs/registry.md for the flow and the threat model.

:class:`Enrollment` wires the parts for :class:`~onecert.gateway.GatewayServer`:
:class:`LocalCA` (or any :class:`CertificateAuthority`), :class:`Gate`,
:class:`EnrollmentService` and :class:`JoinListener`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from onecert.gateway._audit import Auditor
from onecert.gateway._config import ConfigError, EnrollmentConfig, GatewayConfig
from onecert.gateway.enrollment._ca import (
    CertificateAuthority,
    CsrRefusedError,
    IssuedCertificate,
    LocalCA,
    check_csr,
    renewal_time,
)
from onecert.gateway.enrollment._gate import Gate, GateFailure, GateOutcome
from onecert.gateway.enrollment._listener import ENROLLMENT_SERVICE, JoinListener
from onecert.gateway.enrollment._service import EnrollmentService, JoinPolicy
from onecert.gateway.store import RegistryRepository
from onecert.sdk._keys import SigningKey

__all__ = [
    "ENROLLMENT_SERVICE",
    "CertificateAuthority",
    "CsrRefusedError",
    "Enrollment",
    "EnrollmentService",
    "Gate",
    "GateFailure",
    "GateOutcome",
    "IssuedCertificate",
    "JoinListener",
    "JoinPolicy",
    "LocalCA",
    "check_csr",
    "renewal_time",
]


class Enrollment:
    """The enrollment parts of one gateway: its service and its join listener.

    Args:
        config: the gateway's configuration (``config.enrollment`` must be set).
        registry: the provider registry (``store.registry``).
        warrant_key: the gateway's warrant key (the gate signs warrants with it).
        credentials: the gateway's server TLS for the join listener (None: plaintext).
        auditor: where refused joins are recorded (the registry audits its changes).
        gateway_address: where providers reach the mutual TLS listener (see
            :class:`JoinPolicy`); by default ``enrollment.gateway_address``.
        reserved_ids: other callers' certificate names (carriers, admins, the
            portal), which no provider may be certified as; the gateway's own
            client certificate name is added.
        after_change: awaited after a join and a gate run (see
            :class:`EnrollmentService`).
        ca: the CA to use instead of the configured local one (an external CA).
        clock: the current time (aware).

    Raises:
        ConfigError: the CA cannot be read, or the gateway would not accept the
            certificates it signs (``gateway.tls.client_ca``, ``upstream_tls.ca``).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        registry: RegistryRepository,
        warrant_key: SigningKey,
        credentials: grpc.ServerCredentials | None,
        auditor: Auditor | None = None,
        gateway_address: Callable[[], str] | None = None,
        reserved_ids: Collection[str] = (),
        after_change: Callable[[], Awaitable[object]] | None = None,
        ca: CertificateAuthority | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        enrollment = config.enrollment
        if enrollment is None:
            raise ConfigError("enrollment needs [enrollment] in the configuration")
        self.ca = ca or _local_ca(enrollment)
        _check_trusted(config, self.ca.bundle())
        gateway_identity = _gateway_identity(config, self.ca.bundle())
        self.gate = Gate(
            enrollment,
            warrant_key=warrant_key,
            issuer=config.id,
            upstream_tls=config.upstream_tls,
            clock=clock,
        )
        self.service = EnrollmentService(
            ca=self.ca,
            registry=registry,
            gate=self.gate,
            policy=JoinPolicy(
                lifetime=timedelta(seconds=enrollment.cert_lifetime_s),
                gateway_identity=gateway_identity,
                issuer=config.id,
                reserved_ids=frozenset({*reserved_ids, gateway_identity} - {""}),
                gateway_address=gateway_address or (lambda: enrollment.gateway_address or ""),
            ),
            after_change=after_change,
            clock=clock,
        )
        self.listener = JoinListener(
            self.service,
            enrollment,
            credentials=credentials,
            reuse_port=config.reuse_port,
            auditor=auditor,
        )

    @property
    def port(self) -> int:
        """The join listener's port (after :meth:`start`)."""
        return self.listener.port

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()


def _local_ca(enrollment: EnrollmentConfig) -> LocalCA:
    try:
        return LocalCA.load(enrollment.ca_cert, enrollment.ca_key)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _read_bundle(path: Path, key: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key} {path}: cannot read its certificates ({exc})") from None


def _check_trusted(config: GatewayConfig, bundle: bytes) -> None:
    """The gateway must accept what its CA signs: as callers, and as providers' servers."""
    ours = x509.load_pem_x509_certificates(bundle)
    places: list[tuple[str, Path | None]] = [
        ("gateway.tls.client_ca", None if config.tls is None else config.tls.client_ca),
        ("upstream_tls.ca", None if config.upstream_tls is None else config.upstream_tls.ca),
    ]
    for key, path in places:
        if path is None:
            continue
        trusted = _read_bundle(path, key)
        if not any(cert in trusted for cert in ours):
            raise ConfigError(
                f"{key} ({path}) does not hold the federation CA's certificate "
                "(enrollment.ca_cert): the gateway would refuse the certificates it issues. "
                "Add it to that file"
            )


def _gateway_identity(config: GatewayConfig, bundle: bytes) -> str:
    """The CN of the client certificate the gateway presents to providers ("" without one).

    Joined providers trust the federation CA only (the bundle Join returns),
    so that certificate must be one the federation CA signed.
    """
    upstream = config.upstream_tls
    if upstream is None or upstream.cert is None:
        return ""
    cert = _read_bundle(upstream.cert, "upstream_tls.cert")[0]
    if not any(_issued_by(cert, ca) for ca in x509.load_pem_x509_certificates(bundle)):
        raise ConfigError(
            f"upstream_tls.cert ({upstream.cert}) is not signed by the federation CA "
            "(enrollment.ca_cert): providers that joined trust that CA only, and would "
            "refuse the gateway's calls"
        )
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
