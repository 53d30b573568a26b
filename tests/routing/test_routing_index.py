"""The routing index: freshness, opt-out, key rotation, refusals, layout and false positives."""

from __future__ import annotations

import hashlib
import math

import pytest

from onecert.gateway.routing import (
    AskReason,
    FilterRejectedError,
    RoutingIndex,
    RoutingKeyring,
    UnknownProviderError,
)
from onecert.sdk.routing import (
    FilterAdditions,
    FilterBuilder,
    RoutingFilter,
    bits_for,
    expected_fp_rate,
    hashes_for,
)

HOUR = 3600.0
NUMBER = "+8613800138000"
OTHER = "+8613912345678"


def _key(version: int) -> bytes:
    return hashlib.sha256(b"test routing key %d" % version).digest()


class Clock:
    """A settable clock, in Unix seconds."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _snapshot(
    ring: RoutingKeyring,
    numbers: list[str],
    *,
    created_at: float,
    version: int | None = None,
    fp_rate: float = 0.01,
    size: int | None = None,
    fmt: int = 2,
) -> RoutingFilter:
    version = ring.active_version if version is None else version
    k = hashes_for(fp_rate)
    builder = FilterBuilder(
        ring.key(version),
        key_version=version,
        m=bits_for(len(numbers) if size is None else size, k),
        k=k,
        fmt=fmt,
    )
    builder.add_many(numbers)
    return builder.snapshot(created_at=int(created_at))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ring() -> RoutingKeyring:
    return RoutingKeyring({1: _key(1)}, active=1)


@pytest.fixture
def index(ring: RoutingKeyring, clock: Clock) -> RoutingIndex:
    return RoutingIndex(key_checks=ring.key_checks(), grace=60, clock=clock)


def test_routes_to_the_holder_only(index: RoutingIndex, ring: RoutingKeyring, clock: Clock) -> None:
    """A fresh filter routes its holder in and a provider without the number out."""
    index.register("holder", snapshot_interval=HOUR)
    index.register("other", snapshot_interval=HOUR)
    index.put_snapshot("holder", _snapshot(ring, [NUMBER], created_at=clock.now))
    index.put_snapshot("other", _snapshot(ring, [OTHER], created_at=clock.now))
    route = index.query(ring.digests(NUMBER))
    assert route.candidates == {"holder"}
    assert dict(route.must_ask) == {}
    assert route.asked() == {"holder"}


def test_a_provider_without_a_filter_is_always_asked(
    index: RoutingIndex, ring: RoutingKeyring
) -> None:
    """A registered provider that never published a filter is asked about every number."""
    index.register("new", snapshot_interval=HOUR)
    route = index.query(ring.digests(NUMBER))
    assert dict(route.must_ask) == {"new": AskReason.NO_FILTER}
    assert index.status("new").reason is AskReason.NO_FILTER


def test_a_stale_filter_is_asked_until_a_new_snapshot(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """Past its interval plus grace the provider is asked; a new snapshot routes it again."""
    index.register("site", snapshot_interval=HOUR)
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    clock.now += HOUR + 59
    assert index.query(ring.digests(NUMBER)).asked() == set()
    clock.now += 1
    assert dict(index.query(ring.digests(NUMBER)).must_ask) == {"site": AskReason.STALE}
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    assert index.query(ring.digests(NUMBER)).asked() == set()


def test_freshness_counts_from_the_read_not_the_upload(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """A snapshot whose read began more than interval plus grace ago is stale on arrival."""
    index.register("slow", snapshot_interval=HOUR)
    index.put_snapshot("slow", _snapshot(ring, [OTHER], created_at=clock.now - HOUR - 60))
    assert index.status("slow").reason is AskReason.STALE


def test_a_longer_promised_interval_applies_at_once(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """Re-registering with a longer interval makes a stale filter fresh again."""
    index.register("site", snapshot_interval=HOUR)
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    clock.now += 2 * HOUR
    assert index.status("site").reason is AskReason.STALE
    index.register("site", snapshot_interval=24 * HOUR)
    assert index.status("site").reason is None


def test_a_provider_registered_again_keeps_its_new_deadline(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """The deadline of a forgotten registration does not make the new one's filter stale."""
    index.register("site", snapshot_interval=HOUR)
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    index.unregister("site")
    clock.now += 10
    index.register("site", snapshot_interval=HOUR)
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    clock.now += HOUR + 55  # past the old registration's deadline, before the new one's
    assert index.status("site").reason is None


def test_an_opted_out_provider_is_always_asked(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """An opted-out provider is asked even when its filter says it cannot hold the number."""
    index.register("platform", snapshot_interval=HOUR, opted_out=True)
    index.put_snapshot("platform", _snapshot(ring, [OTHER], created_at=clock.now))
    assert dict(index.query(ring.digests(NUMBER)).must_ask) == {"platform": AskReason.OPTED_OUT}
    index.register("platform", snapshot_interval=HOUR, opted_out=False)
    assert index.query(ring.digests(NUMBER)).asked() == set()


def test_additions_are_seen_by_the_next_query(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """A number added after the snapshot is routed to the provider at once."""
    index.register("site", snapshot_interval=HOUR)
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    assert "site" not in index.query(ring.digests(NUMBER)).asked()
    index.add("site", FilterAdditions.of(ring.key(1), 1, [NUMBER], created_at=int(clock.now)))
    assert index.query(ring.digests(NUMBER)).candidates == {"site"}


def test_additions_during_a_snapshot_read_survive_it(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """A number bound while the snapshot was being read, published as an addition before the
    snapshot arrived, is still routed after the snapshot replaces the filter."""
    index.register("site", snapshot_interval=HOUR)
    read_began = clock.now
    clock.now += 30
    index.add("site", FilterAdditions.of(ring.key(1), 1, [NUMBER], created_at=int(clock.now)))
    clock.now += 30
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=read_began))
    assert index.query(ring.digests(NUMBER)).candidates == {"site"}


def test_additions_older_than_the_read_are_not_kept(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """Additions made well before a snapshot's read are left to the snapshot and forgotten."""
    index.register("site", snapshot_interval=HOUR)
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    index.add("site", FilterAdditions.of(ring.key(1), 1, [NUMBER], created_at=int(clock.now)))
    before = index.memory_bytes()
    clock.now += HOUR
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    assert index.memory_bytes() == before - 16
    assert "site" not in index.query(ring.digests(NUMBER)).asked()


def test_lost_additions_leave_the_provider_asked(ring: RoutingKeyring, clock: Clock) -> None:
    """When additions kept for replay overflow, a snapshot that may lack them is not trusted."""
    index = RoutingIndex(key_checks=ring.key_checks(), max_pending=2, clock=clock)
    index.register("busy", snapshot_interval=HOUR)
    read_began = clock.now
    index.put_snapshot("busy", _snapshot(ring, [], created_at=read_began))
    numbers = [f"+86137{i:08d}" for i in range(3)]
    for number in numbers:
        clock.now += 1
        index.add("busy", FilterAdditions.of(ring.key(1), 1, [number], created_at=int(clock.now)))
    assert index.status("busy").reason is None  # the bits are in place until the next snapshot
    index.put_snapshot("busy", _snapshot(ring, [], created_at=read_began + 1))
    assert index.status("busy").reason is AskReason.INCOMPLETE
    assert all("busy" in index.query(ring.digests(n)).asked() for n in numbers)
    clock.now += 600
    index.put_snapshot("busy", _snapshot(ring, numbers, created_at=clock.now))
    assert index.status("busy").reason is None


def test_additions_before_the_first_snapshot_are_applied_to_it(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """Additions sent before any snapshot are kept and applied to the first one."""
    index.register("new", snapshot_interval=HOUR)
    index.add("new", FilterAdditions.of(ring.key(1), 1, [NUMBER], created_at=int(clock.now)))
    assert index.status("new").reason is AskReason.NO_FILTER
    index.put_snapshot("new", _snapshot(ring, [], created_at=clock.now - 10))
    assert index.query(ring.digests(NUMBER)).candidates == {"new"}


def test_rotation_routes_both_versions_then_asks_the_laggards(clock: Clock) -> None:
    """During a rotation filters of both versions route; once the old one is retired, its
    providers are asked until they republish under the new key."""
    ring = RoutingKeyring({1: _key(1)}, active=1)
    index = RoutingIndex(key_checks=ring.key_checks(), clock=clock)
    for name in ("early", "late"):
        index.register(name, snapshot_interval=HOUR)
        index.put_snapshot(name, _snapshot(ring, [NUMBER], created_at=clock.now))
    ring = ring.rotated(2, _key(2))
    index.set_key_versions(ring.key_checks())
    assert index.key_versions == {1, 2}
    index.put_snapshot("early", _snapshot(ring, [NUMBER], created_at=clock.now))
    assert index.status("early").key_version == 2
    assert index.query(ring.digests(NUMBER)).candidates == {"early", "late"}
    assert index.query(ring.digests(OTHER)).asked() == set()
    # A caller that hashed under version 2 only cannot check version 1 filters: asked.
    partial = index.query({2: ring.digests(NUMBER)[2]})
    assert partial.candidates == {"early"}
    assert dict(partial.must_ask) == {"late": AskReason.RETIRED_KEY}
    ring = ring.retired(1)
    index.set_key_versions(ring.key_checks())
    assert dict(index.query(ring.digests(OTHER)).must_ask) == {"late": AskReason.RETIRED_KEY}
    index.put_snapshot("late", _snapshot(ring, [NUMBER], created_at=clock.now))
    assert index.query(ring.digests(OTHER)).asked() == set()


def test_additions_under_another_version_than_the_snapshot_are_refused(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """Additions keyed with another version than the filter in place are refused: their bits
    would be meaningless in it."""
    index.register("site", snapshot_interval=HOUR)
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    ring2 = ring.rotated(2, _key(2))
    index.set_key_versions(ring2.key_checks())
    with pytest.raises(FilterRejectedError, match="publish a snapshot under the new key"):
        index.add("site", FilterAdditions.of(ring2.key(2), 2, [NUMBER]))
    assert "site" not in index.query(ring2.digests(NUMBER)).asked()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda ring, now: _snapshot(
                RoutingKeyring({1: ring.key(1), 7: _key(7)}, active=7), [NUMBER], created_at=now
            ),
            "version 7 is not live",
        ),
        (
            lambda ring, now: _snapshot(
                RoutingKeyring({1: _key(99)}, active=1), [NUMBER], created_at=now
            ),
            "another key than routing key version 1",
        ),
        (lambda ring, now: _snapshot(ring, [NUMBER], created_at=now + 3600), "in the future"),
        (lambda ring, now: _snapshot(ring, [NUMBER], created_at=now - 10), "older than the one"),
    ],
)
def test_refused_snapshots_change_nothing(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock, make: object, message: str
) -> None:
    """A snapshot under an unknown version, the wrong key, from the future or older than the
    filter in place is refused with a reason and leaves the index as it was."""
    index.register("site", snapshot_interval=HOUR)
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    before = index.status("site")
    assert callable(make)
    with pytest.raises(FilterRejectedError, match=message):
        index.put_snapshot("site", make(ring, clock.now))
    assert index.status("site") == before
    assert "site" not in index.query(ring.digests(NUMBER)).asked()


def test_filters_larger_than_the_gateway_accepts_are_refused(
    ring: RoutingKeyring, clock: Clock
) -> None:
    """A filter above the gateway's size limit is refused; the provider stays always asked."""
    index = RoutingIndex(key_checks=ring.key_checks(), max_bits=1 << 12, clock=clock)
    index.register("huge", snapshot_interval=HOUR)
    with pytest.raises(FilterRejectedError, match="opt out of routing instead"):
        index.put_snapshot("huge", _snapshot(ring, [NUMBER], created_at=clock.now, size=500))
    assert index.status("huge").reason is AskReason.NO_FILTER
    assert index.memory_bytes() == 0


def test_unknown_providers_are_refused(index: RoutingIndex, ring: RoutingKeyring) -> None:
    """Filters for a provider that is not registered are refused."""
    with pytest.raises(UnknownProviderError):
        index.put_snapshot("ghost", _snapshot(ring, [NUMBER], created_at=0))
    with pytest.raises(UnknownProviderError):
        index.add("ghost", FilterAdditions.of(ring.key(1), 1, [NUMBER]))
    assert len(index) == 0


def test_unregister_and_drop_filter(
    index: RoutingIndex, ring: RoutingKeyring, clock: Clock
) -> None:
    """An unregistered provider is never returned; a dropped filter means always asked."""
    for name in ("a", "b"):
        index.register(name, snapshot_interval=HOUR)
        index.put_snapshot(name, _snapshot(ring, [NUMBER], created_at=clock.now))
    index.unregister("a")
    index.drop_filter("b")
    route = index.query(ring.digests(NUMBER))
    assert route.candidates == set()
    assert dict(route.must_ask) == {"b": AskReason.NO_FILTER}
    assert "a" not in index
    assert index.memory_bytes() == 0


def test_filters_move_between_layouts_and_matrices_shrink(
    ring: RoutingKeyring, clock: Clock
) -> None:
    """Providers that grow move to a larger matrix or to a plain filter; emptied matrices
    shrink, and every provider keeps routing to its numbers throughout."""
    index = RoutingIndex(key_checks=ring.key_checks(), plain_from_bits=1 << 12, clock=clock)
    held = {f"site-{i}": [f"+86150{i:04d}{j:04d}" for j in range(3)] for i in range(40)}
    for name, numbers in held.items():
        index.register(name, snapshot_interval=HOUR)
        index.put_snapshot(name, _snapshot(ring, numbers, created_at=clock.now))
    assert index.layout()["matrices"] == 1
    full = index.layout()["matrix_bytes"]
    clock.now += 1
    for i in range(30):
        name = f"site-{i}"
        if i % 2:
            index.unregister(name)
            del held[name]
        else:  # grows past 2**12 bits: plain
            index.put_snapshot(name, _snapshot(ring, held[name], created_at=clock.now, size=500))
    layout = index.layout()
    assert layout["plain"] == 15
    assert layout["sliced"] == 10
    assert layout["matrix_bytes"] < full / 2
    for name, numbers in held.items():
        for number in numbers:
            assert name in index.query(ring.digests(number)).candidates
        grown = int(name.removeprefix("site-")) < 30
        assert index.status(name).layout == ("plain" if grown else "sliced")


@pytest.mark.parametrize("plain_from_bits", [1 << 22, 1 << 9])
def test_format_1_and_2_filters_route_side_by_side(
    ring: RoutingKeyring, clock: Clock, plain_from_bits: int
) -> None:
    """Filters of both format versions are accepted and each routes to its numbers, in a
    matrix of its own format (same key, size and k) or as plain filters; additions land in
    either; a provider moving from format 1 to 2 keeps routing."""
    index = RoutingIndex(key_checks=ring.key_checks(), plain_from_bits=plain_from_bits, clock=clock)
    for fmt in (1, 2):
        index.register(f"v{fmt}", snapshot_interval=HOUR)
        index.put_snapshot(f"v{fmt}", _snapshot(ring, [NUMBER], created_at=clock.now, fmt=fmt))
        assert index.status(f"v{fmt}").fmt == fmt
    if plain_from_bits > 512:
        assert index.layout()["matrices"] == 2
    assert index.query(ring.digests(NUMBER)).candidates == {"v1", "v2"}
    for fmt in (1, 2):
        index.add(f"v{fmt}", FilterAdditions.of(ring.key(1), 1, [OTHER], created_at=int(clock.now)))
    assert index.query(ring.digests(OTHER)).candidates == {"v1", "v2"}
    clock.now += 1
    index.put_snapshot("v1", _snapshot(ring, [NUMBER, OTHER], created_at=clock.now, fmt=2))
    assert index.status("v1").fmt == 2
    assert index.query(ring.digests(NUMBER)).candidates == {"v1", "v2"}
    assert index.layout()["matrices"] == (1 if plain_from_bits > 512 else 0)


def test_share_of_non_holders_asked_matches_the_filters_rate(
    ring: RoutingKeyring, clock: Clock
) -> None:
    """On random numbers, the share of providers asked that hold nothing is the filters'
    expected false-positive rate, at most the configured 1%."""
    index = RoutingIndex(key_checks=ring.key_checks(), plain_from_bits=1 << 14, clock=clock)
    providers = 200
    rates = []
    for i in range(providers):
        count = 5 + 7 * i  # 5 .. 1398 numbers: many matrices, a few plain filters
        index.register(f"p{i}", snapshot_interval=HOUR)
        snapshot = _snapshot(
            ring, [f"+86151{i:03d}{j:05d}" for j in range(count)], created_at=clock.now
        )
        index.put_snapshot(f"p{i}", snapshot)
        rates.append(expected_fp_rate(snapshot.m, snapshot.k, count))
    assert index.layout()["plain"] > 0
    queries = 2000
    asked = sum(len(index.query(ring.digests(f"+86189{q:08d}")).asked()) for q in range(queries))
    expected = sum(rates) / providers
    trials = queries * providers
    observed = asked / trials
    assert expected <= 0.01
    # Six standard deviations of the binomial count: the seeds are fixed.
    assert abs(observed - expected) <= 6 * math.sqrt(expected / trials)


def test_keyring_rules() -> None:
    """Keys are 32 bytes or more; versions only grow; the active key is never retired."""
    ring = RoutingKeyring.generate(3)
    assert ring.active_version == 3
    with pytest.raises(ValueError, match="higher"):
        ring.rotated(3, _key(3))
    with pytest.raises(ValueError, match="cannot be retired"):
        ring.retired(3)
    with pytest.raises(ValueError, match="shorter than 32"):
        RoutingKeyring({1: b"short"}, active=1)
    with pytest.raises(ValueError, match="has no key"):
        RoutingKeyring({1: _key(1)}, active=2)
    rotated = ring.rotated(4, _key(4))
    assert rotated.versions == {3, 4}
    assert set(rotated.digests(NUMBER)) == {3, 4}


def test_old_key_additions_during_a_rotation_read_leave_the_provider_asked(
    ring: RoutingKeyring, clock: Clock
) -> None:
    """An addition under the old key made while the first new-key snapshot was read cannot be
    replayed onto it: the provider is asked until a later snapshot covers it."""
    index = RoutingIndex(key_checks=ring.key_checks(), replay_margin=300, clock=clock)
    index.register("site", snapshot_interval=24 * HOUR)
    index.put_snapshot("site", _snapshot(ring, [OTHER], created_at=clock.now))
    ring2 = ring.rotated(2, _key(2))
    index.set_key_versions(ring2.key_checks())
    read_began = clock.now + 10
    clock.now += 20
    index.add("site", FilterAdditions.of(ring.key(1), 1, [NUMBER], created_at=int(clock.now)))
    added_at = clock.now
    clock.now += 20
    index.put_snapshot("site", _snapshot(ring2, [OTHER], created_at=read_began))
    assert index.status("site").reason is AskReason.INCOMPLETE
    assert "site" in index.query(ring2.digests(NUMBER)).asked()
    clock.now = added_at + 299
    index.put_snapshot("site", _snapshot(ring2, [OTHER, NUMBER], created_at=clock.now))
    assert index.status("site").reason is AskReason.INCOMPLETE
    clock.now = added_at + 301
    index.put_snapshot("site", _snapshot(ring2, [OTHER, NUMBER], created_at=clock.now))
    assert index.status("site").reason is None
    assert index.query(ring2.digests(NUMBER)).candidates == {"site"}
