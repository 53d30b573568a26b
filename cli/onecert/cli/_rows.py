"""The numbered rows of the last ``onecert lookup``, so ``onecert unbind ROW`` can act on one.

A handle is about 150 characters of sealed data: typing it, or pasting it into
a command line, puts it into shell history. The lookup instead keeps the
handles of the rows it printed in ``last-lookup.json`` in a per-user state
directory (``$ONECERT_STATE_DIR``, else ``$XDG_STATE_HOME/onecert``, else
``~/.local/state/onecert``), a file only its owner may read (mode 0600, in a
directory of mode 0700); ``onecert unbind ROW`` reads it back. A file that
others could read, or that another user owns, is never used.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecert.cli import CommandError

if TYPE_CHECKING:
    from onecert.sdk.client import Account, Result

__all__ = ["Row", "load_row", "number_rows", "save_rows", "state_dir"]

_FILE = "last-lookup.json"
_VERSION = 1


@dataclass(frozen=True)
class Row:
    """A numbered row of a lookup: one handle, so one ticket and one assertion.

    Attributes:
        number: the row's number as printed (from 1).
        action: "unbind" (your account) or "release" (your number, from one of
            a previous holder's accounts).
        result: the provider's answer the row comes from.
        account: the account, for "unbind" rows.
        handle: what ``onecert unbind`` sends.
    """

    number: int
    action: str
    result: Result
    account: Account | None
    handle: str


def number_rows(results: Sequence[Result]) -> list[Row]:
    """The rows a lookup prints, numbered in printed order: your accounts (left
    behind first), then one row per previous holder's account on your numbers;
    only what can be acted on gets a number."""
    from onecert.sdk.client import Attribution  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    accounts = [(r, a) for r in results for a in r.accounts]
    # Left behind first: someone else may be able to use these accounts now.
    accounts.sort(key=lambda item: item[1].attribution is not Attribution.LEFT_BEHIND)
    rows: list[Row] = []
    for result, account in accounts:
        if account.handle:
            rows.append(Row(len(rows) + 1, "unbind", result, account, account.handle))
    for result in results:
        if result.previous_holder_count:
            for handle in result.release_handles:
                rows.append(Row(len(rows) + 1, "release", result, None, handle))
    return rows


def state_dir() -> Path:
    """The per-user directory where the last lookup's rows are kept."""
    explicit = os.environ.get("ONECERT_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "onecert"


def save_rows(gateway: str, query_id: str, rows: Sequence[Row]) -> Path:
    """Write the rows' handles for ``onecert unbind ROW``; returns the file.

    The file is created with mode 0600 and replaced atomically, so no reader
    ever sees half of it and no other user can read it at any moment.
    """
    directory = state_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    document = {
        "version": _VERSION,
        "gateway": gateway,
        "query_id": query_id,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": [
            {
                "row": row.number,
                "action": row.action,
                "provider": row.result.provider_name or row.result.provider_id,
                "msisdn": row.result.msisdn,
                "handle": row.handle,
            }
            for row in rows
        ],
    }
    target = directory / _FILE
    partial = directory / f".{_FILE}.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or an older file said
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            fd = -1
            json.dump(document, file, indent=1)
        os.replace(partial, target)
    finally:
        if fd != -1:
            os.close(fd)
        partial.unlink(missing_ok=True)
    return target


def _read_private(path: Path) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise CommandError(
            "no lookup to take a row from: run `onecert lookup` first, or give --handle"
        ) from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, encoding="utf-8") as file:
        info = os.fstat(file.fileno())
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CommandError(
                f"{path} is not private to you (mode {stat.S_IMODE(info.st_mode):o}); "
                "it is not used: run `onecert lookup` again"
            )
        try:
            document: dict[str, Any] = json.load(file)
        except ValueError:
            raise CommandError(f"{path} is damaged: run `onecert lookup` again") from None
    return document


@dataclass(frozen=True)
class SavedRow:
    """A row read back from the last lookup."""

    number: int
    action: str
    provider: str
    msisdn: str
    handle: str


def load_row(number: int, *, gateway: str) -> SavedRow:
    """Row ``number`` of the last lookup on ``gateway``.

    Raises:
        CommandError: no lookup, a lookup on another gateway, no such row, or
            a file others could read.
    """
    path = state_dir() / _FILE
    document = _read_private(path)
    if document.get("version") != _VERSION or not isinstance(document.get("rows"), list):
        raise CommandError(f"{path} is from another version: run `onecert lookup` again")
    if document.get("gateway") != gateway:
        raise CommandError(
            f"the last lookup asked {document.get('gateway')}, not {gateway}: "
            "run `onecert lookup` on this gateway first"
        )
    rows = document["rows"]
    for row in rows:
        if row.get("row") == number:
            return SavedRow(
                number=number,
                action=str(row["action"]),
                provider=str(row["provider"]),
                msisdn=str(row["msisdn"]),
                handle=str(row["handle"]),
            )
    if not rows:
        raise CommandError("the last lookup showed nothing that can be unbound")
    raise CommandError(f"the last lookup has rows 1 to {len(rows)}; there is no row {number}")
