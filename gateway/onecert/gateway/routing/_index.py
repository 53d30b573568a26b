"""The routing index: which registered providers may hold a number, across all of them at once.

Providers with a fresh filter are answered by their filter; every other
registered provider (no filter, stale, opted out, keyed with a retired
version, additions lost) is returned as *must ask*: routing may ask a
provider that holds nothing, never skip one that may hold the number.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from onecert.gateway.routing._slices import (
    Bytes,
    PlainFilter,
    Probe,
    Shape,
    SliceMatrix,
    unpack_column,
)
from onecert.sdk._filter import FilterAdditions, RoutingFilter, element_of

DEFAULT_GRACE_S = 60.0
DEFAULT_REPLAY_MARGIN_S = 300.0
DEFAULT_MAX_SKEW_S = 300.0
DEFAULT_PLAIN_FROM_BITS = 1 << 22
DEFAULT_MAX_PENDING = 65_536
# 128 MiB: about 100 million numbers at 1%. A larger filter is refused rather
# than let one provider take the memory of the whole federation's.
DEFAULT_MAX_BITS = 1 << 30


class AskReason(StrEnum):
    """Why a provider is asked whatever its filter says."""

    NO_FILTER = "no_filter"
    STALE = "stale"
    OPTED_OUT = "opted_out"
    RETIRED_KEY = "retired_key"
    INCOMPLETE = "incomplete"


class FilterRejectedError(ValueError):
    """A filter or additions the index refuses; the message says why. Nothing changed."""


class UnknownProviderError(KeyError):
    """The provider is not registered in the index."""


@dataclass(frozen=True)
class Route:
    """Who to ask about one number.

    Attributes:
        candidates: providers whose fresh filter may hold the number.
        must_ask: providers asked whatever the number, with the reason.
    """

    candidates: frozenset[str]
    must_ask: Mapping[str, AskReason]

    def asked(self) -> frozenset[str]:
        """Every provider to ask: candidates and must-ask together."""
        return self.candidates.union(self.must_ask)


@dataclass(frozen=True)
class ProviderRouting:
    """A provider's routing state, for operators and tests.

    Attributes:
        provider_id: the provider.
        reason: why it is always asked, or None while its filter routes it.
        key_version: the routing key version of its filter, if it has one.
        m: filter size in bits (0 without a filter).
        k: hashes per element (0 without a filter).
        fmt: the filter's format version (0 without a filter).
        count: elements in its snapshot.
        created_at: the snapshot's ``created_at`` (provider's clock).
        fresh_until: when it turns stale (gateway's clock).
        layout: ``"sliced"``, ``"plain"`` or ``""`` without a filter.
    """

    provider_id: str
    reason: AskReason | None
    key_version: int | None
    m: int
    k: int
    fmt: int
    count: int
    created_at: int | None
    fresh_until: float | None
    layout: str


@dataclass(frozen=True)
class PreparedLayout:
    """A snapshot's bits laid out as the index keeps them, built off the event loop.

    From :meth:`RoutingIndex.prepare`; pass it to :meth:`RoutingIndex.put_snapshot`
    with the same snapshot. Exactly one of ``plain`` and ``column`` is set.
    """

    shape: Shape
    plain: PlainFilter | None = None
    column: Bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Header:
    key_version: int
    key_check: bytes
    m: int
    k: int
    fmt: int
    count: int
    created_at: int


@dataclass
class _Entry:
    provider_id: str
    interval: float
    opted_out: bool
    snapshot: _Header | None = None  # the bits live in the matrix or the plain filter
    basis: float = 0.0  # min(created_at, received_at): freshness counts from here
    fresh_until: float = 0.0
    stale: bool = False
    generation: int = 0
    matrix: SliceMatrix | None = None
    slot: int = -1
    plain: PlainFilter | None = None
    retired: bool = False
    # Additions kept for replay onto the next snapshot: (created_at, key version, elements).
    pending: deque[tuple[int, int, bytes]] = field(default_factory=deque)
    pending_count: int = 0
    dropped_until: int = -1
    incomplete: bool = False


class _Layouts:
    """Where the filters' bits live: a :class:`SliceMatrix` per shape, and plain filters.

    Args:
        entries: the index's entries by provider; a column moved when another
            leaves its matrix gets its provider's slot updated here.
    """

    def __init__(self, entries: Mapping[str, _Entry]) -> None:
        self._entries = entries
        self.matrices: dict[Shape, SliceMatrix] = {}
        self.plain: dict[str, PlainFilter] = {}

    def place(self, entry: _Entry, snapshot: RoutingFilter, prepared: PreparedLayout) -> None:
        """Lay ``entry``'s new bits in: in its column if the shape is unchanged, else anew."""
        shape = prepared.shape
        if prepared.plain is not None:
            self.unplace(entry)
            entry.plain = prepared.plain
            self.plain[entry.provider_id] = prepared.plain
            return
        assert prepared.column is not None  # PreparedLayout holds one of the two
        if entry.matrix is not None and entry.matrix.shape == shape:
            entry.matrix.replace(entry.slot, snapshot.bits, column=prepared.column)
            return
        self.unplace(entry)
        matrix = self.matrices.get(shape)
        if matrix is None:
            matrix = SliceMatrix(
                m=snapshot.m, k=snapshot.k, key_version=snapshot.key_version, fmt=snapshot.fmt
            )
            self.matrices[shape] = matrix
        entry.matrix = matrix
        entry.slot = matrix.insert(entry.provider_id, snapshot.bits, column=prepared.column)

    def unplace(self, entry: _Entry) -> None:
        """Take ``entry``'s bits out; a matrix left empty is dropped."""
        matrix = entry.matrix
        if matrix is not None:
            moved = matrix.remove(entry.slot)
            for provider_id, slot in moved.items():
                self._entries[provider_id].slot = slot
            if matrix.used == 0:
                del self.matrices[matrix.shape]
            entry.matrix = None
            entry.slot = -1
        if entry.plain is not None:
            del self.plain[entry.provider_id]
            entry.plain = None

    @staticmethod
    def apply(entry: _Entry, elements: bytes) -> None:
        """Set the bits of ``elements`` (16 bytes each) in ``entry``'s filter, if it has one."""
        if entry.matrix is not None:
            entry.matrix.add_elements(entry.slot, elements)
        elif entry.plain is not None:
            entry.plain.add_elements(elements)

    def query(self, probes: Mapping[int, Probe]) -> tuple[set[str], dict[str, AskReason]]:
        """``(found, unchecked)``: filters that may hold the element of their key
        version, and those whose version has no element here (``retired_key``)."""
        found: set[str] = set()
        unchecked: dict[str, AskReason] = {}
        for (version, _, _, _), matrix in self.matrices.items():
            probe = probes.get(version)
            if probe is None:
                unchecked.update((p, AskReason.RETIRED_KEY) for p in matrix.owners())
            else:
                found.update(matrix.query(probe))
        for provider_id, plain in self.plain.items():
            probe = probes.get(plain.key_version)
            if probe is None:
                unchecked[provider_id] = AskReason.RETIRED_KEY
            elif plain.query(probe):
                found.add(provider_id)
        return found, unchecked

    def summary(self) -> dict[str, int]:
        """Matrices, sliced columns and plain filters, and the bytes of each layout."""
        return {
            "matrices": len(self.matrices),
            "sliced": sum(m.used for m in self.matrices.values()),
            "plain": len(self.plain),
            "matrix_bytes": sum(m.nbytes() for m in self.matrices.values()),
            "plain_bytes": sum(p.nbytes() for p in self.plain.values()),
        }


class RoutingIndex:
    """Bloom filters of every registered provider, bit-sliced by shape, queried at once.

    Filters of one shape (key version, ``m``, ``k``) share a
    :class:`SliceMatrix`: ``k`` row reads and an AND answer for all of them.
    Filters of ``plain_from_bits`` bits or more are kept and checked one by
    one (few providers are that large, and a matrix of a handful of columns
    would waste most of its bytes).

    Not thread-safe: one event loop mutates and queries it. Writing a filter
    costs time linear in its size (tens of milliseconds for the largest).

    Args:
        key_checks: the live routing key versions and their key checks.
        grace: seconds a snapshot stays fresh past its promised interval.
        replay_margin: additions created up to this many seconds before a new
            snapshot's ``created_at`` are applied to it again (they may have
            been committed after the snapshot's read began).
        max_skew: how far in the future a ``created_at`` may be.
        plain_from_bits: filters this large or larger are kept plain.
        max_pending: additions kept per provider for replay; past it the
            oldest are dropped and the next snapshot that may lack them leaves
            the provider always asked.
        max_bits: the largest filter accepted (a provider that needs more opts out).
        clock: Unix time.
    """

    def __init__(
        self,
        *,
        key_checks: Mapping[int, bytes],
        grace: float = DEFAULT_GRACE_S,
        replay_margin: float = DEFAULT_REPLAY_MARGIN_S,
        max_skew: float = DEFAULT_MAX_SKEW_S,
        plain_from_bits: int = DEFAULT_PLAIN_FROM_BITS,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_bits: int = DEFAULT_MAX_BITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_bits = max_bits
        self._checks: dict[int, bytes] = dict(key_checks)
        self._grace = grace
        self._margin = replay_margin
        self._skew = max_skew
        self._plain_from = plain_from_bits
        self._max_pending = max_pending
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._layouts = _Layouts(self._entries)
        self._ask: dict[str, AskReason] = {}
        self._ask_view: Mapping[str, AskReason] | None = None
        self._deadlines: list[tuple[float, int, str]] = []
        # Generations are unique across entries: a provider unregistered and
        # registered again must not be staled by its old entry's deadline.
        self._generations = itertools.count(1)

    # Registration --------------------------------------------------------

    def register(
        self, provider_id: str, *, snapshot_interval: float, opted_out: bool = False
    ) -> None:
        """Add a provider, or change its promised snapshot interval or opt-out.

        A provider without a filter is always asked.
        """
        if snapshot_interval <= 0:
            raise ValueError("the snapshot interval must be positive")
        entry = self._entries.get(provider_id)
        if entry is None:
            entry = _Entry(provider_id, snapshot_interval, opted_out)
            self._entries[provider_id] = entry
        else:
            entry.interval = snapshot_interval
            entry.opted_out = opted_out
            if entry.snapshot is not None:
                self._set_deadline(entry, self._clock())
        self._refresh(entry)

    def unregister(self, provider_id: str) -> None:
        """Forget a provider and its filter."""
        entry = self._entry(provider_id)
        self._layouts.unplace(entry)
        del self._entries[provider_id]
        if self._ask.pop(provider_id, None) is not None:
            self._ask_view = None

    def providers(self) -> frozenset[str]:
        """Every registered provider."""
        return frozenset(self._entries)

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # Key versions --------------------------------------------------------

    @property
    def key_versions(self) -> frozenset[int]:
        """The routing key versions filters may be keyed with."""
        return frozenset(self._checks)

    def set_key_versions(self, key_checks: Mapping[int, bytes]) -> None:
        """Change the live key versions; filters of a retired one are dropped (always asked)."""
        self._checks = dict(key_checks)
        for entry in self._entries.values():
            snapshot = entry.snapshot
            if (
                snapshot is not None
                and self._checks.get(snapshot.key_version) != snapshot.key_check
            ):
                self._layouts.unplace(entry)
                entry.snapshot = None
                entry.retired = True
                self._refresh(entry)

    # Filters -------------------------------------------------------------

    def prepare(self, snapshot: RoutingFilter) -> PreparedLayout:
        """Lay a snapshot's bits out as the index will keep them, changing nothing.

        The part of :meth:`put_snapshot` that grows with the filter (a copy of
        the bits, or their unpacking into a matrix column); it touches no
        shared state, so it may run in a worker thread (``asyncio.to_thread``)
        while the event loop keeps serving lookups.
        """
        shape = _shape_of(snapshot)
        if snapshot.m >= self._plain_from:
            plain = PlainFilter(
                m=snapshot.m,
                k=snapshot.k,
                key_version=snapshot.key_version,
                fmt=snapshot.fmt,
                bits=snapshot.bits,
            )
            return PreparedLayout(shape, plain=plain)
        return PreparedLayout(shape, column=unpack_column(snapshot.bits))

    def put_snapshot(
        self, provider_id: str, snapshot: RoutingFilter, *, prepared: PreparedLayout | None = None
    ) -> None:
        """Replace a provider's filter with a new snapshot.

        Additions created less than ``replay_margin`` before the snapshot's
        ``created_at`` are applied to it again, so a number bound while the
        provider was reading its numbers is not lost. ``prepared``: the
        snapshot already laid out by :meth:`prepare` (then what is left on
        the caller's thread is a swap, or one pass over a matrix's rows for
        filters below ``plain_from_bits``).

        Raises:
            UnknownProviderError: the provider is not registered.
            FilterRejectedError: wrong or retired key, larger than ``max_bits``,
                ``created_at`` in the future or older than the filter in place.
        """
        entry = self._entry(provider_id)
        now = self._clock()
        self.check_snapshot(provider_id, snapshot)
        if prepared is None:
            prepared = self.prepare(snapshot)
        elif prepared.shape != _shape_of(snapshot):
            raise ValueError("prepared from another snapshot")
        self._layouts.place(entry, snapshot, prepared)
        entry.snapshot = _header_of(snapshot)
        entry.retired = False
        floor = snapshot.created_at - self._margin
        kept: deque[tuple[int, int, bytes]] = deque()
        for created, version, elements in entry.pending:
            if created <= floor:
                continue  # bound before the read began: in the snapshot
            if version == snapshot.key_version:
                self._layouts.apply(entry, elements)
                kept.append((created, version, elements))
            else:
                # Keyed for the previous filter, so not applicable to this one; the
                # provider re-sends them under the new key (until then it is asked).
                entry.dropped_until = max(entry.dropped_until, created)
        entry.pending = kept
        entry.pending_count = sum(len(e) // 16 for _, _, e in kept)
        entry.incomplete = entry.dropped_until > floor
        if not entry.incomplete:
            entry.dropped_until = -1
        entry.basis = min(float(snapshot.created_at), now)
        self._set_deadline(entry, now)
        self._refresh(entry)

    def check_snapshot(self, provider_id: str, snapshot: RoutingFilter) -> None:
        """Raise what :meth:`put_snapshot` would raise, changing nothing.

        Raises:
            UnknownProviderError: the provider is not registered.
            FilterRejectedError: see :meth:`put_snapshot`.
        """
        entry = self._entry(provider_id)
        self._check_key(snapshot.key_version, snapshot.key_check)
        if snapshot.m > self._max_bits:
            raise FilterRejectedError(
                f"a filter of {snapshot.m} bits is larger than the {self._max_bits} "
                "this gateway accepts: opt out of routing instead"
            )
        if snapshot.created_at > self._clock() + self._skew:
            raise FilterRejectedError("the filter's created_at is in the future: check the clock")
        current = entry.snapshot
        if current is not None and snapshot.created_at < current.created_at:
            raise FilterRejectedError("the filter is older than the one in place")

    def check_additions(self, provider_id: str, additions: FilterAdditions) -> None:
        """Raise what :meth:`add` would raise, changing nothing.

        Raises:
            UnknownProviderError: the provider is not registered.
            FilterRejectedError: see :meth:`add`.
        """
        snapshot = self._entry(provider_id).snapshot
        if snapshot is not None and additions.key_version != snapshot.key_version:
            raise FilterRejectedError(
                f"additions are keyed with version {additions.key_version}, the snapshot with "
                f"{snapshot.key_version}: publish a snapshot under the new key first"
            )
        self._check_key(additions.key_version, additions.key_check)
        if additions.created_at > self._clock() + self._skew:
            raise FilterRejectedError("the additions' created_at is in the future: check the clock")

    def add(self, provider_id: str, additions: FilterAdditions) -> None:
        """Add elements to a provider's filter; seen by the next query.

        Additions that arrive before the provider's first snapshot (or after its
        filter was dropped) are kept and applied to the next snapshot whose read
        may have missed them.

        Raises:
            UnknownProviderError: the provider is not registered.
            FilterRejectedError: keyed with a key that is not live, or with
                another version than the snapshot in place.
        """
        entry = self._entry(provider_id)
        self.check_additions(provider_id, additions)
        elements = b"".join(additions.elements)
        self._layouts.apply(entry, elements)
        entry.pending.append((additions.created_at, additions.key_version, elements))
        entry.pending_count += len(additions.elements)
        while entry.pending_count > self._max_pending:
            created, _, dropped = entry.pending.popleft()
            entry.pending_count -= len(dropped) // 16
            entry.dropped_until = max(entry.dropped_until, created)

    def drop_filter(self, provider_id: str) -> None:
        """Forget a provider's filter: it is asked about every number again.

        Additions kept for replay stay: the next snapshot may have been read
        before some of them.
        """
        entry = self._entry(provider_id)
        self._layouts.unplace(entry)
        entry.snapshot = None
        entry.retired = False
        self._refresh(entry)

    # Queries -------------------------------------------------------------

    def query(self, digests: Mapping[int, bytes]) -> Route:
        """Who may hold the number whose routing digest under each live version is given.

        A filter whose key version has no digest here cannot be checked: its
        provider is returned as must-ask (reason ``retired_key``).
        """
        self._expire(self._clock())
        probes = {version: Probe(*element_of(digest)) for version, digest in digests.items()}
        found, unchecked = self._layouts.query(probes)
        ask = self._must_ask()
        if unchecked:
            ask = MappingProxyType({**unchecked, **ask})
        found.difference_update(ask)
        return Route(frozenset(found), ask)

    def status(self, provider_id: str) -> ProviderRouting:
        """A provider's routing state now."""
        self._expire(self._clock())
        entry = self._entry(provider_id)
        snapshot = entry.snapshot
        layout = "sliced" if entry.matrix is not None else "plain" if entry.plain else ""
        return ProviderRouting(
            provider_id=provider_id,
            reason=self._ask.get(provider_id),
            key_version=snapshot.key_version if snapshot else None,
            m=snapshot.m if snapshot else 0,
            k=snapshot.k if snapshot else 0,
            fmt=snapshot.fmt if snapshot else 0,
            count=snapshot.count if snapshot else 0,
            created_at=snapshot.created_at if snapshot else None,
            fresh_until=entry.fresh_until if snapshot else None,
            layout=layout,
        )

    def memory_bytes(self) -> int:
        """Bytes of filter bits held: matrices, plain filters and additions kept for replay."""
        layout = self._layouts.summary()
        pending = sum(16 * e.pending_count for e in self._entries.values())
        return layout["matrix_bytes"] + layout["plain_bytes"] + pending

    def layout(self) -> dict[str, int]:
        """How the filters are laid out: matrices, sliced columns, plain filters."""
        return self._layouts.summary()

    # Internals -----------------------------------------------------------

    def _entry(self, provider_id: str) -> _Entry:
        entry = self._entries.get(provider_id)
        if entry is None:
            raise UnknownProviderError(provider_id)
        return entry

    def _check_key(self, version: int, check: bytes) -> None:
        expected = self._checks.get(version)
        if expected is None:
            live = ", ".join(str(v) for v in sorted(self._checks)) or "none"
            raise FilterRejectedError(f"routing key version {version} is not live (live: {live})")
        if check != expected:
            raise FilterRejectedError(f"keyed with another key than routing key version {version}")

    def _set_deadline(self, entry: _Entry, now: float) -> None:
        entry.generation = next(self._generations)
        entry.fresh_until = entry.basis + entry.interval + self._grace
        entry.stale = entry.fresh_until <= now
        if not entry.stale:
            heapq.heappush(
                self._deadlines, (entry.fresh_until, entry.generation, entry.provider_id)
            )

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, generation, provider_id = heapq.heappop(deadlines)
            entry = self._entries.get(provider_id)
            if entry is not None and entry.generation == generation:
                entry.stale = True
                self._refresh(entry)

    def _reason(self, entry: _Entry) -> AskReason | None:
        if entry.opted_out:
            return AskReason.OPTED_OUT
        if entry.snapshot is None:
            return AskReason.RETIRED_KEY if entry.retired else AskReason.NO_FILTER
        if entry.stale:
            return AskReason.STALE
        if entry.incomplete:
            return AskReason.INCOMPLETE
        return None

    def _refresh(self, entry: _Entry) -> None:
        reason = self._reason(entry)
        if self._ask.get(entry.provider_id) is reason:
            return
        if reason is None:
            del self._ask[entry.provider_id]
        else:
            self._ask[entry.provider_id] = reason
        self._ask_view = None

    def _must_ask(self) -> Mapping[str, AskReason]:
        if self._ask_view is None:
            self._ask_view = MappingProxyType(dict(self._ask))
        return self._ask_view


def _header_of(snapshot: RoutingFilter) -> _Header:
    """The snapshot's header: its bits are kept once, in the layout."""
    return _Header(
        key_version=snapshot.key_version,
        key_check=snapshot.key_check,
        m=snapshot.m,
        k=snapshot.k,
        fmt=snapshot.fmt,
        count=snapshot.count,
        created_at=snapshot.created_at,
    )


def _shape_of(snapshot: RoutingFilter) -> Shape:
    """What filters share a matrix by: key version, ``m``, ``k`` and format."""
    return (snapshot.key_version, snapshot.m, snapshot.k, snapshot.fmt)
