"""Routing never misses a holder: a state machine of providers binding, publishing and rotating."""

from __future__ import annotations

import hashlib

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from onecert.gateway.routing import AskReason, RoutingIndex, RoutingKeyring
from onecert.sdk.routing import FilterAdditions, FilterBuilder, bits_for, hashes_for

POOL = [f"+8613{i:09d}" for i in range(0, 120 * 7919, 7919)]
PROVIDERS = [f"prov-{i}" for i in range(8)]
INTERVAL = 1000
GRACE = 10
MARGIN = 30


def _key(version: int) -> bytes:
    """A fixed key per version: hypothesis replays examples, so nothing may be random."""
    return hashlib.sha256(b"routing key %d" % version).digest()


class _Provider:
    """The truth at one provider: what is bound now, and what it published."""

    def __init__(self, now: int) -> None:
        self.bound: set[str] = set()
        self.history: list[tuple[int, frozenset[str]]] = [(now, frozenset())]
        self.snapshot_at: int | None = None
        self.published_at = 0
        self.version: int | None = None
        self.opted_out = False


class RoutingMachine(RuleBasedStateMachine):
    """Providers bind numbers, publish snapshots (some lagging) and additions; keys rotate."""

    @initialize()
    def setup(self) -> None:
        self.now = 1_000
        self.ring = RoutingKeyring({1: _key(1)}, active=1)
        self.index = RoutingIndex(
            key_checks=self.ring.key_checks(),
            grace=GRACE,
            replay_margin=MARGIN,
            # Filters of 1024 bits and more are plain: both layouts are exercised.
            plain_from_bits=1 << 10,
            max_pending=6,
            clock=lambda: self.now,
        )
        self.providers: dict[str, _Provider] = {}

    @rule(provider=st.sampled_from(PROVIDERS), opted_out=st.booleans())
    def register(self, provider: str, opted_out: bool) -> None:
        self.index.register(provider, snapshot_interval=INTERVAL, opted_out=opted_out)
        self.providers.setdefault(provider, _Provider(self.now)).opted_out = opted_out

    @precondition(lambda self: self.providers)
    @rule(data=st.data())
    def unregister(self, data: st.DataObject) -> None:
        provider = data.draw(st.sampled_from(sorted(self.providers)))
        self.index.unregister(provider)
        del self.providers[provider]

    @precondition(lambda self: self.providers)
    @rule(data=st.data(), numbers=st.lists(st.sampled_from(POOL), min_size=1, max_size=5))
    def bind(self, data: st.DataObject, numbers: list[str]) -> None:
        """The provider binds numbers and publishes them as additions at once.

        Keyed like its filter while that key is live, else with the active key.
        """
        name = data.draw(st.sampled_from(sorted(self.providers)))
        provider = self.providers[name]
        provider.bound.update(numbers)
        provider.history.append((self.now, frozenset(provider.bound)))
        version = provider.version
        if version is None or version not in self.ring.versions:
            version = self.ring.active_version
        additions = FilterAdditions.of(
            self.ring.key(version), version, numbers, created_at=self.now
        )
        self.index.add(name, additions)

    @precondition(lambda self: any(p.bound for p in self.providers.values()))
    @rule(data=st.data())
    def unbind(self, data: st.DataObject) -> None:
        """A number is unbound: the filter may keep saying maybe until the next snapshot."""
        name = data.draw(st.sampled_from(sorted(n for n, p in self.providers.items() if p.bound)))
        provider = self.providers[name]
        provider.bound.discard(data.draw(st.sampled_from(sorted(provider.bound))))
        provider.history.append((self.now, frozenset(provider.bound)))

    @precondition(lambda self: self.providers)
    @rule(
        data=st.data(),
        fp_rate=st.sampled_from([0.5, 0.1, 0.01, 0.0001]),
        lag=st.integers(min_value=0, max_value=3),
        fmt=st.sampled_from([1, 2]),
    )
    def publish_snapshot(self, data: st.DataObject, fp_rate: float, lag: int, fmt: int) -> None:
        """A snapshot of what was bound when the read began, ``lag`` bindings ago, in
        either format version."""
        name = data.draw(st.sampled_from(sorted(self.providers)))
        provider = self.providers[name]
        read_at, content = provider.history[max(0, len(provider.history) - 1 - lag)]
        if provider.snapshot_at is not None and read_at < provider.snapshot_at:
            return  # a provider never publishes a read older than its last snapshot
        version = self.ring.active_version
        k = hashes_for(fp_rate)
        builder = FilterBuilder(
            self.ring.key(version), key_version=version, m=bits_for(len(content), k), k=k, fmt=fmt
        )
        builder.add_many(sorted(content))
        self.index.put_snapshot(name, builder.snapshot(created_at=read_at))
        provider.snapshot_at = read_at
        provider.published_at = self.now
        provider.version = version

    @precondition(lambda self: any(p.version for p in self.providers.values()))
    @rule(data=st.data())
    def drop_filter(self, data: st.DataObject) -> None:
        """The gateway forgets a provider's filter (for example at the regulator's request)."""
        name = data.draw(st.sampled_from(sorted(n for n, p in self.providers.items() if p.version)))
        self.index.drop_filter(name)
        self.providers[name].version = None

    @rule(seconds=st.integers(min_value=1, max_value=60))
    def advance(self, seconds: int) -> None:
        self.now += seconds

    @precondition(lambda self: any(p.version for p in self.providers.values()))
    @rule(data=st.data(), offset=st.sampled_from([-1, 0, 1]))
    def advance_to_deadline(self, data: st.DataObject, offset: int) -> None:
        """Jump to just before, at or after a provider's snapshot turns stale."""
        name = data.draw(st.sampled_from(sorted(n for n, p in self.providers.items() if p.version)))
        provider = self.providers[name]
        assert provider.snapshot_at is not None
        deadline = min(provider.snapshot_at, provider.published_at) + INTERVAL + GRACE
        self.now = max(self.now, deadline + offset)

    @rule()
    def rotate(self) -> None:
        version = max(self.ring.versions) + 1
        self.ring = self.ring.rotated(version, _key(version))
        self.index.set_key_versions(self.ring.key_checks())

    @precondition(lambda self: len(self.ring.versions) > 1)
    @rule()
    def retire_oldest(self) -> None:
        self.ring = self.ring.retired(min(self.ring.versions))
        self.index.set_key_versions(self.ring.key_checks())

    @invariant()
    def every_holder_is_asked(self) -> None:
        """Whoever holds a number is asked about it: as a candidate or as must-ask."""
        if not hasattr(self, "index"):
            return
        for number in POOL:
            route = self.index.query(self.ring.digests(number))
            asked = route.asked()
            assert not route.candidates & route.must_ask.keys()
            for name, provider in self.providers.items():
                if number in provider.bound:
                    assert name in asked, (name, number)

    @invariant()
    def providers_without_a_fresh_filter_are_must_ask(self) -> None:
        """Opted out, no filter, retired key or stale: asked about every number, for that reason."""
        if not hasattr(self, "index"):
            return
        must_ask = self.index.query(self.ring.digests(POOL[0])).must_ask
        for name, provider in self.providers.items():
            if provider.opted_out:
                expected: AskReason | None = AskReason.OPTED_OUT
            elif provider.version is None:
                expected = AskReason.NO_FILTER
            elif provider.version not in self.ring.versions:
                expected = AskReason.RETIRED_KEY
            elif self.now >= min(provider.snapshot_at or 0, provider.published_at) + (
                INTERVAL + GRACE
            ):
                expected = AskReason.STALE
            else:
                expected = None
            reason = must_ask.get(name)
            if expected is None:
                assert reason in (None, AskReason.INCOMPLETE), (name, reason)
            else:
                assert reason is expected, (name, reason, expected)


RoutingMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_routing_state_machine = RoutingMachine.TestCase
