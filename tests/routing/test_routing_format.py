"""The routing filter format: the published test vector, serialization, sizing and folding."""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecert.sdk.routing import (
    FilterAdditions,
    FilterBuilder,
    FilterFormatError,
    RoutingFilter,
    bit_positions,
    bits_for,
    expected_fp_rate,
    fold,
    hashes_for,
    key_check,
    routing_digest,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "routing.md"

# The test vector printed in docs/routing.md.
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


def _spec_positions(key: bytes, msisdn: str, m: int, k: int) -> list[int]:
    """The positions computed straight from the written rule, independently of the module."""
    digest = hmac.new(key, msisdn.encode("ascii"), hashlib.sha256).digest()
    h1 = struct.unpack("<Q", digest[0:8])[0]
    h2 = struct.unpack("<Q", digest[8:16])[0] | 1
    return [((h1 + i * h2) % 2**64) % m for i in range(k)]


def _vector_filter() -> RoutingFilter:
    builder = FilterBuilder(VECTOR_KEY, key_version=1, m=512, k=7)
    for number in VECTOR_NUMBERS:
        builder.add(number)
    return builder.snapshot(created_at=VECTOR_CREATED_AT)


def test_vector_digests_and_positions() -> None:
    """Each vector number's digest and bit positions are exactly the published ones."""
    for number, (digest_hex, positions) in VECTOR_NUMBERS.items():
        digest = routing_digest(VECTOR_KEY, number)
        assert digest.hex() == digest_hex
        assert bit_positions(digest, 512, 7) == positions
        assert _spec_positions(VECTOR_KEY, number, 512, 7) == positions
    assert key_check(VECTOR_KEY).hex() == VECTOR_KEY_CHECK


def test_vector_serialized_filter() -> None:
    """The vector's filter serializes to exactly the published header and bits."""
    raw = _vector_filter().to_bytes()
    assert raw[:48].hex() == VECTOR_HEADER
    assert raw[48:].hex() == VECTOR_BITS
    assert RoutingFilter.from_bytes(raw) == _vector_filter()


def test_vector_serialized_additions() -> None:
    """The vector's additions message serializes to exactly the published bytes."""
    additions = FilterAdditions.of(VECTOR_KEY, 1, ["+8613700001111"], created_at=1767229200)
    assert additions.to_bytes().hex() == VECTOR_ADDITIONS
    assert FilterAdditions.from_bytes(additions.to_bytes()) == additions


def test_vector_is_the_one_in_the_docs() -> None:
    """docs/routing.md prints the same vector this test checks."""
    text = "".join(DOC.read_text(encoding="utf-8").split())
    for value in (VECTOR_KEY_CHECK, VECTOR_HEADER, VECTOR_BITS, VECTOR_ADDITIONS):
        assert value in text
    for digest_hex, positions in VECTOR_NUMBERS.values():
        assert digest_hex in text
        assert str(positions).replace(" ", "") in text


@settings(max_examples=60, deadline=None)
@given(
    numbers=st.lists(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True), max_size=40),
    log2_m=st.integers(min_value=9, max_value=14),
    k=st.integers(min_value=1, max_value=12),
)
def test_builder_matches_the_written_rule(numbers: list[str], log2_m: int, k: int) -> None:
    """Every bit the builder sets is one the written rule names, and every named bit is set."""
    m = 1 << log2_m
    builder = FilterBuilder(VECTOR_KEY, key_version=1, m=m, k=k)
    expected = set()
    for number in numbers:
        builder.add(number)
        expected.update(_spec_positions(VECTOR_KEY, number, m, k))
    bits = builder.snapshot(created_at=0).bits
    set_bits = {j for j in range(m) if bits[j >> 3] >> (j & 7) & 1}
    assert set_bits == expected


@settings(max_examples=40, deadline=None)
@given(
    numbers=st.lists(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True), max_size=60),
    shrink=st.integers(min_value=0, max_value=4),
)
def test_folding_equals_building_small(numbers: list[str], shrink: int) -> None:
    """A filter folded to a smaller power of two is the filter built at that size."""
    big = FilterBuilder(VECTOR_KEY, key_version=1, m=1 << 13, k=7)
    small = FilterBuilder(VECTOR_KEY, key_version=1, m=1 << (13 - shrink), k=7)
    for number in numbers:
        big.add(number)
        small.add(number)
    big.fold_to(1 << (13 - shrink))
    assert big.snapshot(created_at=1) == small.snapshot(created_at=1)
    assert fold(bytes(64), 512, 512) == bytes(64)


@settings(max_examples=40, deadline=None)
@given(numbers=st.lists(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True), max_size=80))
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


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw[:40], "shorter than the 48-byte"),
        (lambda raw: _with(raw, 0, b"OCRX"), "magic"),
        (lambda raw: _with(raw, 4, struct.pack("<H", 2)), "format version 2"),
        (lambda raw: _with(raw, 6, struct.pack("<H", 0)), "k must be"),
        (lambda raw: _with(raw, 6, struct.pack("<H", 33)), "k must be"),
        (lambda raw: _with(raw, 8, struct.pack("<I", 0)), "key_version"),
        (lambda raw: _with(raw, 12, struct.pack("<I", 1)), "reserved flags"),
        (lambda raw: _with(raw, 24, struct.pack("<Q", 1000)), "power of two"),
        (lambda raw: _with(raw, 24, struct.pack("<Q", 256)), "power of two"),
        (lambda raw: _with(raw, 24, struct.pack("<Q", 1024)), "48 \\+ 128 bytes"),
        (lambda raw: raw + b"\0", "48 \\+ 64 bytes"),
    ],
)
def test_malformed_filters_are_refused(mutate: object, message: str) -> None:
    """Each malformed filter is refused with a message naming what is wrong."""
    raw = _vector_filter().to_bytes()
    assert callable(mutate)
    with pytest.raises(FilterFormatError, match=message):
        RoutingFilter.from_bytes(mutate(raw))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw[:20], "shorter than the 32-byte"),
        (lambda raw: _with(raw, 0, b"OCRF"), "magic"),
        (lambda raw: _with(raw, 6, struct.pack("<H", 1)), "reserved field"),
        (lambda raw: _with(raw, 12, struct.pack("<I", 2)), "2 additions"),
        (lambda raw: _with(raw, 12, struct.pack("<I", 0))[:32], "1 to 65536"),
    ],
)
def test_malformed_additions_are_refused(mutate: object, message: str) -> None:
    """Each malformed additions message is refused with a message naming what is wrong."""
    raw = FilterAdditions.of(VECTOR_KEY, 1, ["+8613700001111"], created_at=1).to_bytes()
    assert callable(mutate)
    with pytest.raises(FilterFormatError, match=message):
        FilterAdditions.from_bytes(mutate(raw))


def test_additions_refuse_numbers_that_are_not_e164() -> None:
    """Additions are made of E.164 numbers only; anything else raises."""
    with pytest.raises(ValueError, match=r"E\.164"):
        FilterAdditions.of(VECTOR_KEY, 1, ["138 0013 8000"])
