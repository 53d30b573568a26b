"""What the deployment tests share: paths, names, the rendered manifests,
the compose file, and small parsers. (A module of its own, not conftest.py,
so that test modules import it by a name no other test folder uses.)"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from onecert.gateway._config import GatewayConfig, parse_config
from tests.deploy.deploy_kustomize import Resource, containers, pod_specs, render

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/production")
OVERLAYS = ("overlays/dev", "overlays/production")
# The objects the overlays generate (names get a content-hash suffix).
GENERATED = ("onecert-gateway-config", "onecert-db")
# The one image deploy/Dockerfile builds, by repository name, and the tag
# compose builds it as.
IMAGE = "onecert"
COMPOSE_IMAGE = "onecert:dev"
# Images that are not ours, allowed by name.
THIRD_PARTY_IMAGES = ("postgres",)
# The gateway's gRPC and metrics ports, by container port name (their numbers
# are gateway.listen and metrics.listen in each gateway.toml).
GRPC_PORT_NAME = "grpc"
METRICS_PORT_NAME = "metrics"


def load_script(path: Path, name: str) -> ModuleType:
    """Import a deploy script (not on sys.path) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def rendered(kustomization: str) -> tuple[Resource, ...]:
    """The objects ``kustomize build deploy/k8s/<kustomization>`` makes."""
    return tuple(render(K8S / kustomization))


def find(resources: Sequence[Resource], kind: str, name: str) -> Resource:
    """The object of that kind whose name (without a generated hash suffix) is ``name``."""
    found = [
        r
        for r in resources
        if r["kind"] == kind
        and (r["metadata"]["name"] == name or _unhashed(r["metadata"]["name"]) == name)
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def _unhashed(name: str) -> str:
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def gateway_pod(resources: Sequence[Resource]) -> dict[str, Any]:
    return next(pod_specs(find(resources, "Deployment", "onecert-gateway")))


def gateway_container(resources: Sequence[Resource]) -> dict[str, Any]:
    pod = gateway_pod(resources)
    return next(c for c in containers(pod) if c["name"] == "gateway")


def config_text(resources: Sequence[Resource]) -> str:
    """The gateway.toml the Deployment mounts (its ConfigMap, found by reference)."""
    pod = gateway_pod(resources)
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    name = volume["configMap"]["name"]
    config_map = next(
        r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == name
    )
    text: str = config_map["data"]["gateway.toml"]
    return text


def parse_gateway_config(text: str, base_dir: Path = Path("/")) -> GatewayConfig:
    """Validate a gateway.toml with the gateway's own parser."""
    return parse_config(tomllib.loads(text), base_dir=base_dir)


def port_of(address: str) -> int:
    """``[::]:7443`` or ``host:7443`` -> 7443."""
    return int(address.rpartition(":")[2])


def host_of(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args`` that fails the test, with argparse's message, on bad arguments."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser.parse_args(list(argv))
    except SystemExit:
        pytest.fail(f"{parser.prog} refuses {shlex.join(argv)}: {stderr.getvalue().strip()}")


def option(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv``."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


@functools.cache
def compose() -> Mapping[str, Any]:
    """deploy/compose.yaml, anchors and merge keys resolved."""
    data: Mapping[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def compose_onecert_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == COMPOSE_IMAGE
    }


def keys_init_argv() -> list[str]:
    """The ``onecert keys init`` arguments of compose's keys-init service."""
    script = compose()["services"]["keys-init"]["command"][0]
    words = shlex.split(script)
    assert "onecert" in words, script
    return words[words.index("onecert") + 1 :]
