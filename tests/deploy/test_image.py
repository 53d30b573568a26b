"""deploy/Dockerfile, checked without a Docker engine: what it copies exists
and survives its ignore file, it installs what pyproject declares, and it
runs the console script as a fixed non-root user."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_kustomize import containers, pod_specs, split_image
from tests.deploy.deploy_support import DEPLOY, REPO, compose, rendered

DOCKERFILE = DEPLOY / "Dockerfile"
IGNORE_FILE = DEPLOY / "Dockerfile.dockerignore"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    # Docker's patterns: `*` within a path segment, `**` across segments,
    # a trailing slash means the directory.
    pattern = pattern.strip("/")
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out + r"\Z")


def excluded(path: str) -> bool:
    """Whether the build context leaves out ``path`` (relative to the repository), the way
    BuildKit reads deploy/Dockerfile.dockerignore: the last pattern matching the path or one
    of its parent directories decides."""
    rules = []
    for raw in IGNORE_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _ignore_regex(line.lstrip("!"))))
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def test_multi_stage_on_python_slim() -> None:
    """Two stages at least, both from the python slim image of the project's Python."""
    instructions = _instructions()
    default = next(a for i, a in instructions if i == "ARG" and a.startswith("PYTHON_IMAGE="))
    image = default.partition("=")[2]
    requires = str(_pyproject()["project"]["requires-python"])
    assert image == f"python:{requires.removeprefix('>=')}-slim"
    stages = [a for i, a in instructions if i == "FROM"]
    assert len(stages) >= 2
    assert all(stage.startswith("${PYTHON_IMAGE}") for stage in stages)


def test_every_copied_path_exists_and_is_in_the_context() -> None:
    """Each COPY source exists in the repository and the ignore file lets it through."""
    copies = [a.split() for i, a in _instructions() if i == "COPY" and "--from" not in a]
    assert copies
    for words in copies:
        sources = [w for w in words[:-1] if not w.startswith("--")]
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: no such path"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            kept = [
                f
                for f in files
                if "__pycache__" not in f.parts and not excluded(str(f.relative_to(REPO)))
            ]
            assert kept, f"COPY {source}: the ignore file leaves nothing"
            assert len(kept) == len([f for f in files if "__pycache__" not in f.parts]), source


def test_the_wheel_sources_are_all_copied() -> None:
    """Every folder the wheel is built from is copied into the build stage."""
    copied = {
        source.rstrip("/")
        for i, a in _instructions()
        if i == "COPY" and "--from" not in a
        for source in a.split()[:-1]
    }
    tool = _pyproject()["tool"]
    packages = tool["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert set(packages) <= copied
    readme = _pyproject()["project"]["readme"]
    assert readme in copied
    assert "pyproject.toml" in copied


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        ".demo/gateway.toml",
        "gateway/onecert/gateway/__pycache__/x.pyc",
        "deploy/compose.yaml",
    ],
)
def test_ignore_file_keeps_the_context_small(path: str) -> None:
    """Virtualenvs, git data, tests, demo state, caches and the rest of deploy/ stay out."""
    assert excluded(path)


def test_installs_the_runtime_extras_only() -> None:
    """The project wheel goes in with the gateway and sql extras, never dev."""
    runs = " ".join(a for i, a in _instructions() if i == "RUN")
    match = re.search(r"onecert-\*\.whl\)\[([a-z,]+)\]", runs)
    assert match is not None, "the wheel is installed with extras"
    extras = set(match.group(1).split(","))
    declared = set(_pyproject()["project"]["optional-dependencies"])
    assert extras == {"gateway", "sql"}
    assert extras <= declared


def test_entrypoint_is_the_console_script_as_a_fixed_non_root_user() -> None:
    """ENTRYPOINT is the `onecert` console script; USER is the fixed uid the manifests run as."""
    instructions = _instructions()
    scripts = _pyproject()["project"]["scripts"]
    entrypoint = next(a for i, a in instructions if i == "ENTRYPOINT")
    assert entrypoint == '["onecert"]'
    assert "onecert" in scripts
    uid = next(a for i, a in instructions if i == "ARG" and a.startswith("UID=")).partition("=")[2]
    assert int(uid) >= 1000
    assert [a for i, a in instructions if i == "USER"] == ["${UID}:${UID}"]
    for kustomization in ("overlays/dev", "overlays/production"):
        for resource in rendered(kustomization):
            for pod in pod_specs(resource):
                images = {split_image(c["image"])[0].rpartition("/")[2] for c in containers(pod)}
                if "onecert" in images:
                    assert pod["securityContext"]["runAsUser"] == int(uid)


def test_healthcheck_is_installed_under_the_name_the_probes_run() -> None:
    """The image installs deploy/healthcheck.py as onecert-healthcheck, executable, on PATH."""
    runs = " ".join(a for i, a in _instructions() if i == "RUN")
    assert "install -m 0755 deploy/healthcheck.py /opt/venv/bin/onecert-healthcheck" in runs
    envs = " ".join(a for i, a in _instructions() if i == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in envs
    gateway = compose()["services"]["gateway"]
    assert gateway["healthcheck"]["test"][1] == "onecert-healthcheck"
    assert Path(DEPLOY / "healthcheck.py").read_text().startswith("#!/usr/bin/env python3")
