"""The demo's synthetic data: reproducible, realistic, and the story is always in it."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecert.adapters import demo
from onecert.adapters.demo import (
    CARRIERS,
    DEFAULT_SEED,
    PROVIDERS,
    STORY,
    ProviderSpec,
    Subscription,
    UserRecord,
    carrier_of,
    carrier_subscriptions,
    document_number,
    make_provider_data,
    number_to_recycle,
    population,
    provider_users,
)
from onecert.sdk import BindingKind, ProviderCategory, TenureState
from onecert.sdk._msisdn import is_e164

seeds = st.integers(min_value=0, max_value=2**32)
# Each example builds a population and several users tables: keep them few.
few = settings(max_examples=5, deadline=None)


def classify(user: UserRecord, tenure: Subscription) -> str:
    """DESIGN.md's attribution by tenure, for a binding on one of the citizen's numbers."""
    current = tenure.held_until is None
    if user.bound_at is None:
        return "previous_holder" if current else "hidden"
    if current:
        return "mine" if user.bound_at >= tenure.held_from else "previous_holder"
    if tenure.held_from <= user.bound_at < tenure.held_until:  # type: ignore[operator]  # former: held_until is set
        return "left_behind"
    return "next_holder" if user.bound_at >= tenure.held_until else "hidden"  # type: ignore[operator]  # same


def citizen_tenures(seed: int) -> list[Subscription]:
    return [
        s
        for c in CARRIERS
        for s in carrier_subscriptions(c.id, seed)
        if s.document_number == STORY.citizen.document_number
    ]


def story_bindings(seed: int) -> dict[str, list[tuple[str, UserRecord]]]:
    """Every binding on the citizen's numbers at every running provider, by class."""
    tenures = {t.msisdn: t for t in citizen_tenures(seed)}
    out: dict[str, list[tuple[str, UserRecord]]] = {}
    for spec in PROVIDERS:
        for user in provider_users(spec.id, seed):
            if user.phone in tenures:
                out.setdefault(classify(user, tenures[user.phone]), []).append((spec.id, user))
    return out


def test_exports() -> None:
    """The package's public names are exactly its __all__."""
    public = {name for name in dir(demo) if not name.startswith("_")}
    assert set(demo.__all__) <= public
    assert public - set(demo.__all__) == set()


@few
@given(seed=seeds)
def test_same_seed_same_data(seed: int) -> None:
    """The same seed gives the same carriers' records and users tables, call after call."""
    assert carrier_subscriptions("bluefinch", seed) == carrier_subscriptions("bluefinch", seed)
    population.cache_clear()
    first = [provider_users(p.id, seed) for p in PROVIDERS]
    population.cache_clear()
    assert [provider_users(p.id, seed) for p in PROVIDERS] == first
    assert make_provider_data("filler-7", seed, 50) == make_provider_data("filler-7", seed, 50)


def test_data_is_fixed_across_processes() -> None:
    """The default seed's data does not depend on the process (no hash() randomness)."""
    users = make_provider_data("filler-1", DEFAULT_SEED, 3)
    assert [u.account_ref for u in users] == ["fil-26442118", "fil-ebf5af64", "fil-223801e2"]


def test_different_seeds_differ() -> None:
    """Another seed gives other filler data (and the same story)."""
    assert make_provider_data("chirpline", 1, 20) != make_provider_data("chirpline", 2, 20)
    assert population(1) != population(2)
    story = STORY.users["coinpurse"][0]
    assert story in provider_users("coinpurse", 1)
    assert story in provider_users("coinpurse", 2)


@few
@given(seed=seeds)
def test_citizen_tenures(seed: int) -> None:
    """The citizen has a former number (2013-2019, recycled) at one carrier and a
    current one since 2021 at the other."""
    tenures = citizen_tenures(seed)
    assert len(tenures) == 2
    former = next(t for t in tenures if t.held_until is not None)
    current = next(t for t in tenures if t.held_until is None)
    assert former.carrier_id != current.carrier_id
    assert (former.held_from.year, former.held_until.year) == (2013, 2019)  # type: ignore[union-attr]  # former has held_until
    assert former.state is TenureState.RECYCLED
    assert current.held_from.year == 2021
    assert current.state is TenureState.ACTIVE


@few
@given(seed=seeds)
def test_numbers_change_hands(seed: int) -> None:
    """Her former number went to someone else in 2020 after a quiet period, and her
    current number was someone else's before her."""
    records = [s for c in CARRIERS for s in carrier_subscriptions(c.id, seed)]
    after = [
        s
        for s in records
        if s.msisdn == STORY.former_number and s.document_number != STORY.citizen.document_number
    ]
    assert len(after) == 1
    assert after[0].held_from.year == 2020
    assert after[0].held_from - STORY.former_until >= timedelta(days=90)
    before = [
        s
        for s in records
        if s.msisdn == STORY.current_number and s.document_number != STORY.citizen.document_number
    ]
    assert len(before) == 1
    assert before[0].held_until is not None
    assert before[0].held_until <= STORY.current_from


@few
@given(seed=seeds)
def test_story_bindings(seed: int) -> None:
    """Attribution by tenure finds exactly the story: one left-behind payment account
    bound in 2015, the next holder's accounts at two providers after 2020, previous
    holders' at the social and e-commerce providers (2016-2019), and hers after 2021."""
    found = story_bindings(seed)
    categories = {p.id: p.category for p in PROVIDERS}

    [(left_provider, left)] = found["left_behind"]
    assert categories[left_provider] is ProviderCategory.PAYMENT
    assert left.kind is BindingKind.PAYMENT
    assert left.bound_at is not None
    assert left.bound_at.year == 2015

    next_holder = found["next_holder"]
    assert len({p for p, _ in next_holder}) == 2
    assert all(u.bound_at is not None and u.bound_at.year >= 2020 for _, u in next_holder)

    previous = found["previous_holder"]
    assert {categories[p] for p, _ in previous} == {
        ProviderCategory.SOCIAL,
        ProviderCategory.ECOMMERCE,
    }
    assert all(u.bound_at is not None and 2016 <= u.bound_at.year <= 2019 for _, u in previous)

    mine = found["mine"]
    assert len({p for p, _ in mine}) >= 3
    assert all(u.bound_at is not None and u.bound_at >= STORY.current_from for _, u in mine)
    assert "hidden" not in found

    # The story's own bookkeeping agrees with the rules.
    assert {(p, u.account_ref) for p, u in found["left_behind"]} == set(STORY.left_behind)
    assert {(p, u.account_ref) for p, u in mine} == set(STORY.mine)
    assert {(p, u.account_ref) for p, u in previous} == set(STORY.previous_holder_accounts)
    assert {(p, u.account_ref) for p, u in next_holder} == set(STORY.next_holder_accounts)


def test_story_cast() -> None:
    """One provider is slow, one is down, and the six kinds of provider are all there."""
    assert {p.category for p in PROVIDERS} >= {
        ProviderCategory.SOCIAL,
        ProviderCategory.PAYMENT,
        ProviderCategory.ECOMMERCE,
        ProviderCategory.RIDE_HAILING,
        ProviderCategory.DATING,
        ProviderCategory.FORUM,
    }
    assert sum(p.down for p in PROVIDERS) == 1
    assert next(p for p in PROVIDERS if p.delay_s and not p.down).delay_s == 1.5
    assert len(CARRIERS) == 2
    names = [
        *STORY.display_names(STORY.next_holder_accounts),
        *STORY.display_names(STORY.previous_holder_accounts),
    ]
    assert len(names) == 5
    assert len(set(names)) == 5


@few
@given(seed=seeds)
def test_filler_stays_off_the_story(seed: int) -> None:
    """No filler user is bound to a number of the story, and account refs are unique."""
    story_rows = {u for rows in STORY.users.values() for u in rows}
    for spec in PROVIDERS:
        users = provider_users(spec.id, seed)
        assert len({u.account_ref for u in users}) == len(users)
        for user in users:
            if user not in story_rows:
                assert user.phone not in STORY.numbers


@few
@given(seed=seeds, n=st.integers(min_value=0, max_value=300))
def test_make_provider_data(seed: int, n: int) -> None:
    """Filler users: as many as asked, valid numbers, dates in order, unique refs,
    and about two in three on numbers the demo carriers know."""
    users = make_provider_data("bench-0042", seed, n)
    assert len(users) == n
    assert len({u.account_ref for u in users}) == n
    known = {s.msisdn for s in population(seed)}
    for user in users:
        assert user.phone is not None
        assert is_e164(user.phone)
        assert user.bound_at is not None
        assert datetime(2010, 1, 1, tzinfo=UTC) <= user.bound_at <= demo._data.REFERENCE_DATE
        assert user.last_used_at is None or user.last_used_at >= user.bound_at
        assert user.display_name
    if n >= 200:
        assert 0.5 < sum(u.phone in known for u in users) / n < 0.8


@few
@given(seed=seeds)
def test_population(seed: int) -> None:
    """The population: unique valid numbers and document numbers, spread over both
    carriers, each number held by one subscriber since they were adults."""
    people = population(seed)
    assert len({p.msisdn for p in people}) == len(people)
    assert len({p.document_number for p in people}) == len(people)
    assert set(Counter(p.carrier_id for p in people)) == {c.id for c in CARRIERS}
    for person in people:
        assert is_e164(person.msisdn)
        assert person.msisdn.startswith("+861")
        assert valid_document(person.document_number)
        born = datetime.strptime(person.document_number[6:14], "%Y%m%d").replace(tzinfo=UTC)
        assert person.held_from >= born + timedelta(days=18 * 365)


def valid_document(number: str) -> bool:
    if not re.fullmatch(r"[0-9]{17}[0-9X]", number):
        return False
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(number[:17], weights, strict=True))
    return number[17] == "10X98765432"[total % 11]


@given(
    region=st.sampled_from(["110105", "440305", "320102"]),
    birth=st.dates(min_value=date(1930, 1, 1), max_value=date(2020, 1, 1)),
    sequence=st.integers(min_value=0, max_value=999),
)
def test_document_number_check_character(region: str, birth: date, sequence: int) -> None:
    """Generated document numbers carry a valid ISO 7064 MOD 11-2 check character."""
    when = datetime(birth.year, birth.month, birth.day, tzinfo=UTC)
    assert valid_document(document_number(region, when, sequence))


def test_story_people_have_valid_documents() -> None:
    """The citizen and the other holders have well-formed, distinct document numbers."""
    people = [STORY.citizen, STORY.next_holder, STORY.previous_holder]
    assert all(valid_document(p.document_number) for p in people)
    assert len({p.document_number for p in people}) == 3


@few
@given(seed=seeds)
def test_numbers_sit_in_their_carriers_blocks(seed: int) -> None:
    """Every carrier record's number lies in that carrier's number blocks and in no
    other carrier's, so the gateway's carrier prefixes match the records."""
    for carrier in CARRIERS:
        for sub in carrier_subscriptions(carrier.id, seed):
            assert [c.id for c in CARRIERS if c.serves(sub.msisdn)] == [carrier.id]
            assert carrier_of(sub.msisdn) is carrier


def test_carrier_blocks() -> None:
    """A block is a prefix or an inclusive range of equal-length prefixes; a number
    outside every block has no demo carrier."""
    bluefinch = next(c for c in CARRIERS if c.id == "bluefinch")
    assert bluefinch.serves("+8613512345678")
    assert bluefinch.serves("+8617712345678")
    assert not bluefinch.serves("+8617612345678")
    # Too short to hold the block's prefix.
    assert not bluefinch.serves("+8613")
    with pytest.raises(ValueError, match="no demo carrier"):
        carrier_of("+4915112345678")


@few
@given(seed=seeds)
def test_number_to_recycle(seed: int) -> None:
    """The number the demo's carrier recycles is a filler number of the carrier that
    recycled the citizen's old one, bound at the provider that ignores notices and
    at another running provider that acts, and the same for the same seed."""
    chosen = number_to_recycle(seed)
    assert chosen == number_to_recycle(seed)
    assert chosen.carrier_id == STORY.former_carrier
    assert chosen.msisdn not in STORY.numbers
    holders = _running_holders(chosen.msisdn, seed)
    assert {p.id for p in PROVIDERS if p.ignores_notices} <= holders
    assert len(holders) >= 2


def test_number_to_recycle_in_the_demo() -> None:
    """With the demo's own seed the recycled number is bound at three running providers
    or more, so the story shows several acting and one ignoring."""
    chosen = number_to_recycle(DEFAULT_SEED)
    assert len(_running_holders(chosen.msisdn, DEFAULT_SEED)) >= 3


def _running_holders(msisdn: str, seed: int) -> set[str]:
    return {
        p.id for p in PROVIDERS if not p.down
        for u in provider_users(p.id, seed) if u.phone == msisdn
    }  # fmt: skip


def test_provider_spec_notices() -> None:
    """A provider receives notices by push or by poll; anything else is refused."""
    assert ProviderSpec("x", "X", ProviderCategory.OTHER, notices="poll").notices == "poll"
    with pytest.raises(ValueError, match="push' or 'poll"):
        ProviderSpec("x", "X", ProviderCategory.OTHER, notices="email")
