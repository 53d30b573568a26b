"""A Binding's binding time as an interval: checked by the SDK, carried in the proto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from structlog.testing import capture_logs

from onecert.sdk import Binding, BindingKind, Provider, UnbindRequest, UnbindResult
from onecert.sdk._convert import InvalidResultError, binding_from_pb, binding_to_pb
from onecert.sdk.testing import CallError, ProviderEnvironment

REGISTERED = datetime(2019, 3, 1, 8, tzinfo=UTC)
CHANGED = datetime(2021, 7, 1, 12, tzinfo=UTC)


def _login(
    bound_at: datetime | None = None,
    *,
    bound_not_before: datetime | None = None,
    bound_not_after: datetime | None = None,
) -> Binding:
    """Login account "u1", bound at ``bound_at`` or at some time within the bounds."""
    return Binding(
        account_ref="u1",
        kind=BindingKind.LOGIN,
        bound_at=bound_at,
        bound_not_before=bound_not_before,
        bound_not_after=bound_not_after,
    )


def test_an_interval_round_trips_through_the_proto() -> None:
    """bound_not_before and bound_not_after reach the proto and come back unchanged."""
    binding = _login(bound_not_before=REGISTERED, bound_not_after=CHANGED)
    pb = binding_to_pb(binding)
    assert not pb.HasField("bound_at")
    assert pb.bound_not_before.ToDatetime(tzinfo=UTC) == REGISTERED
    assert pb.bound_not_after.ToDatetime(tzinfo=UTC) == CHANGED
    assert binding_from_pb(pb) == binding


def test_a_lower_bound_alone_is_not_sent_as_bound_at() -> None:
    """A registration date given as a lower bound stays a lower bound on the wire."""
    pb = binding_to_pb(_login(bound_not_before=REGISTERED))
    assert not pb.HasField("bound_at")
    assert not pb.HasField("bound_not_after")
    assert pb.HasField("bound_not_before")


def test_an_exact_time_inside_its_bounds_is_accepted() -> None:
    """bound_at may come with bounds that enclose it."""
    inside = REGISTERED + timedelta(days=10)
    pb = binding_to_pb(_login(inside, bound_not_before=REGISTERED, bound_not_after=CHANGED))
    assert pb.bound_at.ToDatetime(tzinfo=UTC) == inside


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"bound_not_before": CHANGED, "bound_not_after": REGISTERED}, "before bound_not_before"),
        (
            {"bound_at": REGISTERED - timedelta(seconds=1), "bound_not_before": REGISTERED},
            "bound_at is before bound_not_before",
        ),
        (
            {"bound_at": CHANGED + timedelta(seconds=1), "bound_not_after": CHANGED},
            "bound_at is after bound_not_after",
        ),
        ({"bound_not_before": REGISTERED.replace(tzinfo=None)}, "bound_not_before is a naive"),
        ({"bound_not_after": "2021-07-01"}, "bound_not_after must be a datetime"),
    ],
)
def test_contradicting_or_malformed_bounds_are_refused(
    fields: dict[str, object], rule: str
) -> None:
    """An empty interval, an exact time outside its bounds or a naive bound never leaves."""
    args: dict[str, object] = {"account_ref": "u1", "kind": "login", "bound_at": None, **fields}
    with pytest.raises(InvalidResultError, match=rule):
        binding_to_pb(Binding(**args))  # type: ignore[arg-type]  # malformed on purpose


async def test_a_provider_answering_an_empty_interval_gets_internal() -> None:
    """Through the SDK's call path, contradicting bounds are INTERNAL 'invalid binding',
    logged by rule, and the interval a provider does give reaches the gateway intact."""
    provider = Provider(provider_id="forum", name="Forum", category="forum")
    answers: list[Binding] = []

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        return answers

    @provider.unbind
    async def unbind(request: UnbindRequest) -> UnbindResult:
        return UnbindResult.rejected("no such account")

    env = ProviderEnvironment(provider)
    answers[:] = [_login(bound_not_before=CHANGED, bound_not_after=REGISTERED)]
    with capture_logs() as logs, pytest.raises(CallError) as err:
        await env.list_bindings("+8613800138000")
    assert err.value.code is grpc.StatusCode.INTERNAL
    (entry,) = [e for e in logs if e["event"] == "adapter.invalid_result"]
    assert entry["rule"] == "bound_not_after is before bound_not_before"
    answers[:] = [_login(bound_not_before=REGISTERED)]
    (got,) = await env.list_bindings("+8613800138000")
    assert got.bound_not_before == REGISTERED
    assert got.bound_at is None
    assert got.bound_not_after is None
