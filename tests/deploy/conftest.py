"""Fixtures for the deployment tests: the deploy scripts loaded as modules,
dev keys, and the Kubernetes schemas."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from onecert.cli import build_parser
from onecert.sdk.devkeys import DEFAULT_CLIENTS, DevKeys, init_dev_keys
from tests.deploy.deploy_support import DEPLOY, K8S, load_script, parse_args


@pytest.fixture(scope="session")
def healthcheck() -> ModuleType:
    """``deploy/healthcheck.py``, the image's ``onecert-healthcheck``."""
    return load_script(DEPLOY / "healthcheck.py", "onecert_deploy_healthcheck")


@pytest.fixture(scope="session")
def dev_secrets() -> ModuleType:
    """``deploy/k8s/overlays/dev/dev-secrets.py``."""
    return load_script(K8S / "overlays/dev/dev-secrets.py", "onecert_deploy_dev_secrets")


@pytest.fixture(scope="session")
def dev_keys(tmp_path_factory: pytest.TempPathFactory, dev_secrets: ModuleType) -> DevKeys:
    """Dev keys made the way the dev overlay's instructions say (dev-secrets.py)."""
    directory = tmp_path_factory.mktemp("keys") / "keys"
    args = parse_args(build_parser(), ["keys", "init", str(directory), *dev_secrets.KEYS_INIT_ARGS])
    return init_dev_keys(
        args.directory, clients=(*DEFAULT_CLIENTS, *args.client), extra_sans=args.san
    )


@pytest.fixture(scope="session")
def fast_schemas() -> Iterator[Any]:
    """kubernetes_validate, with its schema files parsed once per session
    (it reads them again on every call otherwise)."""
    import kubernetes_validate.utils as kv  # type: ignore[import-untyped]  # no type hints shipped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kv, "schema_contents", functools.cache(kv.schema_contents))
        yield kv
