"""The store's side of one notice to many providers, without gRPC: record and settle.

``python -m bench.notice_store [--url URL] [--providers 1000] [--group 50] [--reports 6]``
records a notice routed to ``providers`` push providers, leasing their copies
(as the replica that records a report does), then settles them in groups of
``group`` acknowledgements that each removed a binding, with their
``notice.confirmed`` audit rows (as the push worker's group commits do); it
prints the median time of the recording transaction and of all the group
commits, and the time spent in each kind of statement (the driver's execute
calls, not BEGIN, COMMIT or the pool's checkout). The first report warms the
pool and is left out of the medians. PostgreSQL by default, in a schema of its
own that is dropped afterwards; a ``sqlite:///`` URL works too. Run it against
another tree with ``PYTHONPATH`` to compare (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import statistics
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from onecert.gateway.store import AuditDraft, DeliveryMode, PushResult, Settlement, Store

_MSISDN = "+8613800138000"


async def _run(url: str, providers: int, group: int, reports: int) -> dict[str, Any]:
    schema = None
    admin = None
    if make_url(url).get_backend_name() == "postgresql":
        schema = f"bench_store_{secrets.token_hex(4)}"
        admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    store = Store.open(url, schema=schema, database_clock=schema is not None, timeout_s=30)
    statements: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    try:
        await store.db.upgrade()

        @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
        def _before(conn: Any, *_: Any) -> None:
            conn.info["bench_started"] = time.perf_counter()

        @event.listens_for(store.engine.sync_engine, "after_cursor_execute")
        def _after(conn: Any, _cursor: Any, stmt: str, *rest: Any) -> None:
            key = ("(many) " if rest[-1] else "") + " ".join(stmt.split())[:80]
            statements[key][0] += 1
            statements[key][1] += time.perf_counter() - conn.info["bench_started"]

        ids = [f"p{i:05d}" for i in range(providers)]
        recorded: list[float] = []
        settled: list[float] = []
        for run in range(reports):
            now = datetime.now(UTC)
            started = time.perf_counter()
            _, _, handed = await store.notices.record(
                carrier_id="carrier",
                event_id=f"ev-{run}",
                msisdn=_MSISDN,
                msisdn_hash=hashlib.sha256(_MSISDN.encode()).hexdigest(),
                event_type="RECYCLED",
                effective_at=now - timedelta(hours=1),
                quiet_period_ends_at=None,
                deadline=now + timedelta(days=7),
                providers=[(p, DeliveryMode.PUSH) for p in ids],
                now=now,
                audit=lambda n, created: AuditDraft(
                    kind="notice.reported",
                    actor="carrier:carrier",
                    subject="number",
                    detail={"notice_id": n.notice_id, "created": created},
                ),
                worker_id="bench",
                limit=providers,
            )
            recorded.append(time.perf_counter() - started)
            if len(handed) != providers:
                raise RuntimeError(f"{len(handed)} of {providers} copies handed over")
            started = time.perf_counter()
            for start in range(0, providers, group):
                part = handed[start : start + group]
                await store.cursors.settle_many(
                    [
                        Settlement(h.cursor, [PushResult.acknowledged(h.delivery.jti, 1)])
                        for h in part
                    ],
                    worker_id="bench",
                    now=datetime.now(UTC),
                    audit=[
                        AuditDraft(
                            kind="notice.confirmed",
                            actor=f"provider:{h.cursor.provider_id}",
                            subject=f"jti:{h.delivery.jti}",
                            detail={"bindings_removed": 1, "recorded": True, "via": "push"},
                        )
                        for h in part
                    ],
                )
            settled.append(time.perf_counter() - started)
        verified = await store.audit.verify()
        if not verified.ok:
            raise RuntimeError(f"the audit chain does not verify: {verified}")
    finally:
        await store.close()
        if admin is not None:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            await admin.dispose()
    return {
        "record_ms": round(statistics.median(recorded[1:] or recorded) * 1000, 1),
        "settle_ms": round(statistics.median(settled[1:] or settled) * 1000, 1),
        "statements": {k: (n, round(s * 1000, 1)) for k, (n, s) in statements.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notice_store", description=__doc__)
    parser.add_argument("--url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--group", type=int, default=50)
    parser.add_argument("--reports", type=int, default=6)
    args = parser.parse_args(argv)
    out = asyncio.run(_run(args.url, args.providers, args.group, args.reports))
    groups = -(-args.providers // args.group)
    print(f"recording {args.providers} copies (median): {out['record_ms']} ms")
    print(f"settling them in {groups} group commits (median): {out['settle_ms']} ms")
    print("statements (all reports): count, ms")
    ranked = sorted(out["statements"].items(), key=lambda kv: -kv[1][1])
    for stmt, (count, ms) in ranked[:15]:
        print(f"  {count:6d} {ms:9.1f}  {stmt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
