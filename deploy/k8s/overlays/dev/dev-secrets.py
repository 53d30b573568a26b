#!/usr/bin/env python3
"""Print the dev overlay's Secrets, made from a dev keys directory, for ``kubectl apply``.

    onecert keys init .dev-keys --san onecert-gateway --san onecert-demo
    python deploy/k8s/overlays/dev/dev-secrets.py .dev-keys | kubectl apply -f -

The output is a JSON ``v1/List`` (JSON is YAML, so kubectl takes it) of the
Secrets the gateway reads (``../../secret.example.yaml`` lists them) plus
``onecert-demo-keys`` for the demo adapters. Standard library only. Dev keys
only: never feed it production keys, which the CA key would sit next to.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

NAMESPACE = "onecert-dev"
# What `onecert keys init DIR` needs for this overlay: the server certificate
# must name the gateway's Service (the probes check it) and the demo's.
KEYS_INIT_ARGS = ("--san", "onecert-gateway", "--san", "onecert-demo")

# Secret name -> (type, {key in the Secret: file in the keys directory}).
SECRETS: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "onecert-gateway-keys": (
        "Opaque",
        {
            "warrant.key.pem": "warrant.key.pem",
            "handle.key": "handle.key",
            "identity.jwks.json": "identity.jwks.json",
        },
    ),
    "onecert-gateway-tls": (
        "kubernetes.io/tls",
        {"tls.crt": "server.pem", "tls.key": "server.key.pem", "ca.crt": "ca.pem"},
    ),
    "onecert-gateway-upstream-tls": (
        "kubernetes.io/tls",
        {
            "tls.crt": "client-gateway.pem",
            "tls.key": "client-gateway.key.pem",
            "ca.crt": "ca.pem",
        },
    ),
    "onecert-demo-keys": (
        "Opaque",
        {
            "server.pem": "server.pem",
            "server.key.pem": "server.key.pem",
            "ca.pem": "ca.pem",
            "gateway.jwks.json": "gateway.jwks.json",
            "idn.key": "idn.key",
        },
    ),
}


def secrets(keys_dir: Path, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The ``v1/List`` of Secrets; raises FileNotFoundError naming a missing file."""
    items = []
    for name, (kind, files) in SECRETS.items():
        data = {}
        for key, file in files.items():
            path = keys_dir / file
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: run `onecert keys init {keys_dir} "
                    f"{' '.join(KEYS_INIT_ARGS)}` first"
                )
            data[key] = base64.b64encode(path.read_bytes()).decode("ascii")
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/part-of": "onecert"},
                },
                "type": kind,
                "data": data,
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the Secrets as JSON; the exit status."""
    parser = argparse.ArgumentParser(
        prog="dev-secrets.py", description="Print the dev overlay's Secrets for kubectl apply."
    )
    parser.add_argument("keys_dir", type=Path, metavar="DIR", help="made by `onecert keys init`")
    parser.add_argument("--namespace", default=NAMESPACE, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        document = secrets(args.keys_dir, args.namespace)
    except OSError as exc:
        print(f"dev-secrets.py: {exc}", file=sys.stderr)
        return 2
    json.dump(document, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
