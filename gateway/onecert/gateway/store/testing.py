"""Helpers for tests that need a real database: a SQLite file or a PostgreSQL schema.

A pytest fixture running a test on both databases::

    @pytest.fixture(params=["sqlite", "postgres"])
    async def database(request, tmp_path):
        if request.param == "sqlite":
            yield Database.sqlite(tmp_path / "store.db")
        else:
            async with Database.postgres(request.getfixturevalue("pg_url")) as db:
                yield db

Each PostgreSQL database gets its own schema, dropped afterwards, so tests
can share one server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from onecert.gateway.store._engine import normalize_url
from onecert.gateway.store._store import Store
from onecert.sdk._server import free_port

__all__ = ["Database", "PrivatePostgres"]


@dataclass(frozen=True)
class Database:
    """Where a test's store lives: a URL and, on PostgreSQL, a private schema."""

    url: str
    schema: str | None = None

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return make_url(self.url).get_backend_name()

    def open(self, *, busy_timeout_ms: int = 5000, pool_size: int = 5) -> Store:
        """A new :class:`Store` on this database (as another process would open it)."""
        return Store.open(
            self.url, schema=self.schema, busy_timeout_ms=busy_timeout_ms, pool_size=pool_size
        )

    async def open_upgraded(self) -> Store:
        """A new :class:`Store` with the schema migrated to the newest version."""
        store = self.open()
        await store.upgrade()
        return store

    @classmethod
    def sqlite(cls, path: str | Path) -> Database:
        """A SQLite file database at ``path`` (created on first use)."""
        return cls(f"sqlite+aiosqlite:///{Path(path)}")

    @classmethod
    @asynccontextmanager
    async def postgres(cls, url: str) -> AsyncIterator[Database]:
        """A fresh, empty schema on the PostgreSQL at ``url``, dropped on exit."""
        url = normalize_url(url)
        schema = "t_" + secrets.token_hex(8)
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            try:
                yield cls(url, schema)
            finally:
                async with engine.begin() as conn:
                    await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await engine.dispose()


class PrivatePostgres:
    """A PostgreSQL server of the test's own (``initdb`` and ``pg_ctl`` from the
    installed server), on its own port and a fresh data directory, that a test may
    stop, crash and start again without touching any shared server.

    Run as root, the server runs as the ``postgres`` user (``initdb`` refuses
    root), in a directory under the system's temporary directory that it owns.
    :meth:`find` tells whether the server binaries are installed; :meth:`close`
    stops the server and removes its directory.

    Args:
        port: the TCP port on 127.0.0.1; a free one by default.
    """

    def __init__(self, *, port: int | None = None) -> None:
        bindir = self.find()
        if bindir is None:
            raise FileNotFoundError(
                "no PostgreSQL server (initdb, pg_ctl) under /usr/lib/postgresql"
            )
        self._bin = bindir
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="onecert-pg-"))
        self._data = self.directory / "data"
        self._initialised = False

    @staticmethod
    def find() -> Path | None:
        """The newest installed server's ``bin`` directory, or None."""
        found = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/initdb"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        return found[-1].parent if found else None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its ``postgres`` database (user postgres, trust)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self._bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603  # fixed binaries, our own arguments
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def _prepare(self) -> None:
        if self._initialised:
            return
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        self._initialised = True

    def start(self) -> None:
        """Start the server (initialising its data directory the first time); waits until
        it accepts connections."""
        self._prepare()
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c fsync=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self._data),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, *, crash: bool = False) -> None:
        """Stop the server: a fast shutdown, or with ``crash`` an immediate one (no
        checkpoint, recovery at the next start, as after a power cut)."""
        self._run(
            "pg_ctl",
            "-D",
            str(self._data),
            "-m",
            "immediate" if crash else "fast",
            "-w",
            "-t",
            "60",
            "stop",
        )

    def _processes(self) -> list[int]:
        """The postmaster and every process it started (backends, background workers)."""
        postmaster = int((self._data / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return [postmaster, *map(int, children)]

    def freeze(self) -> None:
        """SIGSTOP every server process: connections stay open and nothing answers,
        as with a server that hangs or a network that drops every packet."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT every server process (after :meth:`freeze`)."""
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server if it runs and remove its directory."""
        try:
            if (self._data / "postmaster.pid").exists():
                with contextlib.suppress(OSError, ValueError):
                    self.thaw()  # a test that froze it may have failed before thawing
                self.stop(crash=True)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
