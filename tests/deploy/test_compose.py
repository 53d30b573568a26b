"""deploy/compose.yaml: well-formed, and naming the image, ports, commands,
keys and config keys that the code really has."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509

from onecert.cli import build_parser
from onecert.gateway import GatewayServer
from onecert.sdk.devkeys import DEFAULT_CLIENTS, init_dev_keys

if TYPE_CHECKING:
    from types import ModuleType

from tests.deploy.deploy_support import (
    COMPOSE_IMAGE,
    DEPLOY,
    REPO,
    compose,
    compose_onecert_services,
    host_of,
    keys_init_argv,
    option,
    parse_args,
    parse_gateway_config,
    port_of,
)

CONFIG_IN_CONTAINER = "/etc/onecert/gateway.toml"
ONE_SHOTS = ("keys-init", "migrate")
DEPENDS_CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


def _config_text() -> str:
    return (DEPLOY / "compose/gateway.toml").read_text()


def _compose_cli() -> list[str] | None:
    """`docker compose` or `docker-compose`, whichever answers `version`."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            result = subprocess.run(
                [*command, "version"], capture_output=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return command
    return None


def test_docker_compose_accepts_the_file() -> None:
    """`docker compose config -q` (no engine needed) finds the file valid."""
    command = _compose_cli()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI is set but no docker compose client is installed (.ci/run installs one)"
            )
        pytest.skip("no docker compose client here; test_structure checks the file in Python")
    result = subprocess.run(
        [*command, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_structure() -> None:
    """Services, dependencies, volumes and one-shots are well-formed and point at each other."""
    data = compose()
    services: dict[str, Any] = data["services"]
    assert {"postgres", "keys-init", "migrate", "gateway"} <= set(services)
    volumes = set(data["volumes"])
    for name, service in services.items():
        assert "image" in service, name
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            assert spec["condition"] in DEPENDS_CONDITIONS
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if spec["condition"] == "service_completed_successfully":
                assert target in ONE_SHOTS
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in volumes, f"{name}: unknown volume {source}"
        if name in ONE_SHOTS:
            assert service["restart"] == "no"
        elif "profiles" not in service:
            assert "healthcheck" in service, f"{name} needs a healthcheck"
    gateway = services["gateway"]["depends_on"]
    assert gateway["migrate"]["condition"] == "service_completed_successfully"
    assert gateway["keys-init"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_onecert_service_runs_the_image_the_dockerfile_builds() -> None:
    """One image name (the dev overlay's too), built from deploy/Dockerfile with the repository
    as context, run read-only, without capabilities."""
    services = compose_onecert_services()
    assert len(services) >= 10
    for name, service in services.items():
        build = service["build"]
        assert (DEPLOY / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]) == DEPLOY / "Dockerfile", name
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
    others = {s["image"] for n, s in compose()["services"].items() if n not in services}
    assert all(image.partition(":")[0] == "postgres" for image in others)
    assert COMPOSE_IMAGE.partition(":")[0] == "onecert"


def test_gateway_config_parses_and_ports_agree() -> None:
    """gateway.toml parses with the real parser, in production mode, and the published port,
    the healthcheck and the Dockerfile's EXPOSE use its listen port (and metrics port)."""
    config = parse_gateway_config(_config_text())
    assert not config.dev_plaintext
    assert config.store is not None
    assert not config.store.auto_migrate
    port = port_of(config.listen)
    gateway = compose()["services"]["gateway"]
    assert [p.rpartition(":")[2] for p in gateway["ports"]] == [str(port)]
    assert port_of(str(option(gateway["healthcheck"]["test"], "--target"))) == port
    # Prometheus, from the other services, on the port metrics.listen names.
    assert config.metrics.listen is not None
    metrics_port = port_of(config.metrics.listen)
    assert gateway["expose"] == [str(metrics_port)]
    expose = next(
        line
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("EXPOSE")
    )
    assert {str(port), str(metrics_port)} <= set(expose.split()[1:])
    volumes = gateway["volumes"]
    assert f"./compose/gateway.toml:{CONFIG_IN_CONTAINER}:ro" in volumes
    # Above the gateway's own grace period, so running lookups may finish.
    assert float(gateway["stop_grace_period"].rstrip("s")) > config.grace_period_s


def test_commands_are_real_subcommands(healthcheck: ModuleType) -> None:
    """Each service's command parses with the parser of what it runs (onecert, the demo
    adapters, onecert-healthcheck), and health checks ask about services that exist."""
    from onecert.adapters.demo._serve import build_parser as demo_parser

    parser = build_parser()
    for name, service in compose_onecert_services().items():
        entrypoint = service.get("entrypoint")
        if entrypoint == ["python", "-m", "onecert.adapters.demo"]:
            parse_args(demo_parser(), service["command"])
        elif entrypoint is None and "command" in service:
            parse_args(parser, service["command"])
        test = service.get("healthcheck", {}).get("test")
        if test:
            assert test[:2] == ["CMD", "onecert-healthcheck"], name
            args = parse_args(healthcheck.build_parser(), test[2:])
            assert args.service in ("", "onecert.v1.Gateway")
    parse_args(parser, keys_init_argv())
    gateway = compose()["services"]["gateway"]
    assert gateway["command"] == ["gateway", "serve", "--config", CONFIG_IN_CONTAINER]


def test_migrate_upgrades_the_database_the_gateway_uses() -> None:
    """The migrate service's URL is store.url, and both get the same password."""
    config = parse_gateway_config(_config_text())
    assert config.store is not None
    services = compose()["services"]
    assert option(services["migrate"]["command"], "--url") == config.store.url
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert services["migrate"]["environment"]["PGPASSWORD"] == password
    assert services["gateway"]["environment"]["PGPASSWORD"] == password
    assert "postgres" in config.store.url


def test_adapters_match_the_gateway_config() -> None:
    """Each carrier and provider of gateway.toml is the service of the same name, running the
    demo adapter of that role and id on the port of its address."""
    from onecert.adapters.demo._serve import build_parser as demo_parser

    config = parse_gateway_config(_config_text())
    services = compose()["services"]
    upstreams = [("carrier", c) for c in config.carriers] + [
        ("provider", p) for p in config.providers
    ]
    assert len(config.carriers) == 2
    assert len(config.providers) >= 3
    for role, upstream in upstreams:
        assert upstream.address is not None  # every demo provider serves
        host = host_of(upstream.address)
        assert host == upstream.id, "service name = id, so the SANs stay simple"
        args = parse_args(demo_parser(), services[host]["command"])
        assert (args.role, args.id) == (role, upstream.id)
        assert port_of(args.listen) == port_of(upstream.address)
        assert args.gateway_issuer == config.id
        target = option(services[host]["healthcheck"]["test"], "--target")
        assert target is not None
        assert port_of(target) == port_of(args.listen)


async def test_keys_init_makes_every_file_the_services_read(tmp_path: Path) -> None:
    """The keys keys-init writes load in the gateway (production mode), name every upstream host
    and the gateway in the server certificate, and cover the adapters' and probes' files."""
    from onecert.adapters.demo._serve import build_parser as demo_parser

    args = parse_args(build_parser(), keys_init_argv())
    assert args.directory == "/keys"
    keys = init_dev_keys(
        tmp_path / "keys", clients=(*DEFAULT_CLIENTS, *args.client), extra_sans=args.san
    )
    config = parse_gateway_config(_config_text().replace('"/keys/', f'"{keys.directory}/'))
    sans = x509.load_pem_x509_certificate(keys.server_cert.read_bytes()).extensions
    names = set(
        sans.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    )
    assert "gateway" in names
    addresses = [c.address for c in config.carriers] + [
        p.address for p in config.providers if p.address is not None
    ]
    assert {host_of(address) for address in addresses} <= names
    # Keys and certificates load; nothing listens or connects.
    store_free = dataclasses.replace(config, store=None)
    GatewayServer(store_free)
    existing = {f"/keys/{p.name}" for p in keys.files()}
    for name, service in compose_onecert_services().items():
        argv = [*service.get("command", []), *service.get("healthcheck", {}).get("test", [])]
        for arg in argv:
            value = arg.partition("=")[2] if arg.startswith("--") else arg
            if value.startswith("/keys/"):
                assert value in existing, f"{name}: keys-init makes no {value}"
        if service.get("entrypoint") == ["python", "-m", "onecert.adapters.demo"]:
            parse_args(demo_parser(), service["command"])
