"""onecert.gateway.testing: the published federation harness does what its docstring says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from onecert.gateway._config import StoreConfig
from onecert.gateway.store.testing import Database
from onecert.gateway.testing import (
    CURRENT,
    FORMER,
    Federation,
    FederationKeys,
    at,
    binding,
    gateway_toml,
)
from onecert.sdk import Binding, BindingKind, Provider, UnbindRequest, UnbindResult
from onecert.v1 import gateway_pb2

ANSWERED = gateway_pb2.CALL_OUTCOME_ANSWERED


async def test_docstring_example_over_mutual_tls(tmp_path: Path) -> None:
    """Over mutual TLS with a SQLite store, a fake provider's binding reaches the
    citizen's lookup, and the fake saw the gateway's client certificate."""
    keys = FederationKeys.create(tmp_path / "keys")
    async with Federation(keys, tmp_path, tls=True) as fed:
        await fed.carrier("cm")
        pay = await fed.provider("pay", {CURRENT: [binding("a1", "lin", at(2021))]})
        gateway = await fed.gateway(store="sqlite")
        messages = await fed.lookup(gateway)

    result = fed.result_of(messages, "pay", CURRENT)
    assert result.outcome == ANSWERED
    assert [b.display_name_masked for b in result.bindings] == ["l***n"]
    assert pay.record.peers == ["gateway", "gateway"]
    assert gateway.config.store is not None


async def test_an_sdk_adapter_joins_and_unbinds(tmp_path: Path) -> None:
    """An SDK provider served by the harness is asked by the gateway and unbinds the
    citizen's left-behind account through the portal client."""
    provider = Provider(provider_id="forum", name="Forum", category="forum")
    unbound: list[str] = []

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        if msisdn != FORMER:
            return []
        return [Binding(account_ref="u1", kind=BindingKind.LOGIN, bound_at=at(2014, 5))]

    @provider.unbind
    async def unbind(request: UnbindRequest) -> UnbindResult:
        unbound.append(request.account_ref)
        return UnbindResult.done()

    async with Federation(FederationKeys.create(tmp_path / "keys"), tmp_path) as fed:
        await fed.carrier("cm")
        await fed.adapter(provider)
        gateway = await fed.gateway(store="sqlite")
        async with fed.client(gateway) as client:
            (handle,) = [
                b.handle for b in fed.result_of(await fed.lookup(gateway), "forum", FORMER).bindings
            ]
            ticket = await client.unbind(fed.assertion(), handle)

    assert ticket.created
    assert ticket.ticket_id


async def test_a_fake_misbehaves_when_told(tmp_path: Path) -> None:
    """A fake provider told to abort fails only its own result; the others answer."""
    async with Federation(FederationKeys.create(tmp_path / "keys"), tmp_path) as fed:
        await fed.carrier("cm")
        good = await fed.provider("good", {CURRENT: [binding("g", "lin", at(2021))]})
        bad = await fed.provider("bad")
        bad.behaviour.abort = grpc.StatusCode.INTERNAL
        gateway = await fed.gateway()
        messages = await fed.lookup(gateway)

    assert fed.result_of(messages, "good", CURRENT).outcome == ANSWERED
    assert fed.result_of(messages, "bad", CURRENT).outcome == gateway_pb2.CALL_OUTCOME_FAILED
    assert good.record.calls == 2
    assert fed.upstream_calls() == 1 + 2 + bad.record.calls


def test_gateway_toml_is_a_config_the_gateway_reads(tmp_path: Path) -> None:
    """gateway_toml writes a development gateway's config that the gateway's own
    reader accepts, with the upstreams and sections given."""
    from onecert.gateway import load_config

    keys = FederationKeys.create(tmp_path / "keys")
    path = tmp_path / "gateway.toml"
    path.write_text(
        gateway_toml(
            keys,
            store_url=f"sqlite:///{tmp_path / 'g.db'}",
            carriers=[{"id": "cm", "address": "127.0.0.1:1", "prefixes": ["+86138"]}],
            providers=[{"id": "pay", "address": "127.0.0.1:2"}],
            sections={"fanout": {"provider_deadline_s": 1.5}},
        )
    )
    config = load_config(path, dev_plaintext=True)

    assert [c.id for c in config.carriers] == ["cm"]
    assert [(p.id, p.plaintext) for p in config.providers] == [("pay", True)]
    assert config.fanout.provider_deadline_s == pytest.approx(1.5)


def test_harness_exports() -> None:
    """onecert.gateway.testing exports the harness, and every name it exports is defined."""
    from onecert.gateway import testing

    assert {"Federation", "FederationKeys", "FakeCarrier", "FakeProvider"} <= set(testing.__all__)
    for name in testing.__all__:
        assert getattr(testing, name) is not None


async def test_a_store_on_either_database_delivers_an_unbind(
    tmp_path: Path, database: Database
) -> None:
    """On a SQLite file or a PostgreSQL schema, a gateway of the harness commits the
    ticket and delivers it: the fake provider is asked to unbind the account once."""
    store = StoreConfig(url=database.url, schema=database.schema, auto_migrate=True)
    async with Federation(FederationKeys.create(tmp_path / "keys"), tmp_path) as fed:
        await fed.carrier("cm")
        pay = await fed.provider("pay", {FORMER: [binding("old", "lin", at(2014, 5))]})
        gateway = await fed.gateway(store=store)
        (account,) = fed.result_of(await fed.lookup(gateway), "pay", FORMER).bindings
        await fed.unbind(gateway, account.handle)
        await asyncio.wait_for(pay.unbind_asked.wait(), 10)

    assert [u.account_ref for u in pay.unbinds] == ["old"]
