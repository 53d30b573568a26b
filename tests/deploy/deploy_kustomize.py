"""The subset of kustomize that deploy/k8s uses, in Python, so the tests can
render the overlays on a machine without kustomize (or kubectl).

Supported, as kustomize does it: ``resources`` (files and directories),
``namespace``, ``images`` (newName, newTag, digest), ``patches`` given by
``path`` (strategic merge, targets named by the patch itself),
``configMapGenerator`` and ``secretGenerator`` (``files`` and ``literals``,
behavior ``create``) with the content-hash name suffix and the references to
them rewritten. Anything else in a kustomization raises
:class:`UnsupportedError`, so the overlays cannot drift into what this
renderer gets wrong. Where kubectl is installed, a test compares the output
with ``kubectl kustomize``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

_KNOWN_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "images",
        "patches",
        "configMapGenerator",
        "secretGenerator",
    }
)
_CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding"})
# Strategic-merge keys of the lists the manifests patch, by field name.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


class UnsupportedError(ValueError):
    """The kustomization uses a feature this renderer does not implement."""


def load_documents(path: Path) -> list[Resource]:
    """Every non-empty YAML document of ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def render(directory: Path) -> list[Resource]:
    """Render the kustomization in ``directory`` like ``kustomize build``."""
    kustomization = load_documents(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - _KNOWN_FIELDS
    if unknown:
        raise UnsupportedError(f"{directory}: unsupported fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        if target.is_dir():
            resources += render(target)
        else:
            resources += load_documents(target)
    generated = [
        *(
            _generate(directory, s, kind="ConfigMap")
            for s in kustomization.get("configMapGenerator", [])
        ),
        *(_generate(directory, s, kind="Secret") for s in kustomization.get("secretGenerator", [])),
    ]
    resources += generated
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise UnsupportedError(f"{directory}: only `patches: - path: FILE` is supported")
        for document in load_documents(directory / patch["path"]):
            _apply_patch(resources, document, where=directory / patch["path"])
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    namespace = kustomization.get("namespace")
    if namespace:
        for resource in resources:
            if resource["kind"] not in _CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace
    renames = {}
    for resource in generated:
        name = resource["metadata"]["name"]
        hashed = f"{name}-{content_hash(resource)}"
        resource["metadata"]["name"] = hashed
        renames[resource["kind"], name] = hashed
    if renames:
        for resource in resources:
            for pod in pod_specs(resource):
                _rename_references(pod, renames)
    return resources


def _generate(directory: Path, spec: dict[str, Any], *, kind: str) -> Resource:
    unknown = set(spec) - {"name", "files", "literals", "behavior", "type"}
    if unknown or spec.get("behavior", "create") != "create":
        raise UnsupportedError(f"{directory}: generator {spec.get('name')}: {sorted(unknown)}")
    data: dict[str, str] = {}
    for entry in spec.get("files", []):
        key, sep, file = entry.partition("=")
        if not sep:
            key, file = Path(entry).name, entry
        data[key] = (directory / file).read_text(encoding="utf-8")
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    resource: Resource = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": spec["name"]},
    }
    if kind == "Secret":
        resource["type"] = spec.get("type", "Opaque")
        resource["data"] = {
            k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()
        }
    else:
        resource["data"] = data
    return resource


def content_hash(resource: Resource) -> str:
    """Kustomize's name suffix for a generated ConfigMap or Secret."""
    # kustomize 5 looks the name up by a path it does not split
    # ("metadata/name"), finds nothing and hashes an empty name, so only the
    # content counts (kubectl create --append-hash hashes the real name).
    encoded: dict[str, Any] = {"kind": resource["kind"], "name": ""}
    encoded["data"] = resource.get("data", {})
    if resource["kind"] == "Secret":
        encoded["type"] = resource["type"]
    # Go's json.Marshal: sorted keys, no spaces, HTML characters escaped.
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    # Kustomize swaps some characters so the suffix never spells a word.
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _apply_patch(resources: list[Resource], patch: Resource, *, where: Path) -> None:
    kind, name = patch["kind"], patch["metadata"]["name"]
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    if len(matches) != 1:
        raise UnsupportedError(f"{where}: patch for {kind}/{name} matches {len(matches)} objects")
    merged = strategic_merge(matches[0], patch)
    matches[0].clear()
    matches[0].update(merged)


def strategic_merge(original: Any, patch: Any, field: str = "") -> Any:
    """Merge ``patch`` into ``original``: maps deeply, keyed lists by key, other lists replaced."""
    if isinstance(original, dict) and isinstance(patch, dict):
        result = copy.deepcopy(original)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            elif key in result:
                result[key] = strategic_merge(result[key], value, key)
            else:
                result[key] = copy.deepcopy(value)
        return result
    if isinstance(original, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        result_list = copy.deepcopy(original)
        for item in patch:
            index = next((i for i, old in enumerate(result_list) if old[key] == item[key]), None)
            if index is None:
                result_list.append(copy.deepcopy(item))
            else:
                result_list[index] = strategic_merge(result_list[index], item)
        return result_list
    return copy.deepcopy(patch)


def pod_specs(resource: Resource) -> Iterator[dict[str, Any]]:
    """The pod spec of a workload (Deployment, StatefulSet, Job, ...), if it has one."""
    spec = resource.get("spec", {})
    if resource["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template", {}) if isinstance(spec, dict) else {}
    if isinstance(template, dict) and "spec" in template and "containers" in template["spec"]:
        yield template["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers and containers of a pod spec."""
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` -> (name, tag, digest); a registry port is not a tag."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_image(resources: list[Resource], spec: dict[str, Any]) -> None:
    unknown = set(spec) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise UnsupportedError(f"images: unsupported fields {sorted(unknown)}")
    for resource in resources:
        for pod in pod_specs(resource):
            for container in containers(pod):
                name, tag, digest = split_image(container["image"])
                if name != spec["name"]:
                    continue
                name = spec.get("newName", name)
                if "digest" in spec:
                    container["image"] = f"{name}@{spec['digest']}"
                    continue
                tag = spec.get("newTag", tag)
                image = f"{name}:{tag}" if tag else name
                container["image"] = f"{image}@{digest}" if digest else image


def _rename_references(pod: dict[str, Any], renames: dict[tuple[str, str], str]) -> None:
    def rename(holder: dict[str, Any] | None, field: str, kind: str) -> None:
        if holder is not None and (kind, holder.get(field)) in renames:
            holder[field] = renames[kind, holder[field]]

    for volume in pod.get("volumes", []):
        rename(volume.get("configMap"), "name", "ConfigMap")
        rename(volume.get("secret"), "secretName", "Secret")
        for source in volume.get("projected", {}).get("sources", []):
            rename(source.get("configMap"), "name", "ConfigMap")
            rename(source.get("secret"), "name", "Secret")
    for container in containers(pod):
        for env in container.get("env", []):
            value_from = env.get("valueFrom", {})
            rename(value_from.get("configMapKeyRef"), "name", "ConfigMap")
            rename(value_from.get("secretKeyRef"), "name", "Secret")
        for source in container.get("envFrom", []):
            rename(source.get("configMapRef"), "name", "ConfigMap")
            rename(source.get("secretRef"), "name", "Secret")


def normalized(
    resources: list[Resource], generated: Iterable[str] = ()
) -> dict[tuple[str, str], Resource]:
    """Objects by (kind, name), keyed lists sorted, the hash suffixes of the
    ``generated`` names replaced by ``HASH``: for comparing two renderings
    (kustomize versions differ in how they hash)."""
    text = json.dumps(resources)
    for name in generated:
        text = re.sub(rf'"{re.escape(name)}-[a-z0-9]{{10}}"', f'"{name}-HASH"', text)
    resources = json.loads(text)

    def sort_lists(value: Any, field: str = "") -> Any:
        if isinstance(value, dict):
            return {k: sort_lists(v, k) for k, v in value.items()}
        if isinstance(value, list):
            items = [sort_lists(v) for v in value]
            if field in MERGE_KEYS:
                items.sort(key=lambda item: str(item[MERGE_KEYS[field]]))
            return items
        return value

    return {(r["kind"], r["metadata"]["name"]): sort_lists(r) for r in resources}
