"""Bit-sliced signatures: one matrix per filter shape, a row per bit, a column per provider.

BitFunnel (Goodwin et al., SIGIR 2017) stores Bloom filters transposed: row
``j`` holds bit ``j`` of every document's filter, so the ``k`` rows a term
selects, AND-ed together, say at once which documents may hold it. Here the
documents are providers and the term is a phone number. Filters of one shape
(``m`` bits, ``k`` hashes, one key version, one format) share a matrix of
``m`` rows and one bit column per provider, packed eight to a byte; a query
reads ``k`` rows of ``ceil(columns / 8)`` bytes each.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from onecert.sdk._filter import element_positions, probe_values

Bytes = npt.NDArray[np.uint8]
Shape = tuple[int, int, int, int]  # (key version, m, k, format)

# Grow a full matrix by a quarter (at least one byte column, eight slots): a
# join costs one copy of the class now and then, and leaves at most a quarter
# of it empty.
_GROWTH = 4


def unpack_column(bits: bytes) -> Bytes:
    """A filter's bits as one byte (0 or 1) per bit: what a matrix column is written from.

    Touches no matrix, so it may run in a worker thread.
    """
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), bitorder="little")


class Probe:
    """One element's probe values, computed once per format and ``k`` and shared
    by every filter a query checks (a position is a value masked by ``m - 1``)."""

    __slots__ = ("_cache", "h1", "h2")

    def __init__(self, h1: int, h2: int) -> None:
        self.h1 = h1
        self.h2 = h2
        self._cache: dict[tuple[int, int], list[int]] = {}

    def values(self, fmt: int, k: int) -> list[int]:
        """The ``k`` 64-bit probe values of the element under format ``fmt``."""
        values = self._cache.get((fmt, k))
        if values is None:
            values = self._cache[fmt, k] = probe_values(self.h1, self.h2, k, fmt)
        return values


class SliceMatrix:
    """The filters of one shape, bit-sliced: ``m`` rows by one bit column per provider."""

    def __init__(self, *, m: int, k: int, key_version: int, fmt: int) -> None:
        self.m = m
        self.k = k
        self.key_version = key_version
        self.fmt = fmt
        self.mask = m - 1
        self._rows: Bytes = np.zeros((m, 1), dtype=np.uint8)
        self._owners: list[str | None] = [None] * 8
        self._free: list[int] = list(range(7, -1, -1))  # popped from the end: lowest first
        self._used = 0

    @property
    def shape(self) -> Shape:
        """``(key_version, m, k, fmt)``: what every column shares."""
        return (self.key_version, self.m, self.k, self.fmt)

    @property
    def used(self) -> int:
        """Columns holding a provider's filter."""
        return self._used

    def owners(self) -> list[str]:
        """The providers with a column here."""
        return [owner for owner in self._owners if owner is not None]

    def nbytes(self) -> int:
        """Memory of the matrix."""
        return int(self._rows.nbytes)

    def insert(self, provider_id: str, bits: bytes, *, column: Bytes | None = None) -> int:
        """Store a provider's filter bits in a free column; returns the column.

        ``column``: the bits already :func:`unpacked <unpack_column>` (off the
        event loop), so what is left here is one pass over the rows.
        """
        if column is None:
            column = unpack_column(bits)
        if column.size != self.m:
            raise ValueError(f"a column holds {self.m} bits")
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._owners[slot] = provider_id
        self._used += 1
        self._write(slot, column)
        return slot

    def replace(self, slot: int, bits: bytes, *, column: Bytes | None = None) -> None:
        """Overwrite a column with a new filter of the same shape (``column`` as in insert)."""
        self._write(slot, unpack_column(bits) if column is None else column)

    def add_elements(self, slot: int, elements: bytes) -> None:
        """Set the bits of elements (16 bytes each) in a column."""
        positions = element_positions(elements, self.m, self.k, self.fmt)
        byte, bit = divmod(slot, 8)
        # Every index receives the same OR, so repeated rows are harmless.
        self._rows[positions, byte] |= np.uint8(1 << bit)

    def remove(self, slot: int) -> dict[str, int]:
        """Clear a column and free it; compacts when half the columns are free.

        Returns the new column of every provider that compaction moved.
        """
        byte, bit = divmod(slot, 8)
        self._rows[:, byte] &= np.uint8(~(1 << bit) & 0xFF)
        self._owners[slot] = None
        self._free.append(slot)
        self._used -= 1
        capacity = len(self._owners)
        if capacity > 8 and self._used * 2 <= capacity:
            return self._compact()
        return {}

    def query(self, probe: Probe) -> list[str]:
        """Providers whose filter has every bit of the element set."""
        mask = self.mask
        rows = [x & mask for x in probe.values(self.fmt, self.k)]
        # take() and ndarray.nonzero(): fancy indexing with a list, numpy's
        # convenience wrappers and scalar indexing cost more than the AND here.
        hits = np.bitwise_and.reduce(self._rows.take(rows, axis=0), axis=0)
        nonzero = hits.nonzero()[0]
        found = []
        owners = self._owners
        for byte, value in zip(nonzero.tolist(), hits[nonzero].tolist(), strict=True):
            base = byte * 8
            bits = value
            while bits:
                low = bits & -bits
                owner = owners[base + low.bit_length() - 1]
                if owner is not None:
                    found.append(owner)
                bits ^= low
        return found

    def column(self, slot: int) -> bytes:
        """A column's filter bits, as the format lays them out."""
        byte, bit = divmod(slot, 8)
        column = (self._rows[:, byte] >> np.uint8(bit)) & np.uint8(1)
        return np.packbits(column, bitorder="little").tobytes()

    def _write(self, slot: int, column: Bytes) -> None:
        if column.size != self.m:
            raise ValueError(f"a column holds {self.m} bits")
        byte, bit = divmod(slot, 8)
        target = self._rows[:, byte]
        target &= np.uint8(~(1 << bit) & 0xFF)
        target |= column << np.uint8(bit)

    def _grow(self) -> None:
        width = self._rows.shape[1]
        extra = max(1, width // _GROWTH)
        rows = np.zeros((self.m, width + extra), dtype=np.uint8)
        rows[:, :width] = self._rows
        self._rows = rows
        first = width * 8
        self._owners.extend([None] * (extra * 8))
        self._free.extend(range(first + extra * 8 - 1, first - 1, -1))
        self._free.sort(reverse=True)

    def _compact(self) -> dict[str, int]:
        """Move the highest columns into the lowest holes, then drop the empty bytes."""
        moved: dict[str, int] = {}
        holes = sorted(s for s, owner in enumerate(self._owners) if owner is None)
        taken = [s for s, owner in enumerate(self._owners) if owner is not None]
        keep = len(taken)
        for target, source in zip(
            (h for h in holes if h < keep),
            (s for s in reversed(taken) if s >= keep),
            strict=False,
        ):
            owner = self._owners[source]
            assert owner is not None
            self._write(target, unpack_column(self.column(source)))
            self._owners[target] = owner
            self._owners[source] = None
            self._rows[:, source // 8] &= np.uint8(~(1 << (source % 8)) & 0xFF)
            moved[owner] = target
        width = max(1, -(-keep // 8))
        self._rows = np.ascontiguousarray(self._rows[:, :width])
        self._owners = self._owners[: width * 8]
        self._free = [s for s in range(width * 8 - 1, -1, -1) if self._owners[s] is None]
        return moved


class PlainFilter:
    """One large filter kept as its own bitset and checked by itself.

    A matrix whose few columns fill less than a byte per row would waste most
    of its memory; a filter of ``2**22`` bits or more (over about 200,000 numbers
    at 1%) is rare enough to check individually.
    """

    def __init__(self, *, m: int, k: int, key_version: int, fmt: int, bits: bytes) -> None:
        self.m = m
        self.k = k
        self.key_version = key_version
        self.fmt = fmt
        self._bits = bytearray(bits)

    @property
    def shape(self) -> Shape:
        """``(key_version, m, k, fmt)``."""
        return (self.key_version, self.m, self.k, self.fmt)

    def nbytes(self) -> int:
        """Memory of the bitset."""
        return len(self._bits)

    def replace(self, bits: bytes) -> None:
        """Overwrite with a new filter of the same shape."""
        self._bits[:] = bits

    def add_elements(self, elements: bytes) -> None:
        """Set the bits of elements (16 bytes each)."""
        positions = element_positions(elements, self.m, self.k, self.fmt)
        view = np.frombuffer(self._bits, dtype=np.uint8)
        # Unbuffered: two positions may share a byte with different bits.
        np.bitwise_or.at(view, positions >> 3, (1 << (positions & 7)).astype(np.uint8))

    def query(self, probe: Probe) -> bool:
        """Whether the element may be in the filter."""
        bits = self._bits
        mask = self.m - 1
        for x in probe.values(self.fmt, self.k):
            p = x & mask
            if not bits[p >> 3] >> (p & 7) & 1:
                return False
        return True

    def column(self) -> bytes:
        """The filter bits."""
        return bytes(self._bits)
