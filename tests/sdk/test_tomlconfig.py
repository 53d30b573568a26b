"""The shared TOML table reader behind every onecert configuration file."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onecert.adapters.sql import ConfigError as SqlConfigError
from onecert.gateway._config import ConfigError as GatewayConfigError
from onecert.sdk._tomlconfig import ConfigError, Table, load_toml, setting

BASE = Path("/etc/onecert")


def test_unknown_key_is_refused_with_a_hint() -> None:
    """A key no getter read is refused by finish(), naming it and the closest known key."""
    t = Table({"server": {"listen": ":1", "lisen": ":2"}}, "", BASE)
    server = t.table("server")
    server.string("listen")
    with pytest.raises(
        ConfigError, match=re.escape("unknown key 'server.lisen' (did you mean 'listen'?)")
    ):
        server.finish()


def test_refuse_unknown_hints_at_known_tables() -> None:
    """refuse_unknown() names a misspelt table before anything is read."""
    t = Table({"provder": {}}, "", BASE)
    with pytest.raises(
        ConfigError, match=re.escape("unknown key 'provder' (did you mean 'provider'?)")
    ):
        t.refuse_unknown(("provider", "server"))


def test_unknown_key_without_a_close_match_has_no_hint() -> None:
    """A key like nothing known is refused without a guess."""
    t = Table({"zzz": 1}, "", BASE)
    t.boolean("verbose", False)
    with pytest.raises(ConfigError) as info:
        t.finish()
    assert str(info.value) == "unknown key 'zzz'"


@pytest.mark.parametrize(
    ("value", "read", "message"),
    [
        (3, lambda t: t.string("k"), "top.k must be a non-empty string"),
        ("  ", lambda t: t.string("k"), "top.k must be a non-empty string"),
        ("x", lambda t: t.strings("k"), "top.k must be a list of non-empty strings"),
        (1, lambda t: t.boolean("k"), "top.k must be true or false"),
        ("x", lambda t: t.table("k"), "top.k must be a table ([top.k])"),
        ({}, lambda t: t.tables("k", what="item"), "top.k must be an array of tables ([[top.k]])"),
    ],
)
def test_type_errors_name_the_key(
    value: object, read: Callable[[Table], Any], message: str
) -> None:
    """Each getter refuses a value of the wrong type or range with the key's full name."""
    t = Table({"k": value}, "top", BASE)
    with pytest.raises(ConfigError) as info:
        read(t)
    assert str(info.value) == message


def test_required_keys_and_tables() -> None:
    """A missing key without a default, or a required (array of) table(s), is named."""
    t = Table({}, "server", BASE)
    with pytest.raises(ConfigError, match=r"^server\.listen is required$"):
        t.string("listen")
    with pytest.raises(ConfigError, match=re.escape("[server.tls] is required")):
        t.table("tls", required=True)
    with pytest.raises(
        ConfigError, match=re.escape("at least one carrier is required ([[server.carriers]])")
    ):
        t.tables("carriers", required=True, what="carrier")


def test_defaults_are_returned_as_given() -> None:
    """An absent key yields its default untouched, and an absent table is empty."""
    t = Table({}, "", BASE)
    assert t.string("name", None) is None
    assert t.boolean("insecure", False) is False
    assert t.path("db", None) is None
    assert t.optional_table("tls") is None
    assert t.table("fanout").names() == []
    t.finish()


def test_paths_are_resolved_against_the_base() -> None:
    """A relative path is joined to the config's directory; an absolute one is kept."""
    t = Table({"tls": {"cert": "keys/server.pem", "key": "/srv/server.key.pem"}}, "", BASE)
    tls = t.table("tls")
    assert tls.base == BASE
    assert tls.path("cert") == BASE / "keys/server.pem"
    assert tls.path("key") == Path("/srv/server.key.pem")
    tls.finish()


def test_arrays_of_tables_are_named_by_index() -> None:
    """Errors inside [[providers]] say which entry; each entry reads its own keys."""
    t = Table({"providers": [{"id": "a"}, {"id": "b"}]}, "", BASE)
    first, second = t.tables("providers", what="provider")
    assert second.string("id") == "b"
    with pytest.raises(ConfigError, match=r"^providers\[0\]\.address is required$"):
        first.string("address")


def test_one_config_error_for_every_component() -> None:
    """The gateway's and the SQL adapter's ConfigError are the shared class."""
    assert SqlConfigError is ConfigError
    assert GatewayConfigError is ConfigError


@dataclass(frozen=True)
class _Limits:
    """A settings table as a config module declares one: defaults and bounds on the fields."""

    host: str
    workers: int = setting(2, minimum=0, maximum=64)
    ratio: float = setting(0.5, minimum=0.0, maximum=1.0)
    deadline_s: float = setting(3.0, seconds=True, maximum=60, why="the contract's limit")
    grace_s: float | None = setting(None, seconds=True, allow_zero=True)
    mode: str = setting("push", choices=("push", "poll"))
    name: str = setting("gw", pattern=r"[a-z]{1,8}", pattern_text="1 to 8 letters a-z")
    verbose: bool = False
    key: Path | None = None
    tags: tuple[str, ...] = ("a",)


def test_read_takes_every_default_from_the_fields() -> None:
    """Absent keys take the field's default; present ones are typed by the annotation."""
    t = Table({"host": "h", "workers": 4, "ratio": 1, "key": "k.pem", "tags": ["x", "y"]}, "", BASE)
    limits = t.read(_Limits)
    t.finish()
    assert limits == _Limits(host="h", workers=4, ratio=1.0, key=BASE / "k.pem", tags=("x", "y"))
    assert isinstance(limits.ratio, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "limits.host is required"),
        ({"workers": "4"}, "limits.workers must be an integer"),
        ({"workers": 4.0}, "limits.workers must be an integer"),
        ({"workers": True}, "limits.workers must be an integer"),
        ({"ratio": "half"}, "limits.ratio must be a number"),
        ({"ratio": True}, "limits.ratio must be a number"),
        ({"ratio": float("inf")}, "limits.ratio must be a number"),
        ({"verbose": "yes"}, "limits.verbose must be true or false"),
        ({"tags": "a"}, "limits.tags must be a list of non-empty strings"),
        ({"key": 7}, "limits.key must be a non-empty string"),
        ({"grace_s": "1s"}, "limits.grace_s must be a number of seconds"),
    ],
)
def test_read_refuses_a_wrong_type_naming_the_key(data: dict[str, Any], message: str) -> None:
    """A value of the wrong type is refused with the key's full name and the type wanted."""
    t = Table({"host": "h", **data} if data else {}, "limits", BASE)
    with pytest.raises(ConfigError) as info:
        t.read(_Limits)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"workers": -1}, "limits.workers must be at least 0"),
        ({"workers": 65}, "limits.workers must be at most 64"),
        ({"ratio": 1.5}, "limits.ratio must be at most 1.0"),
        ({"deadline_s": 0}, "limits.deadline_s must be more than zero seconds"),
        (
            {"deadline_s": 61},
            "limits.deadline_s must be at most 60 seconds (the contract's limit)",
        ),
        ({"grace_s": -0.5}, "limits.grace_s must be zero or more seconds"),
        ({"mode": "carrier-pigeon"}, "limits.mode must be one of push, poll"),
        ({"name": "Gateway-1"}, "limits.name must be 1 to 8 letters a-z"),
    ],
)
def test_read_refuses_a_value_out_of_bounds(data: dict[str, Any], message: str) -> None:
    """A value outside the field's bounds is refused with the key and the bound."""
    t = Table({"host": "h", **data}, "limits", BASE)
    with pytest.raises(ConfigError) as info:
        t.read(_Limits)
    assert str(info.value) == message


def test_read_leaves_unknown_keys_to_finish() -> None:
    """read() marks the keys it read, so finish() refuses a misspelt one with a hint."""
    t = Table({"host": "h", "worker": 3}, "limits", BASE)
    t.read(_Limits)
    with pytest.raises(
        ConfigError, match=re.escape("unknown key 'limits.worker' (did you mean 'workers'?)")
    ):
        t.finish()


def test_read_takes_fields_given_by_hand() -> None:
    """A field passed to read() is not read from the table, so its key stays unknown."""
    t = Table({"host": "h", "workers": 3}, "", BASE)
    assert t.read(_Limits, workers=9).workers == 9
    with pytest.raises(ConfigError, match="unknown key 'workers'"):
        t.finish()
    assert t.read_fields(_Limits, ["mode", "grace_s"]) == {"mode": "push", "grace_s": None}


def test_read_refuses_a_field_type_it_cannot_read() -> None:
    """A field of a type no getter reads is a programming error, not a config error."""

    @dataclass(frozen=True)
    class Odd:
        at: complex = 0j

    with pytest.raises(TypeError, match="no reader for at"):
        Table({}, "", BASE).read(Odd)


def test_load_toml_names_the_file(tmp_path: Path) -> None:
    """An error found in a file names the key first and the file after it."""
    path = tmp_path / "limits.toml"
    path.write_text('host = "h"\nworkers = 100\n')

    def parse(data: Mapping[str, Any], base: Path) -> _Limits:
        assert base == tmp_path.resolve()
        return Table(data, "", base).read(_Limits)

    with pytest.raises(ConfigError) as info:
        load_toml(path, parse)
    assert str(info.value) == f"workers must be at most 64 (in {path})"
    path.write_text("host = \n")
    with pytest.raises(ConfigError, match=f"config {re.escape(str(path))} is not valid TOML"):
        load_toml(path, parse)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_toml(tmp_path / "absent.toml", parse)
