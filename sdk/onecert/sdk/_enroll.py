"""Joining the federation by invitation, and the files a joined provider keeps.

::

    joined = await join(
        gateway="gateway.example:50052",       # the join listener
        gateway_ca="gateway-ca.pem",           # checks the gateway's server certificate
        provider_id="example-forum",
        token="...",                           # from the regulator's invitation
        address="forum.example:50061",         # where you serve (None: you poll)
        directory="onecert-credentials",
    )
    credentials = joined.credentials
    server = Server(provider, gateway_keys=..., tls=credentials.server_tls(),
                    gateway_identity=credentials.state().gateway_identity)

The key pair is made here and the private key never leaves this machine
(written with mode 0600); only the CSR goes to the gateway. The directory
holds, under fixed names, the key, the certificate, the federation CA
bundle (which signs the gateway's client certificate, so the provider's
server trusts it), the CA that checks the gateway's own listeners, and what
the gateway said (``enrollment.json``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from onecert.sdk._channel import open_channel
from onecert.sdk._csr import generate_key, key_pem, make_csr, write_private
from onecert.sdk._tls import ClientTLS, ServerTLS
from onecert.sdk.client._base import GatewayError
from onecert.sdk.client._enrollment import Certificate, certificate_of
from onecert.sdk.client._registry import ProviderStatus, status_of_pb
from onecert.v1 import enrollment_pb2, enrollment_pb2_grpc

__all__ = ["EnrolledState", "JoinResult", "ProviderCredentials", "join"]


@dataclass(frozen=True)
class EnrolledState:
    """What the gateway said when the provider joined (``enrollment.json``).

    Attributes:
        provider_id: the id the certificate names.
        gateway_address: ``HOST:PORT`` of the gateway's mutual TLS listener.
        gateway_identity: the CN of the gateway's client certificate; the
            provider's server accepts calls from it only.
        gateway_issuer: the gateway id warrants name (``iss``).
        address: where the provider serves ("" when it polls).
        delivery: "push" or "poll".
        plaintext: joined a development gateway without TLS.
    """

    provider_id: str
    gateway_address: str
    gateway_identity: str
    gateway_issuer: str
    address: str
    delivery: str
    plaintext: bool = False


@dataclass(frozen=True)
class ProviderCredentials:
    """The files of a joined provider, in one directory.

    Build it with :func:`join` (which writes them) or :meth:`at` (an existing directory).
    """

    directory: Path

    @classmethod
    def at(cls, directory: str | Path) -> ProviderCredentials:
        return cls(Path(directory))

    @property
    def key_file(self) -> Path:
        """The provider's private key (mode 0600; never sent anywhere)."""
        return self.directory / "provider.key.pem"

    @property
    def cert_file(self) -> Path:
        """The certificate the federation CA issued, then any intermediates."""
        return self.directory / "provider.pem"

    @property
    def ca_file(self) -> Path:
        """The federation CA bundle: who may call the provider's server."""
        return self.directory / "federation-ca.pem"

    @property
    def gateway_ca_file(self) -> Path:
        """The CA that checks the gateway's listeners (given at join)."""
        return self.directory / "gateway-ca.pem"

    @property
    def state_file(self) -> Path:
        return self.directory / "enrollment.json"

    def state(self) -> EnrolledState:
        """What the gateway said at join; :class:`FileNotFoundError` before joining."""
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return EnrolledState(**data)

    def certificate(self) -> x509.Certificate:
        """The current certificate."""
        return x509.load_pem_x509_certificate(self.cert_file.read_bytes())

    def server_tls(self) -> ServerTLS:
        """Mutual TLS for the provider's server, reloaded when the certificate is renewed."""
        return ServerTLS(self.cert_file, self.key_file, self.ca_file, reload=True)

    def gateway_tls(self) -> ClientTLS:
        """Mutual TLS towards the gateway's listener, with the current certificate."""
        return ClientTLS(self.gateway_ca_file, self.cert_file, self.key_file)

    def save(self, *, key: bytes, chain: bytes, ca_bundle: bytes) -> None:
        """Replace the key, the certificate and the CA bundle (each atomically, key first)."""
        write_private(self.key_file, key)
        write_private(self.cert_file, chain)
        write_private(self.ca_file, ca_bundle)

    def write_state(self, state: EnrolledState) -> None:
        write_private(self.state_file, (json.dumps(asdict(state), indent=2) + "\n").encode())


@dataclass(frozen=True)
class JoinResult:
    """What :func:`join` got: where the files are, the status, and what to do next."""

    credentials: ProviderCredentials
    status: ProviderStatus | None
    next_step: str
    not_after: datetime | None
    renew_after: datetime | None


async def join(
    *,
    gateway: str,
    provider_id: str,
    token: str,
    directory: str | Path,
    gateway_ca: str | Path | None = None,
    address: str | None = None,
    poll: bool | None = None,
    insecure: bool = False,
    timeout: float = 30.0,  # noqa: ASYNC109 - the gRPC deadline
) -> JoinResult:
    """Join the federation with an invitation token; write the credentials to ``directory``.

    Args:
        gateway: ``HOST:PORT`` of the gateway's join listener.
        provider_id: the id the invitation names.
        token: the one-time enrollment token.
        directory: where the key, certificate and state go (created 0700).
        gateway_ca: the CA that signs the gateway's server certificate.
        address: ``HOST:PORT`` where you serve BindingProvider; None: you
            host no server (never asked in lookups) and poll for notices.
        poll: fetch notices with ``PollEvents`` rather than receive them at
            ``address``; by default only without an address.
        insecure: a development gateway without TLS (no ``gateway_ca``).
        timeout: the call's deadline, in seconds.

    Raises:
        GatewayError: refused (UNAUTHENTICATED: the token; INVALID_ARGUMENT:
            a field or the CSR); nothing is written but the new key's
            directory.
        ValueError: ``gateway_ca`` and ``insecure`` both or neither given.
    """
    if (gateway_ca is None) != insecure:
        raise ValueError("give either gateway_ca (the gateway's CA) or insecure=True")
    credentials = ProviderCredentials.at(directory)
    key = generate_key()
    request = enrollment_pb2.JoinRequest(
        provider_id=provider_id,
        token=token,
        csr_pem=make_csr(provider_id, key).decode(),
        address=address or "",
        delivery=enrollment_pb2.DELIVERY_MODE_POLL
        if (address is None if poll is None else poll)
        else enrollment_pb2.DELIVERY_MODE_PUSH,
    )
    tls = None if gateway_ca is None else ClientTLS(gateway_ca)
    async with open_channel(gateway, tls=tls) as channel:
        try:
            response = await enrollment_pb2_grpc.EnrollmentStub(channel).Join(
                request, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError.of(exc) from None
    issued = certificate_of(response.certificate)
    # Five files, each synced to disk: off the event loop, so a process that
    # serves while it joins (or many providers in one process) never stalls.
    await asyncio.to_thread(
        _write,
        credentials,
        key_pem(key),
        issued,
        response,
        request=request,
        gateway_ca=gateway_ca,
        joined_at=gateway,
    )
    return JoinResult(
        credentials=credentials,
        status=status_of_pb(response.status),
        next_step=response.next_step,
        not_after=issued.not_after,
        renew_after=issued.renew_after,
    )


def _write(
    credentials: ProviderCredentials,
    key: bytes,
    issued: Certificate,
    response: enrollment_pb2.JoinResponse,
    *,
    request: enrollment_pb2.JoinRequest,
    gateway_ca: str | Path | None,
    joined_at: str,
) -> None:
    """Write the key, the certificate, the CAs and the state (a sync step: file work)."""
    credentials.save(key=key, chain=issued.chain_pem, ca_bundle=issued.ca_bundle_pem)
    if gateway_ca is not None:
        write_private(credentials.gateway_ca_file, Path(gateway_ca).read_bytes())
    credentials.write_state(
        EnrolledState(
            provider_id=request.provider_id,
            gateway_address=_gateway_address(response.gateway_address, joined_at),
            gateway_identity=response.gateway_identity,
            gateway_issuer=response.gateway_issuer,
            address=request.address,
            delivery="poll" if request.delivery == enrollment_pb2.DELIVERY_MODE_POLL else "push",
            plaintext=gateway_ca is None,
        )
    )


def _gateway_address(told: str, joined_at: str) -> str:
    """The mutual TLS listener: as told, or ``:PORT`` on the host the join went to."""
    if not told:
        return joined_at
    if told.startswith(":"):
        host = joined_at.rpartition(":")[0]
        return f"{host}{told}"
    return told
