"""How the fan-out hands over its answers: everything ended at once, or gathered
for a short window so a batching caller sends fewer, fuller messages."""

from __future__ import annotations

import asyncio

from onecert.gateway._config import ProviderConfig
from onecert.gateway._fanout import ProviderAnswers, _Expiry
from onecert.gateway._observers import NO_OBSERVER, ProviderAnswer, ProviderCall, UpstreamOutcome


class Calls:
    """Provider calls that end when the test says so."""

    def __init__(self, *ids: str) -> None:
        loop = asyncio.get_running_loop()
        self._release = {i: asyncio.Event() for i in ids}
        tasks = [asyncio.create_task(self._call(i)) for i in ids]
        self.answers = ProviderAnswers(tasks, _Expiry(loop), loop.time(), NO_OBSERVER)

    async def _call(self, provider_id: str) -> ProviderAnswer:
        await self._release[provider_id].wait()
        provider = ProviderConfig(id=provider_id, address="unused:1")
        now = asyncio.get_running_loop().time()
        return ProviderAnswer(
            ProviderCall(provider, "+8613800138000"), UpstreamOutcome.ANSWERED, "", (), 1, now
        )

    async def end(self, *ids: str) -> None:
        """End these calls, each in its own turn of the loop (as gRPC's completions come)."""
        for provider_id in ids:
            self._release[provider_id].set()
            await asyncio.sleep(0)

    def end_together(self, *ids: str) -> None:
        """End these calls in the same turn of the loop."""
        for provider_id in ids:
            self._release[provider_id].set()


def _ids(batch: list[ProviderAnswer]) -> list[str]:
    return sorted(a.call.provider.id for a in batch)


async def test_without_a_window_a_batch_is_what_has_ended() -> None:
    """ready() hands over what has ended, at once, and waits only when nothing has."""
    calls = Calls("a", "b", "c")
    await calls.end("a")
    assert _ids(await calls.answers.ready()) == ["a"]
    waiting = asyncio.create_task(calls.answers.ready())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    calls.end_together("b", "c")
    assert _ids(await waiting) == ["b", "c"]
    assert calls.answers.remaining == 0
    assert await calls.answers.ready() == []


async def test_answers_ending_within_the_window_join_the_first() -> None:
    """With a window, answers that end within it of the first of them go together;
    one that ends later goes in the next batch."""
    calls = Calls("a", "b", "c")
    await calls.end("a")
    first = asyncio.create_task(calls.answers.ready(gather=1.0))
    await asyncio.sleep(0.01)
    await calls.end("b")
    # "c" has not ended when the window closes: the batch goes without it.
    assert _ids(await asyncio.wait_for(first, timeout=10)) == ["a", "b"]
    assert calls.answers.remaining == 1
    await calls.end("c")
    assert _ids(await calls.answers.ready(gather=1.0)) == ["c"]


async def test_an_answer_ending_inside_the_window_is_waited_for() -> None:
    """The window is waited out for answers still to come: one that ends inside it
    joins the batch it would otherwise have missed."""
    calls = Calls("a", "b", "c")
    await calls.end("a")
    batch = asyncio.create_task(calls.answers.ready(gather=3600))
    await asyncio.sleep(0.01)
    assert not batch.done()
    await calls.end("b")
    await asyncio.sleep(0.01)
    assert not batch.done()
    await calls.end("c")
    # The last call ended: the batch goes at once, the hour's window notwithstanding.
    assert _ids(await asyncio.wait_for(batch, timeout=10)) == ["a", "b", "c"]


async def test_the_last_answers_never_wait_for_the_window() -> None:
    """When every call has ended the batch goes at once, however long the window."""
    calls = Calls("a", "b")
    await calls.end("a", "b")
    assert _ids(await asyncio.wait_for(calls.answers.ready(gather=3600), timeout=10)) == [
        "a",
        "b",
    ]


async def test_a_full_batch_stops_gathering() -> None:
    """A batch that holds ``most`` answers goes at once, the rest in the next."""
    calls = Calls("a", "b", "c", "d")
    await calls.end("a", "b", "c")
    batch = await asyncio.wait_for(calls.answers.ready(gather=3600, most=2), timeout=10)
    assert len(batch) == 3
    await calls.end("d")
    assert _ids(await calls.answers.ready(gather=3600, most=2)) == ["d"]
