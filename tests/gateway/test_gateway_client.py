"""The portal's GatewayClient and the `onecert lookup` / `onecert gateway serve` commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from onecert.cli import main
from onecert.sdk._types import BindingKind, ProviderCategory, TenureState
from onecert.sdk.client import (
    Attribution,
    CallOutcome,
    GatewayClient,
    GatewayError,
    LookupUpdate,
    Result,
    Started,
    Summary,
)
from onecert.v1 import common_pb2

if TYPE_CHECKING:
    from onecert.gateway import GatewayServer
    from onecert.gateway.testing import Federation
    from onecert.sdk.devkeys import DevKeys


async def story(fed: Federation) -> None:
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    b = fed.binding
    await fed.provider(
        "pay",
        {
            fed.FORMER: [
                b("old", "zhangsan", fed.at(2014), kind=common_pb2.BINDING_KIND_PAYMENT),
                b("next", "lisi", fed.at(2019)),
            ],
            fed.CURRENT: [
                b("mine", "zhang.san", fed.at(2021)),
                b("prev", "someone", fed.at(2015)),
            ],
        },
        name="Example Pay",
        category=common_pb2.PROVIDER_CATEGORY_PAYMENT,
    )
    slow = await fed.provider(
        "slow", {}, name="Slow Shop", category=common_pb2.PROVIDER_CATEGORY_ECOMMERCE
    )
    slow.behaviour.hang = True


async def collect(client: GatewayClient, assertion: str) -> list[LookupUpdate]:
    return [update async for update in client.lookup(assertion, timeout=10)]


async def test_client_yields_typed_updates(fed: Federation) -> None:
    """The client turns the stream into Started, Result... and Summary dataclasses."""
    await story(fed)
    gateway = await fed.gateway(provider_deadlines={"slow": 0.3})
    async with GatewayClient(f"127.0.0.1:{gateway.port}", insecure=True) as client:
        updates = await collect(client, fed.assertion())
    started, *results, summary = updates
    assert isinstance(started, Started)
    assert isinstance(summary, Summary)
    assert all(isinstance(r, Result) for r in results)
    assert len({u.query_id for u in updates}) == 1
    assert started.provider_calls == 4
    assert [(n.msisdn, n.current, n.state) for n in started.numbers] == [
        (fed.CURRENT, True, TenureState.ACTIVE),
        (fed.FORMER, False, TenureState.RECYCLED),
    ]
    assert started.numbers[1].held_until == fed.FORMER_UNTIL
    by_key = {(r.provider_id, r.msisdn): r for r in results if isinstance(r, Result)}
    former = by_key["pay", fed.FORMER]
    assert former.category is ProviderCategory.PAYMENT
    assert former.outcome is CallOutcome.ANSWERED
    (account,) = former.accounts
    assert account.attribution is Attribution.LEFT_BEHIND
    assert account.dangerous
    assert account.kind is BindingKind.PAYMENT
    assert account.display_name_masked == "zh***an"
    assert account.bound_at is not None
    assert account.bound_at.year == 2014
    assert account.handle
    current = by_key["pay", fed.CURRENT]
    assert [a.attribution for a in current.accounts] == [Attribution.MINE]
    assert current.previous_holder_count == 1
    assert len(current.release_handles) == 1
    assert by_key["slow", fed.CURRENT].outcome is CallOutcome.TIMED_OUT
    assert by_key["slow", fed.CURRENT].elapsed.total_seconds() > 0.2
    assert summary.total.asked == 4
    assert summary.total.timed_out == 2
    assert {n.msisdn: n.left_behind for n in summary.numbers} == {fed.CURRENT: 0, fed.FORMER: 1}


async def test_client_raises_gateway_error_with_the_status(fed: Federation) -> None:
    """A refused lookup raises GatewayError carrying the status code and the reason."""
    await story(fed)
    gateway = await fed.gateway()
    async with GatewayClient(f"127.0.0.1:{gateway.port}", insecure=True) as client:
        with pytest.raises(GatewayError) as info:
            await collect(client, fed.assertion(acr="low"))
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "too low" in info.value.details
    assert fed.upstream_calls() == 0


def test_client_needs_an_explicit_transport() -> None:
    """Neither or both of tls and insecure is a ValueError: plaintext is never implicit."""
    with pytest.raises(ValueError, match="insecure=True"):
        GatewayClient("localhost:1")


async def test_stopping_iteration_cancels_the_lookup(fed: Federation) -> None:
    """Leaving the loop early cancels the call, and the gateway cancels its provider calls."""
    await story(fed)
    gateway = await fed.gateway(provider_deadlines={"slow": 30})
    slow = next(p for p, _ in fed.providers if p.id == "slow")
    async with GatewayClient(f"127.0.0.1:{gateway.port}", insecure=True) as client:
        updates = client.lookup(fed.assertion(), timeout=30)
        async with contextlib.aclosing(updates):  # type: ignore[type-var]  # an async generator
            async for update in updates:
                if isinstance(update, Result):
                    break
        await asyncio.wait_for(slow.record.cancelled.wait(), 5)


async def test_client_over_mutual_tls(tls_fed: Federation) -> None:
    """With ClientTLS (CA, portal certificate and key) the client reaches a production gateway."""
    fed = tls_fed
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    gateway = await fed.gateway()
    client = GatewayClient(f"127.0.0.1:{gateway.port}", tls=fed.client_tls("portal"))
    async with client:
        updates = await collect(client, fed.assertion())
    assert isinstance(updates[-1], Summary)


# ------------------------------------------------------------------- CLI


async def run_cli(args: list[str]) -> int:
    # The command runs its own event loop; keep it off the test's loop.
    return await asyncio.to_thread(main, args)


def lookup_args(
    fed: Federation, gateway: GatewayServer, tmp_path: Path, **mint: object
) -> list[str]:
    path = tmp_path / "assertion.jwt"
    path.write_text(fed.assertion(**mint) + "\n")
    return ["lookup", "--gateway", f"127.0.0.1:{gateway.port}", "--assertion", str(path)]


async def test_cli_json_output_parses(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`onecert lookup --json` prints one JSON document with every result and the summary."""
    await story(fed)
    gateway = await fed.gateway(provider_deadlines={"slow": 0.3})
    status = await run_cli([*lookup_args(fed, gateway, tmp_path), "--insecure", "--json"])
    out = capsys.readouterr().out
    assert status == 0
    document = json.loads(out)
    assert document["provider_calls"] == 4
    assert len(document["results"]) == 4
    left = [
        a for r in document["results"] for a in r["accounts"] if a["attribution"] == "left_behind"
    ]
    assert len(left) == 1
    assert left[0]["dangerous"] is True
    assert left[0]["bound_at"].startswith("2014-01-01")
    assert document["summary"]["total"] == {
        "asked": 4,
        "answered": 2,
        "timed_out": 2,
        "failed": 0,
        "skipped": 0,
    }
    assert document["numbers"][0]["state"] == "active"


async def test_cli_table_lists_left_behind_first(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table flags left-behind accounts first, then the citizen's own, then
    previous holders' counts and the coverage with what went wrong."""
    await story(fed)
    gateway = await fed.gateway(provider_deadlines={"slow": 0.3})
    status = await run_cli([*lookup_args(fed, gateway, tmp_path), "--insecure"])
    out = capsys.readouterr().out
    assert status == 0
    lines = out.splitlines()
    left = next(i for i, line in enumerate(lines) if "!! left behind" in line)
    mine = next(i for i, line in enumerate(lines) if " mine " in f"{line} ")
    assert left < mine
    assert "Example Pay (payment)" in lines[left]
    assert fed.FORMER in lines[left]
    assert "zh***an" in lines[left]
    assert "lisi" not in out
    assert "someone" not in out
    previous = lines.index("Previous holders' accounts on your current numbers (count only)")
    assert fed.CURRENT in lines[previous + 1]
    assert "1 account" in lines[previous + 1]
    assert re.search(r"Coverage: 4 asked, 2 answered, 2 timed out, 0 failed, 0 skipped", out)
    assert any(
        "Slow Shop" in line and line.endswith("did not answer in time; try again later")
        for line in lines
    )


async def test_cli_reports_a_refused_lookup(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused assertion exits 2 with the gateway's status and reason."""
    await story(fed)
    gateway = await fed.gateway()
    args = lookup_args(fed, gateway, tmp_path, now=time.time() - 900)
    status = await run_cli([*args, "--insecure"])
    assert status == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err


async def test_cli_needs_a_transport_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --ca or --insecure the command refuses to guess."""
    (tmp_path / "a.jwt").write_text("x.y.z")
    status = await run_cli(
        ["lookup", "--gateway", "127.0.0.1:1", "--assertion", str(tmp_path / "a.jwt")]
    )
    assert status == 2
    assert "--insecure" in capsys.readouterr().err


async def test_cli_serve_runs_until_sigterm(fed: Federation, tmp_path: Path) -> None:
    """`onecert gateway serve` serves lookups from a TOML config and exits 0 on SIGTERM."""
    await story(fed)
    config = fed.config()
    carriers = "".join(
        f'[[carriers]]\nid = "{c.id}"\naddress = "{c.address}"\nplaintext = true\n\n'
        for c in config.carriers
    )
    providers = "".join(
        f'[[providers]]\nid = "{p.id}"\naddress = "{p.address}"\nplaintext = true\n'
        f'category = "payment"\ndeadline_s = 0.3\n\n'
        for p in config.providers
    )
    toml = tmp_path / "gateway.toml"
    toml.write_text(
        f"""
[gateway]
listen = "127.0.0.1:0"
grace_period_s = 1

[keys]
warrant_key = "{fed.keys.dev.warrant_key.name}"
handle_key = "{fed.keys.dev.handle_key.name}"

[[identity.issuers]]
issuer = "{fed.ISSUER}"
jwks = "{fed.keys.dev.identity_jwks.name}"

{carriers}{providers}"""
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "onecert.cli",
        "gateway",
        "serve",
        "--config",
        str(toml),
        "--dev-plaintext",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"listening on port (\d+) \(development", line)
        assert match, line
        async with GatewayClient(f"127.0.0.1:{match.group(1)}", insecure=True) as client:
            updates = await collect(client, fed.assertion())
        assert isinstance(updates[-1], Summary)
        assert updates[-1].total.asked == 4
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
        err = (await process.stderr.read()).decode()
        assert "gateway.stopped" in err
        assert fed.CURRENT not in err
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


PORTAL_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portal_lookup.py"


async def test_readme_portal_example_runs(
    tls_fed: Federation, dev_tls: DevKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/portal_lookup.py (shown in the README) prints the left-behind account
    flagged, the previous holders' count and the coverage, over mutual TLS."""
    import importlib.util

    fed = tls_fed
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    b = fed.binding
    await fed.provider(
        "pay",
        {
            fed.FORMER: [b("old", "zhangsan", fed.at(2014, 5, 1))],
            fed.CURRENT: [b("prev", "someone-else", fed.at(2015, 1, 1))],
        },
    )
    gateway = await fed.gateway()
    spec = importlib.util.spec_from_file_location("portal_lookup", PORTAL_EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    await example.main(f"127.0.0.1:{gateway.port}", dev_tls.directory, fed.assertion())
    lines = capsys.readouterr().out.splitlines()
    # Results arrive per provider and number, in whatever order they answer.
    (flagged,) = [line for line in lines if line.startswith("!! ")]
    assert fed.FORMER in flagged
    assert "zh***an" in flagged
    assert any("1 previous" in line for line in lines)
    assert "someone" not in "\n".join(lines)
    assert lines[-1].endswith("providers answered")
