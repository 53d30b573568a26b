"""The demo's providers and carriers behind the SDK: answers, unbinds, notices, conformance."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from onecert.adapters.demo import (
    ADMIN_CN,
    CARRIERS,
    PROVIDERS,
    STORY,
    DemoFederation,
    DemoProvider,
    ManagedProcess,
    UserRecord,
    build_carrier,
    build_provider,
    number_to_recycle,
)
from onecert.adapters.demo._federation import adapter_argv
from onecert.gateway._config import load_config
from onecert.sdk import BindingKind, ProviderCategory, TenureState, UnbindOutcome
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey
from onecert.sdk._tls import ClientTLS
from onecert.sdk._warrant import WarrantIssuer
from onecert.sdk.conformance import check_carrier, check_provider
from onecert.sdk.devkeys import init_dev_keys
from onecert.sdk.testing import CarrierEnvironment, ProviderEnvironment, serve_in_process
from onecert.v1 import provider_pb2, provider_pb2_grpc
from tests.sdk.sdk_fakes import unbind_pb

IDN_KEY = bytes(range(32))
FORMER, CURRENT = STORY.former_number, STORY.current_number


async def test_provider_lists_its_table() -> None:
    """A demo provider answers every account on the number, with its dates and kind."""
    env = ProviderEnvironment(build_provider("bazaarly"))
    bindings = await env.list_bindings(CURRENT)
    assert {b.account_ref for b in bindings} == {"bz-100482", "bz-233917", "bz-418806"}
    mine = next(b for b in bindings if b.account_ref == "bz-418806")
    assert mine.display_name == "xiaoyu_lin"
    assert mine.kind is BindingKind.LOGIN
    assert mine.bound_at == datetime(2021, 6, 18, tzinfo=UTC)
    assert await env.list_bindings("+99912345678") == []


async def test_unbind_changes_the_table() -> None:
    """An unbind detaches the number for good: the account no longer appears, and a
    second unbind of it (another request id) is rejected."""
    provider = build_provider("coinpurse")
    env = ProviderEnvironment(provider)
    result = await env.unbind(FORMER, "cp-58203317")
    assert result.outcome is UnbindOutcome.DONE
    assert await env.list_bindings(FORMER) == []
    again = await env.unbind(FORMER, "cp-58203317")
    assert again.outcome is UnbindOutcome.REJECTED


async def test_unbind_of_another_number_is_rejected() -> None:
    """An account is only detached from the number it is bound to; unknown accounts
    are rejected and nothing changes."""
    env = ProviderEnvironment(build_provider("coinpurse"))
    assert (await env.unbind(CURRENT, "cp-58203317")).outcome is UnbindOutcome.REJECTED
    assert (await env.unbind(FORMER, "no-such-ref")).outcome is UnbindOutcome.REJECTED
    assert [b.account_ref for b in await env.list_bindings(FORMER)] == ["cp-58203317"]


async def test_recycled_notice_detaches_previous_holders() -> None:
    """A recycled-number notice detaches the accounts bound before the number changed
    hands and keeps the new holder's."""
    env = ProviderEnvironment(build_provider("bazaarly"))
    removed = await env.notify_recycled(CURRENT, recycled_at=STORY.current_from)
    assert removed == 2
    assert [b.account_ref for b in await env.list_bindings(CURRENT)] == ["bz-418806"]


async def test_provider_that_ignores_notices() -> None:
    """The demo's notice-ignoring provider acknowledges a notice without acting (no
    count to confirm) and keeps every binding; built to act, it detaches them."""
    number = number_to_recycle().msisdn
    today = datetime.now(UTC)
    env = ProviderEnvironment(build_provider("kindred"))
    before = await env.list_bindings(number)
    assert before
    assert await env.notify_recycled(number, recycled_at=today) is None
    assert await env.list_bindings(number) == before
    acting = ProviderEnvironment(build_provider("kindred", ignore_notices=False))
    assert await acting.notify_recycled(number, recycled_at=today) == len(before)
    assert await acting.list_bindings(number) == []


async def test_slow_provider_takes_its_delay() -> None:
    """A provider built with a delay answers only after it (the slow one of the demo)."""
    table = DemoProvider([], delay_s=0.2)
    started = time.perf_counter()
    assert await table.list_bindings(CURRENT) == []
    assert time.perf_counter() - started >= 0.19


def test_unknown_provider_is_filler() -> None:
    """An id the demo does not know is a filler provider with explicit overrides."""
    users = [UserRecord("a1", "alpha", "+8613000000001", BindingKind.LOGIN, None)]
    provider = build_provider("bench-1", users=users, name="Bench", category="gaming")
    assert (provider.id, provider.name) == ("bench-1", "Bench")
    assert provider.category is ProviderCategory.GAMING
    assert build_provider("bench-2").category is ProviderCategory.OTHER


def test_duplicate_account_refs_are_refused() -> None:
    """A users table with the same account ref twice is a mistake caught at once."""
    row = UserRecord("a1", "alpha", "+8613000000001", BindingKind.LOGIN, None)
    with pytest.raises(ValueError, match="appears twice"):
        DemoProvider([row, row])


async def test_carrier_answers_by_idn() -> None:
    """A demo carrier finds the citizen's tenures by the idn made with the shared key,
    and knows nobody under an unknown idn."""
    env = CarrierEnvironment(build_carrier("bluefinch", idn_key=IDN_KEY))
    tenures = await env.list_numbers(compute_idn(IDN_KEY, STORY.citizen.document_number))
    assert [(t.msisdn, t.state) for t in tenures] == [(FORMER, TenureState.RECYCLED)]
    assert tenures[0].held_until == STORY.former_until
    assert await env.list_numbers(compute_idn(IDN_KEY, "110101190001010000")) == []
    redpine = CarrierEnvironment(build_carrier("redpine", idn_key=IDN_KEY))
    [current] = await redpine.list_numbers(compute_idn(IDN_KEY, STORY.citizen.document_number))
    assert (current.msisdn, current.held_until) == (CURRENT, None)


async def test_demo_adapters_pass_the_conformance_kit() -> None:
    """A demo provider and a demo carrier pass the conformance kit over gRPC."""
    async with serve_in_process(build_provider("teahouse")) as running:
        report = await check_provider(
            target=running.address,
            warrant_key=running.gateway.key,
            provider_id="teahouse",
            known_numbers=[CURRENT],
            unbind=(CURRENT, "th-2291"),
        )
        assert report.ok, report.failures
    idn = compute_idn(IDN_KEY, STORY.citizen.document_number)
    async with serve_in_process(build_carrier("redpine", idn_key=IDN_KEY)) as running:
        report = await check_carrier(
            target=running.address,
            warrant_key=running.gateway.key,
            carrier_id="redpine",
            known_idns=[idn],
        )
        assert report.ok, report.failures


async def test_adapter_process_over_mutual_tls(tmp_path: Path) -> None:
    """`python -m onecert.adapters.demo provider` writes its port once serving, answers
    over mutual TLS only callers with a client certificate, unbinds for real, and
    exits 0 on SIGTERM."""
    keys = init_dev_keys(tmp_path / "keys")
    ready = tmp_path / "coinpurse.port"
    log = (tmp_path / "coinpurse.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *adapter_argv(keys, "provider", "coinpurse", ready), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert process.returncode is None, (tmp_path / "coinpurse.log").read_text()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        address = f"127.0.0.1:{int(ready.read_text())}"
        warrants = WarrantIssuer(key=SigningKey.load(keys.warrant_key), issuer="onecert-gateway")

        def metadata(purpose: str) -> tuple[tuple[str, str], ...]:
            token = warrants.issue(audience="coinpurse", target=FORMER, purpose=purpose)
            return (("authorization", f"Bearer {token}"),)

        tls = ClientTLS(
            ca_file=keys.ca_cert,
            cert_file=keys.client_cert("gateway"),
            key_file=keys.client_key("gateway"),
        )
        async with grpc.aio.secure_channel(address, tls.credentials()) as channel:
            stub = provider_pb2_grpc.BindingProviderStub(channel)
            listed = await stub.ListBindings(
                provider_pb2.ListBindingsRequest(msisdn=FORMER),
                metadata=metadata("lookup"),
                timeout=10,
            )
            assert [b.account_ref for b in listed.bindings] == ["cp-58203317"]
            await stub.Unbind(
                unbind_pb("t-1", "cp-58203317", msisdn=FORMER),
                metadata=metadata("unbind"),
                timeout=10,
            )
            listed = await stub.ListBindings(
                provider_pb2.ListBindingsRequest(msisdn=FORMER),
                metadata=metadata("lookup"),
                timeout=10,
            )
            assert list(listed.bindings) == []
        # Without a client certificate the handshake fails.
        anonymous = ClientTLS(ca_file=keys.ca_cert)
        async with grpc.aio.secure_channel(address, anonymous.credentials()) as channel:
            stub = provider_pb2_grpc.BindingProviderStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Describe(provider_pb2.DescribeRequest(), timeout=5)
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
    assert not ready.with_name(ready.name + ".partial").exists()


def test_gateway_config_for_the_durable_story(tmp_path: Path) -> None:
    """The federation's gateway.toml keeps state in DIR/onecert.db, gives notices a
    deadline of seconds, makes the regulator's CN admin, lets each carrier report its
    own blocks, takes joins with the dev CA as the federation CA, leaves out the forum
    that joins by invitation, and every caller has a client cert."""
    federation = DemoFederation(tmp_path / "demo", notice_deadline_s=1.5)
    federation.prepare()
    adapters = []
    for port, adapter_id in enumerate(
        [c.id for c in CARRIERS] + [p.id for p in PROVIDERS if not p.down], start=20000
    ):
        process = ManagedProcess(name=adapter_id, role="adapter", argv=[], log=tmp_path / "x")
        process.port = port
        adapters.append(process)
    config = load_config(federation.write_gateway_config(adapters))

    assert config.store is not None
    assert config.store.url == f"sqlite:///{(tmp_path / 'demo' / 'onecert.db').resolve()}"
    assert federation.store_url == config.store.url
    assert (config.notices.deadline_s, config.notices.min_action_s) == (1.5, 1.5)
    assert config.admin.client_cns == (ADMIN_CN,)
    for carrier in config.carriers:
        spec = next(c for c in CARRIERS if c.id == carrier.id)
        assert carrier.prefixes == spec.prefixes
        assert carrier.serves(number_to_recycle().msisdn) is (carrier.id == "bluefinch")
    delivery = {p.id: p.delivery for p in config.providers}
    assert delivery == {p.id: p.notices for p in PROVIDERS if not p.joins}
    assert "teahouse" not in delivery
    assert config.enrollment is not None
    assert config.enrollment.ca_cert == federation.keys.ca_cert.resolve()
    callers = [ADMIN_CN, "portal", *(c.id for c in CARRIERS), "teahouse"]
    for name in callers:
        assert federation.keys.client_cert(name).exists()
        assert federation.keys.client_key(name).exists()
    # Providers that are pushed to call nothing: no certificate of their own.
    assert not federation.keys.client_cert("kindred").exists()


def test_demo_adapter_flags() -> None:
    """The adapter process takes --ignore-notices, and --poll-notices only with a
    client certificate and key."""
    from onecert.adapters.demo._serve import _polling, build_parser

    common = [
        "provider", "--id", "kindred", "--gateway-jwks", "j.json", "--tls-cert", "c.pem",
        "--tls-key", "k.pem", "--client-ca", "ca.pem",
    ]  # fmt: skip
    args = build_parser().parse_args([*common, "--ignore-notices"])
    assert args.ignore_notices is True
    assert build_parser().parse_args(common).ignore_notices is None
    with pytest.raises(ValueError, match="--client-cert and --client-key"):
        _polling(build_parser().parse_args([*common, "--poll-notices", "gw.address"]))
    assert _polling(build_parser().parse_args(common)) is None
