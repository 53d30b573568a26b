"""Fuzzing (hypothesis) of every Gateway request field, handles, SETs, warrants and the
SQL adapter's phone normalization: never INTERNAL or UNKNOWN, never an unhandled
exception, and a refused request never changes a row."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from onecert.adapters.sql import SqlSite, normalize_phone, parse_config
from onecert.gateway._attribution import Attribution
from onecert.gateway._handles import HandleClaims, HandleError, HandleSealer
from onecert.sdk import SetError, SetVerifier
from onecert.sdk._keys import SigningKey, parse_jwks
from onecert.sdk._msisdn import is_e164
from onecert.sdk._set import RISC_IDENTIFIER_RECYCLED, SET_TYP
from onecert.sdk._warrant import WARRANT_TYP, Warrant, WarrantError, WarrantVerifier
from onecert.sdk.testing import CallError, FakeGateway, ProviderEnvironment
from onecert.v1 import gateway_pb2
from tests.hardening.hardening_support import principal, status_of

if TYPE_CHECKING:
    from tests.hardening.hardening_support import Harness, Snapshot
else:
    Harness = Snapshot = Any

# A gateway error that is a bug, whatever the input.
BUGS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

# Bounded so `make test` stays fast; ONECERT_FUZZ_SCALE=N runs every fuzzer N times longer.
_SCALE = max(1, int(os.environ.get("ONECERT_FUZZ_SCALE", "1")))
RPC_SETTINGS = settings(
    max_examples=60 * _SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PURE_SETTINGS = settings(max_examples=200 * _SCALE, deadline=None)

# Protobuf strings are UTF-8: no lone surrogates.
texts = st.text(st.characters(codec="utf-8"), max_size=80)
long_texts = st.text(st.characters(codec="utf-8"), max_size=400)
int64s = st.integers(-(2**63), 2**63 - 1)
int32s = st.integers(-(2**31), 2**31 - 1)
uint32s = st.integers(0, 2**32 - 1)
msisdns = st.one_of(
    texts,
    st.from_regex(r"\+86(13[89])[0-9]{8}", fullmatch=True),
    st.from_regex(r"\+[0-9]{0,17}", fullmatch=True),
    st.sampled_from(
        [
            "",
            "+",
            "+86 138 0013 8001",
            "+8613800138001\n",
            "\uff18\uff16\uff11\uff13\uff18\uff10\uff10\uff11\uff13\uff18\uff10\uff10\uff11",
        ]
    ),
)


@st.composite
def timestamps(draw: st.DrawFn) -> Timestamp | None:
    kind = draw(st.sampled_from(["none", "sane", "wild"]))
    if kind == "none":
        return None
    if kind == "sane":
        seconds = draw(st.integers(-(10**10), 2 * 10**9))
        return Timestamp(seconds=seconds, nanos=draw(st.integers(0, 999_999_999)))
    return Timestamp(seconds=draw(int64s), nanos=draw(int32s))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from([10**400, -(10**400), 2**63, 1e308, -1e308])
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_json(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def sign_raw(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A JWS with exactly this header and these claims, signed by ``key``."""
    signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode()
    signature = jwt.algorithms.get_default_algorithms()[key.alg].sign(
        signing_input, key.private_key
    )
    return f"{signing_input.decode()}.{_b64(signature)}"


# ---------------------------------------------------------------- the gateway's RPCs


def _changed_rows(before: Snapshot, after: Snapshot, *, audit_kinds: set[str]) -> list[str]:
    """Which durable state a refused request changed (beyond allowed audit rows)."""
    changed = [
        name
        for name in ("unbind_tickets", "number_events", "deliveries")
        if before[name] != after[name]
    ]
    old = set(before["audit_log"])
    if not old <= set(after["audit_log"]):
        changed.append("audit_log (an existing row changed)")
    new_kinds = {row[2] for row in after["audit_log"] if row not in old}
    if not new_kinds <= audit_kinds:
        changed.append(f"audit_log (new rows {sorted(new_kinds - audit_kinds)})")
    return changed


async def _call(
    hz: Harness,
    gateway: Any,
    invoke: Callable[[], Awaitable[Any]],
    *,
    allowed: set[grpc.StatusCode],
    audit_kinds: frozenset[str] = frozenset(),
) -> grpc.StatusCode:
    """Make one fuzzed call: never a bug status; an error changes no row."""
    before = await hz.snapshot(gateway)
    code, details = await status_of(invoke)
    if code is grpc.StatusCode.OK:
        return code
    assert code not in BUGS, details
    assert code in allowed, (code, details)
    assert hz.IDN not in details
    changed = _changed_rows(before, await hz.snapshot(gateway), audit_kinds=set(audit_kinds))
    assert changed == [], (code, changed)
    return code


async def _call_as(
    hz: Harness,
    gateway: Any,
    caller: str,
    request: Message,
    *,
    allowed: set[grpc.StatusCode],
) -> grpc.StatusCode:
    """Send ``request`` as ``caller`` to its RPC (every Gateway RPC has its own
    ``<Rpc>Request``, tests/test_contract.py), checked as :func:`_call` does."""
    rpc = getattr(hz.stub(gateway), type(request).__name__.removesuffix("Request"))
    return await _call(
        hz,
        gateway,
        lambda: rpc(request, metadata=principal(caller), timeout=5),
        allowed=allowed,
    )


@pytest.fixture
async def gateway(hz: Harness) -> Any:
    """A development gateway with a store and no delivery workers: carrier "cm"
    (numbers +86138..., +86139...), provider "pay" (push) and "poller" (poll)."""
    await hz.carrier()
    await hz.provider("pay")
    await hz.provider("poller")
    config = hz.config(poll_providers=("poller",))
    # No background delivery: every row change is then the fuzzed call's doing.
    config = dataclasses.replace(
        config,
        notices=dataclasses.replace(config.notices, workers=0),
        delivery=dataclasses.replace(config.delivery, workers=0),
    )
    return await hz.gateway(config)


@RPC_SETTINGS
@given(client_request_id=long_texts)
@example(client_request_id="+8613800138001" * 4)
@example(client_request_id="x" * 65)
async def test_fuzz_lookup_client_request_id(
    hz: Harness, gateway: Any, client_request_id: str
) -> None:
    """Any client_request_id gets a lookup or INVALID_ARGUMENT (too long)."""
    request = gateway_pb2.LookupRequest(client_request_id=client_request_id)
    code = await _call(
        hz,
        gateway,
        lambda: hz.lookup(gateway, request=request),
        allowed={grpc.StatusCode.INVALID_ARGUMENT},
    )
    assert (code is grpc.StatusCode.OK) == (len(client_request_id) <= 64)


@st.composite
def mutated_handles(draw: st.DrawFn, handle: str) -> str:
    """A genuine handle with a few characters replaced, inserted or removed."""
    chars = list(handle)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/. "
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(chars) - 1)))
        if op == "replace" and chars:
            chars[at] = draw(st.sampled_from(alphabet))
        elif op == "insert":
            chars.insert(at, draw(st.sampled_from(alphabet)))
        elif op == "delete" and chars:
            del chars[at]
        else:
            chars = chars[:at]
    return "".join(chars)


@RPC_SETTINGS
@given(data=st.data())
async def test_fuzz_unbind_handle(hz: Harness, gateway: Any, data: st.DataObject) -> None:
    """Any handle but a genuine one is INVALID_ARGUMENT or PERMISSION_DENIED, opens no
    ticket and writes only the refusal to the audit log."""
    if not hasattr(hz, "genuine"):
        hz.genuine = await hz.handle_of(gateway, "pay")  # type: ignore[attr-defined]  # cached on the harness
    genuine: str = hz.genuine  # type: ignore[attr-defined]  # set just above
    handle = data.draw(st.one_of(long_texts, mutated_handles(genuine), st.just("A" * 3000)))
    assume(handle != genuine)
    code = await _call(
        hz,
        gateway,
        lambda: hz.unbind(gateway, handle),
        allowed={grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED},
        audit_kinds=frozenset({"unbind.refused"}),
    )
    assert code is not grpc.StatusCode.OK


@RPC_SETTINGS
@given(ticket_id=st.one_of(long_texts, st.from_regex(r"ut_[A-Za-z0-9_-]{0,130}", fullmatch=True)))
async def test_fuzz_get_unbind_ticket_id(hz: Harness, gateway: Any, ticket_id: str) -> None:
    """Any unknown ticket id is INVALID_ARGUMENT (malformed) or NOT_FOUND."""
    stub = hz.stub(gateway)
    code = await _call(
        hz,
        gateway,
        lambda: stub.GetUnbind(
            gateway_pb2.GetUnbindRequest(ticket_id=ticket_id),
            metadata=hz.bearer(hz.assertion()),
            timeout=5,
        ),
        allowed={grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND},
    )
    assert code is not grpc.StatusCode.OK


@st.composite
def event_reports(draw: st.DrawFn) -> gateway_pb2.ReportNumberEventRequest:
    request = gateway_pb2.ReportNumberEventRequest(
        event_id=draw(st.one_of(texts, st.sampled_from(["ev-1", "ev-2"]))),
        msisdn=draw(msisdns),
        type=gateway_pb2.NumberEventType.ValueType(
            draw(st.one_of(st.sampled_from([0, 1, 2]), int32s))
        ),
    )
    effective_at, quiet = draw(timestamps()), draw(timestamps())
    if effective_at is not None:
        request.effective_at.CopyFrom(effective_at)
    if quiet is not None:
        request.quiet_period_ends_at.CopyFrom(quiet)
    return request


@RPC_SETTINGS
@given(request=event_reports())
async def test_fuzz_report_number_event(
    hz: Harness, gateway: Any, request: gateway_pb2.ReportNumberEventRequest
) -> None:
    """Any report is recorded, or refused (INVALID_ARGUMENT, PERMISSION_DENIED for a
    number the carrier does not serve, ALREADY_EXISTS for a reused event id) changing
    nothing."""
    await _call_as(
        hz,
        gateway,
        "carrier:cm",
        request,
        allowed={
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.ALREADY_EXISTS,
        },
    )


@RPC_SETTINGS
@given(msisdn=msisdns, specified=timestamps())
async def test_fuzz_check_recycled(
    hz: Harness, gateway: Any, msisdn: str, specified: Timestamp | None
) -> None:
    """Any question gets an answer or INVALID_ARGUMENT, and writes nothing when refused."""
    request = gateway_pb2.CheckRecycledRequest(msisdn=msisdn, specified_date=specified)
    code = await _call_as(
        hz, gateway, "provider:pay", request, allowed={grpc.StatusCode.INVALID_ARGUMENT}
    )
    if code is grpc.StatusCode.OK:
        assert is_e164(msisdn)


polls = st.builds(
    lambda max_events, acks, errors: gateway_pb2.PollEventsRequest(
        max_events=max_events,
        return_immediately=True,
        acks=acks,
        errors=[gateway_pb2.EventError(jti=j, code=c, description=d) for j, c, d in errors],
    ),
    st.one_of(st.integers(0, 1001), uint32s),
    st.lists(texts, max_size=5),
    st.lists(st.tuples(texts, texts, long_texts), max_size=3),
)


@RPC_SETTINGS
@given(request=polls, who=st.sampled_from(["provider:poller", "provider:pay"]))
async def test_fuzz_poll_events(
    hz: Harness, gateway: Any, request: gateway_pb2.PollEventsRequest, who: str
) -> None:
    """Any poll is answered, INVALID_ARGUMENT, or FAILED_PRECONDITION for a push-mode
    provider; none changes a row (there is nothing pending to acknowledge)."""
    before = await hz.snapshot(gateway)
    await _call_as(
        hz,
        gateway,
        who,
        request,
        allowed={grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION},
    )
    after = await hz.snapshot(gateway)
    assert _changed_rows(before, after, audit_kinds=set()) == []


@RPC_SETTINGS
@given(jti=long_texts, removed=uint32s, acted_at=timestamps())
async def test_fuzz_confirm_event_action(
    hz: Harness, gateway: Any, jti: str, removed: int, acted_at: Timestamp | None
) -> None:
    """Confirming a notice that was never sent is INVALID_ARGUMENT or NOT_FOUND."""
    request = gateway_pb2.ConfirmEventActionRequest(
        jti=jti, bindings_removed=removed, acted_at=acted_at
    )
    code = await _call_as(
        hz,
        gateway,
        "provider:pay",
        request,
        allowed={grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND},
    )
    assert code is not grpc.StatusCode.OK


@RPC_SETTINGS
@given(since=timestamps())
async def test_fuzz_compliance_report_since(
    hz: Harness, gateway: Any, since: Timestamp | None
) -> None:
    """Any ``since`` gets a report or INVALID_ARGUMENT."""
    request = gateway_pb2.GetComplianceReportRequest(since=since)
    await _call_as(hz, gateway, "admin", request, allowed={grpc.StatusCode.INVALID_ARGUMENT})


# ---------------------------------------------------------------- handles, SETs, warrants

_SEALER = HandleSealer(bytes(range(32)))
_CLAIMS = HandleClaims(
    sub="citizen-7f3a",
    provider_id="pay",
    msisdn="+8613800138001",
    account_ref="acct-1",
    attribution=Attribution.LEFT_BEHIND,
    expires_at=time.time() + 3600,
    query_id="q",
)
_HANDLE = _SEALER.seal(_CLAIMS)


@PURE_SETTINGS
@given(
    handle=st.one_of(long_texts, mutated_handles(_HANDLE)),
    sub=st.one_of(st.just("citizen-7f3a"), texts),
)
def test_fuzz_handles(handle: str, sub: str) -> None:
    """A handle opens only unaltered and for its citizen; anything else is a
    HandleError (INVALID_ARGUMENT or PERMISSION_DENIED), never another exception."""
    opened = _open(handle, sub)
    if isinstance(opened, HandleError):
        assert opened.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)
        return
    assert (handle, sub) == (_HANDLE, _CLAIMS.sub)
    assert opened.account_ref == _CLAIMS.account_ref


def _open(handle: str, sub: str) -> HandleClaims | HandleError:
    try:
        return _SEALER.open(handle, sub=sub)
    except HandleError as exc:
        return exc


_GATEWAY_KEY = SigningKey.generate("EdDSA")
_GATEWAY_KEYS = parse_jwks(_GATEWAY_KEY.jwks())
_SETS = SetVerifier(keys=_GATEWAY_KEYS, issuer="onecert-gateway", audience="pay")
_WARRANTS = WarrantVerifier(keys=_GATEWAY_KEYS, issuer="onecert-gateway", audience="pay")


def _gateway_claims(now: int, **claims: Any) -> dict[str, Any]:
    """What every token the gateway signs for provider "pay" carries, then ``claims``."""
    return {"iss": "onecert-gateway", "aud": "pay", "iat": now, **claims}


def _set_claims() -> dict[str, Any]:
    now = int(time.time())
    recycled = {
        "subject": {"format": "phone_number", "phone_number": "+8613800138001"},
        "act_by": now + 86400,
    }
    return _gateway_claims(
        now, jti="n-1", toe=now - 60, events={RISC_IDENTIFIER_RECYCLED: recycled}
    )


def _warrant_claims() -> dict[str, Any]:
    now = int(time.time())
    return _gateway_claims(
        now, exp=now + 30, jti="w-1", purpose="lookup", qid="q", target_sha256="0" * 64
    )


def _fuzz_claims(base: dict[str, Any], names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(
        st.sampled_from(names) | st.text(max_size=6), json_values, max_size=3
    ).map(lambda changes: {**base, **changes})


def _signed(
    typ: str, base: Callable[[], dict[str, Any]], names: list[str]
) -> st.SearchStrategy[str]:
    headers = st.fixed_dictionaries(
        {"alg": st.just(_GATEWAY_KEY.alg), "kid": st.just(_GATEWAY_KEY.kid), "typ": st.just(typ)},
        optional={"crit": json_values, "jku": json_values, "extra": json_values},
    )
    return st.builds(
        lambda header, claims: sign_raw(_GATEWAY_KEY, header, claims),
        headers,
        _fuzz_claims(base(), names),
    )


def _gateway_signed(typ: str, claims: dict[str, Any]) -> str:
    """A token of type ``typ`` over exactly ``claims``, validly signed with the gateway's key."""
    return sign_raw(_GATEWAY_KEY, {"alg": "EdDSA", "kid": _GATEWAY_KEY.kid, "typ": typ}, claims)


_SET_NAMES = ["iss", "aud", "iat", "jti", "toe", "events", "exp", "nbf"]
_WARRANT_NAMES = ["iss", "aud", "iat", "exp", "nbf", "jti", "purpose", "qid", "target_sha256"]


@PURE_SETTINGS
@given(token=st.one_of(long_texts, _signed(SET_TYP, _set_claims, _SET_NAMES)))
@example(token=_gateway_signed(SET_TYP, {**_set_claims(), "toe": 1e300}))
@example(token=_gateway_signed(SET_TYP, {**_set_claims(), "iat": 10**400}))
def test_fuzz_sets(token: str) -> None:
    """Any token, even one validly signed over absurd claims, is a notice or a
    SetError, never another exception."""
    try:
        notice = _SETS.verify(token)
    except SetError:
        return
    assert is_e164(notice.msisdn)
    assert notice.recycled_at.tzinfo is not None


@PURE_SETTINGS
@given(token=st.one_of(long_texts, _signed(WARRANT_TYP, _warrant_claims, _WARRANT_NAMES)))
@example(token=_gateway_signed(WARRANT_TYP, {**_warrant_claims(), "exp": float("nan")}))
@example(token=_gateway_signed(WARRANT_TYP, {**_warrant_claims(), "exp": 10**400}))
def test_fuzz_warrants(token: str) -> None:
    """Any token is a warrant with finite times or a WarrantError, never another exception."""
    try:
        warrant = _WARRANTS.verify(token, target="+8613800138001")
    except WarrantError:
        return
    assert isinstance(warrant, Warrant)
    assert math.isfinite(warrant.expires_at)
    assert warrant.expires_at >= time.time() - 10


# ---------------------------------------------------------------- the SQL adapter


@PURE_SETTINGS
@given(
    raw=st.one_of(
        texts,
        st.integers(),
        st.from_regex("[+0\uff10-\uff19 ()\\-.]{0,24}", fullmatch=True),
        st.sampled_from([None, True, 13800138000.0, b"+8613800138000", "+86 138 0013 8000"]),
    )
)
def test_fuzz_normalize_phone(raw: Any) -> None:
    """normalize_phone never raises: it gives None or E.164, and reads its own output
    back unchanged."""
    out = normalize_phone(raw)
    if out is not None:
        assert is_e164(out)
        assert normalize_phone(out) == out


_USERS = [
    ("u1", "zhangsan", "+8613800138000", "2021-03-01 09:30:00", "login"),
    ("u2", "lisi", "138-0013-8000", "2014-06-09 20:15:00", "login"),
    ("u3", "wangwu", "0086 139 0013 9000", None, None),
    ("u4", "zhaoliu", None, None, "login"),
]


@pytest.fixture
async def site(
    tmp_path: Path,
) -> AsyncIterator[tuple[ProviderEnvironment, Callable[[], Awaitable[list[Any]]]]]:
    """The SQL adapter on a SQLite users table, called as the gateway would, and a
    function returning every row of the table."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'site.db'}"
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE users (id VARCHAR(64) PRIMARY KEY, nickname VARCHAR(64), "
                "phone VARCHAR(32), bound TEXT, kind VARCHAR(16))"
            )
        )
        for row in _USERS:
            await conn.execute(
                text("INSERT INTO users VALUES (:id, :nick, :phone, :bound, :kind)"),
                dict(zip(("id", "nick", "phone", "bound", "kind"), row, strict=True)),
            )
    gateway = FakeGateway(audience="site")
    gateway.write_jwks(tmp_path / "gateway.jwks.json")
    config = parse_config(
        {
            "provider": {"id": "site", "name": "Site", "category": "forum"},
            "database": {"url": url, "timezone": "Asia/Shanghai"},
            "queries": {
                "list_bindings": "SELECT id, nickname, phone, bound, kind FROM users "
                "WHERE phone IN :phones",
                "unbind": "UPDATE users SET phone = NULL WHERE id = :account_ref "
                "AND phone IN :phones",
            },
            "columns": {
                "account_ref": "id",
                "display_name": "nickname",
                "phone": "phone",
                "bound_at": "bound",
                "kind": "kind",
            },
            "server": {
                "listen": "127.0.0.1:0",
                "gateway_jwks": "gateway.jwks.json",
                "insecure": True,
                "idempotency_db": ":memory:",
            },
        },
        base_dir=tmp_path,
    )
    opened = await SqlSite.open(config)

    async def rows() -> list[Any]:
        async with engine.connect() as conn:
            return [
                tuple(r)
                for r in (await conn.execute(text("SELECT * FROM users ORDER BY id"))).all()
            ]

    try:
        yield ProviderEnvironment(opened.provider, gateway=gateway), rows
    finally:
        await opened.close()
        await engine.dispose()


@RPC_SETTINGS
@given(
    msisdn=msisdns,
    account_ref=st.one_of(texts, st.sampled_from(["u9", "u1' OR '1'='1", "u1; DROP TABLE users"])),
)
async def test_fuzz_sql_adapter_changes_no_row(
    site: tuple[ProviderEnvironment, Callable[[], Awaitable[list[Any]]]],
    msisdn: str,
    account_ref: str,
) -> None:
    """ListBindings and Unbind of an account that does not hold the number, with any
    input, answer or refuse with INVALID_ARGUMENT and never change a row."""
    env, rows = site
    assume(account_ref not in {row[0] for row in _USERS})
    before = await rows()
    for call in (
        lambda: env.list_bindings(msisdn),
        lambda: env.unbind(msisdn, account_ref),
    ):
        refused = await _refusal(call)
        assert refused in (None, grpc.StatusCode.INVALID_ARGUMENT)
    assert await rows() == before


async def _refusal(call: Callable[[], Awaitable[Any]]) -> grpc.StatusCode | None:
    try:
        await call()
    except CallError as exc:
        return exc.code
    return None
