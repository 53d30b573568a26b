"""A gateway SIGKILLed while pushing a batch of notices loses none: restarted on the same
database it resumes every provider from its cursor, and nothing is acted on twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from onecert.gateway.store import DeliveryState
from onecert.gateway.store.testing import Database
from onecert.gateway.testing import GatewayProcess, gateway_toml
from tests.notices.notices_support import NoticeWorld, sdk_provider

NOTICES = 8


async def test_sigkill_mid_batch_then_restart_delivers_every_notice_once(
    dev_world: NoticeWorld, database: Database, tmp_path: Path
) -> None:
    """Notices committed before a SIGKILL that lands mid-batch are all acknowledged by
    the restarted gateway, in log order from the provider's cursor; the provider's
    handler runs once per notice (the SDK answers a redelivered one from its record)."""
    # A second per notice: the kill lands while a batch is being handled.
    pay = sdk_provider("pay", acts=1, delay_s=1.0)
    server = await dev_world.fed.adapter(pay.provider, register=False)
    dev_world.fed.add_provider("pay", server.address)
    carriers, providers = dev_world.fed.upstream_tables()
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            dev_world.fed.keys,
            store_url=database.url,
            store_schema=database.schema,
            carriers=carriers,
            providers=providers,
            # Batches of 3, leases a little longer than a push: the restarted
            # process takes the killed one's cursor over soon after.
            sections={
                "notices": {
                    "workers": 1,
                    "batch": 3,
                    "lease_s": 3.0,
                    "push_deadline_s": 2.5,
                    "check_interval_s": 0.1,
                    "backoff_initial_s": 0.1,
                    "backoff_max_s": 0.5,
                }
            },
        )
    )
    log = tmp_path / "gateway.log"

    async with GatewayProcess(config, log) as first:
        carrier = dev_world.caller(first.port, "carrier:cm")
        notice_ids = [
            (await carrier.report(f"ev-{i}", f"+86138001380{i:02d}")).notice_id
            for i in range(NOTICES)
        ]
        async with asyncio.timeout(15):
            await pay.started.wait()
        first.kill()  # SIGKILL: no graceful anything
        await first.wait()

    cursor = await dev_world.store.cursors.get("pay")
    assert cursor is not None
    assert cursor.acked_seq < cursor.head_seq, "the kill came too late to test"

    async with GatewayProcess(config, log):

        async def all_acknowledged() -> bool:
            found = [await dev_world.deliveries(n) for n in notice_ids]
            return all(d["pay"].state is DeliveryState.ACKNOWLEDGED for d in found)

        await dev_world.eventually(all_acknowledged, what="every notice acknowledged", within=60)

    deliveries = [(await dev_world.deliveries(n))["pay"] for n in notice_ids]
    assert all(d.bindings_removed == 1 for d in deliveries)
    assert Counter(n.jti for n in pay.notices) == Counter({d.jti: 1 for d in deliveries})
    after = await dev_world.store.cursors.get("pay")
    assert after is not None
    assert after.acked_seq == after.head_seq == max(d.notice.seq for d in deliveries)
