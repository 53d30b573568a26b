"""The routing filter format: the published test vectors (formats 1 and 2), serialization,
sizing and folding."""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecert.sdk._filter import element_positions
from onecert.sdk.routing import (
    DEFAULT_FP_RATE,
    FilterAdditions,
    FilterBuilder,
    FilterFormatError,
    RoutingFilter,
    bit_positions,
    bits_for,
    default_fp_rate,
    expected_fp_rate,
    fold,
    hashes_for,
    key_check,
    routing_digest,
)
from tests.routing.routing_support import E164_NUMBERS, FilterShape, filter_shapes

DOC = Path(__file__).resolve().parents[2] / "docs" / "routing.md"

# The test vectors printed in docs/routing.md: format 1, then format 2.
VECTOR_KEY = bytes(range(32))
VECTOR_KEY_CHECK = "d41a28a0aa274071"
VECTOR_CREATED_AT = 1767225600  # 2026-01-01T00:00:00Z
VECTOR_NUMBERS = {
    "+8613800138000": (
        "eee9810e7b839a5c52ae4093c2785f71089272caa6d14ea9956bc905af031e79",
        [494, 65, 148, 231, 314, 397, 480],
    ),
    "+8613912345678": (
        "b76d97022a050634ef12af47a14b2c95665664af04b6bc4c4f85634ad1987bf2",
        [439, 166, 405, 132, 371, 98, 337],
    ),
    "+14155550123": (
        "1827d86c9c01ecd3641100d8042cb869625c52b75043e3ed2111198273434261",
        [280, 125, 482, 327, 172, 17, 374],
    ),
}
VECTOR_HEADER = (
    "4f435246010007000100000000000000d41a28a0aa2740710002000000000000"
    "030000000000000000b9556900000000"
)
VECTOR_BITS = (
    "00000200000000000200000004000020100010004010000000000000800000000"
    "000000100000004800002000000480000202000000080000000000005400000"
)
VECTOR_ADDITIONS = (
    "4f435241010000000100000001000000d41a28a0aa27407110c7556900000000"
    "f1600426f95f1bfa7af0611f4485ef4d"
)
# Format 2: the same numbers, key and size.
VECTOR2_POSITIONS = {
    "+8613800138000": [479, 49, 466, 436, 362, 447, 281],
    "+8613912345678": [230, 223, 479, 60, 155, 499, 28],
    "+14155550123": [47, 130, 94, 309, 434, 124, 458],
}
VECTOR2_HEADER = (
    "4f435246020007000100000000000000d41a28a0aa2740710002000000000000"
    "030000000000000000b9556900000000"
)
VECTOR2_BITS = (
    "0000001000800210000000400000001004000008000000000000008040000000"
    "0000000200002000000000000004000000000000000014800004048000000800"
)

_M64 = 2**64


def _spec_mix(x: int) -> int:
    """SplitMix64's finaliser as the format writes it."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % _M64
    return x ^ (x >> 31)


def _spec_positions(key: bytes, msisdn: str, m: int, k: int, fmt: int = 1) -> list[int]:
    """The positions computed straight from the written rule, independently of the module."""
    digest = hmac.new(key, msisdn.encode("ascii"), hashlib.sha256).digest()
    h1 = struct.unpack("<Q", digest[0:8])[0]
    h2 = struct.unpack("<Q", digest[8:16])[0] | 1
    probes = [(h1 + i * h2) % _M64 for i in range(k)]
    if fmt == 2:
        probes = [_spec_mix(x) for x in probes]
    return [x % m for x in probes]


def _vector_filter(fmt: int = 1) -> RoutingFilter:
    builder = FilterBuilder(VECTOR_KEY, key_version=1, m=512, k=7, fmt=fmt)
    for number in VECTOR_NUMBERS:
        builder.add(number)
    return builder.snapshot(created_at=VECTOR_CREATED_AT)


def test_vector_digests_and_positions() -> None:
    """Each vector number's digest and bit positions are exactly the published ones."""
    for number, (digest_hex, positions) in VECTOR_NUMBERS.items():
        digest = routing_digest(VECTOR_KEY, number)
        assert digest.hex() == digest_hex
        assert bit_positions(digest, 512, 7, 1) == positions
        assert _spec_positions(VECTOR_KEY, number, 512, 7) == positions
        assert bit_positions(digest, 512, 7, 2) == VECTOR2_POSITIONS[number]
        assert _spec_positions(VECTOR_KEY, number, 512, 7, 2) == VECTOR2_POSITIONS[number]
    assert key_check(VECTOR_KEY).hex() == VECTOR_KEY_CHECK


def test_vector_serialized_filter() -> None:
    """The vector's filters serialize to exactly the published headers and bits."""
    raw = _vector_filter(1).to_bytes()
    assert raw[:48].hex() == VECTOR_HEADER
    assert raw[48:].hex() == VECTOR_BITS
    assert RoutingFilter.from_bytes(raw) == _vector_filter(1)
    raw = _vector_filter(2).to_bytes()
    assert raw[:48].hex() == VECTOR2_HEADER
    assert raw[48:].hex() == VECTOR2_BITS
    assert RoutingFilter.from_bytes(raw) == _vector_filter(2)


def test_the_sdk_builds_format_2_and_reads_both() -> None:
    """New filters are format 2 unless asked for 1; a reader refuses any other version."""
    assert FilterBuilder(VECTOR_KEY, key_version=1, m=512, k=7).fmt == 2
    raw = bytearray(_vector_filter(2).to_bytes())
    raw[4] = 3
    with pytest.raises(FilterFormatError, match="format version 3"):
        RoutingFilter.from_bytes(bytes(raw))
    v1 = RoutingFilter.from_bytes(_vector_filter(1).to_bytes())
    v2 = RoutingFilter.from_bytes(_vector_filter(2).to_bytes())
    for number in VECTOR_NUMBERS:
        digest = routing_digest(VECTOR_KEY, number)
        assert v1.may_contain(digest)
        assert v2.may_contain(digest)


def test_vector_serialized_additions() -> None:
    """The vector's additions message serializes to exactly the published bytes."""
    additions = FilterAdditions.of(VECTOR_KEY, 1, ["+8613700001111"], created_at=1767229200)
    assert additions.to_bytes().hex() == VECTOR_ADDITIONS
    assert FilterAdditions.from_bytes(additions.to_bytes()) == additions


def test_vector_is_the_one_in_the_docs() -> None:
    """docs/routing.md prints the same vector this test checks."""
    text = "".join(DOC.read_text(encoding="utf-8").split())
    for value in (
        VECTOR_KEY_CHECK,
        VECTOR_HEADER,
        VECTOR_BITS,
        VECTOR_ADDITIONS,
        VECTOR2_HEADER,
        VECTOR2_BITS,
    ):
        assert value in text
    for number, (digest_hex, positions) in VECTOR_NUMBERS.items():
        assert digest_hex in text
        assert str(positions).replace(" ", "") in text
        assert str(VECTOR2_POSITIONS[number]).replace(" ", "") in text


@settings(max_examples=60, deadline=None)
@given(shape=filter_shapes(max_numbers=40, max_log2_m=14, max_k=12))
def test_builder_matches_the_written_rule(shape: FilterShape) -> None:
    """Every bit the builder sets is one the written rule names, and every named bit is set."""
    m, k, fmt = shape.m, shape.k, shape.fmt
    builder = shape.builder(VECTOR_KEY)
    expected = set()
    for number in shape.numbers:
        builder.add(number)
        expected.update(_spec_positions(VECTOR_KEY, number, m, k, fmt))
    bits = builder.snapshot(created_at=0).bits
    set_bits = {j for j in range(m) if bits[j >> 3] >> (j & 7) & 1}
    assert set_bits == expected


@settings(max_examples=40, deadline=None)
@given(
    numbers=st.lists(E164_NUMBERS, max_size=60),
    shrink=st.integers(min_value=0, max_value=4),
    fmt=st.sampled_from([1, 2]),
)
def test_folding_equals_building_small(numbers: list[str], shrink: int, fmt: int) -> None:
    """A filter folded to a smaller power of two is the filter built at that size."""
    big = FilterBuilder(VECTOR_KEY, key_version=1, m=1 << 13, k=7, fmt=fmt)
    small = FilterBuilder(VECTOR_KEY, key_version=1, m=1 << (13 - shrink), k=7, fmt=fmt)
    for number in numbers:
        big.add(number)
        small.add(number)
    big.fold_to(1 << (13 - shrink))
    assert big.snapshot(created_at=1) == small.snapshot(created_at=1)
    assert fold(bytes(64), 512, 512) == bytes(64)


@settings(max_examples=40, deadline=None)
@given(numbers=st.lists(E164_NUMBERS, max_size=80))
def test_no_false_negatives(numbers: list[str]) -> None:
    """A filter says 'maybe' for every number inserted into it."""
    builder = FilterBuilder(VECTOR_KEY, key_version=1, m=bits_for(len(numbers), 7), k=7)
    builder.add_many(numbers)
    snapshot = RoutingFilter.from_bytes(builder.snapshot(created_at=5).to_bytes())
    assert all(snapshot.may_contain(routing_digest(VECTOR_KEY, n)) for n in numbers)


@pytest.mark.parametrize(("fp_rate", "k"), [(0.5, 1), (0.1, 4), (0.01, 7), (0.001, 10)])
def test_false_positive_rate_is_close_to_the_configured_one(fp_rate: float, k: int) -> None:
    """On random numbers the measured false-positive rate matches the filter's expected rate,
    which is at most the configured one."""
    rng = random.Random(fp_rate)
    count = 4000
    members = {f"+86138{rng.randrange(10**8):08d}" for _ in range(count)}
    assert hashes_for(fp_rate) == k
    builder = FilterBuilder(VECTOR_KEY, key_version=1, m=bits_for(len(members), k), k=k)
    builder.add_many(sorted(members))
    snapshot = builder.snapshot(created_at=0)
    trials = 40_000
    outsiders = [f"+86159{i:08d}" for i in range(trials)]
    hits = sum(snapshot.may_contain(routing_digest(VECTOR_KEY, n)) for n in outsiders)
    expected = expected_fp_rate(snapshot.m, k, len(members))
    assert expected <= fp_rate
    # Four standard deviations of a binomial: fails by chance about once in 15,000 runs,
    # and the seeds are fixed.
    slack = 4 * math.sqrt(expected * (1 - expected) / trials)
    assert abs(hits / trials - expected) <= slack


def _measured_rate(fmt: int, *, filters: int, numbers: int, k: int, queries: int) -> float:
    """The share of random elements that small filters of the format say 'maybe' to."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(fmt)
    m = bits_for(numbers, k)
    hits = 0
    for f in range(filters):
        builder = FilterBuilder(VECTOR_KEY, key_version=1, m=m, k=k, fmt=fmt)
        builder.add_many([f"+86150{f:03d}{i:05d}" for i in range(numbers)])
        bits = np.unpackbits(
            np.frombuffer(builder.snapshot(created_at=0).bits, np.uint8), bitorder="little"
        )
        elements = rng.integers(0, 256, size=16 * queries, dtype=np.uint8).tobytes()
        positions = element_positions(elements, m, k, fmt).reshape(queries, k)
        hits += int(bits[positions].all(axis=1).sum())
    return hits / (filters * queries)


def test_format_2_has_the_theoretical_rate_on_small_filters() -> None:
    """Small filters at 0.01% (101 numbers, k = 14, 2,048 bits) have the rate the theory
    gives in format 2; format 1's positions depend only on the low bits of h1 and h2,
    and collide often enough to give several times that."""
    k, numbers, filters, queries = 14, 101, 20, 100_000
    expected = expected_fp_rate(bits_for(numbers, k), k, numbers)
    slack = 4 * math.sqrt(expected / (filters * queries))
    v2 = _measured_rate(2, filters=filters, numbers=numbers, k=k, queries=queries)
    assert abs(v2 - expected) <= slack + 0.1 * expected
    v1 = _measured_rate(1, filters=filters, numbers=numbers, k=k, queries=queries)
    assert v1 > 2 * expected


def test_default_rate_follows_the_size_of_the_set() -> None:
    """The SDK's default rate is 0.01% below 100,000 numbers and 1% from there."""
    assert default_fp_rate(0) == default_fp_rate(99_999) == 0.0001
    assert default_fp_rate(100_000) == default_fp_rate(10**7) == DEFAULT_FP_RATE == 0.01
    assert hashes_for(default_fp_rate(1_000)) == 14


def test_sizing() -> None:
    """k follows log2(1/p), m is the smallest power of two of at least n*k/ln2 bits, from 512."""
    assert hashes_for(0.01) == 7
    assert bits_for(0, 7) == 512
    assert bits_for(50, 7) == 512
    assert bits_for(51, 7) == 1024
    assert bits_for(1_000_000, 7) == 1 << 24
    assert bits_for(10_000_000, 7) == 1 << 27
    with pytest.raises(ValueError, match="false-positive"):
        hashes_for(0.0)
    with pytest.raises(ValueError, match="more than"):
        bits_for(10**9, 7)


def _with(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value) :]


def _good(kind: type[RoutingFilter | FilterAdditions]) -> bytes:
    """A well-formed message of ``kind``, for the tests to damage."""
    if kind is RoutingFilter:
        return _vector_filter().to_bytes()
    return FilterAdditions.of(VECTOR_KEY, 1, ["+8613700001111"], created_at=1).to_bytes()


@pytest.mark.parametrize(
    ("kind", "mutate", "message"),
    [
        (RoutingFilter, lambda raw: raw[:40], "shorter than the 48-byte"),
        (RoutingFilter, lambda raw: _with(raw, 0, b"OCRX"), "magic"),
        (RoutingFilter, lambda raw: _with(raw, 4, struct.pack("<H", 3)), "format version 3"),
        (RoutingFilter, lambda raw: _with(raw, 6, struct.pack("<H", 0)), "k must be"),
        (RoutingFilter, lambda raw: _with(raw, 6, struct.pack("<H", 33)), "k must be"),
        (RoutingFilter, lambda raw: _with(raw, 8, struct.pack("<I", 0)), "key_version"),
        (RoutingFilter, lambda raw: _with(raw, 12, struct.pack("<I", 1)), "reserved flags"),
        (RoutingFilter, lambda raw: _with(raw, 24, struct.pack("<Q", 1000)), "power of two"),
        (RoutingFilter, lambda raw: _with(raw, 24, struct.pack("<Q", 256)), "power of two"),
        (RoutingFilter, lambda raw: _with(raw, 24, struct.pack("<Q", 1024)), "48 \\+ 128 bytes"),
        (RoutingFilter, lambda raw: raw + b"\0", "48 \\+ 64 bytes"),
        (FilterAdditions, lambda raw: raw[:20], "shorter than the 32-byte"),
        (FilterAdditions, lambda raw: _with(raw, 0, b"OCRF"), "magic"),
        (FilterAdditions, lambda raw: _with(raw, 4, struct.pack("<H", 2)), "format version 2"),
        (FilterAdditions, lambda raw: _with(raw, 6, struct.pack("<H", 1)), "reserved field"),
        (FilterAdditions, lambda raw: _with(raw, 12, struct.pack("<I", 2)), "2 additions"),
        (FilterAdditions, lambda raw: _with(raw, 12, struct.pack("<I", 0))[:32], "1 to 65536"),
    ],
)
def test_malformed_filters_and_additions_are_refused(
    kind: type[RoutingFilter | FilterAdditions], mutate: Callable[[bytes], bytes], message: str
) -> None:
    """Each malformed filter or additions message is refused with a message naming what
    is wrong."""
    with pytest.raises(FilterFormatError, match=message):
        kind.from_bytes(mutate(_good(kind)))


def test_additions_refuse_numbers_that_are_not_e164() -> None:
    """Additions are made of E.164 numbers only; anything else raises."""
    with pytest.raises(ValueError, match=r"E\.164"):
        FilterAdditions.of(VECTOR_KEY, 1, ["138 0013 8000"])
