"""A whole federation on one machine: dev keys, adapters, gateway, one process each.

:class:`DemoFederation` is what ``onecert demo`` runs, and what a benchmark can
run with many more providers. Every process logs to ``DIR/logs/NAME.log``;
their pids are kept in ``DIR/pids`` (JSON) while they run; :meth:`stop` ends
them all (SIGTERM, then SIGKILL after a timeout) and may be called any number
of times, from any state. While it runs it holds an exclusive lock on
``DIR/lock`` (flock), so a second federation in the same directory stops
before it touches the first one's keys, config or database.

Every caller of the gateway has a client certificate of its own (CN = its
id): the portal, the regulator (``admin``), each carrier (to report number
events) and each provider that polls for its notices. The gateway keeps its
state in ``DIR/onecert.db`` (SQLite), and its notice deadlines are seconds,
not days, so a demo can watch one pass.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onecert.adapters.demo._data import (
    CARRIERS,
    DEFAULT_SEED,
    PROVIDERS,
    CarrierSpec,
    ProviderSpec,
    history_events,
    provider_spec,
)
from onecert.adapters.demo._join import Joined, invite_and_wait, join_argv
from onecert.adapters.demo._procs import end_processes
from onecert.adapters.demo._serve import write_ready_file
from onecert.sdk._parent import PARENT_PID_ENV
from onecert.sdk._server import free_port
from onecert.sdk._tls import ClientTLS
from onecert.sdk.client import CarrierGatewayClient
from onecert.sdk.devkeys import DEFAULT_CLIENTS, DevKeys, init_dev_keys

__all__ = [
    "GATEWAY_ID",
    "IDENTITY_ISSUER",
    "DemoFederation",
    "DirectoryInUseError",
    "DirectoryLock",
    "ManagedProcess",
    "StartupError",
    "StopReport",
    "report_history",
]

GATEWAY_ID = "onecert-gateway"
IDENTITY_ISSUER = "https://id.onecert-demo.test"
# The CN of the regulator's client certificate: the gateway's admin.
ADMIN_CN = "admin"
# The line `onecert gateway serve` prints once it listens.
_GATEWAY_READY = re.compile(r"listening on port (\d+)")
# The line `onecert portal serve` prints once it listens.
_PORTAL_READY = re.compile(r"portal listening on (http\S+)")
# The opaque ids (sub) of the story's two other people, for the portal's
# development identity step (the citizen's own is STORY.citizen_sub).
_NEXT_HOLDER_SUB = "c-8e41b7c0"
_PREVIOUS_HOLDER_SUB = "c-3a9d0f62"
_POLL_S = 0.05
# Exit statuses of a process that stopped as asked (or on Ctrl-C, which the
# terminal sends to the whole process group).
_STOPPED_OK = (0, None, -signal.SIGTERM, -signal.SIGINT, 130)
_LOG_TAIL_LINES = 15


class StartupError(RuntimeError):
    """Some processes did not start; the message names them, with their log tails."""

    def __init__(self, failures: Sequence[tuple[ManagedProcess, str]]) -> None:
        parts = []
        for process, reason in failures:
            parts.append(f"{process.name} {reason}; last lines of {process.log}:")
            parts.extend(f"    {line}" for line in process.log_tail() or ["(empty)"])
        super().__init__("\n".join(parts))
        self.failures = tuple(failures)


class DirectoryInUseError(RuntimeError):
    """Another federation runs in this directory (it holds ``DIR/lock``).

    Attributes:
        directory: the directory.
        holder: the pid written in the lock file by its holder, if readable.
    """

    def __init__(self, directory: Path, holder: int | None) -> None:
        who = f" (pid {holder})" if holder else ""
        super().__init__(f"another federation is running in {directory}{who}")
        self.directory = directory
        self.holder = holder


class DirectoryLock:
    """An exclusive ``flock`` on a lock file, held from :meth:`acquire` to :meth:`release`.

    The kernel drops the lock when the holding process ends, however it ends,
    so a crashed run never leaves the directory locked; children do not
    inherit it. The file stays after release: removing it would race a
    newcomer that opened it already.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (idempotent); write this process's pid into the file.

        Raises:
            DirectoryInUseError: another live process holds it.
        """
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            pid = int(holder) if holder.isdigit() else None
            raise DirectoryInUseError(self.path.parent, pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (closing the only descriptor drops the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class ManagedProcess:
    """One process of the federation, its log, and how it ended."""

    name: str
    role: str
    argv: list[str]
    log: Path
    ready_file: Path | None = None
    popen: subprocess.Popen[bytes] | None = None
    port: int | None = None
    started_at: float = 0.0
    ready_s: float | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.name} is not listening yet")
        return f"127.0.0.1:{self.port}"

    def exit_status(self) -> int | None:
        """Its exit status, or None while it runs (or was never started)."""
        return self.popen.poll() if self.popen is not None else None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> list[str]:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


@dataclass(frozen=True)
class StopReport:
    """How :meth:`DemoFederation.stop` went."""

    stopped: int
    killed: tuple[str, ...]
    failed: tuple[tuple[str, int], ...]
    elapsed_s: float


@dataclass
class _Timer:
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _toml(value: object) -> str:
    # JSON strings, numbers and booleans are valid TOML values.
    return json.dumps(value)


# The demo gateway's configuration; carriers and providers are appended.
_GATEWAY_TOML = """\
# Written by `onecert demo`: a production-mode gateway (TLS with client
# certificates; mutual TLS to every carrier and provider) on dev keys.
[gateway]
id = {gateway_id}
listen = "127.0.0.1:0"
dev_plaintext = false
lookup_deadline_s = 10
grace_period_s = 2
log_json = true

[gateway.tls]
cert = "keys/server.pem"
key = "keys/server.key.pem"
client_ca = "keys/ca.pem"

[keys]
warrant_key = "keys/warrant.key.pem"
handle_key = "keys/handle.key"

[identity]
audience = {gateway_id}
required_assurance = "substantial"

[[identity.issuers]]
issuer = {issuer}
jwks = "keys/identity.jwks.json"

[upstream_tls]
ca = "keys/ca.pem"
cert = "keys/client-gateway.pem"
key = "keys/client-gateway.key.pem"

[fanout]
provider_deadline_s = {provider_deadline_s}
carrier_deadline_s = 2

[store]
url = {store_url}

# Unbind tickets: idle workers look every 0.2 s (new tickets wake them at once).
[delivery]
poll_interval_s = 0.2
backoff_initial_s = 0.2
backoff_max_s = 2
unbind_deadline_s = 5
lease_s = 30

# Carriers report every event live from now on; earlier ones as history.
[check_recycled]
history_start = {history_start}

# Recycled-number notices: providers get seconds to act, not days.
[notices]
deadline_s = {notice_deadline_s}
min_action_s = {notice_deadline_s}
check_interval_s = 0.2
backoff_initial_s = 0.2
backoff_max_s = 1
push_deadline_s = 2
lease_s = 30
poll_wait_s = 5

[admin]
client_cns = {admin_cns}

# Providers invited by the regulator join here; the dev CA is the federation CA.
[enrollment]
ca_cert = "keys/ca.pem"
ca_key = "keys/ca.key.pem"
listen = "127.0.0.1:0"
gate_timeout_s = 30
"""

# The demo portal's configuration; the story's people are appended.
_PORTAL_TOML = """\
# Written by `onecert demo`: the citizen's portal, development mode. Its
# identity step signs assertions with the dev identity key for made-up people.
[portal]
mode = "development"
listen = "127.0.0.1:0"
log_json = true

[gateway]
address = {gateway_address}
ca = "keys/ca.pem"
cert = "keys/client-portal.pem"
key = "keys/client-portal.key.pem"

[dev_identity]
key = "keys/identity.key.pem"
idn_key = "keys/idn.key"
issuer = {issuer}
audience = {audience}
"""


def _upstreams_toml(
    carriers: Sequence[CarrierSpec], providers: Sequence[ProviderSpec], addresses: Mapping[str, str]
) -> str:
    """The ``[[carriers]]`` and ``[[providers]]`` tables, each at its address."""
    lines: list[str] = []
    for carrier in carriers:
        lines += [
            "",
            "[[carriers]]",
            f"id = {_toml(carrier.id)}",
            f"name = {_toml(carrier.name)}",
            f"address = {_toml(addresses[carrier.id])}",
            f"prefixes = {_toml(list(carrier.prefixes))}",
        ]
    for provider in providers:
        if provider.joins:
            continue  # not configured: it joins by invitation
        lines += [
            "",
            "[[providers]]",
            f"id = {_toml(provider.id)}",
            f"name = {_toml(provider.name)}",
            f"category = {_toml(provider.category.value)}",
            f"address = {_toml(addresses[provider.id])}",
        ]
        if provider.notices != "push":
            lines.append(f"delivery = {_toml(provider.notices)}")
        if provider.down:
            lines.append("# down: configured, but nothing listens there")
    return "\n".join(lines) + "\n"


def adapter_argv(
    keys: DevKeys,
    role: str,
    adapter_id: str,
    ready: Path,
    *,
    seed: int = DEFAULT_SEED,
    python: str = sys.executable,
) -> list[str]:
    """The command that starts one demo adapter (``role``: ``carrier`` or ``provider``)
    on a free port, serving mutual TLS with the dev ``keys`` and writing its port
    to ``ready`` once it serves."""
    return [
        python,
        "-m",
        "onecert.adapters.demo",
        role,
        "--id",
        adapter_id,
        "--seed",
        str(seed),
        "--listen",
        "127.0.0.1:0",
        "--gateway-jwks",
        str(keys.gateway_jwks),
        "--gateway-issuer",
        GATEWAY_ID,
        "--tls-cert",
        str(keys.server_cert),
        "--tls-key",
        str(keys.server_key),
        "--client-ca",
        str(keys.ca_cert),
        "--ready-file",
        str(ready),
    ]


class DemoFederation:
    """Carriers, providers and a gateway, each in its own process, over mutual TLS.

    Args:
        directory: where keys (``keys/``), logs (``logs/``), ready files
            (``run/``), the pid list (``pids``) and ``gateway.toml`` go.
        seed: the seed of the synthetic data.
        carriers: the carriers to start.
        providers: the providers to configure; those marked ``down`` are
            configured in the gateway but never started.
        python: the interpreter that runs the processes.
        startup_timeout: seconds every process gets to become ready.
        provider_deadline_s: the gateway's deadline for each provider call.
        notice_deadline_s: how long providers have to act on a
            recycled-number notice (days in production; seconds here).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        seed: int = DEFAULT_SEED,
        carriers: Sequence[CarrierSpec] = CARRIERS,
        providers: Sequence[ProviderSpec] = PROVIDERS,
        python: str = sys.executable,
        startup_timeout: float = 30.0,
        provider_deadline_s: float = 3.0,
        notice_deadline_s: float = 2.0,
    ) -> None:
        if notice_deadline_s <= 0:
            raise ValueError("notice_deadline_s must be more than zero")
        self.directory = Path(directory)
        self.seed = seed
        self.carriers = tuple(carriers)
        self.providers = tuple(providers)
        self.python = python
        self.startup_timeout = startup_timeout
        self.provider_deadline_s = provider_deadline_s
        self.notice_deadline_s = notice_deadline_s
        # A client certificate for every caller of the gateway: carriers report
        # number events; providers that poll fetch their notices.
        clients = dict.fromkeys(
            [*DEFAULT_CLIENTS, ADMIN_CN, *(c.id for c in self.carriers)]
            + [p.id for p in self.providers if p.notices == "poll"]
        )
        self.keys = DevKeys.at(self.directory / "keys", clients=clients)
        self.config_path = self.directory / "gateway.toml"
        self.database = self.directory / "onecert.db"
        self.logs = self.directory / "logs"
        self.pids_file = self.directory / "pids"
        self.lock_file = self.directory / "lock"
        self._lock = DirectoryLock(self.lock_file)
        self._run = self.directory / "run"
        # Written once the gateway is ready: providers that poll read it.
        self.gateway_address_file = self._run / "gateway.address"
        self.processes: list[ManagedProcess] = []
        self.gateway: ManagedProcess | None = None
        self.portal: ManagedProcess | None = None
        self.portal_config_path = self.directory / "portal.toml"
        self.portal_url = ""
        # Since when the carriers report live; what came before they report as
        # history (see report_history). Set when the config is written.
        self.history_start: datetime | None = None
        self.history_reported = 0
        self._down_ports: dict[str, int] = {}
        self.joined: list[Joined] = []

    # ------------------------------------------------------------ set-up

    def lock(self) -> None:
        """Take ``DIR/lock`` for this federation until :meth:`stop` (see :class:`DirectoryLock`).

        Raises:
            DirectoryInUseError: another live process holds it.
        """
        self._lock.acquire()

    def prepare(self) -> DevKeys:
        """Fresh dev keys in ``DIR/keys``, empty ``logs/`` and ``run/``, no old state.

        Takes the directory's lock first (see :meth:`lock`).
        """
        self.lock()
        for stale in (self.logs, self._run):
            shutil.rmtree(stale, ignore_errors=True)
            stale.mkdir(parents=True)
        self.pids_file.unlink(missing_ok=True)
        # The gateway's SQLite state from an earlier run (the default store
        # sits next to the config): every run starts from a clean slate.
        for suffix in ("", "-wal", "-shm"):
            self.database.with_name(self.database.name + suffix).unlink(missing_ok=True)
        return init_dev_keys(self.keys.directory, clients=self.keys.clients, force=True)

    @property
    def store_url(self) -> str:
        """The gateway's database, as ``onecert audit verify --url`` takes it."""
        return f"sqlite:///{self.database.resolve()}"

    def _spawn(self, process: ManagedProcess) -> None:
        # If the demo itself is killed (SIGKILL leaves no time to clean up), the
        # kernel sends SIGTERM to its children, so no process is left running;
        # each child asks for that itself (no preexec_fn: see onecert.sdk._parent).
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{PARENT_PID_ENV: str(os.getpid())})
        with process.log.open("wb") as log:
            process.popen = subprocess.Popen(  # noqa: S603  # our own interpreter and arguments
                process.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        process.started_at = time.perf_counter()
        self.processes.append(process)
        self._write_pids()

    def _serve_command(self, role: str, config: Path) -> ManagedProcess:
        # Spawn `onecert ROLE serve --config CONFIG`, logging to logs/ROLE.log.
        process = ManagedProcess(
            name=role,
            role=role,
            argv=[self.python, "-m", "onecert.cli", role, "serve", "--config", str(config)],
            log=self.logs / f"{role}.log",
        )
        self._spawn(process)
        return process

    def _write_pids(self) -> None:
        pids = {p.name: p.pid for p in self.processes if p.pid is not None}
        partial = self.pids_file.with_name("pids.partial")
        partial.write_text(json.dumps(pids, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, self.pids_file)

    def start_adapters(self) -> list[ManagedProcess]:
        """Spawn every carrier and every provider not marked down; return at once."""
        started = []
        for role, ids in (
            ("carrier", [c.id for c in self.carriers]),
            ("provider", [p.id for p in self.providers if not p.down]),
        ):
            for adapter_id in ids:
                ready = self._run / f"{adapter_id}.port"
                argv = adapter_argv(
                    self.keys, role, adapter_id, ready, seed=self.seed, python=self.python
                )
                if role == "provider":
                    spec = next(p for p in self.providers if p.id == adapter_id)
                    known = provider_spec(adapter_id)
                    if spec.delay_s or (known is not None and known.delay_s):
                        argv += ["--delay", str(spec.delay_s)]
                    if known is None:
                        argv += ["--users", str(spec.filler_users)]
                    if spec.ignores_notices:
                        argv.append("--ignore-notices")
                    if spec.joins:
                        argv += join_argv(self._run, adapter_id)
                    if spec.notices == "poll":
                        argv += [
                            "--poll-notices",
                            str(self.gateway_address_file),
                            "--client-cert",
                            str(self.keys.client_cert(adapter_id)),
                            "--client-key",
                            str(self.keys.client_key(adapter_id)),
                        ]
                else:
                    argv += ["--idn-key", str(self.keys.idn_key)]
                process = ManagedProcess(
                    name=adapter_id,
                    role=role,
                    argv=argv,
                    log=self.logs / f"{adapter_id}.log",
                    ready_file=ready,
                )
                self._spawn(process)
                started.append(process)
        return started

    async def wait_ready(self, processes: Sequence[ManagedProcess]) -> None:
        """Wait until each process reports its port, then check its health.

        Raises:
            StartupError: a process exited, or was not ready in time.
        """
        deadline = time.perf_counter() + self.startup_timeout
        pending = list(processes)
        failures: list[tuple[ManagedProcess, str]] = []
        while pending:
            for process in list(pending):
                port = _reported_port(process)
                status = process.exit_status()
                if port is not None:
                    process.port = port
                    process.ready_s = time.perf_counter() - process.started_at
                    pending.remove(process)
                elif status is not None:
                    failures.append((process, f"exited with status {status} before it was ready"))
                    pending.remove(process)
            if pending and time.perf_counter() > deadline:
                failures += [
                    (p, f"was not ready after {self.startup_timeout:g} s") for p in pending
                ]
                break
            if pending:
                await asyncio.sleep(_POLL_S)
        if failures:
            raise StartupError(failures)
        unhealthy = await asyncio.gather(*(self._health(p) for p in processes))
        failures = [(p, why) for p, why in zip(processes, unhealthy, strict=True) if why]
        if failures:
            raise StartupError(failures)

    def client_tls(self, client: str = ADMIN_CN) -> ClientTLS:
        """Mutual TLS as the dev client ``client``: admin, portal, gateway, or a
        carrier's or provider's id."""
        return ClientTLS(
            ca_file=self.keys.ca_cert,
            cert_file=self.keys.client_cert(client),
            key_file=self.keys.client_key(client),
        )

    async def _health(self, process: ManagedProcess) -> str:
        tls = self.client_tls()
        async with grpc.aio.secure_channel(process.address, tls.credentials()) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return f"did not answer its health check ({exc.code().name}: {exc.details()})"
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            return f"reports {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}"
        return ""

    def write_gateway_config(self, adapters: Sequence[ManagedProcess]) -> Path:
        """Write ``DIR/gateway.toml``: production mode, mutual TLS everywhere.

        Durable state in ``DIR/onecert.db``; delivery and notice timings cut
        from minutes and days to fractions of a second and seconds, so the
        demo sees tickets delivered and notice deadlines pass.
        """
        by_name = {p.name: p for p in adapters}
        addresses = {c.id: by_name[c.id].address for c in self.carriers}
        for provider in self.providers:
            if provider.down:
                # Configured but down: a port nobody listens on.
                port = self._down_ports.setdefault(provider.id, free_port())
                addresses[provider.id] = f"127.0.0.1:{port}"
            else:
                addresses[provider.id] = by_name[provider.id].address
        self.history_start = datetime.now(UTC).replace(microsecond=0)
        text = _GATEWAY_TOML.format(
            gateway_id=_toml(GATEWAY_ID),
            issuer=_toml(IDENTITY_ISSUER),
            provider_deadline_s=_toml(self.provider_deadline_s),
            store_url=_toml("sqlite:///" + self.database.name),
            history_start=_toml(self.history_start.isoformat()),
            notice_deadline_s=_toml(self.notice_deadline_s),
            admin_cns=_toml([ADMIN_CN]),
        )
        text += _upstreams_toml(self.carriers, self.providers, addresses)
        self.config_path.write_text(text, encoding="utf-8")
        return self.config_path

    def start_gateway(self) -> ManagedProcess:
        """Spawn ``onecert gateway serve --config DIR/gateway.toml``; return at once."""
        process = self.gateway = self._serve_command("gateway", self.config_path)
        return process

    async def start(self, *, on_step: Callable[[str, float], None] | None = None) -> None:
        """Everything: keys, adapters, config, gateway; each checked healthy.

        Args:
            on_step: called after each step with its name ("keys", "adapters",
                "gateway") and the seconds it took.

        Raises:
            DirectoryInUseError: another federation runs in this directory;
                nothing in it was changed.
            StartupError: a process did not start (the others keep running:
                call :meth:`stop`).
        """

        def step(name: str, timer: _Timer) -> None:
            if on_step is not None:
                on_step(name, timer.elapsed())

        timer = _Timer()
        # Key generation runs in a thread: CPU-bound, and the loop stays free.
        await asyncio.to_thread(self.prepare)
        step("keys", timer)
        timer = _Timer()
        adapters = self.start_adapters()
        await self.wait_ready(adapters)
        step("adapters", timer)
        timer = _Timer()
        self.write_gateway_config(adapters)
        gateway = self.start_gateway()
        await self.wait_ready([gateway])
        write_ready_file(self.gateway_address_file, gateway.address)
        self.history_reported = await report_history(self)
        step("gateway", timer)
        # The providers left out of gateway.toml: invited, and waited for until active.
        self.joined = [await invite_and_wait(self, p) for p in self.providers if p.joins]

    def write_portal_config(self) -> Path:
        """Write ``DIR/portal.toml``: the citizen's portal in development mode, its
        development identity step offering the story's people (made up)."""
        from onecert.adapters.demo._data import STORY  # noqa: PLC0415 - the story only when a portal runs

        # The story's citizen, who got her old number, who had her current one.
        people = (
            (STORY.citizen_sub, STORY.citizen),
            (_NEXT_HOLDER_SUB, STORY.next_holder),
            (_PREVIOUS_HOLDER_SUB, STORY.previous_holder),
        )
        text = _PORTAL_TOML.format(
            gateway_address=_toml(self.gateway_address),
            issuer=_toml(IDENTITY_ISSUER),
            audience=_toml(GATEWAY_ID),
        )
        for sub, person in people:
            text += (
                "\n[[dev_identity.citizens]]\n"
                f"sub = {_toml(sub)}\nname = {_toml(person.name)}\n"
                f"document = {_toml(person.document_number)}\n"
            )
        self.portal_config_path.write_text(text, encoding="utf-8")
        return self.portal_config_path

    async def start_portal(self) -> str:
        """Start ``onecert portal serve`` on ``DIR/portal.toml`` once the gateway runs;
        returns the portal's URL when it listens.

        Raises:
            StartupError: the portal exited or did not listen in time.
        """
        self.write_portal_config()
        process = self.portal = self._serve_command("portal", self.portal_config_path)
        self.portal_url = (await _logged(process, _PORTAL_READY, self.startup_timeout)).group(1)
        return self.portal_url

    @property
    def gateway_address(self) -> str:
        if self.gateway is None:
            raise RuntimeError("the gateway is not started")
        return self.gateway.address

    # ------------------------------------------------------------ shutdown

    def stop(self, timeout: float = 5.0) -> StopReport:
        """SIGTERM every process still running, SIGKILL those that outlive ``timeout``.

        Safe to call repeatedly; blocks until every process has exited, then
        releases the directory's lock.
        """
        report = _stop_all(self.processes, timeout)
        self._lock.release()
        return report


def _stop_all(processes: Sequence[ManagedProcess], timeout: float) -> StopReport:
    """SIGTERM every process still running, SIGKILL those that outlive ``timeout``."""
    timer = _Timer()
    running = [p for p in processes if p.popen is not None and p.popen.poll() is None]
    killed = end_processes([p.popen for p in running if p.popen is not None], timeout)
    killed_names = tuple(p.name for p in running if p.popen in killed)
    failed = tuple(
        (p.name, status)
        for p in running
        if (status := p.exit_status()) not in _STOPPED_OK and p.name not in killed_names
    )
    return StopReport(
        stopped=len(running), killed=killed_names, failed=failed, elapsed_s=timer.elapsed()
    )


def _reported_port(process: ManagedProcess) -> int | None:
    """The port a started process reports: its ready file, or the gateway's log line."""
    if process.ready_file is not None:
        try:
            return int(process.ready_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
    # The gateway prints its port; its log holds that line.
    match = _GATEWAY_READY.search("\n".join(process.log_tail(200)))
    return int(match.group(1)) if match else None


async def _logged(process: ManagedProcess, line: re.Pattern[str], wait_s: float) -> re.Match[str]:
    """Wait until ``process`` logs ``line``; it is then ready.

    Raises:
        StartupError: the process exited, or did not log the line within ``wait_s``.
    """
    deadline = time.perf_counter() + wait_s
    while True:
        match = line.search("\n".join(process.log_tail(200)))
        if match:
            process.ready_s = time.perf_counter() - process.started_at
            return match
        status = process.exit_status()
        if status is not None:
            raise StartupError([(process, f"exited with status {status} before it was ready")])
        if time.perf_counter() > deadline:
            raise StartupError([(process, f"was not ready after {wait_s:g} s")])
        await asyncio.sleep(_POLL_S)


async def report_history(federation: DemoFederation) -> int:
    """Each carrier reports the past events its records hold, as history.

    The lookup shows a citizen's former numbers as the carriers' registries
    have them (cancelled, recycled); CheckRecycled answers from the events the
    gateway has recorded. A carrier that joins reports its past events once,
    as history (recorded, no notice sent), so both give the same answer.
    Returns how many events were reported.
    """
    reported = 0
    start = federation.history_start
    for carrier in federation.carriers:
        events = [
            e
            for e in history_events(carrier.id, federation.seed)
            if start is None or e.effective_at < start
        ]
        if not events:
            continue
        async with CarrierGatewayClient(
            federation.gateway_address, tls=federation.client_tls(carrier.id)
        ) as client:
            for event in events:
                await client.report_number_event(
                    event_id=event.event_id,
                    msisdn=event.msisdn,
                    event_type=event.event_type,
                    effective_at=event.effective_at,
                    history=True,
                )
                reported += 1
    return reported
