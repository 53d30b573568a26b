"""Registering adapter functions: mistakes are caught when they are made, not at the first call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onecert.sdk import (
    Binding,
    BindingKind,
    CallInfo,
    Carrier,
    Provider,
    ProviderCategory,
    Server,
    Tenure,
    TenureState,
    UnbindOutcome,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk.testing import FakeGateway, ProviderEnvironment
from tests.sdk.sdk_fakes import NUMBER, PROVIDER_ID


def _provider() -> Provider:
    return Provider(provider_id=PROVIDER_ID, name="Forum", category=ProviderCategory.FORUM)


def test_decorators_return_the_function_unchanged() -> None:
    """A decorated function is still the caller's function, callable in its own unit tests."""
    provider = _provider()

    async def list_bindings(msisdn: str, info: CallInfo) -> list[Binding]:
        return []

    assert provider.list_bindings(list_bindings) is list_bindings


def test_plain_function_is_refused_at_registration() -> None:
    """A function that is not async is a TypeError right at the decorator."""
    provider = _provider()
    with pytest.raises(TypeError, match="async"):

        @provider.list_bindings  # type: ignore[type-var]  # deliberately not async
        def list_bindings(msisdn: str, info: CallInfo) -> list[Binding]:
            return []


@pytest.mark.parametrize(
    "source",
    [
        "async def f(): return []",
        "async def f(msisdn, info, extra): return []",
        "async def f(msisdn, *, flag): return []",
    ],
)
def test_wrong_arity_is_refused_at_registration(source: str) -> None:
    """A function that cannot be called as f(value) or f(value, info) is a TypeError at once."""
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # builds functions of given signatures
    with pytest.raises(TypeError, match="list_bindings"):
        _provider().list_bindings(namespace["f"])


def test_not_callable_is_refused() -> None:
    """Registering something that is not a function says what was expected."""
    with pytest.raises(TypeError, match="async function"):
        _provider().unbind(42)  # type: ignore[type-var]  # deliberately wrong


def test_registering_twice_is_refused() -> None:
    """A second list_bindings function is a mistake, not a silent replacement."""
    provider = _provider()

    async def first(msisdn: str) -> list[Binding]:
        return []

    provider.list_bindings(first)
    with pytest.raises(TypeError, match="already"):
        provider.list_bindings(first)


async def test_functions_may_leave_out_info() -> None:
    """A function taking only the value is called without CallInfo; one taking both gets it."""
    provider = _provider()
    seen: list[CallInfo] = []

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        return [Binding(account_ref="a", kind="payment", bound_at=None)]  # type: ignore[arg-type]  # strings are accepted

    @provider.unbind
    async def unbind(request: UnbindRequest, info: CallInfo) -> UnbindResult:
        seen.append(info)
        return UnbindResult.done()

    env = ProviderEnvironment(provider)
    (binding,) = await env.list_bindings(NUMBER)
    assert binding.kind is BindingKind.PAYMENT
    assert binding.bound_at is None
    assert (await env.unbind(NUMBER, "a")).outcome is UnbindOutcome.DONE
    assert seen[0].purpose == "unbind"


async def test_class_implementation() -> None:
    """One small class with async methods is a complete provider; bound methods are checked too."""

    class Forum:
        def __init__(self) -> None:
            self.users = {"u1": NUMBER}

        async def list_bindings(self, msisdn: str, info: CallInfo) -> list[Binding]:
            return [
                Binding(account_ref=ref, kind=BindingKind.LOGIN, bound_at=None)
                for ref, n in self.users.items()
                if n == msisdn
            ]

        async def unbind(self, request: UnbindRequest) -> UnbindResult:
            return UnbindResult.done()

    provider = Provider(
        provider_id=PROVIDER_ID, name="Forum", category="forum", implementation=Forum()
    )
    assert [b.account_ref for b in await ProviderEnvironment(provider).list_bindings(NUMBER)] == [
        "u1"
    ]

    class Broken:
        def list_bindings(self, msisdn: str) -> list[Binding]:
            return []

        async def unbind(self, request: UnbindRequest) -> UnbindResult:
            return UnbindResult.done()

    with pytest.raises(TypeError, match="async"):
        Provider(provider_id=PROVIDER_ID, name="F", category="forum", implementation=Broken())

    class Incomplete:
        async def list_bindings(self, msisdn: str) -> list[Binding]:
            return []

    with pytest.raises(TypeError, match="unbind"):
        Provider(provider_id=PROVIDER_ID, name="F", category="forum", implementation=Incomplete())


def test_incomplete_provider_cannot_be_served() -> None:
    """A provider without unbind is refused when the server is built, naming what is missing."""
    provider = _provider()

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        return []

    with pytest.raises(TypeError, match="unbind"):
        Server(provider, gateway_keys=FakeGateway().keys, insecure=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"provider_id": "Example Forum", "name": "F", "category": "forum"},
        {"provider_id": "", "name": "F", "category": "forum"},
        {"provider_id": "x" * 65, "name": "F", "category": "forum"},
        {"provider_id": "forum", "name": " ", "category": "forum"},
        {"provider_id": "forum", "name": "F", "category": "bakery"},
    ],
)
def test_provider_identity_is_checked(kwargs: dict[str, str]) -> None:
    """Provider id, name and category are validated at construction."""
    with pytest.raises(ValueError, match=r"provider_id|name|category"):
        Provider(
            provider_id=kwargs["provider_id"], name=kwargs["name"], category=kwargs["category"]
        )


def test_configuration_is_keyword_only() -> None:
    """Providers, carriers and servers take their configuration by keyword only."""
    with pytest.raises(TypeError):
        Provider("forum", "Forum", "forum")  # type: ignore[call-arg]  # deliberately positional
    with pytest.raises(TypeError):
        Carrier("mobile")  # type: ignore[call-arg]  # deliberately positional
    provider = _provider()
    with pytest.raises(TypeError):
        Server(provider, FakeGateway().keys)  # type: ignore[call-arg]  # deliberately positional


def test_values_are_frozen_and_accept_strings() -> None:
    """Values are immutable; enums accept their strings and refuse unknown ones clearly."""
    binding = Binding(account_ref="a", kind="two_factor", bound_at=None)  # type: ignore[arg-type]  # strings are accepted
    assert binding.kind is BindingKind.TWO_FACTOR
    with pytest.raises(AttributeError):
        binding.account_ref = "b"  # type: ignore[misc]  # frozen
    assert Tenure(NUMBER, datetime.now(UTC), state="suspended").state is TenureState.SUSPENDED  # type: ignore[arg-type]  # strings are accepted
    with pytest.raises(ValueError, match="'login'"):
        Binding(account_ref="a", kind="sms", bound_at=None)  # type: ignore[arg-type]  # deliberately wrong


def test_unbind_result_constructors() -> None:
    """done/rejected stamp the decision time; pending has none; rejected carries its reason."""
    assert UnbindResult.done().decided_at is not None
    rejected = UnbindResult.rejected("no such account")
    assert (rejected.outcome, rejected.reason) == (UnbindOutcome.REJECTED, "no such account")
    assert UnbindResult.pending().decided_at is None
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert UnbindResult.done(at=at).decided_at == at


def test_call_info_can_be_built_in_a_test() -> None:
    """CallInfo is a plain value: build one, and time_remaining counts down to zero."""
    info = CallInfo(query_id="q", deadline=datetime.now(UTC) + timedelta(seconds=30))
    remaining = info.time_remaining()
    assert remaining is not None
    assert 25 < remaining <= 30
    assert CallInfo(deadline=datetime.now(UTC) - timedelta(seconds=1)).time_remaining() == 0
    assert CallInfo().time_remaining() is None


async def test_rejected_without_reason_is_an_invalid_answer() -> None:
    """A REJECTED answer needs a reason; digit runs in a reason are masked before they leave."""
    provider = _provider()

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        return []

    answers = [UnbindResult(UnbindOutcome.REJECTED), UnbindResult.rejected(f"{NUMBER} is closed")]

    @provider.unbind
    async def unbind(request: UnbindRequest) -> UnbindResult:
        return answers.pop(0)

    env = ProviderEnvironment(provider)
    with pytest.raises(Exception, match="INTERNAL"):
        await env.unbind(NUMBER, "a")
    masked = await env.unbind(NUMBER, "a")
    assert NUMBER not in masked.reason
    assert masked.reason.endswith(" is closed")
