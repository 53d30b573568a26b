"""Every pooled connection busy past ``timeout_s`` is answered UNAVAILABLE, like a lost database."""

from __future__ import annotations

from contextlib import AsyncExitStack

import grpc
import pytest

from onecert.gateway._refusal import Refusal, store_call
from onecert.gateway.store import Store
from onecert.gateway.store.testing import Database


async def test_a_store_call_waiting_for_a_pooled_connection_past_its_timeout_is_unavailable(
    pg_url: str,
) -> None:
    """With the pool (1 connection and 10 overflow) held, a call is refused cleanly."""
    async with Database.postgres(pg_url) as database:
        store = Store.open(database.url, schema=database.schema, pool_size=1, timeout_s=0.5)
        await store.upgrade()
        try:
            async with AsyncExitStack() as held:
                for _ in range(11):
                    await held.enter_async_context(store.engine.connect())
                with pytest.raises(Refusal) as refused:
                    await store_call(store.registry.snapshot(), "registry snapshot")
                assert refused.value.code is grpc.StatusCode.UNAVAILABLE
                assert refused.value.reason == "store_unavailable"
            # Released, the same call is answered.
            await store_call(store.registry.snapshot(), "registry snapshot")
        finally:
            await store.close()
