"""The provider's filter builder: sizing from a hint or a count pass, the default rate by
size, bounded memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator

from hypothesis import given, settings

from onecert.sdk.routing import FilterBuilder, RoutingFilter, bits_for, build_filter, routing_digest
from tests.routing.routing_support import FilterShape, filter_shapes

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
    result = await build_filter(
        source, key=KEY, key_version=2, size_hint=2500, clock=lambda: 7.9, fp_rate=0.01
    )
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
    result = await build_filter(source, key=KEY, key_version=2, size_hint=30_000, fp_rate=0.01)
    assert result.passes == 1
    assert result.filter.bits == _direct(300).bits


async def test_a_hint_too_low_takes_a_second_pass() -> None:
    """When the numbers outgrow the hint, a second pass builds the filter at the right size."""
    source = Numbers(5000)
    result = await build_filter(source, key=KEY, key_version=2, size_hint=100, fp_rate=0.01)
    assert (result.passes, source.reads) == (2, 2)
    assert result.filter.bits == _direct(5000).bits
    assert result.filter.count == 5000


async def test_without_a_hint_a_count_pass_comes_first() -> None:
    """Without a hint the builder counts, then builds: two reads, the exact filter."""
    source = Numbers(1234)
    result = await build_filter(source, key=KEY, key_version=2, fp_rate=0.01)
    assert (result.passes, source.reads) == (2, 2)
    assert result.filter.bits == _direct(1234).bits


async def test_values_that_are_not_e164_are_skipped_and_counted() -> None:
    """Values that are not E.164 are left out of the filter and reported as skipped."""
    source = Numbers(10, extra=["13800138000", "+86 138 0013 8000", ""])
    result = await build_filter(source, key=KEY, key_version=2, size_hint=10, fp_rate=0.01)
    assert result.skipped == 3
    assert result.filter.count == 10
    assert result.filter.bits == _direct(10).bits


async def test_the_default_rate_follows_the_size_of_the_set() -> None:
    """Without fp_rate, a set below 100,000 numbers is built at 0.01% (k = 14) and a larger
    one at 1% (k = 7); a one-pass build takes the rate of its hint, a two-pass one of its
    count, and every number is in the filter either way."""
    small = await build_filter(Numbers(500), key=KEY, key_version=2)
    assert (small.filter.k, small.filter.m) == (14, bits_for(500, 14))
    large = await build_filter(Numbers(100_000), key=KEY, key_version=2)
    assert (large.filter.k, large.filter.m) == (7, bits_for(100_000, 7))
    hinted = await build_filter(Numbers(100_000), key=KEY, key_version=2, size_hint=99_999)
    assert (hinted.passes, hinted.filter.k) == (1, 14)
    digests = [routing_digest(KEY, f"+86138{i:08d}") for i in range(0, 100_000, 997)]
    assert all(large.filter.may_contain(d) and hinted.filter.may_contain(d) for d in digests)


async def test_format_1_on_request() -> None:
    """fmt=1 builds the format a gateway that predates format 2 accepts."""
    result = await build_filter(Numbers(300), key=KEY, key_version=2, fmt=1)
    assert result.filter.fmt == 1
    assert RoutingFilter.from_bytes(result.filter.to_bytes()) == result.filter
    assert result.filter.may_contain(routing_digest(KEY, "+8613800000299"))


async def _peak(count: int) -> int:
    tracemalloc.start()
    try:
        result = await build_filter(
            Numbers(count), key=KEY, key_version=2, size_hint=count, fp_rate=0.01
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.filter.count == count
    return peak


async def test_memory_grows_with_the_bits_not_the_numbers() -> None:
    """Four times the numbers cost about four times the filter's bits more, not a list of
    numbers: 60,000 more numbers held as strings would take over 4 MB."""
    # The numpy fast path imports numpy on first use: a constant, not counted here.
    await build_filter(Numbers(100), key=KEY, key_version=2, size_hint=100, fp_rate=0.01)
    small, large = 20_000, 80_000
    growth = await _peak(large) - await _peak(small)
    bits_growth = (bits_for(large, 7) - bits_for(small, 7)) // 8  # 96 KiB
    # Building at twice the size, folding and copying out hold a few copies of the bits.
    assert growth < 6 * bits_growth + 100_000


@settings(max_examples=30, deadline=None)
@given(shape=filter_shapes(max_numbers=300, max_log2_m=16, max_k=16))
def test_numpy_and_pure_python_builders_agree(shape: FilterShape) -> None:
    """The numpy batch path sets exactly the bits the pure-Python path sets, in both formats."""
    fast = shape.builder(KEY, use_numpy=True)
    pure = shape.builder(KEY, use_numpy=False)
    fast.add_many(shape.numbers)
    pure.add_many(shape.numbers)
    assert fast.snapshot(created_at=0) == pure.snapshot(created_at=0)
