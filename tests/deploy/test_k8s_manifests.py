"""The Kubernetes manifests: valid against the API schemas, and consistent
with each other and with the code (ports, images, commands, health services,
config files, grace periods)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from onecert.cli import build_parser
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from types import ModuleType

    from onecert.sdk.devkeys import DevKeys

from tests.deploy.deploy_kustomize import (
    containers,
    load_documents,
    normalized,
    pod_specs,
    split_image,
)
from tests.deploy.deploy_support import (
    GENERATED,
    GRPC_PORT_NAME,
    IMAGE,
    K8S,
    KUSTOMIZATIONS,
    METRICS_PORT_NAME,
    OVERLAYS,
    REPO,
    THIRD_PARTY_IMAGES,
    config_text,
    find,
    gateway_container,
    gateway_pod,
    option,
    parse_args,
    parse_gateway_config,
    port_of,
    rendered,
)

# The oldest Kubernetes the manifests support, and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.29", "latest")
PRE_STOP_MARGIN_S = 5


def _version(kv: Any, version: str) -> str:
    return str(kv.latest_version()) if version == "latest" else version


def _all_pods(resources: Any) -> list[dict[str, Any]]:
    return [pod for resource in resources for pod in pod_specs(resource)]


def _raw_manifest_files() -> list[Path]:
    files = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name.startswith("patch-"):
            continue  # kustomize's own file; patches are checked merged, in their overlay
        files.append(path)
    return files


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendered_manifests_validate(fast_schemas: Any, kustomization: str, version: str) -> None:
    """Every object of every rendered kustomization is valid (strict schema: no unknown field)."""
    resources = rendered(kustomization)
    assert resources
    for resource in resources:
        try:
            fast_schemas.validate(resource, _version(fast_schemas, version), strict=True)
        except fast_schemas.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{kustomization}: {resource['kind']}/{resource['metadata']['name']}: "
                f"{where}: {exc.message}"
            )


@pytest.mark.parametrize("path", _raw_manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_each_manifest_file_validates(fast_schemas: Any, path: Path) -> None:
    """Every manifest file on its own (secret.example.yaml included) is valid for the newest API."""
    documents = load_documents(path)
    assert documents
    for document in documents:
        fast_schemas.validate(document, fast_schemas.latest_version(), strict=True)


def test_kustomizations_name_only_existing_files() -> None:
    """Every resource, patch and generator file a kustomization names exists."""
    for kustomization in KUSTOMIZATIONS:
        directory = K8S / kustomization
        spec = load_documents(directory / "kustomization.yaml")[0]
        names = [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []))]
        for generator in [*spec.get("configMapGenerator", []), *spec.get("secretGenerator", [])]:
            names += [f.partition("=")[2] or f for f in generator.get("files", [])]
        for name in names:
            assert (directory / name).exists(), f"{kustomization}: {name} is missing"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_python_rendering_matches_kubectl_kustomize(kustomization: str) -> None:
    """The tests' kustomize subset renders exactly what `kubectl kustomize` does."""
    try:
        result = subprocess.run(
            ["kubectl", "kustomize", str(K8S / kustomization)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        if os.environ.get("CI"):
            pytest.fail("CI is set and kubectl is installed, but kubectl kustomize hung")
        pytest.skip("kubectl kustomize did not answer in time")
    assert result.returncode == 0, result.stderr
    theirs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert normalized(list(rendered(kustomization)), GENERATED) == normalized(theirs, GENERATED)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_images_are_the_one_the_dockerfile_builds(kustomization: str) -> None:
    """Every container runs the onecert image (or a known third-party one), tagged in overlays."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for pod in _all_pods(rendered(kustomization)):
        for container in containers(pod):
            name, tag, _ = split_image(container["image"])
            if name.rpartition("/")[2] in THIRD_PARTY_IMAGES:
                assert tag, f"{container['image']} must name a tag"
                continue
            assert name.rpartition("/")[2] == IMAGE, container["image"]
            if kustomization == "overlays/dev":
                assert container["image"] == "onecert:dev"  # what compose builds
            if kustomization == "overlays/production":
                # The release the manifests were written for; bump with the version.
                assert tag == version, f"{container['image']}: pin the released version"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_config_parses_with_the_real_parser(overlay: str) -> None:
    """The ConfigMap's gateway.toml is a valid production-mode configuration."""
    config = parse_gateway_config(config_text(rendered(overlay)))
    assert not config.dev_plaintext
    assert config.tls is not None
    assert config.tls.client_ca is not None
    assert config.store is not None
    assert config.store.url.startswith("postgresql")
    # The Job migrates; replicas must not race to do it at start-up.
    assert not config.store.auto_migrate


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_agree_with_gateway_listen(overlay: str) -> None:
    """Container ports, Services, probes and NetworkPolicy all use the ports gateway.listen
    and metrics.listen name."""
    resources = rendered(overlay)
    config = parse_gateway_config(config_text(resources))
    port = port_of(config.listen)
    container = gateway_container(resources)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[GRPC_PORT_NAME] == port
    # Prometheus scrapes the port metrics.listen names.
    assert config.metrics.listen is not None
    metrics_port = port_of(config.metrics.listen)
    assert ports[METRICS_PORT_NAME] == metrics_port
    for name in ("onecert-gateway", "onecert-gateway-headless"):
        service = find(resources, "Service", name)
        grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == GRPC_PORT_NAME)
        assert grpc_port["targetPort"] in (GRPC_PORT_NAME, port)
        assert grpc_port["appProtocol"] == "grpc"
    service = find(resources, "Service", "onecert-gateway")
    scraped = next(p for p in service["spec"]["ports"] if p["name"] == METRICS_PORT_NAME)
    assert scraped["targetPort"] in (METRICS_PORT_NAME, metrics_port)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        target = option(container[probe]["exec"]["command"], "--target")
        assert target is not None, probe
        assert port_of(target) == port, probe
    policy = find(resources, "NetworkPolicy", "onecert-gateway")
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {GRPC_PORT_NAME, METRICS_PORT_NAME}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_the_health_service_with_a_real_command(
    overlay: str, healthcheck: ModuleType
) -> None:
    """The probes run onecert-healthcheck with valid arguments, about services the gateway has."""
    services = {
        "",
        gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name,
    }
    container = gateway_container(rendered(overlay))
    asked = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[0] == "onecert-healthcheck"
        args = parse_args(healthcheck.build_parser(), command[1:])
        assert args.service in services, probe
        assert not args.insecure, "the gateway serves mutual TLS only"
        asked[probe] = args.service
        # The probe must give up before the kubelet does.
        assert args.timeout <= container[probe]["timeoutSeconds"]
    assert asked["readinessProbe"] == "onecert.v1.Gateway"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_are_real_onecert_subcommands(overlay: str) -> None:
    """Every onecert container's args parse with the CLI's own parser."""
    parser = build_parser()
    seen = set()
    for resource in rendered(overlay):
        for pod in pod_specs(resource):
            for container in containers(pod):
                if split_image(container["image"])[0].rpartition("/")[2] != IMAGE:
                    continue
                if "command" in container:
                    continue  # the demo adapters: see test_dev_demo_adapters_match_config
                args = parse_args(parser, container["args"])
                seen.add(" ".join(container["args"][:2]))
                assert callable(args.handler)
    assert {"gateway serve", "db upgrade"} <= seen


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_file_the_config_names_is_mounted(overlay: str) -> None:
    """Each file gateway.toml names (and the --config and probe files) lies in a mounted
    volume that provides it: the ConfigMap's key, or a key secret.example.yaml documents."""
    resources = rendered(overlay)
    config = parse_gateway_config(config_text(resources))
    documented = {
        doc["metadata"]["name"]: set(doc.get("stringData", {})) | set(doc.get("data", {}))
        for doc in load_documents(K8S / "secret.example.yaml")
    }
    pod = gateway_pod(resources)
    container = gateway_container(resources)
    volumes = {v["name"]: v for v in pod["volumes"]}
    provided: dict[str, str] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            config_map = find(resources, "ConfigMap", volume["configMap"]["name"])
            keys = set(config_map["data"])
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            assert name in documented, f"secret {name} is not in secret.example.yaml"
            items = volume["secret"].get("items")
            keys = {i["path"] for i in items} if items else documented[name]
        else:
            continue
        for key in keys:
            provided[f"{mount['mountPath']}/{key}"] = mount["name"]
    assert config.tls is not None
    assert config.upstream_tls is not None
    paths: list[Path | str | None] = list(config.files())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        paths += [option(command, flag) for flag in ("--ca", "--cert", "--key")]
    paths.append(option(container["args"], "--config"))
    for path in paths:
        assert path is not None
        assert str(path) in provided, f"{overlay}: nothing provides {path}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_job_migrates_the_database_the_gateway_uses(overlay: str) -> None:
    """The Job runs `onecert db upgrade` on store.url, with the gateway's password and TLS env."""
    resources = rendered(overlay)
    config = parse_gateway_config(config_text(resources))
    assert config.store is not None
    job = find(resources, "Job", "onecert-db-upgrade")
    (container,) = containers(next(pod_specs(job)))
    env = {e["name"]: e for e in container["env"]}
    assert container["args"][:2] == ["db", "upgrade"]
    url = option(container["args"], "--url") or env["ONECERT_DB_URL"]["value"]
    assert url == config.store.url
    schema = option(container["args"], "--schema")
    assert schema == config.store.schema
    gateway_env = {e["name"]: e for e in gateway_container(resources)["env"]}
    for name in ("PGPASSWORD", "PGSSLMODE", "PGSSLROOTCERT"):
        assert env.get(name) == gateway_env.get(name), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_gateway_grace_period(overlay: str) -> None:
    """terminationGracePeriodSeconds >= preStop sleep + gateway.grace_period_s + a margin."""
    resources = rendered(overlay)
    config = parse_gateway_config(config_text(resources))
    pod = gateway_pod(resources)
    command = gateway_container(resources)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pod["terminationGracePeriodSeconds"] >= (
        pre_stop + config.grace_period_s + PRE_STOP_MARGIN_S
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaling_objects_select_the_gateway(overlay: str) -> None:
    """The HPA (2 replicas at least, on CPU) owns the replica count; PDB, Services and
    policies select the gateway pods."""
    resources = rendered(overlay)
    deployment = find(resources, "Deployment", "onecert-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = find(resources, "HorizontalPodAutoscaler", "onecert-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "onecert-gateway",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert gateway_container(resources)["resources"]["requests"]["cpu"], (
        "HPA utilisation needs a CPU request"
    )
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        find(resources, "PodDisruptionBudget", "onecert-gateway")["spec"]["selector"][
            "matchLabels"
        ],
        find(resources, "Service", "onecert-gateway")["spec"]["selector"],
        find(resources, "Service", "onecert-gateway-headless")["spec"]["selector"],
        find(resources, "NetworkPolicy", "onecert-gateway")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    assert find(resources, "Service", "onecert-gateway-headless")["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_run_unprivileged(kustomization: str) -> None:
    """Every pod runs as non-root with no privilege escalation; onecert pods as the image's uid
    with a read-only root filesystem."""
    dockerfile = (REPO / "deploy/Dockerfile").read_text()
    uid = int(dockerfile.split("ARG UID=")[1].split()[0])
    for pod in _all_pods(rendered(kustomization)):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in containers(pod):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            if split_image(container["image"])[0].rpartition("/")[2] == IMAGE:
                assert context["runAsUser"] == uid
                assert security["readOnlyRootFilesystem"] is True


def test_dev_demo_adapters_match_config(dev_secrets: ModuleType) -> None:
    """Each carrier and provider in the dev gateway.toml is a demo container of that role and
    id, listening on the port of its address, on a Service port, with the files it names in
    the Secret dev-secrets.py makes."""
    from onecert.adapters.demo._serve import build_parser as demo_parser

    resources = rendered("overlays/dev")
    config = parse_gateway_config(config_text(resources))
    deployment = find(resources, "Deployment", "onecert-demo")
    pod = next(pod_specs(deployment))
    (volume,) = pod["volumes"]
    _, files = dev_secrets.SECRETS[volume["secret"]["secretName"]]
    service = find(resources, "Service", "onecert-demo")
    assert service["metadata"]["name"] in dev_secrets.KEYS_INIT_ARGS  # a SAN of the server cert
    service_ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    adapters = {}
    for container in containers(next(pod_specs(deployment))):
        assert container["command"] == ["python", "-m", "onecert.adapters.demo"]
        args = parse_args(demo_parser(), container["args"])
        adapters[args.id] = (args.role, port_of(args.listen), args)
        (mount,) = container["volumeMounts"]
        for arg in container["args"]:
            value = arg.partition("=")[2]
            if value.startswith(mount["mountPath"] + "/"):
                assert value.rpartition("/")[2] in files, f"{args.id}: {value} is not provided"
        assert args.gateway_issuer == config.id
    expected = [("carrier", c) for c in config.carriers] + [
        ("provider", p) for p in config.providers
    ]
    assert len(adapters) == len(expected)
    for role, upstream in expected:
        assert upstream.address is not None  # every demo provider serves
        host, port = upstream.address.rsplit(":", 1)
        assert adapters[upstream.id][:2] == (role, int(port)), upstream.id
        assert host == service["metadata"]["name"]
        assert service_ports[int(port)] == int(port)


def test_dev_secrets_match_the_documented_secrets(dev_secrets: ModuleType) -> None:
    """dev-secrets.py makes the gateway's Secrets with the keys secret.example.yaml lists."""
    documented = {
        doc["metadata"]["name"]: (doc["type"], set(doc["stringData"]))
        for doc in load_documents(K8S / "secret.example.yaml")
    }
    for name, (kind, files) in dev_secrets.SECRETS.items():
        if name in documented:
            assert (kind, set(files)) == documented[name], name
    # onecert-db is made by the dev kustomization itself.
    assert set(documented) - set(dev_secrets.SECRETS) == {"onecert-db"}


def test_dev_secrets_script_prints_valid_secrets(
    fast_schemas: Any,
    dev_secrets: ModuleType,
    dev_keys: DevKeys,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """dev-secrets.py prints valid Secrets in the dev namespace, and refuses a keys directory
    that lacks a file with status 2."""
    assert dev_secrets.main([str(dev_keys.directory)]) == 0
    document = json.loads(capsys.readouterr().out)
    namespace = load_documents(K8S / "overlays/dev/kustomization.yaml")[0]["namespace"]
    assert document["kind"] == "List"
    names = set()
    for item in document["items"]:
        fast_schemas.validate(item, fast_schemas.latest_version(), strict=True)
        assert item["metadata"]["namespace"] == namespace
        names.add(item["metadata"]["name"])
    assert names == set(dev_secrets.SECRETS)
    assert dev_secrets.main([str(tmp_path)]) == 2
    assert "onecert keys init" in capsys.readouterr().err
