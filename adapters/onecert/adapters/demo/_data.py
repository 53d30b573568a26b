"""Synthetic, reproducible data for the demo federation and the benchmarks.

Everything here is fictional: the carriers, the providers, the people, their
document numbers and phone numbers. Two kinds of data come out of it:

* **The story** (:data:`STORY`), always the same whatever the seed: a citizen
  whose old number was recycled to someone else with her payment account
  still bound to it, and whose current number came with a previous holder's
  accounts. It is what ``onecert demo`` shows.
* **Filler** that depends on the seed: a population of subscribers spread
  over the carriers, and each provider's other users, some of them on the
  population's numbers, so a benchmark can look up any member of the
  population and find accounts. :func:`make_provider_data` makes the users of
  any number of extra providers.

The same seed always gives the same data, in any process: randomness comes
from :class:`random.Random` seeded with strings, never from ``hash()``.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from onecert.sdk import BindingKind, ProviderCategory, TenureState
from onecert.sdk._msisdn import in_number_ranges

DEFAULT_SEED = 20240917
# The data's "today": fixed, so the data does not change with the clock.
REFERENCE_DATE = datetime(2025, 6, 1, tzinfo=UTC)
POPULATION_SIZE = 1000


def _day(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


@dataclass(frozen=True)
class CarrierSpec:
    """A demo carrier.

    Attributes:
        id: the id the gateway knows it by.
        name: the name citizens see.
        prefixes: the number blocks it serves, as the gateway's carrier
            ``prefixes`` take them: E.164 prefixes (``"+86177"``) or inclusive
            ranges of equal-length prefixes (``"+86130-+86139"``). Every
            number of the demo is at the carrier whose blocks hold it.
    """

    id: str
    name: str
    prefixes: tuple[str, ...] = ()

    def serves(self, msisdn: str) -> bool:
        """Whether ``msisdn`` falls in one of :attr:`prefixes`."""
        return in_number_ranges(msisdn, self.prefixes)


@dataclass(frozen=True)
class ProviderSpec:
    """A demo provider and how it behaves in the demo.

    Attributes:
        id: the id the gateway knows it by.
        name: the name citizens see.
        category: what kind of service it is.
        delay_s: how long it takes to answer a lookup.
        down: configured in the gateway but never started.
        filler_users: how many users it has besides the story's.
        notices: how it receives recycled-number notices: ``"push"`` (the
            gateway calls it) or ``"poll"`` (it asks the gateway).
        ignores_notices: acknowledges recycled-number notices and never acts
            on them (what the compliance report is for).
        joins: not in the gateway's configuration: the regulator invites it
            and it joins by itself (token, CSR, conformance gate).
    """

    id: str
    name: str
    category: ProviderCategory
    delay_s: float = 0.0
    down: bool = False
    filler_users: int = 200
    notices: str = "push"
    ignores_notices: bool = False
    joins: bool = False

    def __post_init__(self) -> None:
        if self.notices not in ("push", "poll"):
            raise ValueError("notices must be 'push' or 'poll'")


@dataclass(frozen=True)
class Subscription:
    """One subscriber's hold on one number, as a carrier's records keep it.

    Carriers know their subscribers' document numbers (real-name
    registration); they answer the gateway by the keyed hash of it (the idn).
    """

    carrier_id: str
    document_number: str
    msisdn: str
    held_from: datetime
    held_until: datetime | None = None
    state: TenureState = TenureState.ACTIVE


@dataclass(frozen=True)
class UserRecord:
    """One row of a provider's users table. ``phone`` is None once unbound."""

    account_ref: str
    display_name: str
    phone: str | None
    kind: BindingKind
    bound_at: datetime | None
    last_used_at: datetime | None = None


CARRIERS: tuple[CarrierSpec, ...] = (
    CarrierSpec("bluefinch", "Bluefinch Mobile", ("+86130-+86139", "+86150-+86159", "+86177")),
    CarrierSpec("redpine", "Redpine Telecom", ("+86166", "+86170-+86176", "+86178-+86199")),
)

PROVIDERS: tuple[ProviderSpec, ...] = (
    ProviderSpec("chirpline", "Chirpline", ProviderCategory.SOCIAL, filler_users=400),
    ProviderSpec("coinpurse", "Coinpurse Pay", ProviderCategory.PAYMENT, filler_users=300),
    ProviderSpec("bazaarly", "Bazaarly", ProviderCategory.ECOMMERCE, filler_users=300),
    # Slow but inside its deadline, so the progress is visible.
    ProviderSpec("hoprides", "Hop Rides", ProviderCategory.RIDE_HAILING, delay_s=1.5),
    # Acknowledges recycled-number notices and never acts on them.
    ProviderSpec(
        "kindred", "Kindred Hearts", ProviderCategory.DATING, filler_users=150, ignores_notices=True
    ),
    # A small site: joins by invitation, and fetches its notices by polling the gateway.
    ProviderSpec(
        "teahouse",
        "Teahouse Forum",
        ProviderCategory.FORUM,
        filler_users=60,
        notices="poll",
        joins=True,
    ),
    # In the gateway's configuration, but never started: reported as failed.
    ProviderSpec("dragonkeep", "Dragonkeep Games", ProviderCategory.GAMING, down=True),
)


def carrier_spec(carrier_id: str) -> CarrierSpec | None:
    """The demo carrier with this id, or None."""
    return next((c for c in CARRIERS if c.id == carrier_id), None)


def carrier_of(msisdn: str) -> CarrierSpec:
    """The demo carrier whose number blocks hold ``msisdn``.

    Raises:
        ValueError: no demo carrier serves it.
    """
    found = next((c for c in CARRIERS if c.serves(msisdn)), None)
    if found is None:
        raise ValueError("no demo carrier serves this number")
    return found


def provider_spec(provider_id: str) -> ProviderSpec | None:
    """The demo provider with this id, or None."""
    return next((p for p in PROVIDERS if p.id == provider_id), None)


@dataclass(frozen=True)
class Person:
    """Someone in the story."""

    name: str
    document_number: str


@dataclass(frozen=True)
class Story:
    """The citizen the demo looks up, and the people whose data surrounds hers.

    Attributes:
        citizen: who looks herself up.
        citizen_sub: her opaque id at the identity service (the assertion's ``sub``).
        former_number: held 2013-2019 at :attr:`former_carrier`, recycled in 2020.
        current_number: held since 2021 at :attr:`current_carrier`.
        next_holder: who got her former number in 2020.
        next_holder_other_number: a number of the next holder's own (never shown).
        previous_holder: who held her current number before her.
        previous_holder_new_number: the previous holder's number today (never shown).
        subscriptions: every carrier record of the story.
        users: every provider row of the story, by provider id.
        left_behind: (provider id, account ref) of the citizen's account still
            bound to her former number: the one to show first.
        mine: (provider id, account ref) of her own accounts on her current number.
        previous_holder_accounts: (provider id, account ref) on her current
            number that belong to the previous holder (counted only).
        next_holder_accounts: (provider id, account ref) on her former number
            that belong to the next holder (never shown nor counted).
    """

    citizen: Person
    citizen_sub: str
    former_carrier: str
    former_number: str
    former_from: datetime
    former_until: datetime
    current_carrier: str
    current_number: str
    current_from: datetime
    next_holder: Person
    next_holder_from: datetime
    next_holder_other_number: str
    previous_holder: Person
    previous_holder_new_number: str
    subscriptions: tuple[Subscription, ...]
    users: Mapping[str, tuple[UserRecord, ...]]
    left_behind: tuple[tuple[str, str], ...]
    mine: tuple[tuple[str, str], ...]
    previous_holder_accounts: tuple[tuple[str, str], ...]
    next_holder_accounts: tuple[tuple[str, str], ...]

    def display_names(self, accounts: Iterable[tuple[str, str]]) -> list[str]:
        """The display names of these (provider id, account ref) pairs."""
        wanted = set(accounts)
        return [
            user.display_name
            for provider_id, users in self.users.items()
            for user in users
            if (provider_id, user.account_ref) in wanted
        ]

    @property
    def numbers(self) -> frozenset[str]:
        """Every phone number the story uses."""
        return frozenset(s.msisdn for s in self.subscriptions)


def document_number(region: str, birth: datetime, sequence: int) -> str:
    """An 18-character identity document number with a valid check character.

    The layout (region, birth date, sequence, ISO 7064 MOD 11-2 check) is
    that of the resident identity card; the values here are made up.
    """
    body = f"{region}{birth:%Y%m%d}{sequence:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(digit) * weight for digit, weight in zip(body, weights, strict=True))
    return body + "10X98765432"[total % 11]


def _story_users(former: str, current: str) -> dict[str, tuple[UserRecord, ...]]:
    """The story's accounts at each provider, on her former and her current number."""
    login, payment = BindingKind.LOGIN, BindingKind.PAYMENT
    return {
        "coinpurse": (
            # Bound in 2015 and never moved: Zhou Peng receives its SMS codes now.
            UserRecord("cp-58203317", "xiaoyu.lin", former, payment, _day(2015, 4, 18),
                       _day(2019, 7, 2)),
        ),
        "chirpline": (
            UserRecord("chl-7730912", "gaojun_1987", current, login, _day(2016, 8, 9),
                       _day(2020, 10, 12)),
            UserRecord("chl-9102245", "zhoupeng_runs", former, login, _day(2020, 3, 2),
                       _day(2025, 5, 20)),
        ),
        "bazaarly": (
            UserRecord("bz-100482", "GJ-bargains", current, login, _day(2017, 11, 11),
                       _day(2020, 6, 18)),
            UserRecord("bz-233917", "gao.jun.home", current, BindingKind.RECOVERY,
                       _day(2019, 3, 8), _day(2019, 12, 1)),
            UserRecord("bz-418806", "xiaoyu_lin", current, login, _day(2021, 6, 18),
                       _day(2025, 5, 28)),
        ),
        "hoprides": (
            UserRecord("hr-6c1e0a", "peng.rides", former, login, _day(2021, 7, 15),
                       _day(2025, 5, 30)),
            UserRecord("hr-9f27d4", "xiaoyu.l", current, login, _day(2021, 9, 3),
                       _day(2025, 4, 11)),
        ),
        "kindred": (
            UserRecord("kh-00317", "rainy_day_lin", current, login, _day(2022, 2, 14),
                       _day(2024, 12, 24)),
        ),
        "teahouse": (
            UserRecord("th-2291", "lxy_tea", current, BindingKind.CONTACT, _day(2023, 4, 1),
                       _day(2025, 3, 9)),
        ),
    }  # fmt: skip


def _story() -> Story:
    citizen = Person("Lin Xiaoyu", document_number("110105", _day(1992, 3, 15), 442))
    next_holder = Person("Zhou Peng", document_number("440305", _day(1998, 11, 2), 215))
    previous_holder = Person("Gao Jun", document_number("320102", _day(1987, 7, 21), 873))
    former, current = "+8613910247756", "+8618621730419"
    next_other, previous_new = "+8615067283341", "+8617701925568"
    former_from, former_until = _day(2013, 3, 14), _day(2019, 8, 31)
    next_from = _day(2020, 1, 6)
    current_from = _day(2021, 5, 20)
    recycled = TenureState.RECYCLED
    subscriptions = (
        # Her old number: cancelled in 2019, given to Zhou Peng after the quiet period.
        Subscription("bluefinch", citizen.document_number, former, former_from, former_until,
                     recycled),
        Subscription("bluefinch", next_holder.document_number, former, next_from),
        Subscription("bluefinch", next_holder.document_number, next_other, _day(2016, 9, 1)),
        # Her current number: Gao Jun's until 2020, hers since 2021.
        Subscription("redpine", previous_holder.document_number, current, _day(2015, 1, 20),
                     _day(2020, 11, 30), recycled),
        Subscription("redpine", citizen.document_number, current, current_from),
        Subscription("bluefinch", previous_holder.document_number, previous_new,
                     _day(2020, 12, 3)),
    )  # fmt: skip
    users = _story_users(former, current)
    return Story(
        citizen=citizen,
        citizen_sub="c-5d2f9a1e",
        former_carrier="bluefinch",
        former_number=former,
        former_from=former_from,
        former_until=former_until,
        current_carrier="redpine",
        current_number=current,
        current_from=current_from,
        next_holder=next_holder,
        next_holder_from=next_from,
        next_holder_other_number=next_other,
        previous_holder=previous_holder,
        previous_holder_new_number=previous_new,
        subscriptions=subscriptions,
        users=MappingProxyType(users),
        left_behind=(("coinpurse", "cp-58203317"),),
        mine=(
            ("bazaarly", "bz-418806"),
            ("hoprides", "hr-9f27d4"),
            ("kindred", "kh-00317"),
            ("teahouse", "th-2291"),
        ),
        previous_holder_accounts=(
            ("chirpline", "chl-7730912"),
            ("bazaarly", "bz-100482"),
            ("bazaarly", "bz-233917"),
        ),
        next_holder_accounts=(("chirpline", "chl-9102245"), ("hoprides", "hr-6c1e0a")),
    )


STORY: Story = _story()

# ------------------------------------------------------------------ filler

_SURNAMES = (
    "wang",
    "li",
    "zhang",
    "liu",
    "chen",
    "yang",
    "huang",
    "zhao",
    "wu",
    "zhou",
    "xu",
    "sun",
    "ma",
    "zhu",
    "hu",
    "guo",
    "he",
    "luo",
    "song",
    "zheng",
    "xie",
    "han",
    "tang",
    "feng",
    "deng",
    "cao",
    "peng",
    "zeng",
    "xiao",
    "tian",
    "dong",
    "pan",
    "yuan",
)
_GIVEN = (
    "wei",
    "fang",
    "na",
    "min",
    "jing",
    "lei",
    "jun",
    "yan",
    "tao",
    "ming",
    "chao",
    "xiu",
    "hui",
    "ping",
    "yu",
    "hao",
    "qiang",
    "lan",
    "ting",
    "bo",
    "xin",
    "yue",
    "chen",
    "kai",
    "rui",
    "jie",
    "qing",
    "yun",
    "hong",
    "li",
    "shan",
    "feng",
    "xia",
)
_WORDS = (
    "cat",
    "panda",
    "river",
    "moon",
    "tea",
    "noodle",
    "cloud",
    "maple",
    "lotus",
    "tiger",
    "sun",
    "star",
    "rain",
    "snow",
    "jade",
    "kite",
    "bamboo",
    "dragon",
    "plum",
    "pearl",
)
_REGIONS = ("110101", "310104", "440106", "510107", "330106", "420102", "610113", "120103")
_PREFIXES = (
    "130",
    "131",
    "132",
    "133",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "170",
    "173",
    "175",
    "176",
    "177",
    "178",
    "180",
    "181",
    "182",
    "183",
    "185",
    "186",
    "187",
    "188",
    "189",
    "191",
    "198",
    "199",
)
_KINDS_BY_CATEGORY: dict[ProviderCategory, tuple[BindingKind, ...]] = {
    # Repeated members weight the draw.
    ProviderCategory.PAYMENT: (BindingKind.PAYMENT,) * 6 + (BindingKind.TWO_FACTOR,) * 2,
    ProviderCategory.SOCIAL: (BindingKind.LOGIN,) * 6 + (BindingKind.RECOVERY,) * 2,
    ProviderCategory.FORUM: (BindingKind.LOGIN,) * 3 + (BindingKind.CONTACT,) * 2,
}
_DEFAULT_KINDS = (BindingKind.LOGIN,) * 6 + (
    BindingKind.RECOVERY,
    BindingKind.TWO_FACTOR,
    BindingKind.CONTACT,
)


def _rng(seed: int, *purpose: str) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: stable across
    # processes and Python versions, unlike hash().
    return random.Random(":".join(("onecert-demo", str(seed), *purpose)))  # noqa: S311  # synthetic data, not secrets


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    seconds = max(0, int((end - start).total_seconds()))
    return start + timedelta(seconds=rng.randrange(seconds + 1))


def _msisdn(rng: random.Random) -> str:
    return f"+86{rng.choice(_PREFIXES)}{rng.randrange(10**8):08d}"


def _display_name(rng: random.Random) -> str:
    surname, given = rng.choice(_SURNAMES), rng.choice(_GIVEN)
    style = rng.randrange(6)
    if style == 0:
        return f"{given}{surname}{rng.randrange(100):02d}"
    if style == 1:
        return f"{surname}_{given}"
    if style == 2:
        return f"{surname.title()} {given.title()}"
    if style == 3:
        return f"{given}.{surname}{rng.randrange(70, 100)}"
    if style == 4:
        return f"{rng.choice(_WORDS)}_{given}"
    return f"{rng.choice(_WORDS)}{rng.choice(_WORDS).title()}{rng.randrange(1000)}"


@functools.lru_cache(maxsize=8)
def population(seed: int = DEFAULT_SEED, size: int = POPULATION_SIZE) -> tuple[Subscription, ...]:
    """Filler subscribers, one number each, at the carrier whose blocks hold it.

    Their numbers never collide with each other nor with the story's.
    """
    rng = _rng(seed, "population", str(size))
    taken = set(STORY.numbers)
    documents = {s.document_number for s in STORY.subscriptions}
    born_from, born_until = _day(1950, 1, 1), _day(2006, 12, 31)
    first_number, last_number = _day(2005, 1, 1), _day(2024, 12, 31)
    out: list[Subscription] = []
    while len(out) < size:
        msisdn = _msisdn(rng)
        birth = _between(rng, born_from, born_until)
        document = document_number(rng.choice(_REGIONS), birth, rng.randrange(1000))
        if msisdn in taken or document in documents:
            continue
        taken.add(msisdn)
        documents.add(document)
        carrier = carrier_of(msisdn).id
        adult = birth + timedelta(days=18 * 366)
        held_from = _between(rng, max(adult, first_number), last_number)
        out.append(Subscription(carrier, document, msisdn, held_from))
    return tuple(out)


def carrier_subscriptions(carrier_id: str, seed: int = DEFAULT_SEED) -> list[Subscription]:
    """Every subscription a demo carrier keeps: the story's and the filler.

    A carrier id the demo does not know has no subscribers.
    """
    story = [s for s in STORY.subscriptions if s.carrier_id == carrier_id]
    return story + [s for s in population(seed) if s.carrier_id == carrier_id]


@dataclass(frozen=True)
class HistoryEvent:
    """A past event of a number, as its carrier reports it to complete the gateway's history."""

    carrier_id: str
    event_id: str
    msisdn: str
    event_type: str  # "cancelled" or "recycled"
    effective_at: datetime


def history_events(carrier_id: str, seed: int = DEFAULT_SEED) -> list[HistoryEvent]:
    """The events a demo carrier's records imply, oldest first: a number is CANCELLED
    when a subscription to it ended, and RECYCLED when the next subscriber got it
    (or when it ended, for a subscription marked recycled without a successor).

    These are what the lookup shows as former tenures; reported as history, they
    let CheckRecycled give the same answer.
    """
    by_number: dict[str, list[Subscription]] = {}
    for s in carrier_subscriptions(carrier_id, seed):
        by_number.setdefault(s.msisdn, []).append(s)
    events: list[tuple[datetime, str, str]] = []
    for msisdn, subs in by_number.items():
        subs.sort(key=lambda s: s.held_from)
        for i, s in enumerate(subs):
            if s.held_until is None:
                continue
            events.append((s.held_until, msisdn, "cancelled"))
            if s.state is TenureState.RECYCLED:
                successor = subs[i + 1].held_from if i + 1 < len(subs) else s.held_until
                events.append((successor, msisdn, "recycled"))
    events.sort()
    return [
        HistoryEvent(carrier_id, f"{carrier_id}-history-{i + 1}", msisdn, kind, when)
        for i, (when, msisdn, kind) in enumerate(events)
    ]


def make_provider_data(
    provider_id: str,
    seed: int = DEFAULT_SEED,
    n_users: int = 200,
    *,
    category: ProviderCategory | str = ProviderCategory.OTHER,
) -> list[UserRecord]:
    """``n_users`` filler users of a provider, the same for the same arguments.

    About two thirds are bound to numbers of the :func:`population` (so a
    lookup of a population member finds them), the rest to numbers no demo
    carrier knows. None is on a number of the story.
    """
    category = ProviderCategory(category)
    rng = _rng(seed, "users", provider_id, str(n_users))
    people = population(seed)
    story_numbers = STORY.numbers
    kinds = _KINDS_BY_CATEGORY.get(category, _DEFAULT_KINDS)
    earliest = _day(2010, 1, 1)
    refs: set[str] = set()
    users: list[UserRecord] = []
    while len(users) < n_users:
        if rng.random() < 0.66:
            subscriber = rng.choice(people)
            phone, since = subscriber.msisdn, subscriber.held_from
        else:
            phone, since = _msisdn(rng), earliest
            if phone in story_numbers:
                continue
        ref = f"{provider_id[:3]}-{rng.getrandbits(32):08x}"
        if ref in refs:
            continue
        refs.add(ref)
        bound_at = _between(rng, max(since, earliest), REFERENCE_DATE)
        last_used = _between(rng, bound_at, REFERENCE_DATE) if rng.random() < 0.8 else None
        users.append(
            UserRecord(ref, _display_name(rng), phone, rng.choice(kinds), bound_at, last_used)
        )
    return users


def provider_users(provider_id: str, seed: int = DEFAULT_SEED) -> list[UserRecord]:
    """A demo provider's whole users table: the story's rows and its filler.

    An id the demo does not know gets 200 filler users.
    """
    spec = provider_spec(provider_id)
    if spec is None:
        return make_provider_data(provider_id, seed, 200)
    return [
        *STORY.users.get(provider_id, ()),
        *make_provider_data(provider_id, seed, spec.filler_users, category=spec.category),
    ]


def number_to_recycle(seed: int = DEFAULT_SEED) -> Subscription:
    """The filler number the demo's carrier gives to a new subscriber "today".

    A subscriber of the carrier that recycled the citizen's old number,
    chosen so that the notice matters: the number is bound to accounts at
    as many running providers as possible, the one that ignores notices
    among them. The same seed always gives the same number.
    """
    running = [p for p in PROVIDERS if not p.down]
    ignoring = {p.id for p in running if p.ignores_notices}
    holders: dict[str, Counter[str]] = {}
    for spec in running:
        for user in provider_users(spec.id, seed):
            if user.phone is not None:
                holders.setdefault(user.phone, Counter())[spec.id] += 1

    def rank(sub: Subscription) -> tuple[bool, int, int, str]:
        held = holders.get(sub.msisdn, Counter())
        return (bool(ignoring & held.keys()), len(held), sum(held.values()), sub.msisdn)

    candidates = [s for s in population(seed) if s.carrier_id == STORY.former_carrier]
    # Highest rank wins; the msisdn breaks ties, so the choice is stable.
    return max(candidates, key=rank)
