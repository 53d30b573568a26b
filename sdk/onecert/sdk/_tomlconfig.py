"""Reading a parsed TOML document into validated settings, one table at a time.

Shared by the gateway's and the adapters' configuration modules so a bad key
reads the same everywhere: every error names the key at fault
(``fanout.provider_deadline_s``, ``providers[2].address``), an unknown key
gets a "did you mean" hint, and relative paths are resolved against the
directory of the file, so a config can travel with its keys.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

__all__ = ["ConfigError", "Table"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key at fault."""


# "No default": the key is required.
_REQUIRED: Final = object()


class Table:
    """One TOML table being read: typed getters that name the key on error,
    and :meth:`finish` to refuse keys nobody asked for (typos).

    Each getter takes an optional default, returned as is when the key is
    absent; without one the key is required.

    Args:
        data: the table as ``tomllib`` parsed it.
        prefix: its dotted name in the file ("" for the document itself).
        base: the directory relative paths are resolved against.
    """

    def __init__(self, data: Mapping[str, Any], prefix: str, base: Path) -> None:
        self._data = data
        self._prefix = prefix
        self._base = base
        self._seen: set[str] = set()

    @property
    def base(self) -> Path:
        """The directory relative paths are resolved against."""
        return self._base

    def where(self, key: str) -> str:
        """The key's full name in the file (``server.tls.cert``), for messages."""
        return f"{self._prefix}.{key}" if self._prefix else key

    def has(self, key: str) -> bool:
        """Whether the key is present (without marking it as read)."""
        return key in self._data

    def names(self) -> list[str]:
        """Every key present, in file order."""
        return list(self._data)

    def _get(self, key: str, default: Any) -> Any:
        self._seen.add(key)
        if key in self._data:
            return self._data[key]
        if default is _REQUIRED:
            raise ConfigError(f"{self.where(key)} is required")
        return default

    def string(self, key: str, default: Any = _REQUIRED) -> Any:
        """A string with something in it besides whitespace."""
        value = self._get(key, default)
        if key not in self._data:
            return value
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.where(key)} must be a non-empty string")
        return value

    def raw(self, key: str) -> Any:
        """The value as TOML parsed it, or None when absent."""
        return self._get(key, None)

    def strings(self, key: str, default: Any = _REQUIRED) -> list[str]:
        """A list of non-empty strings."""
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self.where(key)} must be a list of non-empty strings")
        return list(value)

    def boolean(self, key: str, default: Any = _REQUIRED) -> Any:
        """``true`` or ``false``."""
        value = self._get(key, default)
        if key in self._data and not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)} must be true or false")
        return value

    def number(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> Any:
        """A finite integer or float, as a float, within the bounds."""
        return self._number(key, default, "a number", minimum=minimum, maximum=maximum)

    def _number(
        self,
        key: str,
        default: Any,
        what: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> Any:
        value = self._get(key, default)
        if key not in self._data:
            return value
        # bool is an int to Python, never a number to a reader of the file.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{self.where(key)} must be {what}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.where(key)} must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.where(key)} must be at most {maximum}")
        return float(value)

    def seconds(self, key: str, default: Any = _REQUIRED, *, allow_zero: bool = False) -> Any:
        """A duration in seconds, as a float: more than zero, or zero or more."""
        value = self._number(key, default, "a number of seconds")
        if key not in self._data:
            return value
        if value < 0 or (value == 0 and not allow_zero):
            bound = "zero or more" if allow_zero else "more than zero"
            raise ConfigError(f"{self.where(key)} must be {bound} seconds")
        return value

    def integer(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        """An integer (not a float, not a boolean) within the bounds."""
        value = self._get(key, default)
        if key not in self._data:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where(key)} must be an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.where(key)} must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.where(key)} must be at most {maximum}")
        return value

    def path(self, key: str, default: Any = _REQUIRED) -> Any:
        """A file path; ``~`` expanded, a relative one resolved against :attr:`base`."""
        value = self.string(key, default)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._base / path

    def optional_table(self, key: str) -> Table | None:
        """The sub-table ``[prefix.key]``, or None when absent."""
        self._seen.add(key)
        if key not in self._data:
            return None
        value = self._data[key]
        if not isinstance(value, dict):
            raise ConfigError(f"{self.where(key)} must be a table ([{self.where(key)}])")
        return Table(value, self.where(key), self._base)

    def table(self, key: str, *, required: bool = False) -> Table:
        """The sub-table ``[prefix.key]``; an empty one when absent and not required."""
        table = self.optional_table(key)
        if table is None:
            if required:
                raise ConfigError(f"[{self.where(key)}] is required")
            return Table({}, self.where(key), self._base)
        return table

    def tables(self, key: str, *, required: bool = False, what: str) -> list[Table]:
        """The array of tables ``[[prefix.key]]``; ``what`` names one in messages."""
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(
                f"{self.where(key)} must be an array of tables ([[{self.where(key)}]])"
            )
        if required and not value:
            raise ConfigError(f"at least one {what} is required ([[{self.where(key)}]])")
        return [Table(v, f"{self.where(key)}[{i}]", self._base) for i, v in enumerate(value)]

    def refuse_unknown(self, known: Sequence[str]) -> None:
        """Refuse any key not in ``known`` before reading (a misspelt table reads
        better as "unknown" than as the required one missing)."""
        for key in self._data:
            if key not in known:
                raise ConfigError(_unknown(self.where(key), key, known))

    def finish(self) -> None:
        """Refuse any key no getter asked for."""
        for key in self._data:
            if key not in self._seen:
                raise ConfigError(_unknown(self.where(key), key, sorted(self._seen)))


def _unknown(where: str, key: str, known: Sequence[str]) -> str:
    hint = difflib.get_close_matches(key, sorted(known), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown key {where!r}{suggestion}"
