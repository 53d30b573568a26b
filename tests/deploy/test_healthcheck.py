"""onecert-healthcheck (deploy/healthcheck.py) against real gRPC servers,
and the Deployment's probes against a real gateway started from the dev
overlay's configuration, Secrets and mounts."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from onecert.gateway import GatewayServer
from onecert.gateway._config import MetricsConfig, StoreConfig
from onecert.sdk.devkeys import DevKeys

if TYPE_CHECKING:
    from types import ModuleType

from tests.deploy.deploy_support import (
    config_text,
    gateway_container,
    gateway_pod,
    option,
    parse_gateway_config,
    rendered,
)

SERVICE = "onecert.v1.Gateway"


@pytest.fixture
async def health_server(dev_keys: DevKeys) -> AsyncIterator[tuple[int, Any]]:
    """A mutual-TLS server with only a health service: (port, servicer)."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(dev_keys.server_key.read_bytes(), dev_keys.server_cert.read_bytes())],
        root_certificates=dev_keys.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    await servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    try:
        yield port, servicer
    finally:
        await server.stop(None)


def _tls_args(keys: DevKeys, client: str = "gateway") -> list[str]:
    return [
        f"--ca={keys.ca_cert}",
        f"--cert={keys.client_cert(client)}",
        f"--key={keys.client_key(client)}",
    ]


async def _probe(healthcheck: ModuleType, argv: Sequence[str]) -> int:
    # The probe uses blocking gRPC; the server needs this loop free.
    status: int = await asyncio.to_thread(healthcheck.main, list(argv))
    return status


async def test_serving_service_exits_zero(
    healthcheck: ModuleType, health_server: tuple[int, Any], dev_keys: DevKeys
) -> None:
    """SERVING, asked over mutual TLS with the name the certificate holds, exits 0."""
    port, _ = health_server
    argv = [f"--target=127.0.0.1:{port}", f"--service={SERVICE}", *_tls_args(dev_keys)]
    assert await _probe(healthcheck, argv) == 0
    assert await _probe(healthcheck, [*argv, "--server-name=onecert-gateway"]) == 0


async def test_not_serving_or_unknown_service_exits_one(
    healthcheck: ModuleType, health_server: tuple[int, Any], dev_keys: DevKeys
) -> None:
    """NOT_SERVING (a gateway shutting down) and an unknown service both fail the probe."""
    port, servicer = health_server
    await servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    base = [f"--target=127.0.0.1:{port}", *_tls_args(dev_keys)]
    assert await _probe(healthcheck, [*base, f"--service={SERVICE}"]) == 1
    assert await _probe(healthcheck, [*base, "--service=onecert.v1.Nothing"]) == 1


async def test_wrong_name_or_missing_client_certificate_exits_one(
    healthcheck: ModuleType, health_server: tuple[int, Any], dev_keys: DevKeys
) -> None:
    """A certificate that does not name --server-name, or no client certificate, fails fast."""
    port, _ = health_server
    target = f"--target=127.0.0.1:{port}"
    wrong_name = [target, *_tls_args(dev_keys), "--server-name=elsewhere", "--timeout=2"]
    assert await _probe(healthcheck, wrong_name) == 1
    assert await _probe(healthcheck, [target, f"--ca={dev_keys.ca_cert}", "--timeout=2"]) == 1


async def test_nothing_listening_exits_one(healthcheck: ModuleType) -> None:
    """A port where nothing listens fails within the timeout."""
    assert await _probe(healthcheck, ["--target=127.0.0.1:1", "--insecure", "--timeout=1"]) == 1


def test_bad_arguments_exit_two(healthcheck: ModuleType, tmp_path: Path) -> None:
    """Neither or both of --ca and --insecure, a lone --cert, or unreadable files: status 2."""
    for argv in (
        ["--target=x:1"],
        ["--target=x:1", "--insecure", "--ca=ca.pem"],
        ["--target=x:1", "--ca=ca.pem", "--cert=c.pem"],
    ):
        with pytest.raises(SystemExit) as exc:
            healthcheck.main(argv)
        assert exc.value.code == 2
    assert healthcheck.main(["--target=x:1", f"--ca={tmp_path / 'missing.pem'}"]) == 2


def _materialize_pod(
    root: Path, dev_secrets: ModuleType, keys: DevKeys, resources: Sequence[dict[str, Any]]
) -> None:
    """Write, under ``root``, the files the gateway container sees: the ConfigMap and the
    Secrets dev-secrets.py makes, at the Deployment's mount paths."""
    secrets = {
        item["metadata"]["name"]: item["data"]
        for item in dev_secrets.secrets(keys.directory)["items"]
    }
    pod = gateway_pod(resources)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in gateway_container(resources)["volumeMounts"]:
        volume = volumes[mount["name"]]
        directory = root / mount["mountPath"].lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            (directory / "gateway.toml").write_text(config_text(resources))
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            for key, value in secrets[name].items():
                (directory / key).write_bytes(base64.b64decode(value))


async def test_deployment_probes_pass_against_the_dev_gateway(
    tmp_path: Path, healthcheck: ModuleType, dev_secrets: ModuleType, dev_keys: DevKeys
) -> None:
    """The dev gateway, from its ConfigMap and the Secrets at the Deployment's mount paths,
    starts in production mode, and each of the Deployment's probe commands passes against it;
    once it has stopped they fail."""
    resources = rendered("overlays/dev")
    root = tmp_path / "pod"
    _materialize_pod(root, dev_secrets, dev_keys, resources)
    text = config_text(resources).replace('"/etc/onecert/', f'"{root}/etc/onecert/')
    config = parse_gateway_config(text)
    # Everything as deployed but the ports (any free ones) and the database (SQLite here).
    config = dataclasses.replace(
        config,
        listen="127.0.0.1:0",
        metrics=MetricsConfig(listen="127.0.0.1:0"),
        store=StoreConfig(url=f"sqlite:///{tmp_path / 'gateway.db'}", auto_migrate=True),
    )
    container = gateway_container(resources)
    probes = [container[p]["exec"]["command"] for p in ("readinessProbe", "livenessProbe")]
    async with GatewayServer(config) as server:
        for command in probes:
            argv = [arg.replace("/etc/onecert/", f"{root}/etc/onecert/") for arg in command[1:]]
            argv = [
                f"--target=127.0.0.1:{server.port}" if a.startswith("--target") else a for a in argv
            ]
            assert option(argv, "--server-name") == "onecert-gateway"
            assert await _probe(healthcheck, argv) == 0, command
        port = server.port
    stopped = [f"--target=127.0.0.1:{port}" if a.startswith("--target") else a for a in argv]
    assert await _probe(healthcheck, [*stopped, "--timeout=1"]) == 1
