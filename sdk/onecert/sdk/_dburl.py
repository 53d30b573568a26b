"""Where a database is: a URL, or a plain file path taken as SQLite.

Every place that takes a database (the gateway's ``[store] url``, ``--url``,
``ONECERT_DB_URL``, the SQL adapter's ``database.url``) passes the text
through :func:`database_url`, so a path
like ``onecert.db`` or ``/var/lib/onecert/onecert.db`` means the same SQLite
file everywhere instead of a parse error in one place and not another.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["database_url"]


def database_url(text: str, *, base: str | Path | None = None) -> str:
    """``text`` as a database URL: URLs unchanged, a file path as ``sqlite:///ABSOLUTE``.

    Args:
        text: a URL (``sqlite:///onecert.db``, ``postgresql://host/db``) or a
            path to a SQLite file.
        base: the directory a relative path is relative to (default: the
            current directory).

    Raises:
        ValueError: ``text`` is empty.
    """
    text = text.strip()
    if not text:
        raise ValueError("the database is empty: give a URL or a SQLite file path")
    if "://" in text:
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base or Path.cwd()) / path
    return f"sqlite:///{path.resolve()}"
