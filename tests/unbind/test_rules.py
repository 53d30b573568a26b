"""The pure rules of unbinding: config of [store] and [delivery], backoff, which
statuses are retried, the audit digests, and the ticket key."""

from __future__ import annotations

import itertools
import os
import tomllib
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onecert.gateway._attribution import Attribution
from onecert.gateway._audit import Auditor, derive_audit_key, load_audit_key
from onecert.gateway._breaker import backoff
from onecert.gateway._config import ConfigError, DeliveryConfig, parse_config
from onecert.gateway._delivery import RETRYABLE, classify_status
from onecert.gateway._unbind import TICKET_ID, reason_for
from onecert.gateway.store import AttemptOutcome, Store
from onecert.sdk._keys import KeyConfigError
from onecert.v1 import common_pb2
from tests.gateway.config_support import MINIMAL


def parse(extra: str = "", base: str = "/srv/onecert") -> Any:
    return parse_config(tomllib.loads(MINIMAL + extra), base_dir=base)


def test_store_defaults_to_a_sqlite_file_next_to_the_config() -> None:
    """Without [store] the gateway keeps its state in onecert.db beside the config
    file, migrated at start-up; [delivery] takes its documented defaults."""
    config = parse()
    assert config.store is not None
    assert config.store.url == "sqlite:////srv/onecert/onecert.db"
    assert config.store.auto_migrate
    assert config.delivery == DeliveryConfig()
    assert config.delivery.ticket_ttl_s == 7 * 24 * 3600


def test_store_urls() -> None:
    """Relative SQLite paths are resolved against the config's directory, absolute
    ones kept; PostgreSQL is not migrated at start-up unless asked."""
    relative = parse('[store]\nurl = "sqlite:///state/gw.db"\n')
    assert relative.store.url == "sqlite:////srv/onecert/state/gw.db"
    absolute = parse('[store]\nurl = "sqlite+aiosqlite:////var/lib/gw.db"\n')
    assert absolute.store.url == "sqlite+aiosqlite:////var/lib/gw.db"
    pg = parse('[store]\nurl = "postgresql://gw@db/onecert"\nschema = "gw"\n')
    assert pg.store.url == "postgresql://gw@db/onecert"
    assert not pg.store.auto_migrate
    assert pg.store.schema == "gw"
    assert parse('[store]\nurl = "postgresql://gw@db/x"\nauto_migrate = true\n').store.auto_migrate


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[store]\nurl = "mysql://x"\n', "store.url"),
        ('[store]\nurl = "sqlite:///"\n', "store.url"),
        ('[store]\nurl = "sqlite:///a.db"\nschema = "s"\n', "store.schema"),
        ('[store]\nulr = "sqlite:///a.db"\n', "store.ulr"),
        ("[delivery]\nworkers = -1\n", "delivery.workers"),
        ("[delivery]\nbatch = 0\n", "delivery.batch"),
        ("[delivery]\nlease_s = 5\nunbind_deadline_s = 5\n", "delivery.lease_s"),
        ("[delivery]\nbackoff_initial_s = 10\nbackoff_max_s = 1\n", "delivery.backoff_max_s"),
        ("[delivery]\nticket_ttl_s = 0\n", "delivery.ticket_ttl_s"),
        ("[delivery]\nretries = 3\n", "delivery.retries"),
    ],
)
def test_bad_store_and_delivery_keys_are_named(extra: str, message: str) -> None:
    """A wrong [store] or [delivery] key stops the gateway with a message naming it."""
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse(extra)


@given(
    attempts=st.integers(min_value=0, max_value=10_000),
    initial=st.floats(min_value=0.001, max_value=100),
    cap=st.floats(min_value=0.001, max_value=10_000),
    share=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_backoff_is_a_jittered_share_of_a_capped_exponential_step(
    attempts: int, initial: float, cap: float, share: float
) -> None:
    """The wait is a random share of min(cap, initial * 2**(attempts - 1)): never
    negative, never above the cap, however many attempts failed."""
    wait = backoff(attempts, initial=initial, maximum=cap, rand=lambda: share)
    step = min(cap, initial * 2.0 ** max(0, attempts - 1)) if attempts < 60 else cap
    assert 0 <= wait <= cap
    assert wait == pytest.approx(step * share)


def test_backoff_grows_then_stops_at_the_cap() -> None:
    """With the full share, the steps double from the initial value up to the cap."""
    steps = [backoff(n, initial=1, maximum=10, rand=lambda: 1.0) for n in range(1, 7)]
    assert steps == [1, 2, 4, 8, 10, 10]


def test_backoff_with_a_least_share_never_waits_less_than_it() -> None:
    """With ``least`` 0.5 (the fan-out's and the notice pushes' backoff) a wait is
    between half its step (here 4 s) and all of it, the share spread over that half."""
    for share, expected in ((0.0, 2.0), (0.5, 3.0), (0.999, 3.998)):
        wait = backoff(3, initial=1, maximum=10, least=0.5, rand=itertools.repeat(share).__next__)
        assert wait == pytest.approx(expected)
    assert backoff(3, initial=1, maximum=10, rand=lambda: 0.0) == 0.0  # full jitter: from 0


def test_which_statuses_are_retried() -> None:
    """Overload, outages, timeouts and internal errors are retried; refusals that
    another attempt cannot change go straight to the dead letter."""
    for code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ):
        assert classify_status(code) is AttemptOutcome.RETRY
    for code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    ):
        assert classify_status(code) is AttemptOutcome.FATAL
        assert code not in RETRYABLE


def test_reasons_follow_the_attribution() -> None:
    """The citizen's own accounts are owner requests; a previous holder's is a release."""
    assert reason_for(Attribution.MINE) == common_pb2.UNBIND_REASON_OWNER_REQUEST
    assert reason_for(Attribution.LEFT_BEHIND) == common_pb2.UNBIND_REASON_OWNER_REQUEST
    assert (
        reason_for(Attribution.PREVIOUS_HOLDER) == common_pb2.UNBIND_REASON_PREVIOUS_HOLDER_RELEASE
    )


def test_ticket_ids_the_store_makes_are_well_formed() -> None:
    """Every id the store hands out passes GetUnbind's format check."""
    from onecert.gateway.store._rows import new_id

    for _ in range(200):
        assert TICKET_ID.fullmatch(new_id("ut_"))


def test_audit_digests_are_keyed_stable_and_separated() -> None:
    """The same value and key give the same digest; another key, or another kind of
    value, gives another; the digest is not the plain SHA-256 of the number."""
    import hashlib

    store = Store.open("sqlite:///:memory:")
    key = os.urandom(32)
    auditor = Auditor(store, key=key)
    number = "+8613800138001"
    assert auditor.digest("msisdn", number) == Auditor(store, key=key).digest("msisdn", number)
    assert auditor.digest("msisdn", number) != Auditor(store, key=os.urandom(32)).digest(
        "msisdn", number
    )
    assert auditor.digest("msisdn", number) != auditor.digest("sub", number)
    assert auditor.digest("msisdn", number) != hashlib.sha256(number.encode()).hexdigest()
    assert auditor.number(number).startswith("msisdn:")
    assert number.lstrip("+") not in auditor.number(number)
    assert auditor.citizen("c-1") == "citizen:" + auditor.digest("sub", "c-1")


def test_audit_keys(tmp_path: Path) -> None:
    """The derived key differs from the handle key; an audit key file must hold 32
    bytes as hex, and its content never appears in the error."""
    handle = os.urandom(32)
    assert derive_audit_key(handle) != handle
    assert len(derive_audit_key(handle)) == 32
    good = tmp_path / "audit.key"
    good.write_text(os.urandom(32).hex())
    assert len(load_audit_key(good)) == 32
    bad = tmp_path / "bad.key"
    bad.write_text("secret-not-hex")
    with pytest.raises(KeyConfigError) as err:
        load_audit_key(bad)
    assert "secret" not in str(err.value)
    short = tmp_path / "short.key"
    short.write_text("abcd")
    with pytest.raises(KeyConfigError, match="32 bytes"):
        load_audit_key(short)
    with pytest.raises(KeyConfigError):
        load_audit_key(tmp_path / "missing.key")
