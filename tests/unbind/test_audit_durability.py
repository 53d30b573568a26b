"""Audit rows that must be committed before the caller hears the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from onecert.gateway import GatewayServer
from onecert.gateway.store import AuditDraft
from onecert.v1 import gateway_pb2
from tests.unbind.unbind_support import UnbindWorld


class _HeldCommits:
    """Holds back every commit of ``gateway``'s audit log until ``release`` is set;
    ``blocked`` is set once one waits, ``committed`` lists the kinds committed since."""

    def __init__(self, gateway: GatewayServer) -> None:
        assert gateway.auditor is not None
        repository = gateway.auditor.store.audit
        self._append_many = repository.append_many
        self.blocked = asyncio.Event()
        self.release = asyncio.Event()
        self.committed: list[str] = []
        repository.append_many = self._held  # type: ignore[method-assign, assignment]  # the commit is held back

    async def _held(self, drafts: Sequence[AuditDraft]) -> Any:
        self.blocked.set()
        await self.release.wait()
        result = await self._append_many(drafts)
        self.committed.extend(d.kind for d in drafts)
        return result


async def test_lookup_summary_is_sent_only_after_its_audit_row_is_committed(
    env: UnbindWorld,
) -> None:
    """While the audit log cannot commit, the lookup's summary is held back; once the
    commit goes through the summary arrives, and by then the lookup's row is in the log."""
    await env.provider("pay")
    gateway = await env.gateway()
    commits = _HeldCommits(gateway)
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
                committed_at_summary.extend(commits.committed)

    reader = asyncio.create_task(read())
    try:
        await commits.blocked.wait()
        assert "summary" not in received
    finally:
        commits.release.set()  # the gateway's shutdown drains the audit writer
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
    commits = _HeldCommits(gateway)
    call = env.fed.stub(gateway).Lookup(
        gateway_pb2.LookupRequest(), metadata=env.metadata(), timeout=20
    )

    async def read() -> None:
        async for _ in call:
            pass

    reader = asyncio.create_task(read())
    try:
        await commits.blocked.wait()
        call.cancel()
        await asyncio.sleep(0.2)
    finally:
        commits.release.set()
        await asyncio.gather(reader, return_exceptions=True)
    assert gateway.auditor is not None
    await gateway.auditor.drain()
    rows = await env.audit_rows()
    assert [r["kind"] for r in rows].count("lookup") == 1
