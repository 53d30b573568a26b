"""Audit rows that must be committed before the caller hears the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from onecert.gateway.store import AuditDraft
from onecert.v1 import gateway_pb2
from tests.unbind.unbind_support import UnbindWorld


async def test_lookup_summary_is_sent_only_after_its_audit_row_is_committed(
    env: UnbindWorld,
) -> None:
    """While the audit log cannot commit, the lookup's summary is held back; once the
    commit goes through the summary arrives, and by then the lookup's row is in the log."""
    await env.provider("pay")
    gateway = await env.gateway()
    assert gateway.auditor is not None
    repository = gateway.auditor.store.audit
    append_many = repository.append_many
    blocked = asyncio.Event()
    release = asyncio.Event()
    committed: list[str] = []

    async def held(drafts: Sequence[AuditDraft]) -> Any:
        blocked.set()
        await release.wait()
        result = await append_many(drafts)
        committed.extend(d.kind for d in drafts)
        return result

    repository.append_many = held  # type: ignore[method-assign, assignment]  # the commit is held back
    received: list[str] = []
    committed_at_summary: list[str] = []

    async def read() -> None:
        call = env.fed.stub(gateway).Lookup(
            gateway_pb2.LookupRequest(), metadata=env.metadata(), timeout=20
        )
        async for message in call:
            update = message.WhichOneof("update")
            received.append(update or "")
            if update == "summary":
                committed_at_summary.extend(committed)

    reader = asyncio.create_task(read())
    try:
        await blocked.wait()
        assert "summary" not in received
    finally:
        release.set()  # the gateway's shutdown drains the audit writer
        await reader
    assert received[-1] == "summary"
    assert "lookup" in committed_at_summary
    rows = await env.audit_rows()
    assert [r["kind"] for r in rows].count("lookup") == 1
    assert '"outcome":"ok"' in next(r["detail"] for r in rows if r["kind"] == "lookup")


async def test_lookup_cancelled_while_its_row_commits_keeps_that_one_row(
    env: UnbindWorld,
) -> None:
    """A lookup cancelled after its totals were final, while its audit row waits to
    commit, is not audited twice: the row queued with the final counts is committed."""
    await env.provider("pay")
    gateway = await env.gateway()
    assert gateway.auditor is not None
    repository = gateway.auditor.store.audit
    append_many = repository.append_many
    blocked = asyncio.Event()
    release = asyncio.Event()

    async def held(drafts: Sequence[AuditDraft]) -> Any:
        blocked.set()
        await release.wait()
        return await append_many(drafts)

    repository.append_many = held  # type: ignore[method-assign, assignment]  # the commit is held back
    call = env.fed.stub(gateway).Lookup(
        gateway_pb2.LookupRequest(), metadata=env.metadata(), timeout=20
    )

    async def read() -> None:
        async for _ in call:
            pass

    reader = asyncio.create_task(read())
    try:
        await blocked.wait()
        call.cancel()
        await asyncio.sleep(0.2)
    finally:
        release.set()
        await asyncio.gather(reader, return_exceptions=True)
    await gateway.auditor.drain()
    rows = await env.audit_rows()
    assert [r["kind"] for r in rows].count("lookup") == 1
