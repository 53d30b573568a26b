"""Unbind is applied once per request id, whatever the store, restarts and races."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from onecert.sdk import (
    CallInfo,
    IdempotencyStore,
    MemoryIdempotencyStore,
    Provider,
    Server,
    SQLiteIdempotencyStore,
    UnbindOutcome,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk._idempotency import KeyedLocks
from onecert.sdk.testing import CallError, FakeGateway, ProviderEnvironment, serve_in_process
from onecert.v1 import common_pb2
from tests.sdk.sdk_fakes import NUMBER, FakeForum, unbind_pb


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> IdempotencyStore:
    if request.param == "memory":
        return MemoryIdempotencyStore()
    return SQLiteIdempotencyStore(tmp_path / "answers.db")


@pytest.mark.parametrize(
    ("account", "answer"),
    [("u1", (UnbindOutcome.DONE, "")), ("nobody", (UnbindOutcome.REJECTED, "no such account"))],
)
async def test_second_delivery_returns_the_first_answer(
    provider: Provider,
    forum: FakeForum,
    store: IdempotencyStore,
    account: str,
    answer: tuple[UnbindOutcome, str],
) -> None:
    """The same request id twice calls the adapter once and answers the same both times:
    DONE, and REJECTED with its reason, are final."""
    env = ProviderEnvironment(provider, idempotency=store)
    first = await env.unbind(NUMBER, account, request_id="t-1")
    second = await env.unbind(NUMBER, account, request_id="t-1")
    assert (first.outcome, first.reason) == answer
    assert second == first
    assert forum.calls == ["unbind"]


async def test_pending_is_not_final(
    provider: Provider, forum: FakeForum, store: IdempotencyStore
) -> None:
    """PENDING is not replayed: the next delivery asks the adapter again; a final answer sticks."""
    env = ProviderEnvironment(provider, idempotency=store)
    forum.unbind_result = UnbindResult.pending("manual review")
    assert (await env.unbind(NUMBER, "u1", request_id="t-3")).outcome is UnbindOutcome.PENDING
    forum.unbind_result = None
    assert (await env.unbind(NUMBER, "u1", request_id="t-3")).outcome is UnbindOutcome.DONE
    assert (await env.unbind(NUMBER, "u1", request_id="t-3")).outcome is UnbindOutcome.DONE
    assert forum.calls == ["unbind", "unbind"]


async def test_same_request_id_for_another_unbind_is_refused(
    provider: Provider, forum: FakeForum, store: IdempotencyStore
) -> None:
    """Reusing a request id for a different account is INVALID_ARGUMENT and changes nothing."""
    env = ProviderEnvironment(provider, idempotency=store)
    await env.unbind(NUMBER, "u1", request_id="t-4")
    with pytest.raises(CallError) as err:
        await env.unbind(NUMBER, "u2", request_id="t-4")
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert forum.accounts["u2"] == NUMBER
    with pytest.raises(CallError):
        await env.unbind(NUMBER, "u1", request_id="t-4", reason="number_recycled")


async def test_concurrent_duplicates_are_serialised(
    provider: Provider, forum: FakeForum, store: IdempotencyStore
) -> None:
    """Duplicates arriving together reach the adapter once and all get its answer."""
    env = ProviderEnvironment(provider, idempotency=store)
    forum.delay = 0.05
    results = await asyncio.gather(*(env.unbind(NUMBER, "u1", request_id="t-5") for _ in range(5)))
    assert forum.calls == ["unbind"]
    assert {r.outcome for r in results} == {UnbindOutcome.DONE}
    assert len({r.decided_at for r in results}) == 1


async def test_failed_adapter_call_is_not_remembered(
    provider: Provider, forum: FakeForum, store: IdempotencyStore
) -> None:
    """An adapter failure records no answer: the retry calls the adapter again, told it resumes."""
    env = ProviderEnvironment(provider, idempotency=store)
    forum.error = RuntimeError("boom")
    with pytest.raises(CallError) as err:
        await env.unbind(NUMBER, "u1", request_id="t-6")
    assert err.value.code is grpc.StatusCode.INTERNAL
    forum.error = None
    assert (await env.unbind(NUMBER, "u1", request_id="t-6")).outcome is UnbindOutcome.DONE
    assert forum.calls == ["unbind", "unbind"]
    assert [r.resumed for r in forum.unbinds] == [False, True]


async def test_claim_is_stored_before_the_adapter_runs(
    forum: FakeForum, store: IdempotencyStore
) -> None:
    """While the adapter's function runs, the store already holds the request's claim
    (account and hashed number, no answer); the answer replaces it."""
    seen: list[str | None] = []
    unbind = forum.unbind

    async def looking(request: UnbindRequest, info: CallInfo) -> Any:
        seen.append(await store.get("unbind:t-9"))
        return await unbind(request, info)

    forum.unbind = looking  # type: ignore[method-assign]  # observe the store mid-call
    provider = Provider(
        provider_id="example-forum", name="Forum", category="forum", implementation=forum
    )
    env = ProviderEnvironment(provider, idempotency=store)
    assert (await env.unbind(NUMBER, "u1", request_id="t-9")).outcome is UnbindOutcome.DONE
    assert seen[0] is not None
    claim = json.loads(seen[0])
    assert claim["outcome"] == "claimed"
    assert claim["account_ref"] == "u1"
    assert NUMBER.removeprefix("+") not in seen[0]
    answer = json.loads(await store.get("unbind:t-9") or "{}")
    assert answer["outcome"] == "done"
    assert [r.resumed for r in forum.unbinds] == [False]


async def test_pending_then_redelivered_is_not_resumed(
    provider: Provider, forum: FakeForum, store: IdempotencyStore
) -> None:
    """A recorded PENDING answer is a finished call: the next delivery is not marked resumed."""
    env = ProviderEnvironment(provider, idempotency=store)
    forum.unbind_result = UnbindResult.pending("manual review")
    await env.unbind(NUMBER, "u1", request_id="t-10")
    forum.unbind_result = None
    await env.unbind(NUMBER, "u1", request_id="t-10")
    assert [r.resumed for r in forum.unbinds] == [False, False]


async def test_sqlite_answers_survive_a_restart(tmp_path: Path) -> None:
    """With a SQLite file, a redelivery after a restart is still answered from the store."""
    path = tmp_path / "answers.db"
    gateway = FakeGateway(audience="example-forum")
    request = unbind_pb("t-7")
    answers = []
    forums = []
    for _ in range(2):  # two processes' lifetimes: fresh adapter state, same file
        forum = FakeForum()
        forums.append(forum)
        provider = Provider(
            provider_id="example-forum", name="Forum", category="forum", implementation=forum
        )
        async with serve_in_process(provider, gateway=gateway, idempotency=path) as running:
            answers.append(
                await running.provider_stub().Unbind(
                    request, metadata=running.metadata(NUMBER, purpose="unbind"), timeout=5
                )
            )
    assert forums[0].calls == ["unbind"]
    assert forums[1].calls == []
    assert answers[0] == answers[1]
    assert answers[0].outcome == common_pb2.UNBIND_OUTCOME_DONE


async def test_sqlite_store_uses_wal_and_keeps_no_raw_number(tmp_path: Path) -> None:
    """The SQLite file is in WAL mode, and what the SDK stores holds no raw msisdn."""
    path = tmp_path / "answers.db"
    forum = FakeForum()
    provider = Provider(
        provider_id="example-forum", name="Forum", category="forum", implementation=forum
    )
    env = ProviderEnvironment(provider, idempotency=SQLiteIdempotencyStore(path))
    await env.unbind(NUMBER, "u1", request_id="t-8")
    with sqlite3.connect(path) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        rows = conn.execute("SELECT key, value FROM onecert_idempotency").fetchall()
    assert mode == "wal"
    assert [key for key, _ in rows] == ["unbind:t-8"]
    assert NUMBER not in str(rows)
    assert NUMBER.removeprefix("+") not in str(rows)


async def test_stores_put_and_get(store: IdempotencyStore) -> None:
    """A store returns what was put, replaces on a second put, and None for an unknown key."""
    assert await store.get("k") is None
    await store.put("k", "v1")
    await store.put("k", "v2")
    assert await store.get("k") == "v2"
    assert isinstance(store, IdempotencyStore)


async def test_keyed_locks_are_dropped_after_use() -> None:
    """Per-key locks do not accumulate once nobody holds them."""
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with locks.hold("k"):
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    await asyncio.gather(hold("a"), hold("b"))
    assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])
    assert len(locks) == 0


async def test_unusable_sqlite_path_fails_at_start(provider: Provider, tmp_path: Path) -> None:
    """A SQLite store that cannot be opened stops the server from starting, with a clear error."""
    server = Server(
        provider,
        gateway_keys=FakeGateway().keys,
        insecure=True,
        idempotency=tmp_path / "missing-dir" / "answers.db",
    )
    with pytest.raises(ValueError, match="idempotency store"):
        await server.start()


def test_sqlite_store_refuses_a_retention_shorter_than_redelivery(tmp_path: Path) -> None:
    """A retention under the gateway's 7-day ticket lifetime is refused at construction
    (docs/contract.md U-9): a redelivery after it would be applied again."""
    with pytest.raises(ValueError, match="at least 7 days"):
        SQLiteIdempotencyStore(tmp_path / "idem.db", retention=timedelta(days=6))
    store = SQLiteIdempotencyStore(tmp_path / "idem.db", retention=timedelta(days=7))
    assert store.path == tmp_path / "idem.db"
