"""The provider's filter builder: sizing from a hint or a count pass, bounded memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator

from onecert.sdk.routing import FilterBuilder, RoutingFilter, bits_for, build_filter

KEY = bytes(range(100, 132))


class Numbers:
    """A numbers source that counts how often it was read, like a database query."""

    def __init__(self, count: int, *, extra: list[str] | None = None) -> None:
        self.count = count
        self.extra = extra or []
        self.reads = 0

    def __call__(self) -> AsyncIterator[str]:
        self.reads += 1
        return self._stream()

    async def _stream(self) -> AsyncIterator[str]:
        for i in range(self.count):
            yield f"+86138{i:08d}"
        for value in self.extra:
            yield value


def _direct(count: int) -> RoutingFilter:
    builder = FilterBuilder(KEY, key_version=2, m=bits_for(count, 7), k=7)
    builder.add_many([f"+86138{i:08d}" for i in range(count)])
    return builder.snapshot(created_at=0)


async def test_a_good_hint_builds_in_one_pass_at_the_right_size() -> None:
    """With a size hint near the count, one pass yields exactly the filter sized for the count."""
    source = Numbers(3000)
    result = await build_filter(source, key=KEY, key_version=2, size_hint=2500, clock=lambda: 7.9)
    assert (result.passes, source.reads, result.skipped) == (1, 1, 0)
    expected = _direct(3000)
    assert result.filter.m == expected.m == bits_for(3000, 7)
    assert result.filter.bits == expected.bits
    assert (result.filter.count, result.filter.created_at, result.filter.key_version) == (
        3000,
        7,
        2,
    )


async def test_a_hint_far_too_high_folds_down() -> None:
    """A hint a hundred times the count still yields the small filter the count needs."""
    source = Numbers(300)
    result = await build_filter(source, key=KEY, key_version=2, size_hint=30_000)
    assert result.passes == 1
    assert result.filter.bits == _direct(300).bits


async def test_a_hint_too_low_takes_a_second_pass() -> None:
    """When the numbers outgrow the hint, a second pass builds the filter at the right size."""
    source = Numbers(5000)
    result = await build_filter(source, key=KEY, key_version=2, size_hint=100)
    assert (result.passes, source.reads) == (2, 2)
    assert result.filter.bits == _direct(5000).bits
    assert result.filter.count == 5000


async def test_without_a_hint_a_count_pass_comes_first() -> None:
    """Without a hint the builder counts, then builds: two reads, the exact filter."""
    source = Numbers(1234)
    result = await build_filter(source, key=KEY, key_version=2)
    assert (result.passes, source.reads) == (2, 2)
    assert result.filter.bits == _direct(1234).bits


async def test_values_that_are_not_e164_are_skipped_and_counted() -> None:
    """Values that are not E.164 are left out of the filter and reported as skipped."""
    source = Numbers(10, extra=["13800138000", "+86 138 0013 8000", ""])
    result = await build_filter(source, key=KEY, key_version=2, size_hint=10)
    assert result.skipped == 3
    assert result.filter.count == 10
    assert result.filter.bits == _direct(10).bits


async def test_memory_is_the_bits_not_the_numbers() -> None:
    """Building from 50,000 numbers allocates about the filter's bits, not a list of numbers."""
    count = 50_000
    final_bytes = bits_for(count, 7) // 8  # 64 KiB
    tracemalloc.start()
    try:
        result = await build_filter(Numbers(count), key=KEY, key_version=2, size_hint=count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.filter.count == count
    # Building at twice the size, folding, and copying out: a few times the bits, while
    # the numbers themselves (over 70 bytes each as str) would take more than 3.5 MB.
    assert peak < 6 * final_bytes + 500_000
