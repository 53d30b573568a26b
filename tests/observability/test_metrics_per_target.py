"""The per-provider call metrics: plain counts exposed by a collector, sample for
sample what prometheus_client's labelled Counter and Histogram would expose."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from onecert.gateway._metrics import _CALL_BUCKETS, _PerTarget
from onecert.gateway._observers import UpstreamOutcome

TARGETS = ("alpha", "beta", "gamma")

calls = st.lists(
    st.tuples(
        st.sampled_from((*TARGETS, "unknown")),
        st.sampled_from(list(UpstreamOutcome)),
        st.one_of(
            st.sampled_from([0.0, *_CALL_BUCKETS, 11.0]),
            st.floats(min_value=0, max_value=20, allow_nan=False),
        ),
    ),
    max_size=40,
)


def _reference(calls_made: list[tuple[str, UpstreamOutcome, float]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("onecert_provider_calls", "x", ["provider", "outcome"], registry=registry)
    timer = Histogram(
        "onecert_provider_call_duration_seconds",
        "x",
        ["provider"],
        buckets=_CALL_BUCKETS,
        registry=registry,
    )
    for target in TARGETS:
        timer.labels(target)
        for outcome in UpstreamOutcome:
            counter.labels(target, outcome.name.lower())
    for target, outcome, seconds in calls_made:
        if target not in TARGETS:
            continue
        counter.labels(target, outcome.name.lower()).inc()
        if outcome is not UpstreamOutcome.SKIPPED:
            timer.labels(target).observe(seconds)
    return registry


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=200, deadline=None)
@given(calls)
def test_the_collector_exposes_what_labelled_metrics_would(
    calls_made: list[tuple[str, UpstreamOutcome, float]],
) -> None:
    """Every target shows from the start; each call counts under its outcome, and is
    timed into the same buckets and sum unless SKIPPED; an unknown target is ignored."""
    registry = CollectorRegistry()
    per_target = _PerTarget(registry, "provider", TARGETS[:2])
    per_target.add(TARGETS[1:])
    for target, outcome, seconds in calls_made:
        per_target.record(target, outcome, seconds)
    ours, reference = _samples(registry), _samples(_reference(calls_made))
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        assert ours[key] == value or abs(ours[key] - value) < 1e-9, key
