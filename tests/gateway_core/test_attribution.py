"""Attribution by tenure: the DESIGN.md rules, by example and as properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from onecert.gateway._attribution import (
    FUTURE_TOLERANCE,
    Attributed,
    Attribution,
    BindingTime,
    Shown,
    TenureView,
    attribute,
    classify,
    proto_binding_time,
    proto_bound_at,
)
from onecert.v1 import common_pb2, gateway_pb2, provider_pb2, registry_pb2

MSISDN = "+8613800138000"
BASE = datetime(2015, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 6, 1, tzinfo=UTC)
MINE = Attribution.MINE
LEFT_BEHIND = Attribution.LEFT_BEHIND
PREVIOUS_HOLDER = Attribution.PREVIOUS_HOLDER


def day(n: float) -> datetime:
    return BASE + timedelta(days=n)


def tenure(start: float, end: float | None = None) -> TenureView:
    state = common_pb2.TENURE_STATE_ACTIVE if end is None else common_pb2.TENURE_STATE_RECYCLED
    return TenureView(
        msisdn=MSISDN,
        carrier_id="cmcc",
        held_from=day(start),
        held_until=None if end is None else day(end),
        state=state,
    )


def at(tenures: list[TenureView], bound: datetime | BindingTime | None) -> Attribution | None:
    return attribute(tenures, bound, now=NOW)


# ------------------------------------------------------------ the table


def test_current_number_bound_after_held_from_is_mine() -> None:
    """A binding of a current number made at or after held_from is the citizen's own."""
    assert at([tenure(100)], day(100)) is MINE
    assert at([tenure(100)], day(2000)) is MINE


def test_current_number_bound_before_held_from_is_previous_holder() -> None:
    """A binding of a current number made before the citizen got it is a previous holder's."""
    assert at([tenure(100)], day(99.99)) is PREVIOUS_HOLDER


def test_former_number_bound_during_tenure_is_left_behind() -> None:
    """A binding of a former number made while the citizen held it is left behind."""
    assert at([tenure(100, 500)], day(100)) is LEFT_BEHIND
    assert at([tenure(100, 500)], day(499.9)) is LEFT_BEHIND


def test_former_number_bound_at_or_after_held_until_is_dropped() -> None:
    """A binding of a former number made at or after held_until is the next holder's: dropped."""
    assert at([tenure(100, 500)], day(500)) is None
    assert at([tenure(100, 500)], day(900)) is None


def test_former_number_bound_before_first_tenure_is_dropped() -> None:
    """A binding of a former number from before the citizen held it is none of their business."""
    assert at([tenure(100, 500)], day(50)) is None


def test_unknown_bound_at() -> None:
    """Unknown bound_at: a current number's binding is a previous holder's, a former's dropped."""
    assert at([tenure(100)], None) is PREVIOUS_HOLDER
    assert at([tenure(100, 500)], None) is None


def test_held_twice_earlier_tenure_counts_as_own() -> None:
    """A citizen who held the number twice owns what they bound during the first tenure."""
    tenures = [tenure(100, 200), tenure(400)]
    assert at(tenures, day(150)) is MINE
    assert at(tenures, day(300)) is PREVIOUS_HOLDER  # someone else held it in between
    assert at(tenures, day(50)) is PREVIOUS_HOLDER
    assert at(tenures, day(450)) is MINE


def test_former_number_held_twice() -> None:
    """For a former number held twice, both tenures are left behind, the gap is dropped."""
    tenures = [tenure(400, 600), tenure(100, 200)]
    assert at(tenures, day(150)) is LEFT_BEHIND
    assert at(tenures, day(500)) is LEFT_BEHIND
    assert at(tenures, day(300)) is None
    assert at(tenures, day(700)) is None


def test_future_bound_at_is_treated_as_unknown() -> None:
    """A bound_at beyond now plus the tolerance proves nothing and reveals nothing."""
    future = NOW + FUTURE_TOLERANCE + timedelta(seconds=1)
    assert at([tenure(100)], future) is PREVIOUS_HOLDER
    assert at([tenure(100, 500)], future) is None


def test_bound_at_slightly_ahead_is_accepted() -> None:
    """A provider clock a little ahead does not hide a citizen's fresh binding."""
    assert at([tenure(100)], NOW + FUTURE_TOLERANCE) is MINE


def test_state_does_not_override_the_interval() -> None:
    """Attribution follows held_until, whatever state the carrier reports."""
    cancelled = TenureView(
        msisdn=MSISDN,
        carrier_id="cmcc",
        held_from=day(100),
        held_until=day(500),
        state=common_pb2.TENURE_STATE_CANCELLED,
    )
    assert at([cancelled], day(200)) is LEFT_BEHIND


def test_bad_input_is_a_value_error() -> None:
    """No tenures, tenures of several numbers, naive or reversed times are refused."""
    with pytest.raises(ValueError, match="at least one"):
        attribute([], day(1), now=NOW)
    other = TenureView(
        msisdn="+8613900139000", carrier_id="c", held_from=day(0), held_until=None, state=1
    )
    with pytest.raises(ValueError, match="one number"):
        attribute([tenure(0), other], day(1), now=NOW)
    with pytest.raises(ValueError, match="timezone"):
        attribute([tenure(0)], datetime(2020, 1, 1), now=NOW)  # noqa: DTZ001  # on purpose
    with pytest.raises(ValueError, match="timezone"):
        TenureView(
            msisdn=MSISDN,
            carrier_id="c",
            held_from=datetime(2020, 1, 1),  # noqa: DTZ001  # on purpose
            held_until=None,
            state=1,
        )
    with pytest.raises(ValueError, match="before it starts"):
        tenure(10, 5)


def test_attribution_values_match_the_proto() -> None:
    """The enum carries the onecert.v1.Attribution values; only LEFT_BEHIND is dangerous."""
    assert MINE.proto == gateway_pb2.ATTRIBUTION_MINE
    assert LEFT_BEHIND.proto == gateway_pb2.ATTRIBUTION_LEFT_BEHIND
    assert PREVIOUS_HOLDER.proto == gateway_pb2.ATTRIBUTION_PREVIOUS_HOLDER
    assert [a.dangerous for a in Attribution] == [False, True, False]
    assert [a.shown for a in Attribution] == [True, True, False]


# ------------------------------------------------------------- classify


def test_classify_sorts_one_providers_answer() -> None:
    """classify splits bindings into shown, previous holders' and dropped, in provider order."""
    bindings = [("a", day(150)), ("b", day(50)), ("c", None), ("d", day(120)), ("e", day(99))]
    result = classify([tenure(100)], bindings, bound_at=lambda b: b[1], now=NOW)
    assert result.shown == (Shown(MINE, ("a", day(150))), Shown(MINE, ("d", day(120))))
    assert [b[0] for b in result.previous_holder] == ["b", "c", "e"]
    assert (result.mine, result.left_behind, result.previous_holder_count, result.dropped) == (
        2,
        0,
        3,
        0,
    )


def test_classify_former_number() -> None:
    """On a former number only the citizen's own tenure's bindings survive, as LEFT_BEHIND."""
    bindings = [("mine", day(150)), ("next", day(600)), ("old", day(10)), ("unknown", None)]
    result = classify([tenure(100, 500)], bindings, bound_at=lambda b: b[1], now=NOW)
    assert result == Attributed(
        shown=(Shown(LEFT_BEHIND, ("mine", day(150))),), previous_holder=(), dropped=3
    )


def test_classify_reads_proto_bindings() -> None:
    """proto_bound_at reads a provider Binding's bound_at; absent or epoch means unknown."""
    stamped = provider_pb2.Binding(account_ref="1", kind=common_pb2.BINDING_KIND_LOGIN)
    stamped.bound_at.FromDatetime(day(200))
    unstamped = provider_pb2.Binding(account_ref="2")
    epoch = provider_pb2.Binding(account_ref="3", bound_at=Timestamp(seconds=0))
    huge = provider_pb2.Binding(account_ref="4", bound_at=Timestamp(seconds=2**62))
    assert proto_bound_at(stamped) == day(200)
    assert proto_bound_at(unstamped) is None
    assert proto_bound_at(epoch) is None
    assert proto_bound_at(huge) is None
    result = classify(
        [tenure(100)], [stamped, unstamped, epoch, huge], bound_at=proto_bound_at, now=NOW
    )
    assert [s.binding.account_ref for s in result.shown] == ["1"]
    assert [b.account_ref for b in result.previous_holder] == ["2", "3", "4"]


def test_tenure_view_from_proto() -> None:
    """A carrier Tenure becomes a TenureView in UTC; held_from is required."""
    message = registry_pb2.Tenure(
        msisdn=MSISDN, carrier_id="cmcc", state=common_pb2.TENURE_STATE_ACTIVE
    )
    message.held_from.FromDatetime(day(100))
    view = TenureView.from_proto(message)
    assert view == tenure(100)
    assert view.current
    message.held_until.FromDatetime(day(300))
    assert TenureView.from_proto(message).held_until == day(300)
    assert not TenureView.from_proto(message).current
    with pytest.raises(ValueError, match="held_from"):
        TenureView.from_proto(registry_pb2.Tenure(msisdn=MSISDN, carrier_id="c"))


# ----------------------------------------------------------- properties

# Times in days from BASE; NOW is day ~3804.
_DAYS = st.integers(min_value=0, max_value=4000)


@st.composite
def histories(draw: st.DrawFn) -> list[TenureView]:
    """One to three disjoint tenures of one number, in random order; the last may be current."""
    cuts = sorted(draw(st.lists(_DAYS, min_size=2, max_size=6, unique=True)))
    pairs = list(zip(cuts[::2], cuts[1::2], strict=False))
    current = draw(st.booleans())
    tenures = [tenure(start, end) for start, end in pairs]
    if current:
        tenures[-1] = tenure(pairs[-1][0])
    return draw(st.permutations(tenures))


_ANY_BOUND = (
    st.none()
    | st.integers(min_value=-100, max_value=4200).map(day)
    | st.just(NOW + timedelta(days=30))
)


Scenario = tuple[list[TenureView], list[datetime | None]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A history and binding times, many of them on or next to a tenure's edges."""
    tenures = draw(histories())
    edges = [t.held_from for t in tenures] + [t.held_until for t in tenures if t.held_until]
    near_edge = st.tuples(st.sampled_from(edges), st.sampled_from([-1, 0, 1])).map(
        lambda e: e[0] + timedelta(seconds=e[1])
    )
    bounds = draw(st.lists(_ANY_BOUND | near_edge, max_size=12))
    return tenures, bounds


def _inside(tenures: list[TenureView], bound: datetime) -> bool:
    return any(
        t.held_from <= bound and (t.held_until is None or bound < t.held_until) for t in tenures
    )


def _classify(tenures: list[TenureView], bounds: list[datetime | None]) -> Attributed[int]:
    return classify(tenures, range(len(bounds)), bound_at=lambda i: bounds[i], now=NOW)


@settings(max_examples=150)
@given(scenarios())
def test_every_binding_is_accounted_for(scenario: Scenario) -> None:
    """shown + previous holders' + dropped = every binding, each exactly once."""
    tenures, bounds = scenario
    result = _classify(tenures, bounds)
    seen = [s.binding for s in result.shown] + list(result.previous_holder)
    assert len(seen) == len(set(seen))
    assert len(seen) + result.dropped == len(bounds)
    assert result.mine + result.left_behind == len(result.shown)


@settings(max_examples=150)
@given(scenarios())
def test_next_holders_bindings_never_appear(scenario: Scenario) -> None:
    """On a former number, a binding made after the citizen's last tenure is in no class."""
    tenures, bounds = scenario
    if any(t.current for t in tenures):
        return
    last_end = max(t.held_until for t in tenures if t.held_until is not None)
    result = _classify(tenures, bounds)
    kept = {s.binding for s in result.shown} | set(result.previous_holder)
    for i, bound in enumerate(bounds):
        if bound is not None and bound >= last_end:
            assert i not in kept


@settings(max_examples=150)
@given(scenarios())
def test_classes_obey_the_tenure_rules(scenario: Scenario) -> None:
    """MINE and LEFT_BEHIND lie inside a tenure, PREVIOUS_HOLDER only on a current number."""
    tenures, bounds = scenario
    current = any(t.current for t in tenures)
    result = _classify(tenures, bounds)
    for shown in result.shown:
        bound = bounds[shown.binding]
        assert bound is not None, "an unknown bound_at is never shown"
        assert bound <= NOW + FUTURE_TOLERANCE, "a future bound_at is never shown"
        assert _inside(tenures, bound)
        assert shown.attribution is (MINE if current else LEFT_BEHIND)
    if result.previous_holder:
        assert current
    for i in result.previous_holder:
        bound = bounds[i]
        assert bound is None or bound > NOW + FUTURE_TOLERANCE or not _inside(tenures, bound)


@settings(max_examples=150)
@given(scenarios())
def test_current_number_never_drops(scenario: Scenario) -> None:
    """On a current number every binding is either the citizen's or a previous holder's."""
    tenures, bounds = scenario
    if not any(t.current for t in tenures):
        return
    assert _classify(tenures, bounds).dropped == 0


@settings(max_examples=150)
@given(scenarios())
def test_matches_a_reference_model(scenario: Scenario) -> None:
    """classify agrees with a direct transcription of the DESIGN.md table."""
    tenures, bounds = scenario
    current = any(t.current for t in tenures)

    def expected(bound: datetime | None) -> Attribution | None:
        if bound is not None and bound <= NOW + FUTURE_TOLERANCE and _inside(tenures, bound):
            return MINE if current else LEFT_BEHIND
        return PREVIOUS_HOLDER if current else None

    result = _classify(tenures, bounds)
    got: dict[int, Attribution | None] = dict.fromkeys(range(len(bounds)))
    for shown in result.shown:
        got[shown.binding] = shown.attribution
    for i in result.previous_holder:
        got[i] = PREVIOUS_HOLDER
    assert got == {i: expected(b) for i, b in enumerate(bounds)}


@settings(max_examples=100)
@given(
    st.lists(histories(), min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 2), _ANY_BOUND), max_size=15),
)
def test_left_behind_first_and_provider_order_kept(
    numbers: list[list[TenureView]], raw: list[tuple[int, datetime | None]]
) -> None:
    """Shown bindings put LEFT_BEHIND first, each class in the provider's order."""
    tenures = numbers[0]
    result = classify(tenures, list(enumerate(raw)), bound_at=lambda b: b[1][1], now=NOW)
    classes = [s.attribution for s in result.shown]
    assert classes == sorted(classes, key=lambda a: a is not LEFT_BEHIND)
    for attribution in (MINE, LEFT_BEHIND):
        order = [s.binding[0] for s in result.shown if s.attribution is attribution]
        assert order == sorted(order)
    assert [b[0] for b in result.previous_holder] == sorted(b[0] for b in result.previous_holder)


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(_DAYS, st.none() | st.integers(0, 2000)).map(
            lambda p: tenure(p[0], None if p[1] is None else p[0] + p[1])
        ),
        min_size=1,
        max_size=4,
    ),
    st.lists(_ANY_BOUND, max_size=10),
)
def test_invariants_hold_for_overlapping_tenures(
    tenures: list[TenureView], bounds: list[datetime | None]
) -> None:
    """Even inconsistent carrier data (overlaps, several current tenures) keeps the invariants."""
    current = any(t.current for t in tenures)
    result = _classify(tenures, bounds)
    assert len(result.shown) + result.previous_holder_count + result.dropped == len(bounds)
    for shown in result.shown:
        bound = bounds[shown.binding]
        assert bound is not None
        assert _inside(tenures, bound)
    assert not result.previous_holder or current
    assert all(s.attribution is (MINE if current else LEFT_BEHIND) for s in result.shown)


# ------------------------------------------------------------ intervals


def between(
    low: float | None, high: float | None = None, *, exact: float | None = None
) -> BindingTime:
    return BindingTime(
        at=None if exact is None else day(exact),
        not_before=None if low is None else day(low),
        not_after=None if high is None else day(high),
    )


def test_discuz_registered_during_tenure_number_typed_in_by_next_holder() -> None:
    """Registered during her tenure, no upper bound: the account is never shown to her."""
    # She held the number from day 100 to day 500; the account was registered
    # on day 300; the next holder typed the number in on day 800. The site
    # knows only the registration date.
    assert at([tenure(100, 500)], between(300)) is None
    # Read as exact (the leak this rule closes), it would have been hers.
    assert at([tenure(100, 500)], day(300)) is LEFT_BEHIND


def test_lower_bound_alone_on_a_current_number() -> None:
    """Registered after she got the number: hers; registered before: counted only."""
    assert at([tenure(100)], between(150)) is MINE
    assert at([tenure(100)], between(50)) is PREVIOUS_HOLDER


def test_interval_inside_a_former_tenure_is_left_behind() -> None:
    """An interval wholly inside the citizen's former tenure is hers, left behind."""
    assert at([tenure(100, 500)], between(200, 300)) is LEFT_BEHIND
    assert at([tenure(100, 500)], between(100, 499.99)) is LEFT_BEHIND


def test_straddling_intervals_are_treated_like_unknown() -> None:
    """An interval across a tenure's edge: counted on a current number, dropped on a former."""
    assert at([tenure(100)], between(50, 150)) is PREVIOUS_HOLDER
    assert at([tenure(100, 500)], between(50, 150)) is None
    assert at([tenure(100, 500)], between(400, 500)) is None
    # Across the gap between two tenures of the same citizen: someone else
    # may have held the number in between.
    assert at([tenure(100, 200), tenure(300)], between(150, 350)) is PREVIOUS_HOLDER
    assert at([tenure(100, 200), tenure(300, 400)], between(150, 350)) is None


def test_upper_bound_alone_says_nothing() -> None:
    """An interval with no lower bound reaches back past every tenure: unknown."""
    assert at([tenure(100)], BindingTime(not_after=day(200))) is PREVIOUS_HOLDER
    assert at([tenure(100, 500)], BindingTime(not_after=day(200))) is None


def test_contradictory_times_are_unknown() -> None:
    """An empty interval, or an exact time outside its own bounds, proves nothing."""
    assert at([tenure(100)], between(300, 200)) is PREVIOUS_HOLDER
    assert at([tenure(100)], between(300, 400, exact=200)) is PREVIOUS_HOLDER
    assert at([tenure(100)], between(300, 400, exact=500)) is PREVIOUS_HOLDER
    assert at([tenure(100, 500)], between(300, 400, exact=450)) is None


def test_exact_time_inside_its_bounds_decides() -> None:
    """With an exact time inside its bounds, the exact time decides, not the wider interval."""
    assert at([tenure(100, 500)], between(50, 900, exact=300)) is LEFT_BEHIND
    assert at([tenure(100)], between(50, None, exact=150)) is MINE


def test_future_bounds() -> None:
    """A lower bound far in the future is unknown; an upper bound past now ends at now."""
    future = NOW + FUTURE_TOLERANCE + timedelta(seconds=1)
    assert at([tenure(100)], BindingTime(not_before=future)) is PREVIOUS_HOLDER
    slightly = NOW + FUTURE_TOLERANCE - timedelta(seconds=1)
    assert at([tenure(100)], BindingTime(not_before=slightly)) is MINE
    assert at([tenure(100)], BindingTime(not_before=day(200), not_after=future)) is MINE
    assert at([tenure(100, 500)], BindingTime(not_before=day(200), not_after=future)) is None


def test_naive_binding_time_is_a_value_error() -> None:
    """A BindingTime refuses naive datetimes, like bound_at."""
    with pytest.raises(ValueError, match="not_before"):
        BindingTime(not_before=datetime(2020, 1, 1))  # noqa: DTZ001  # on purpose


def test_proto_binding_time_reads_the_interval() -> None:
    """proto_binding_time reads all three fields; absent, epoch or huge bounds are left out."""
    discuz = provider_pb2.Binding(account_ref="1", kind=common_pb2.BINDING_KIND_LOGIN)
    discuz.bound_not_before.FromDatetime(day(300))
    closed = provider_pb2.Binding(account_ref="2", kind=common_pb2.BINDING_KIND_LOGIN)
    closed.bound_not_before.FromDatetime(day(200))
    closed.bound_not_after.FromDatetime(day(300))
    huge_end = provider_pb2.Binding(account_ref="3", bound_not_after=Timestamp(seconds=2**62))
    huge_end.bound_not_before.FromDatetime(day(200))
    epoch_start = provider_pb2.Binding(account_ref="4", bound_not_before=Timestamp(seconds=0))
    epoch_start.bound_not_after.FromDatetime(day(300))
    assert proto_binding_time(discuz) == BindingTime(not_before=day(300))
    assert proto_binding_time(closed) == BindingTime(not_before=day(200), not_after=day(300))
    assert proto_binding_time(huge_end) == BindingTime(not_before=day(200))
    assert proto_binding_time(epoch_start) == BindingTime(not_after=day(300))
    bindings = [discuz, closed, huge_end, epoch_start]
    result = classify([tenure(100, 500)], bindings, bound_at=proto_binding_time, now=NOW)
    assert [s.binding.account_ref for s in result.shown] == ["2"]
    assert result.dropped == 3
    # The same answer on a number she still holds: the lower bounds after
    # held_from are hers; the one without a lower bound is only counted.
    result = classify([tenure(100)], bindings, bound_at=proto_binding_time, now=NOW)
    assert [s.binding.account_ref for s in result.shown] == ["1", "2", "3"]
    assert [b.account_ref for b in result.previous_holder] == ["4"]


# What a provider may truthfully say about a binding made at `true`: the
# exact time or not, and bounds on either side (or none) at random distances.
@st.composite
def truthful_reports(draw: st.DrawFn, true: datetime) -> BindingTime:
    """A report whose every field is true of a binding made at ``true``."""
    slack = st.none() | st.integers(min_value=0, max_value=4000).map(lambda d: timedelta(days=d))
    below, above = draw(slack), draw(slack)
    exact = draw(st.booleans())
    return BindingTime(
        at=true if exact else None,
        not_before=None if below is None else true - below,
        not_after=None if above is None else true + above,
    )


@st.composite
def interval_scenarios(draw: st.DrawFn) -> tuple[list[TenureView], datetime, BindingTime]:
    """A history, the true binding time (often near a tenure's edge) and a truthful report."""
    tenures = draw(histories())
    edges = [t.held_from for t in tenures] + [t.held_until for t in tenures if t.held_until]
    near_edge = st.tuples(st.sampled_from(edges), st.sampled_from([-1, 0, 1])).map(
        lambda e: e[0] + timedelta(seconds=e[1])
    )
    true = draw(st.integers(min_value=-100, max_value=3800).map(day) | near_edge)
    true = min(true, NOW)
    return tenures, true, draw(truthful_reports(true))


@settings(max_examples=300)
@given(interval_scenarios())
def test_a_truthful_interval_never_shows_someone_elses_account(
    scenario: tuple[list[TenureView], datetime, BindingTime],
) -> None:
    """Whatever a provider truthfully reports, a shown account is the one the true time makes it."""
    tenures, true, report = scenario
    got = attribute(tenures, report, now=NOW)
    if got is not None and got.shown:
        assert got is attribute(tenures, true, now=NOW)
        assert _inside(tenures, true)


@settings(max_examples=300)
@given(interval_scenarios())
def test_next_holders_binding_is_never_shown_or_counted_whatever_the_bounds(
    scenario: tuple[list[TenureView], datetime, BindingTime],
) -> None:
    """On a former number, a binding made after her last tenure is dropped, however reported."""
    tenures, true, report = scenario
    if any(t.current for t in tenures):
        return
    last_end = max(t.held_until for t in tenures if t.held_until is not None)
    if true >= last_end:
        assert attribute(tenures, report, now=NOW) is None


@settings(max_examples=300)
@given(interval_scenarios())
def test_a_straddling_interval_is_treated_like_an_unknown_date(
    scenario: tuple[list[TenureView], datetime, BindingTime],
) -> None:
    """An interval no single tenure holds gets exactly the answer an unknown bound_at gets."""
    tenures, _, report = scenario
    interval = report.interval(NOW)
    if interval is not None:
        low, high = interval
        if any(_inside([t], low) and _inside([t], high) for t in tenures):
            return
    assert attribute(tenures, report, now=NOW) is attribute(tenures, None, now=NOW)


@settings(max_examples=300)
@given(interval_scenarios(), st.integers(0, 2000), st.integers(0, 2000))
def test_widening_an_interval_never_reveals_more(
    scenario: tuple[list[TenureView], datetime, BindingTime], lower: int, upper: int
) -> None:
    """Knowing less (a wider interval) never turns a hidden account into a shown one."""
    tenures, true, report = scenario
    narrow = BindingTime(not_before=report.not_before or true, not_after=report.not_after)
    wide = BindingTime(
        not_before=(report.not_before or true) - timedelta(days=lower),
        not_after=None if report.not_after is None else report.not_after + timedelta(days=upper),
    )
    got_wide = attribute(tenures, wide, now=NOW)
    if got_wide is not None and got_wide.shown:
        assert attribute(tenures, narrow, now=NOW) is got_wide
