"""Routing filters: the keyed membership filter a provider publishes (format, sizing, builder).

The format is specified byte for byte in ``docs/routing.md`` so that a provider
written in any language can produce it; this module is the reference
implementation and is checked against the test vector printed there.

An element is the HMAC-SHA256, under the federation's routing key of a given
version, of the ASCII E.164 number. Its first 16 bytes give two 64-bit
little-endian integers ``h1`` and ``h2``; probe ``i`` of ``k`` is
``x_i = (h1 + i * (h2 | 1)) mod 2**64`` (Kirsch-Mitzenmacher double hashing),
and its bit is ``x_i mod m`` in format 1 and ``mix64(x_i) mod m`` in format 2
(the SplitMix64 finaliser: every bit of ``h1`` and ``h2`` reaches every bit of
the position, so small filters have the rate the theory gives; format 1's
positions depend only on the low ``log2(m)`` bits of ``h1`` and ``h2``).
``m`` is a power of two, so a filter built at ``m`` folds exactly into any
smaller power of two by OR-ing its halves: the builder relies on that to size a
filter when the count is known only approximately.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import math
import struct
import time
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from onecert.sdk._msisdn import is_e164

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# numpy is not a dependency of the SDK: when it is installed, the builder sets
# bits a batch at a time with it (about twice as fast), else in pure Python.
HAVE_NUMPY = importlib.util.find_spec("numpy") is not None

FORMAT_V1 = 1  # positions x_i mod m
FORMAT_V2 = 2  # positions mix64(x_i) mod m
FORMAT_VERSION = FORMAT_V2  # what the SDK builds when the gateway accepts it
SNAPSHOT_FORMATS = (FORMAT_V1, FORMAT_V2)  # what readers accept
ADDITIONS_FORMAT = 1  # additions carry elements, the same whatever the snapshot's format
SNAPSHOT_MAGIC = b"OCRF"
ADDITIONS_MAGIC = b"OCRA"
MIN_LOG2_BITS = 9  # 512 bits, 64 bytes: the smallest filter
MAX_LOG2_BITS = 32  # 512 MiB: more than 400 million numbers at 1%
MAX_HASHES = 32
MAX_ADDITIONS = 65_536  # elements in one additions message
ELEMENT_BYTES = 16
# The SDK's default rate follows the size of the set (``default_fp_rate``): a
# false positive costs the gateway one provider call whatever the provider's
# size, while the bits grow with the numbers, so small sets get a low rate.
DEFAULT_FP_RATE = 0.01  # from SMALL_SET_BELOW numbers up
SMALL_SET_FP_RATE = 0.0001  # below SMALL_SET_BELOW numbers
SMALL_SET_BELOW = 100_000
KEY_CHECK_LABEL = b"onecert routing key check"

_SNAPSHOT_HEADER = struct.Struct("<4sHHII8sQQQ")  # 48 bytes
_ADDITIONS_HEADER = struct.Struct("<4sHHII8sQ")  # 32 bytes
_MASK64 = (1 << 64) - 1
# SplitMix64's finaliser (Steele, Lea and Flood, 2014; Stafford's "Mix13").
_MIX_C1 = 0xBF58476D1CE4E5B9
_MIX_C2 = 0x94D049BB133111EB


class FilterFormatError(ValueError):
    """Bytes that are not a well-formed routing filter or additions message."""


def routing_digest(key: bytes, msisdn: str) -> bytes:
    """HMAC-SHA256 of the E.164 number's ASCII bytes under a routing key (32 bytes)."""
    return hmac.digest(key, msisdn.encode("ascii"), "sha256")


def key_check(key: bytes) -> bytes:
    """The 8 bytes that identify a routing key without revealing it.

    Carried in every filter, so the gateway refuses a filter built with the
    wrong key for its version (it would silently route the provider out).
    """
    return hmac.digest(key, KEY_CHECK_LABEL, "sha256")[:8]


def element_of(digest: bytes) -> tuple[int, int]:
    """``(h1, h2)`` of an element from its digest (at least 16 bytes); ``h2`` is odd."""
    if len(digest) < ELEMENT_BYTES:
        raise FilterFormatError(f"an element needs {ELEMENT_BYTES} digest bytes")
    h1 = int.from_bytes(digest[0:8], "little")
    h2 = int.from_bytes(digest[8:16], "little") | 1
    return h1, h2


def mix64(x: int) -> int:
    """SplitMix64's finaliser of a 64-bit integer (format 2's probe mixing)."""
    x = ((x ^ (x >> 30)) * _MIX_C1) & _MASK64
    x = ((x ^ (x >> 27)) * _MIX_C2) & _MASK64
    return x ^ (x >> 31)


def probe_values(h1: int, h2: int, k: int, fmt: int = FORMAT_VERSION) -> list[int]:
    """The ``k`` 64-bit probe values of element ``(h1, h2)``; a position is ``value mod m``.

    Independent of ``m``: one computation serves filters of every size.
    """
    values = [(h1 + i * h2) & _MASK64 for i in range(k)]
    if fmt == FORMAT_V1:
        return values
    return [mix64(x) for x in values]


def bit_positions(digest: bytes, m: int, k: int, fmt: int = FORMAT_VERSION) -> list[int]:
    """The ``k`` bit positions of an element in a filter of ``m`` bits."""
    h1, h2 = element_of(digest)
    mask = m - 1  # m is a power of two: mod m is a mask
    return [x & mask for x in probe_values(h1, h2, k, fmt)]


def element_positions(
    elements: bytes, m: int, k: int, fmt: int = FORMAT_VERSION
) -> npt.NDArray[np.int64]:
    """Bit positions of many elements (16 bytes each) at once, with numpy.

    Row ``i`` of element ``e`` is at ``e * k + i``. Needs numpy (the gateway's
    index, and the builder's fast path when numpy is installed).
    """
    import numpy as np  # noqa: PLC0415 (optional dependency, see HAVE_NUMPY)

    words = np.frombuffer(elements, dtype="<u8").reshape(-1, 2).astype(np.uint64)
    h1 = words[:, 0:1]
    h2 = words[:, 1:2] | np.uint64(1)
    steps = np.arange(k, dtype=np.uint64)[np.newaxis, :]
    # uint64 arithmetic wraps modulo 2**64, as the format says.
    values = h1 + steps * h2
    if fmt != FORMAT_V1:
        values ^= values >> np.uint64(30)
        values *= np.uint64(_MIX_C1)
        values ^= values >> np.uint64(27)
        values *= np.uint64(_MIX_C2)
        values ^= values >> np.uint64(31)
    positions = values & np.uint64(m - 1)
    return positions.reshape(-1).astype(np.int64)


def hashes_for(fp_rate: float) -> int:
    """Hash count ``k`` for a target false-positive rate: ``ceil(log2(1 / p))``."""
    if not 0.0 < fp_rate <= 0.5:
        raise ValueError("the false-positive rate must be in (0, 0.5]")
    return min(MAX_HASHES, max(1, math.ceil(-math.log2(fp_rate))))


def default_fp_rate(count: int) -> float:
    """The SDK's false-positive rate for a filter of ``count`` numbers.

    0.01% (``k = 14``) below 100,000 numbers, 1% (``k = 7``) from there: a
    false positive costs a provider call however small the provider, and the
    small sets, which are most providers, cost little memory at 0.01%.
    """
    return SMALL_SET_FP_RATE if count < SMALL_SET_BELOW else DEFAULT_FP_RATE


def bits_for(count: int, k: int) -> int:
    """Filter size ``m`` for ``count`` elements and ``k`` hashes.

    The smallest power of two of at least ``count * k / ln 2`` bits (where
    ``k`` hashes are optimal), bounded to ``[2**9, 2**32]``.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    need = math.ceil(count * k / math.log(2))
    log2 = max(MIN_LOG2_BITS, (need - 1).bit_length())
    if log2 > MAX_LOG2_BITS:
        raise ValueError(f"{count} numbers need more than 2**{MAX_LOG2_BITS} bits")
    return 1 << log2


def expected_fp_rate(m: int, k: int, count: int) -> float:
    """The false-positive rate a filter of ``m`` bits, ``k`` hashes and ``count`` elements has."""
    return float((1.0 - math.exp(-k * count / m)) ** k)


def _check_shape(m: int, k: int) -> None:
    if m & (m - 1) or not (1 << MIN_LOG2_BITS) <= m <= (1 << MAX_LOG2_BITS):
        raise FilterFormatError(
            f"m must be a power of two from 2**{MIN_LOG2_BITS} to 2**{MAX_LOG2_BITS} bits"
        )
    if not 1 <= k <= MAX_HASHES:
        raise FilterFormatError(f"k must be from 1 to {MAX_HASHES}")


@dataclass(frozen=True)
class RoutingFilter:
    """A snapshot filter: every number bound at the provider at ``created_at``.

    Attributes:
        key_version: the routing key version the elements are keyed with.
        key_check: :func:`key_check` of that key.
        m: size in bits, a power of two.
        k: hashes per element.
        count: elements inserted (duplicates included: an upper bound).
        created_at: Unix seconds at which the provider began reading its
            numbers; every number bound before it is in the filter.
        bits: ``m / 8`` bytes; bit ``j`` is bit ``j % 8`` (least significant
            first) of byte ``j // 8``.
        fmt: the format version, which says how an element's bits are placed.
    """

    key_version: int
    key_check: bytes
    m: int
    k: int
    count: int
    created_at: int
    bits: bytes = field(repr=False)
    fmt: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_shape(self.m, self.k)
        if self.fmt not in SNAPSHOT_FORMATS:
            raise FilterFormatError(f"format version {self.fmt} is not supported")
        if len(self.bits) != self.m // 8:
            raise FilterFormatError(f"a filter of {self.m} bits has {self.m // 8} bytes")
        if len(self.key_check) != 8:
            raise FilterFormatError("key_check has 8 bytes")
        if not 0 < self.key_version < 1 << 32:
            raise FilterFormatError("key_version must be from 1 to 2**32 - 1")
        if not 0 <= self.count < 1 << 64 or not 0 <= self.created_at < 1 << 64:
            raise FilterFormatError("count and created_at are unsigned 64-bit")

    def may_contain(self, digest: bytes) -> bool:
        """Whether the element with this :func:`routing_digest` may be in the filter."""
        bits = self.bits
        positions = bit_positions(digest, self.m, self.k, self.fmt)
        return all(bits[p >> 3] >> (p & 7) & 1 for p in positions)

    def fill_ratio(self) -> float:
        """The share of bits set."""
        return int.from_bytes(self.bits, "little").bit_count() / self.m

    def to_bytes(self) -> bytes:
        """The serialized filter: a 48-byte header, then the bits."""
        header = _SNAPSHOT_HEADER.pack(
            SNAPSHOT_MAGIC,
            self.fmt,
            self.k,
            self.key_version,
            0,
            self.key_check,
            self.m,
            self.count,
            self.created_at,
        )
        return header + self.bits

    @classmethod
    def from_bytes(cls, data: bytes) -> RoutingFilter:
        """Parse a serialized filter; :class:`FilterFormatError` says what is wrong."""
        if len(data) < _SNAPSHOT_HEADER.size:
            raise FilterFormatError("shorter than the 48-byte filter header")
        magic, fmt, k, version, flags, check, m, count, created = _SNAPSHOT_HEADER.unpack_from(data)
        if magic != SNAPSHOT_MAGIC:
            raise FilterFormatError("not a routing filter (magic is not OCRF)")
        if fmt not in SNAPSHOT_FORMATS:
            raise FilterFormatError(f"format version {fmt} is not supported (only 1 and 2)")
        if flags:
            raise FilterFormatError("reserved flags must be 0")
        _check_shape(m, k)
        if len(data) != _SNAPSHOT_HEADER.size + m // 8:
            raise FilterFormatError(f"a filter of {m} bits is 48 + {m // 8} bytes long")
        return cls(
            key_version=version,
            key_check=check,
            m=m,
            k=k,
            count=count,
            created_at=created,
            bits=bytes(data[_SNAPSHOT_HEADER.size :]),
            fmt=fmt,
        )


@dataclass(frozen=True)
class FilterAdditions:
    """Numbers bound since a snapshot, as elements (the first 16 digest bytes each).

    Attributes:
        key_version: the routing key version, the same as the snapshot's.
        key_check: :func:`key_check` of that key.
        created_at: Unix seconds when the batch was formed; every element was
            bound at or before it.
        elements: 16 bytes each.
    """

    key_version: int
    key_check: bytes
    created_at: int
    elements: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 0 < self.key_version < 1 << 32:
            raise FilterFormatError("key_version must be from 1 to 2**32 - 1")
        if len(self.key_check) != 8:
            raise FilterFormatError("key_check has 8 bytes")
        if not 1 <= len(self.elements) <= MAX_ADDITIONS:
            raise FilterFormatError(f"additions carry 1 to {MAX_ADDITIONS} elements")
        if any(len(e) != ELEMENT_BYTES for e in self.elements):
            raise FilterFormatError(f"every element has {ELEMENT_BYTES} bytes")
        if not 0 <= self.created_at < 1 << 64:
            raise FilterFormatError("created_at is unsigned 64-bit")

    @classmethod
    def of(
        cls,
        key: bytes,
        key_version: int,
        msisdns: Iterable[str],
        *,
        created_at: int | None = None,
    ) -> FilterAdditions:
        """Additions for these E.164 numbers (invalid ones raise ``ValueError``)."""
        elements = []
        for msisdn in msisdns:
            if not is_e164(msisdn):
                raise ValueError("additions take E.164 numbers: '+' then 8 to 15 digits")
            elements.append(routing_digest(key, msisdn)[:ELEMENT_BYTES])
        return cls(
            key_version=key_version,
            key_check=key_check(key),
            created_at=int(time.time()) if created_at is None else created_at,
            elements=tuple(elements),
        )

    def to_bytes(self) -> bytes:
        """The serialized additions: a 32-byte header, then 16 bytes per element."""
        header = _ADDITIONS_HEADER.pack(
            ADDITIONS_MAGIC,
            ADDITIONS_FORMAT,
            0,
            self.key_version,
            len(self.elements),
            self.key_check,
            self.created_at,
        )
        return header + b"".join(self.elements)

    @classmethod
    def from_bytes(cls, data: bytes) -> FilterAdditions:
        """Parse serialized additions; :class:`FilterFormatError` says what is wrong."""
        if len(data) < _ADDITIONS_HEADER.size:
            raise FilterFormatError("shorter than the 32-byte additions header")
        magic, fmt, reserved, version, count, check, created = _ADDITIONS_HEADER.unpack_from(data)
        if magic != ADDITIONS_MAGIC:
            raise FilterFormatError("not routing additions (magic is not OCRA)")
        if fmt != ADDITIONS_FORMAT:
            raise FilterFormatError(f"format version {fmt} is not supported (only 1)")
        if reserved:
            raise FilterFormatError("reserved field must be 0")
        if len(data) != _ADDITIONS_HEADER.size + ELEMENT_BYTES * count:
            raise FilterFormatError(f"{count} additions are 32 + {ELEMENT_BYTES * count} bytes")
        body = memoryview(data)[_ADDITIONS_HEADER.size :]
        elements = tuple(
            bytes(body[i : i + ELEMENT_BYTES]) for i in range(0, len(body), ELEMENT_BYTES)
        )
        return cls(key_version=version, key_check=check, created_at=created, elements=elements)


def fold(bits: bytes, m: int, to_m: int) -> bytes:
    """Fold a filter of ``m`` bits into ``to_m`` bits (both powers of two, ``to_m <= m``).

    Exact: the result equals the filter built at ``to_m`` from the same
    elements, because ``(x mod m) mod to_m == x mod to_m``.
    """
    if to_m > m or to_m & (to_m - 1):
        raise ValueError("fold to a smaller power of two")
    width = to_m // 8
    acc = 0
    for start in range(0, m // 8, width):
        acc |= int.from_bytes(bits[start : start + width], "little")
    return acc.to_bytes(width, "little")


class FilterBuilder:
    """Inserts numbers into a filter of fixed size: ``m / 8`` bytes, nothing per number.

    Example::

        builder = FilterBuilder(key, key_version=3, m=bits_for(n, 7), k=7)
        for msisdn in numbers:
            builder.add(msisdn)
        snapshot = builder.snapshot(created_at=started)
    """

    def __init__(
        self,
        key: bytes,
        *,
        key_version: int,
        m: int,
        k: int,
        fmt: int = FORMAT_VERSION,
        use_numpy: bool = HAVE_NUMPY,
    ) -> None:
        _check_shape(m, k)
        if fmt not in SNAPSHOT_FORMATS:
            raise ValueError(f"format version {fmt} is not supported")
        self._fmt = fmt
        self._numpy = use_numpy
        self._key = key
        self._check = key_check(key)
        self._version = key_version
        self._m = m
        self._k = k
        self._bits = bytearray(m // 8)
        self._count = 0
        # The HMAC's inner and outer states after the key, copied per number:
        # a third faster than hmac.digest() for short messages.
        self._hmac = hmac.new(key, digestmod=hashlib.sha256)

    @property
    def m(self) -> int:
        """Size in bits."""
        return self._m

    @property
    def k(self) -> int:
        """Hashes per element."""
        return self._k

    @property
    def fmt(self) -> int:
        """The format version the bits are placed by."""
        return self._fmt

    @property
    def count(self) -> int:
        """Numbers inserted so far."""
        return self._count

    def add(self, msisdn: str) -> None:
        """Insert one E.164 number (the caller validates it)."""
        mac = self._hmac.copy()
        mac.update(msisdn.encode("ascii"))
        digest = mac.digest()
        h1 = int.from_bytes(digest[0:8], "little")
        h2 = int.from_bytes(digest[8:16], "little") | 1
        mask = self._m - 1
        bits = self._bits
        for x in probe_values(h1, h2, self._k, self._fmt):
            p = x & mask
            bits[p >> 3] |= 1 << (p & 7)
        self._count += 1

    def add_many(self, msisdns: Sequence[str]) -> None:
        """Insert a batch of E.164 numbers (the caller validates them)."""
        if not self._numpy or len(msisdns) < 64:
            for msisdn in msisdns:
                self.add(msisdn)
            return
        import numpy as np  # noqa: PLC0415 (optional dependency, see HAVE_NUMPY)

        elements = bytearray()
        base = self._hmac
        for msisdn in msisdns:
            mac = base.copy()
            mac.update(msisdn.encode("ascii"))
            elements += mac.digest()[:ELEMENT_BYTES]
        positions = element_positions(bytes(elements), self._m, self._k, self._fmt)
        view = np.frombuffer(self._bits, dtype=np.uint8)
        # Unbuffered OR: two positions may fall in one byte.
        np.bitwise_or.at(view, positions >> 3, np.left_shift(1, positions & 7).astype(np.uint8))
        self._count += len(msisdns)

    def fold_to(self, m: int) -> None:
        """Shrink the filter to ``m`` bits (a smaller power of two), exactly."""
        if m != self._m:
            _check_shape(m, self._k)
            self._bits = bytearray(fold(bytes(self._bits), self._m, m))
            self._m = m

    def snapshot(self, *, created_at: int) -> RoutingFilter:
        """The filter as it stands."""
        return RoutingFilter(
            key_version=self._version,
            key_check=self._check,
            m=self._m,
            k=self._k,
            count=self._count,
            created_at=created_at,
            bits=bytes(self._bits),
            fmt=self._fmt,
        )


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_filter` produced.

    Attributes:
        filter: the snapshot.
        passes: how many times the source was read (1 with a good size hint).
        skipped: values that were not E.164 numbers, left out.
    """

    filter: RoutingFilter
    passes: int
    skipped: int


NumberSource = Callable[[], AsyncIterable[str]]

# Numbers read between two cancellation points of a long build.
_BATCH = 4096


async def build_filter(
    source: NumberSource,
    *,
    key: bytes,
    key_version: int,
    fp_rate: float | None = None,
    size_hint: int | None = None,
    clock: Callable[[], float] = time.time,
    fmt: int = FORMAT_VERSION,
    use_numpy: bool = HAVE_NUMPY,
) -> BuildResult:
    """Build a snapshot filter from every number ``source()`` yields.

    Memory is the filter's bits (at most twice the final size while building)
    plus a constant: numbers are never collected. The size needs the count,
    which a stream tells only at its end, so:

    * with ``size_hint`` (for example the last snapshot's count, or a
      ``SELECT count(*)``), one pass builds at twice the hinted size and folds
      the bits down to the size the real count needs; if the count outgrows
      that room, hashing stops, the rest is only counted, and a second pass
      builds at the right size;
    * without it, a first pass counts and a second one builds.

    Args:
        source: called once per pass; each call yields the numbers afresh.
        key: the routing key of ``key_version``.
        key_version: its version.
        fp_rate: the false-positive rate to size for; None (the default):
            :func:`default_fp_rate` of the count the filter is sized for (the
            hint in a one-pass build, else the count read), 0.01% below
            100,000 numbers and 1% from there.
        size_hint: the expected count, if known.
        clock: Unix time, for ``created_at`` (the start of the pass that
            built the filter: every number bound before it is included).
        fmt: the format version to build (2; 1 for a gateway that accepts
            only format 1, see ``RoutingKey.filter_format``).
        use_numpy: set bits a batch at a time with numpy (same bytes);
            the default is whether numpy is installed.

    Returns:
        The filter, the number of passes, and how many values were skipped
        for not being E.164.
    """

    passes = 0
    if size_hint is not None:
        started = int(clock())
        k = _hashes(size_hint, fp_rate)
        builder = FilterBuilder(
            key,
            key_version=key_version,
            m=bits_for(max(1, size_hint) * 2, k),
            k=k,
            fmt=fmt,
            use_numpy=use_numpy,
        )
        passes += 1
        count, skipped, complete = await _insert_all(source, builder)
        if complete and bits_for(count, k) <= builder.m:
            builder.fold_to(bits_for(count, k))
            return BuildResult(builder.snapshot(created_at=started), passes, skipped)
    else:
        passes += 1
        count = 0
        async for _ in source():
            count += 1
    started = int(clock())
    k = _hashes(count, fp_rate)
    builder = FilterBuilder(
        key, key_version=key_version, m=bits_for(count, k), k=k, fmt=fmt, use_numpy=use_numpy
    )
    passes += 1
    # The last pass inserts everything, even if the source grew since the
    # count: the filter is then fuller than sized, never missing a number.
    _, skipped, _ = await _insert_all(source, builder, grow=True)
    return BuildResult(builder.snapshot(created_at=started), passes, skipped)


def _hashes(count: int, fp_rate: float | None) -> int:
    """``k`` for a filter sized for ``count`` numbers: at ``fp_rate``, else the default's."""
    return hashes_for(default_fp_rate(count) if fp_rate is None else fp_rate)


async def _insert_all(
    source: NumberSource, builder: FilterBuilder, *, grow: bool = False
) -> tuple[int, int, bool]:
    """Insert the source's numbers while they fit the builder's size.

    Returns the count of E.164 numbers read, the count skipped, and whether
    all of them were inserted. Once the count outgrows what the builder's
    size allows, the rest is counted only, unless ``grow`` (the last pass:
    then everything is inserted and the filter is just fuller).
    """
    limit = _capacity(builder.m, builder.k)
    count = skipped = 0
    complete = True
    batch: list[str] = []
    async for msisdn in source():
        if not is_e164(msisdn):
            skipped += 1
            continue
        count += 1
        if not complete:
            continue
        if count > limit and not grow:
            complete = False
            batch.clear()
            continue
        batch.append(msisdn)
        if len(batch) >= _BATCH:
            builder.add_many(batch)
            batch.clear()
    builder.add_many(batch)
    return count, skipped, complete


def _capacity(m: int, k: int) -> int:
    """The most elements a filter of ``m`` bits holds at its target rate."""
    return int(m * math.log(2) / k)
