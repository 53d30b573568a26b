"""The merge of one provider answer into a ProviderResult (no server), the router hook
and exports."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

import onecert.gateway
import onecert.sdk.client
from onecert.gateway._attribution import (
    Attribution,
    TenureView,
    classify,
    proto_binding_time,
    proto_binding_when,
    proto_bound_at,
)
from onecert.gateway._breaker import CircuitBreaker
from onecert.gateway._channels import ChannelPool
from onecert.gateway._config import FanoutConfig, ProviderConfig
from onecert.gateway._fanout import FanOut, ProviderAnswer, ProviderCall, UpstreamOutcome
from onecert.gateway._handles import HandleSealer
from onecert.gateway._identity import Citizen
from onecert.gateway._lookup import ResultMerger, new_query_id
from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import mask_numbers_in_text
from onecert.sdk._warrant import WarrantIssuer
from onecert.v1 import common_pb2, gateway_pb2, provider_pb2

if TYPE_CHECKING:
    from onecert.gateway.testing import Federation

NUMBER = "+8613800138001"
HELD_FROM = datetime(2015, 1, 1, tzinfo=UTC)
HELD_UNTIL = datetime(2020, 1, 1, tzinfo=UTC)
KEY = SigningKey.generate("EdDSA")
HANDLE_KEY = os.urandom(32)
PROVIDER = ProviderConfig(id="pay", address="unused:1", name="Example Pay")
CITIZEN = Citizen(sub="c-1", idn="0" * 64, acr="high", jti="j", issuer="i", expires_at=0)


MERGER = ResultMerger(sealer=HandleSealer(HANDLE_KEY), handle_ttl=600)


bound_at = st.one_of(
    st.none(),
    st.datetimes(
        # Bounds must be naive; timezones= makes every value aware.
        min_value=datetime(2005, 1, 1),  # noqa: DTZ001 - see above
        max_value=datetime(2030, 1, 1),  # noqa: DTZ001 - see above
        timezones=st.just(UTC),
    ),
)
bindings = st.lists(
    st.tuples(bound_at, st.booleans(), st.text(alphabet="abcdefgh", max_size=12)), max_size=8
).map(
    lambda items: [
        provider_pb2.Binding(
            account_ref=f"acct-{i}",
            display_name=name,
            kind=common_pb2.BINDING_KIND_LOGIN,
            unbindable=unbindable,
            bound_at=None if when is None else _stamp(when),
        )
        for i, (when, unbindable, name) in enumerate(items)
    ]
)


def _stamp(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def merge(current: bool, found: Sequence[provider_pb2.Binding]) -> gateway_pb2.ProviderResult:
    tenure = TenureView(
        msisdn=NUMBER,
        carrier_id="cm",
        held_from=HELD_FROM,
        held_until=None if current else HELD_UNTIL,
        state=common_pb2.TENURE_STATE_ACTIVE if current else common_pb2.TENURE_STATE_RECYCLED,
    )
    answer = ProviderAnswer(
        call=ProviderCall(PROVIDER, NUMBER),
        outcome=UpstreamOutcome.ANSWERED,
        detail="",
        bindings=tuple(found),
        attempts=1,
        finished_at=1.5,
    )
    return MERGER.merge(answer, [tenure], sub=CITIZEN.sub, query_id="q-1", start=1.0)


@settings(max_examples=200, deadline=None)
@given(st.booleans(), bindings)
def test_merge_shows_only_the_citizens_accounts(
    current: bool, found: list[provider_pb2.Binding]
) -> None:
    """Only bindings made during the citizen's tenure are shown (LEFT_BEHIND first for
    a former number), previous holders only counted on a current number, the rest
    dropped; every handle opens for the citizen with the right claims."""
    result = merge(current, found)
    sealer = HandleSealer(HANDLE_KEY)
    now = datetime.now(UTC)
    inside = {
        b.account_ref
        for b in found
        if b.HasField("bound_at")
        and HELD_FROM <= b.bound_at.ToDatetime(tzinfo=UTC) <= now + timedelta(minutes=5)
        and (current or b.bound_at.ToDatetime(tzinfo=UTC) < HELD_UNTIL)
    }
    shown = list(result.bindings)
    expected = gateway_pb2.ATTRIBUTION_MINE if current else gateway_pb2.ATTRIBUTION_LEFT_BEHIND
    assert all(b.attribution == expected for b in shown)
    assert all(b.dangerous == (not current) for b in shown)
    assert len(shown) == len(inside)
    if current:
        assert result.previous_holder_count == len(found) - len(inside)
    else:
        assert result.previous_holder_count == 0
        assert not result.release_handles
    opened = [sealer.open(b.handle, sub=CITIZEN.sub) for b in shown if b.handle]
    assert {c.account_ref for c in opened} <= inside
    assert all(c.provider_id == "pay" and c.msisdn == NUMBER for c in opened)
    unbindable_inside = {b.account_ref for b in found if b.account_ref in inside and b.unbindable}
    assert {c.account_ref for c in opened} == unbindable_inside
    for handle in result.release_handles:
        claims = sealer.open(handle, sub=CITIZEN.sub)
        assert claims.attribution is Attribution.PREVIOUS_HOLDER
        assert claims.account_ref not in inside
    for name in (b.display_name.strip() for b in found if b.account_ref not in inside):
        if len(name) >= 5:
            assert all(name not in b.display_name_masked for b in shown)


def test_merge_counts_previous_holders_without_details() -> None:
    """A current number's older bindings become a count and release handles only."""
    old = provider_pb2.Binding(account_ref="old", display_name="someone", unbindable=True)
    old.bound_at.FromDatetime(datetime(2010, 1, 1, tzinfo=UTC))
    result = merge(True, [old])
    assert not result.bindings
    assert result.previous_holder_count == 1
    assert len(result.release_handles) == 1
    assert result.elapsed.ToTimedelta() == timedelta(seconds=0.5)


class OnlyPay:
    """A router that knows only "pay" may hold numbers."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def route(
        self, msisdn: str, providers: Sequence[ProviderConfig]
    ) -> Sequence[ProviderConfig]:
        self.asked.append(msisdn)
        return [p for p in providers if p.id == "pay"]


async def test_router_decides_which_providers_are_asked(fed: Federation) -> None:
    """A custom Router narrows the fan-out: providers it leaves out are neither
    called nor reported."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    pay = await fed.provider("pay", {})
    other = await fed.provider("other", {})
    router = OnlyPay()
    gateway = onecert.gateway.GatewayServer(fed.config(), router=router)
    await gateway.start()
    try:
        messages = await fed.lookup(gateway)
    finally:
        await gateway.stop(0)
    assert sorted(router.asked) == sorted([fed.CURRENT, fed.FORMER])
    assert messages[0].started.provider_calls == 2
    assert {r.provider_id for r in fed.results(messages)} == {"pay"}
    assert pay.record.calls == 2
    assert other.record.calls == 0


def test_query_ids_survive_log_masking() -> None:
    """Query ids are unique and never hold a digit run the log masking would hide."""
    ids = {new_query_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[a-p]{32}", i) for i in ids)
    assert all(mask_numbers_in_text(i) == i for i in ids)


def test_breaker_is_exposed_per_provider() -> None:
    """The fan-out exposes each provider's breaker (for health reports)."""
    fanout = FanOut(
        carriers=(),
        providers=(PROVIDER,),
        fanout=FanoutConfig(),
        channels=ChannelPool(upstream_tls=None, max_message_bytes=1 << 20),
        warrants=WarrantIssuer(key=KEY, issuer="gw"),
    )
    assert isinstance(fanout.breaker("pay"), CircuitBreaker)


def test_public_exports() -> None:
    """The public modules export exactly what they document, and all of it exists."""
    for module in (onecert.gateway, onecert.sdk.client):
        names = module.__all__
        assert names == sorted(names)
        for name in names:
            assert getattr(module, name) is not None
    assert {"GatewayServer", "serve", "load_config", "Router"} <= set(onecert.gateway.__all__)
    assert {"GatewayClient", "GatewayError", "Started", "Result", "Summary"} <= set(
        onecert.sdk.client.__all__
    )


async def test_cli_progress_line_is_cleared(fed: Federation, tmp_path: Path) -> None:
    """With a terminal, the CLI writes a progress line while providers answer, and
    clears it before printing the table."""
    from onecert.cli._lookup import _collect

    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    await fed.provider("pay", {})
    gateway = await fed.gateway()
    progress = io.StringIO()
    _, results, summary = await _collect(
        f"127.0.0.1:{gateway.port}",
        None,
        insecure=True,
        assertion=fed.assertion(),
        deadline=10,
        progress=progress,
    )
    assert len(results) == 2
    assert summary.total.answered == 2
    text = progress.getvalue()
    assert "waiting for providers: 2/2 answered" in text
    assert text.endswith("\r\033[K")


# Any Timestamp a provider may send: seconds and nanos over their whole wire
# range, valid or not.
any_stamp = st.builds(
    Timestamp,
    seconds=st.one_of(
        # Within the citizen's tenure (shown), and anywhere else.
        st.integers(min_value=int(HELD_FROM.timestamp()), max_value=1_700_000_000),
        st.integers(min_value=-(2**40), max_value=2**40),
        st.integers(min_value=253_402_300_700, max_value=253_402_300_900),
        st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]),
    ),
    nanos=st.one_of(
        st.integers(min_value=0, max_value=999_999_999),
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
    ),
)


@settings(max_examples=300, deadline=None)
@given(any_stamp)
def test_a_shown_bound_at_is_the_instant_attribution_read(stamp: Timestamp) -> None:
    """The shown binding's bound_at is what proto_bound_at reads, to the microsecond,
    for every Timestamp on the wire (copied without a datetime when in range)."""
    binding = provider_pb2.Binding(
        account_ref="a", display_name="zhang", unbindable=True, bound_at=stamp
    )
    read = proto_bound_at(binding)
    result = merge(True, [binding])
    shown = result.bindings[0] if result.bindings else None
    if read is None or read < HELD_FROM or read > datetime.now(UTC) + timedelta(minutes=5):
        assert shown is None
        return
    assert shown is not None
    expected = Timestamp()
    expected.FromDatetime(read)
    assert shown.bound_at == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.none(), any_stamp), min_size=3, max_size=3),
    st.booleans(),
)
def test_bare_instants_attribute_as_binding_times(
    stamps: list[Timestamp | None], current: bool
) -> None:
    """proto_binding_when (the bare instant when a binding has no bounds) attributes
    every binding exactly as the full BindingTime of proto_binding_time does."""
    at, not_before, not_after = stamps
    binding = provider_pb2.Binding(
        account_ref="a", bound_at=at, bound_not_before=not_before, bound_not_after=not_after
    )
    tenures = [
        TenureView(NUMBER, "cm", HELD_FROM, None if current else HELD_UNTIL, state=1),
    ]
    now = datetime.now(UTC)
    fast = classify(tenures, [binding], bound_at=proto_binding_when, now=now)
    full = classify(tenures, [binding], bound_at=proto_binding_time, now=now)
    assert fast == full
