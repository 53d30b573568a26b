"""What the stress scenarios share: keys and assertions, gateway child processes,
provider ledgers, process sampling, statistics and the results file.

Everything listens on 127.0.0.1. The gateway always runs as
``python -m onecert.cli gateway serve`` in a child process (so it can be
SIGKILLed and sampled), configured by :func:`onecert.gateway.testing.gateway_toml`;
providers, carriers and clients run in the test process on the SDK, served by
the federation of :mod:`onecert.gateway.testing`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from onecert.gateway import testing
from onecert.gateway._identity import AssertionIssuer
from onecert.gateway.store.testing import Database
from onecert.gateway.testing import GatewayProcess
from onecert.sdk import (
    Binding,
    BindingKind,
    Carrier,
    Provider,
    RecycledNotice,
    Tenure,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey
from onecert.sdk._server import free_port
from onecert.sdk.devkeys import DevKeys
from stress.ledger import Ledger

__all__ = [
    "GATEWAY_ID",
    "IDN_KEY",
    "ISSUER",
    "RESULTS",
    "SMOKE",
    "Catalogue",
    "Citizen",
    "GatewayProcess",
    "Identity",
    "Ledger",
    "ProcessSample",
    "Upstreams",
    "env_float",
    "free_port",
    "gateway_toml",
    "percentile",
    "record_result",
    "sample_process",
    "seeded",
    "series_summary",
    "summary_lines",
]

ISSUER = testing.ISSUER
GATEWAY_ID = testing.GATEWAY_ID
IDN_KEY = testing.IDN_KEY
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
# Without the durations `make stress` sets, every scenario runs short (a smoke
# run): its figures are printed but not recorded.
SMOKE = not any(os.environ.get(v) for v in ("ONECERT_CRASH_SECONDS", "ONECERT_SOAK_SECONDS"))

# Results of this session, printed at its end by the conftest.
_SESSION: dict[str, dict[str, Any]] = {}


def env_float(name: str, default: float) -> float:
    """A number from the environment (``default`` when unset or empty)."""
    text = os.environ.get(name, "").strip()
    return float(text) if text else default


def seeded(seed: float) -> random.Random:
    """A pseudo-random generator of its own, so that a run can be replayed from its seed."""
    return random.Random(seed)  # noqa: S311 - chaos to replay, not cryptography


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def record_result(name: str, result: Mapping[str, Any]) -> None:
    """Keep a scenario's figures: printed at the end of the session and, unless
    this is a smoke run, merged into ``stress/results/latest.json``."""
    stamped = {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 1),
        **result,
    }
    _SESSION[name] = stamped
    if SMOKE:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        existing = {}
    existing[name] = stamped
    RESULTS.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


def summary_lines() -> list[str]:
    """This session's results, one scenario per block, for the terminal."""
    lines = []
    for name, result in _SESSION.items():
        lines.append(f"{name}:")
        lines.extend(
            f"  {key} = {json.dumps(value) if isinstance(value, dict) else value}"
            for key, value in result.items()
        )
    return lines


@dataclass(frozen=True)
class Citizen:
    """A citizen the identity service vouches for."""

    sub: str
    idn: str

    @classmethod
    def numbered(cls, n: int) -> Citizen:
        return cls(sub=f"citizen-{n:04d}", idn=compute_idn(IDN_KEY, f"11010119900307{n:04d}"))


class Identity:
    """The identity service of the scenarios: mints one fresh assertion per call."""

    def __init__(self, keys: DevKeys) -> None:
        self._issuer = AssertionIssuer(key=SigningKey.load(keys.identity_key), issuer=ISSUER)

    def assertion(self, citizen: Citizen) -> str:
        return self._issuer.mint(sub=citizen.sub, idn=citizen.idn, audience=GATEWAY_ID)


def gateway_toml(
    *,
    keys: DevKeys,
    database: Database,
    port: int,
    carriers: Iterable[Mapping[str, object]],
    providers: Iterable[Mapping[str, object]],
    gateway: Mapping[str, object] | None = None,
    sections: Mapping[str, Mapping[str, object]] | None = None,
) -> str:
    """A development gateway's configuration file (plaintext, loopback) on ``database``.

    ``sections`` adds tables such as ``delivery`` or ``notices``.
    """
    return testing.gateway_toml(
        keys,
        store_url=database.url,
        store_schema=database.schema,
        listen_port=port,
        carriers=list(carriers),
        providers=list(providers),
        gateway=gateway,
        sections=sections,
    )


@dataclass(frozen=True)
class ProcessSample:
    """One look at a process: resident memory, open file descriptors, threads."""

    at: float
    rss_kib: int
    fds: int
    threads: int


def sample_process(pid: int, *, at: float) -> ProcessSample:
    """Read ``/proc/PID/status`` and count ``/proc/PID/fd``."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "VmRSS":
            rss = int(value.split()[0])
        elif key == "Threads":
            threads = int(value.strip())
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcessSample(at=at, rss_kib=rss, fds=fds, threads=threads)


def series_summary(samples: Sequence[ProcessSample], *, warmup_s: float) -> dict[str, Any]:
    """Medians of the first and last third of the samples after ``warmup_s``."""
    start = samples[0].at if samples else 0.0
    kept = [s for s in samples if s.at - start >= warmup_s]
    third = max(1, len(kept) // 3)
    first, last = kept[:third], kept[-third:]

    def med(values: Iterable[int]) -> float:
        listed = list(values)
        return float(statistics.median(listed)) if listed else math.nan

    return {
        "samples": len(samples),
        "samples_after_warmup": len(kept),
        "rss_mib_first_third_median": round(med(s.rss_kib for s in first) / 1024, 1),
        "rss_mib_last_third_median": round(med(s.rss_kib for s in last) / 1024, 1),
        "rss_mib_min": round(min(s.rss_kib for s in kept) / 1024, 1) if kept else math.nan,
        "rss_mib_max": round(max(s.rss_kib for s in kept) / 1024, 1) if kept else math.nan,
        "fds_first_third_median": med(s.fds for s in first),
        "fds_last_third_median": med(s.fds for s in last),
        "fds_min": min(s.fds for s in kept) if kept else 0,
        "fds_max": max(s.fds for s in kept) if kept else 0,
        "threads_first_third_median": med(s.threads for s in first),
        "threads_last_third_median": med(s.threads for s in last),
    }


class Catalogue:
    """A provider's accounts: an endless supply per number, a few listed at a time.

    Unbinding detaches an account, so the next lookup lists a new one and a
    steady load keeps opening new tickets. Counts the calls it serves at
    once (``max_active``), and sleeps ``latency`` (plus up to ``jitter``)
    per listing.
    """

    def __init__(self, *, latency: float, jitter: float = 0.0, per_number: int = 2) -> None:
        self.latency = latency
        self.jitter = jitter
        self.per_number = per_number
        self.active = 0
        self.max_active = 0
        self.listed = 0
        self.unbound = 0
        self.notices = 0
        self._next: dict[str, int] = {}
        self._rng = seeded(latency)

    async def list_bindings(self, msisdn: str) -> list[Binding]:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.latency + self._rng.uniform(0.0, self.jitter))
            first = self._next.get(msisdn, 0)
            self.listed += 1
            return [
                Binding(
                    account_ref=f"acct-{msisdn[-4:]}-{n}",
                    kind=BindingKind.LOGIN,
                    bound_at=BOUND_AT,
                    display_name=f"user{n}",
                )
                for n in range(first, first + self.per_number)
            ]
        finally:
            self.active -= 1

    async def unbind(self, request: UnbindRequest) -> UnbindResult:
        n = int(request.account_ref.rsplit("-", 1)[1])
        self._next[request.msisdn] = max(self._next.get(request.msisdn, 0), n + 1)
        self.unbound += 1
        return UnbindResult.done()

    async def on_recycled(self, notice: RecycledNotice) -> int:
        self.notices += 1
        return 0


HELD_FROM = datetime(2020, 6, 1, tzinfo=UTC)
BOUND_AT = datetime(2021, 2, 1, tzinfo=UTC)


class Upstreams:
    """A carrier and providers on the SDK, in this process, each on a port of its own
    (served by the federation of :mod:`onecert.gateway.testing`).

    Every citizen holds one number since 2020 (``+86137`` and the citizen's
    number); every provider lists accounts bound to it since 2021 (the
    citizen's own).
    """

    def __init__(self, keys: DevKeys, citizens: Sequence[Citizen]) -> None:
        self._federation = testing.Federation(testing.FederationKeys.load(keys), keys.directory)
        self._keys = keys
        self.citizens = list(citizens)
        self.numbers = {c.idn: f"+86137{n:08d}" for n, c in enumerate(self.citizens)}
        self.catalogues: dict[str, Catalogue] = {}

    def number_of(self, citizen: Citizen) -> str:
        return self.numbers[citizen.idn]

    async def start(self, providers: Mapping[str, Catalogue]) -> None:
        carrier = Carrier(carrier_id="cm")

        @carrier.list_numbers
        async def list_numbers(idn: str) -> list[Tenure]:
            number = self.numbers.get(idn)
            return [] if number is None else [Tenure(msisdn=number, held_from=HELD_FROM)]

        server = await self._federation.adapter(carrier, register=False, grace=0.0)
        self._federation.add_carrier("cm", server.address, prefixes=("+86137",))
        for provider_id, catalogue in providers.items():
            self.catalogues[provider_id] = catalogue
            provider = Provider(
                provider_id=provider_id,
                name=provider_id.title(),
                category="other",
                implementation=catalogue,
            )
            await self._federation.adapter(provider, grace=0.0)

    def carrier_config(self) -> list[dict[str, object]]:
        return self._federation.upstream_tables()[0]

    def provider_config(self) -> list[dict[str, object]]:
        return self._federation.upstream_tables()[1]

    def gateway_process(
        self,
        database: Database,
        directory: Path,
        *,
        gateway: Mapping[str, object],
        sections: Mapping[str, Mapping[str, object]],
    ) -> tuple[GatewayProcess, int]:
        """A gateway process (not started) on ``database`` that asks these upstreams, with
        its configuration and log in ``directory``; and the port it will listen on.
        ``gateway`` and ``sections`` are as for :func:`gateway_toml`."""
        port = free_port()
        config = directory / "gateway.toml"
        config.write_text(
            gateway_toml(
                keys=self._keys,
                database=database,
                port=port,
                carriers=self.carrier_config(),
                providers=self.provider_config(),
                gateway=gateway,
                sections=sections,
            )
        )
        return GatewayProcess(config, directory / "gateway.log"), port

    async def close(self) -> None:
        await self._federation.close()
