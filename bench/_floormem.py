"""The memory floor: a bare grpc.aio process with one channel per provider.

``python -m bench._floormem SPEC.json OUT.json``: opens a channel to every
address in the spec (plaintext or mutual TLS, with the gateway's channel
options), makes one ``ListBindings`` call on each, all at once, and writes
its resident memory before and after to ``OUT.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc

from bench._load import floor_channels
from bench._procs import rss_bytes
from onecert.adapters.demo import GATEWAY_ID
from onecert.sdk._keys import SigningKey
from onecert.sdk._tls import ClientTLS
from onecert.sdk._warrant import WarrantIssuer
from onecert.v1 import provider_pb2, provider_pb2_grpc


async def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    issuer = WarrantIssuer(key=SigningKey.load(spec["warrant_key"]), issuer=GATEWAY_ID)
    addresses: dict[str, str] = spec["addresses"]
    tokens = {p: issuer.issue(audience=p, target=spec["msisdn"]) for p in addresses}
    tls = None if spec["tls"] is None else ClientTLS(**spec["tls"])
    request = provider_pb2.ListBindingsRequest(msisdn=spec["msisdn"])
    await asyncio.sleep(0.2)
    ready = rss_bytes(os.getpid())
    builder = floor_channels(tls)
    channels = [builder.open(address, plaintext=tls is None) for address in addresses.values()]

    async def call(channel: grpc.aio.Channel, provider_id: str) -> bool:
        stub = provider_pb2_grpc.BindingProviderStub(channel)
        try:
            await stub.ListBindings(
                request, timeout=30, metadata=(("authorization", f"Bearer {tokens[provider_id]}"),)
            )
        except grpc.aio.AioRpcError:
            return False
        return True

    answers = await asyncio.gather(*(call(c, p) for c, p in zip(channels, addresses, strict=True)))
    await asyncio.sleep(0.2)
    after = rss_bytes(os.getpid())
    await asyncio.gather(*(c.close() for c in channels))
    return {"ready": ready, "after": after, "answered": sum(answers)}


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out = Path(sys.argv[2])
    result = asyncio.run(_measure(spec))
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(result), encoding="utf-8")
    os.replace(partial, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
