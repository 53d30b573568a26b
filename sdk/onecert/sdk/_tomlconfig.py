"""Reading a TOML file into validated, frozen dataclasses, one table at a time.

Shared by the gateway's and the adapters' configuration modules so a bad key
reads the same everywhere: every error names the key at fault
(``fanout.provider_deadline_s``, ``providers[2].address``) and, when the
document came from a file, the file; an unknown key gets a "did you mean"
hint, and relative paths are resolved against the directory of the file, so
a config can travel with its keys.

A setting's default and bounds are written once, on its dataclass field::

    @dataclass(frozen=True)
    class FanoutConfig:
        provider_deadline_s: float = setting(3.0, seconds=True)
        retry_budget_ratio: float = setting(0.2, minimum=0.0, maximum=1.0)

and :meth:`Table.read` builds the dataclass from its table, each key typed
by its field's annotation (``str``, ``bool``, ``int``, ``float``, ``Path``,
``tuple[str, ...]``, or one of those ``| None``). What is not one key of one
type (a rule across keys, a nested table) is read by hand and passed to
:meth:`Table.read` by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import tomllib
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, Union, get_args, get_origin, overload

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["ConfigError", "Setting", "Table", "load_toml", "setting"]

T = TypeVar("T")
D = TypeVar("D")
DC = TypeVar("DC", bound="DataclassInstance")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key at fault."""


# "No default": the key is required.
_REQUIRED: Final = object()
# Where a field's Setting lives in its metadata.
_KEY: Final = "onecert.config"


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a field accepts beyond its type; build with :func:`setting`."""

    minimum: float | None = None
    maximum: float | None = None
    seconds: bool = False
    allow_zero: bool = False
    choices: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    pattern_text: str = ""
    why: str = ""


def setting(
    default: T,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    seconds: bool = False,
    allow_zero: bool = False,
    choices: Sequence[str] = (),
    pattern: str | None = None,
    pattern_text: str = "",
    why: str = "",
) -> T:
    """A dataclass field with its config default and bounds, the one place they are written.

    A required key is a plain field without a default (``address: str``).

    Args:
        default: the value when the key is absent.
        minimum: numbers: the smallest value allowed (inclusive).
        maximum: numbers: the largest value allowed (inclusive).
        seconds: a duration in seconds: more than zero (zero or more with
            ``allow_zero``), named as seconds in messages.
        allow_zero: with ``seconds``, zero is allowed.
        choices: strings: the values allowed.
        pattern: strings: a regular expression the whole value must match,
            described by ``pattern_text`` in messages.
        pattern_text: what ``pattern`` means in words ("1 to 64 characters of ...").
        why: said after a bound in messages ("the contract's limit").
    """
    spec = Setting(
        minimum=minimum,
        maximum=maximum,
        seconds=seconds,
        allow_zero=allow_zero,
        choices=tuple(choices),
        pattern=None if pattern is None else re.compile(pattern),
        pattern_text=pattern_text,
        why=why,
    )
    field: T = dataclasses.field(default=default, metadata={_KEY: spec})
    return field


def load_toml(path: str | Path, parse: Callable[[Mapping[str, Any], Path], D]) -> D:
    """Read the TOML file at ``path`` and ``parse(document, directory)`` it.

    Every :class:`ConfigError` names the file: unreadable, not UTF-8, not
    TOML, or refused by ``parse`` (its message then ends with ``(in FILE)``).
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {file} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {file} is not UTF-8 text") from exc
    try:
        return parse(data, file.resolve().parent)
    except ConfigError as exc:
        # Same class (callers may catch a subclass); the message still starts
        # with the key at fault.
        raise type(exc)(f"{exc} (in {file})") from None


class Table:
    """One TOML table being read: typed getters that name the key on error,
    :meth:`read` for a whole dataclass, and :meth:`finish` to refuse keys
    nobody asked for (typos).

    Each getter takes an optional default, returned as is when the key is
    absent; without one the key is required. Numbers have no getter: they
    are read by :meth:`read`, from fields that carry their bounds.

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

    def _get(self, key: str, default: object) -> Any:
        self._seen.add(key)
        if key in self._data:
            return self._data[key]
        if default is _REQUIRED:
            raise ConfigError(f"{self.where(key)} is required")
        return default

    # ------------------------------------------------------------ one key

    @overload
    def string(self, key: str) -> str: ...
    @overload
    def string(self, key: str, default: T) -> str | T: ...
    def string(self, key: str, default: object = _REQUIRED) -> object:
        """A string with something in it besides whitespace."""
        value = self._get(key, default)
        if key not in self._data:
            return value
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.where(key)} must be a non-empty string")
        return value

    def raw(self, key: str) -> object:
        """The value as TOML parsed it, or None when absent."""
        return self._get(key, None)

    @overload
    def strings(self, key: str) -> list[str]: ...
    @overload
    def strings(self, key: str, default: Sequence[str]) -> list[str]: ...
    def strings(self, key: str, default: object = _REQUIRED) -> list[str]:
        """A list of non-empty strings."""
        return self._strings(key, default)

    def _strings(self, key: str, default: object) -> list[str]:
        value = self._get(key, default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self.where(key)} must be a list of non-empty strings")
        return list(value)

    @overload
    def boolean(self, key: str) -> bool: ...
    @overload
    def boolean(self, key: str, default: T) -> bool | T: ...
    def boolean(self, key: str, default: object = _REQUIRED) -> object:
        """``true`` or ``false``."""
        value = self._get(key, default)
        if key in self._data and not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)} must be true or false")
        return value

    def _number(self, key: str, default: object, spec: Setting) -> object:
        value = self._get(key, default)
        if key not in self._data:
            return value
        what = "a number of seconds" if spec.seconds else "a number"
        # bool is an int to Python, never a number to a reader of the file.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{self.where(key)} must be {what}")
        if spec.seconds and (value < 0 or (value == 0 and not spec.allow_zero)):
            bound = "zero or more" if spec.allow_zero else "more than zero"
            raise ConfigError(f"{self.where(key)} must be {bound} seconds")
        self._check_bounds(key, value, spec)
        return float(value)

    def _integer(self, key: str, default: object, spec: Setting) -> object:
        value = self._get(key, default)
        if key not in self._data:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where(key)} must be an integer")
        self._check_bounds(key, value, spec)
        return value

    def _check_bounds(self, key: str, value: float, spec: Setting) -> None:
        unit = " seconds" if spec.seconds else ""
        why = f" ({spec.why})" if spec.why else ""
        if spec.minimum is not None and value < spec.minimum:
            raise ConfigError(f"{self.where(key)} must be at least {spec.minimum}{unit}{why}")
        if spec.maximum is not None and value > spec.maximum:
            raise ConfigError(f"{self.where(key)} must be at most {spec.maximum}{unit}{why}")

    def _text(self, key: str, default: object, spec: Setting) -> object:
        value = self.string(key, default)
        if key not in self._data:
            return value
        assert isinstance(value, str)
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{self.where(key)} must be one of {', '.join(spec.choices)}")
        if spec.pattern is not None and not spec.pattern.fullmatch(value):
            raise ConfigError(f"{self.where(key)} must be {spec.pattern_text}")
        return value

    @overload
    def path(self, key: str) -> Path: ...
    @overload
    def path(self, key: str, default: None) -> Path | None: ...
    def path(self, key: str, default: object = _REQUIRED) -> Path | None:
        """A file path; ``~`` expanded, a relative one resolved against :attr:`base`."""
        return self._path(key, default)

    def _path(self, key: str, default: object) -> Path | None:
        value = self.string(key, default)
        if value is None:
            return None
        if isinstance(value, Path):
            return value
        assert isinstance(value, str)
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._base / path

    # ------------------------------------------------------------ a dataclass

    def read(self, cls: type[DC], /, **given: Any) -> DC:
        """Build the dataclass ``cls`` from this table, one key per field.

        Each field not in ``given`` is read as by :meth:`read_fields`; the
        fields in ``given`` (read by hand: nested tables, rules across keys)
        are passed as they are.
        """
        names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in given]
        return cls(**given, **self.read_fields(cls, names))

    def read_whole(self, cls: type[DC], /, **given: Any) -> DC:
        """:meth:`read`, then :meth:`finish`: a table that is exactly one dataclass."""
        config = self.read(cls, **given)
        self.finish()
        return config

    def read_fields(self, cls: type[DataclassInstance], names: Sequence[str]) -> dict[str, Any]:
        """Read the keys ``names``, each typed, defaulted and bounded by the field of ``cls``.

        A field's type comes from its annotation (``str``, ``bool``, ``int``,
        ``float``, ``Path``, ``tuple[str, ...]``, or one of those ``| None``),
        its default and bounds from the field (see :func:`setting`); a field
        without a default is a required key. Keys read are marked for
        :meth:`finish`. Raises TypeError (a bug, not a config error) for a
        field of a type no getter reads: read that one by hand.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name in names:
            f = fields[name]
            default: object = _REQUIRED
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            spec = f.metadata.get(_KEY, Setting())
            values[name] = self._typed(name, _hint(cls, f), default, spec)
        return values

    def _typed(self, key: str, hint: object, default: object, spec: Setting) -> object:
        args = get_args(hint)
        if get_origin(hint) in (Union, types.UnionType) and type(None) in args:
            (inner,) = (a for a in args if a is not type(None))
            return self._typed(key, inner, default, spec)
        if hint is bool:
            return self.boolean(key, default)
        if hint is int:
            return self._integer(key, default, spec)
        if hint is float:
            return self._number(key, default, spec)
        if hint is str:
            return self._text(key, default, spec)
        if hint is Path:
            return self._path(key, default)
        if get_origin(hint) is tuple and args == (str, Ellipsis):
            return tuple(self._strings(key, default))
        raise TypeError(f"no reader for {key}: {hint!r}; read it by hand and pass it to read()")

    # ------------------------------------------------------------ tables

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


def _hint(cls: type, f: dataclasses.Field[Any]) -> object:
    # The field's annotation, evaluated in the dataclass's module (a string
    # under `from __future__ import annotations`). One field at a time: a
    # field passed by hand may name a type imported for type checking only.
    if not isinstance(f.type, str):
        return f.type
    return eval(f.type, vars(sys.modules[cls.__module__]))  # noqa: S307 - the dataclass's own annotation, never config input
