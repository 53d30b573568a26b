"""Identity attacks on ``Gateway.Lookup`` and ``Gateway.Unbind``: every forged, stale,
misaddressed or replayed assertion is refused with its status before any carrier or
provider is contacted, and nothing is written (no ticket, no replay entry, no audit
row); keys named by ``jku``/``x5u`` or embedded as ``jwk`` are never fetched or trusted."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest

from onecert.gateway._identity import ASSERTION_TYP, AssertionIssuer
from onecert.sdk._jwt import MAX_TOKEN_BYTES
from onecert.sdk._warrant import WARRANT_TYP
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from tests.hardening.hardening_support import Harness, KeyServer
else:
    Harness = KeyServer = Any

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _claims(hz: Harness, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": hz.ISSUER,
        "sub": hz.CITIZEN_SUB,
        "aud": hz.GATEWAY_ID,
        "iat": now,
        "exp": now + 120,
        "jti": f"forged-{time.monotonic_ns()}",
        "idn": hz.IDN,
        "acr": "substantial",
    }
    claims.update(extra)
    return claims


def _hmac_token(hz: Harness, secret: bytes) -> str:
    """HS256 over valid claims, naming the identity key's kid, keyed with ``secret``."""
    header = {"alg": "HS256", "typ": ASSERTION_TYP, "kid": hz.keys.identity.kid}
    signing_input = f"{_json(header)}.{_json(_claims(hz))}".encode()
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        signing_input, secret
    )
    return f"{signing_input.decode()}.{_b64(signature)}"


def _public_pem(hz: Harness) -> bytes:
    from cryptography.hazmat.primitives import serialization

    public = hz.keys.identity.private_key.public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _attacker(hz: Harness, keys: KeyServer, **headers: Any) -> str:
    """The citizen's assertion signed with the attacker's key, with these JOSE headers."""
    return AssertionIssuer(key=keys.key, issuer=hz.ISSUER).mint(
        sub=hz.CITIZEN_SUB, idn=hz.IDN, audience=hz.GATEWAY_ID, headers=headers
    )


def _mint(hz: Harness, **options: Any) -> str:
    return hz.assertion(**options)


def _oversized(hz: Harness) -> str:
    """A valid assertion padded to just over the gateway's token limit."""
    base = len(_mint(hz, claims={"pad": ""}))
    # Every 3 characters of padding add 4 of base64.
    token = _mint(hz, claims={"pad": "A" * ((MAX_TOKEN_BYTES + 32 - base) * 3 // 4)})
    assert MAX_TOKEN_BYTES < len(token) < MAX_TOKEN_BYTES + 64
    return token


@dataclass(frozen=True)
class Attack:
    """One way to forge or misuse an assertion, and the status it must get."""

    name: str
    forge: Callable[[Harness, KeyServer], str]
    code: grpc.StatusCode = UNAUTHENTICATED
    # Also accepted: a refusal by gRPC itself before the gateway sees the call.
    transport: grpc.StatusCode | None = None


def _none(hz: Harness, _: KeyServer) -> str:
    header = {"alg": "none", "typ": ASSERTION_TYP, "kid": hz.keys.identity.kid}
    return f"{_json(header)}.{_json(_claims(hz))}."


def _none_no_kid(hz: Harness, _: KeyServer) -> str:
    return f"{_json({'alg': 'none', 'typ': ASSERTION_TYP})}.{_json(_claims(hz))}."


def _stripped_signature(hz: Harness, _: KeyServer) -> str:
    head, body, _sig = _mint(hz).split(".")
    return f"{head}.{body}."


def _tampered(hz: Harness, _: KeyServer) -> str:
    head, _body, sig = _mint(hz).split(".")
    return f"{head}.{_json(_claims(hz, sub='citizen-0b9c', idn=hz.OTHER_IDN))}.{sig}"


ATTACKS = [
    Attack("alg none", _none),
    Attack("alg none without kid", _none_no_kid),
    Attack("signature stripped", _stripped_signature),
    Attack("payload swapped under a valid signature", _tampered),
    Attack("HS256 keyed with the public key (PEM)", lambda hz, _: _hmac_token(hz, _public_pem(hz))),
    Attack(
        "HS256 keyed with the public JWK",
        lambda hz, _: _hmac_token(hz, json.dumps(hz.keys.identity.public_jwk()).encode()),
    ),
    Attack(
        "HS256 keyed with the JWKS file",
        lambda hz, _: _hmac_token(hz, hz.keys.dev.identity_jwks.read_bytes()),
    ),
    Attack(
        "HS256 keyed with the JWK's x coordinate",
        lambda hz, _: _hmac_token(hz, str(hz.keys.identity.public_jwk()["x"]).encode()),
    ),
    Attack("expired", lambda hz, _: _mint(hz, now=time.time() - 1000, lifetime=120)),
    Attack("nbf in the future", lambda hz, _: _mint(hz, claims={"nbf": int(time.time()) + 600})),
    Attack("iat in the future", lambda hz, _: _mint(hz, now=time.time() + 600)),
    Attack("lifetime over the maximum", lambda hz, _: _mint(hz, lifetime=3600)),
    Attack("exp missing", lambda hz, _: _mint(hz, claims={"exp": None})),
    Attack("exp not a number", lambda hz, _: _mint(hz, claims={"exp": "tomorrow"})),
    Attack("wrong aud", lambda hz, _: _mint(hz, audience="other-gateway")),
    Attack(
        "aud list naming another party too",
        lambda hz, _: _mint(hz, claims={"aud": [hz.GATEWAY_ID, "other-gateway"]}),
    ),
    Attack(
        "iss with the right one as a prefix",
        lambda hz, _: AssertionIssuer(key=hz.keys.identity, issuer=hz.ISSUER + ".evil.test").mint(
            sub=hz.CITIZEN_SUB, idn=hz.IDN, audience=hz.GATEWAY_ID
        ),
    ),
    Attack(
        "iss with the right one as a suffix",
        lambda hz, _: AssertionIssuer(
            key=hz.keys.identity, issuer="https://evil.test/" + hz.ISSUER
        ).mint(sub=hz.CITIZEN_SUB, idn=hz.IDN, audience=hz.GATEWAY_ID),
    ),
    Attack(
        "iss truncated",
        lambda hz, _: AssertionIssuer(key=hz.keys.identity, issuer=hz.ISSUER[:-1]).mint(
            sub=hz.CITIZEN_SUB, idn=hz.IDN, audience=hz.GATEWAY_ID
        ),
    ),
    Attack("iss as a list", lambda hz, _: _mint(hz, claims={"iss": [hz.ISSUER]})),
    Attack("unknown crit header", lambda hz, _: _mint(hz, headers={"crit": ["x-unknown"]})),
    Attack("crit naming a registered claim", lambda hz, _: _mint(hz, headers={"crit": ["exp"]})),
    Attack("unknown kid", lambda hz, _: _mint(hz, headers={"kid": "no-such-key"})),
    Attack("kid missing", lambda hz, _: _mint(hz, headers={"kid": None})),
    Attack(
        "jku to the attacker's JWKS, attacker's kid",
        lambda hz, ks: _attacker(hz, ks, jku=ks.url + "/jwks.json"),
    ),
    Attack(
        "jku to the attacker's JWKS, trusted kid",
        lambda hz, ks: _attacker(hz, ks, jku=ks.url + "/jwks.json", kid=hz.keys.identity.kid),
    ),
    Attack(
        "x5u to the attacker's certificate",
        lambda hz, ks: _attacker(hz, ks, x5u=ks.url + "/cert.pem", kid=hz.keys.identity.kid),
    ),
    Attack(
        "embedded jwk of the attacker, attacker's kid",
        lambda hz, ks: _attacker(hz, ks, jwk=ks.key.public_jwk()),
    ),
    Attack(
        "embedded jwk of the attacker, trusted kid",
        lambda hz, ks: _attacker(hz, ks, jwk=ks.key.public_jwk(), kid=hz.keys.identity.kid),
    ),
    Attack("typ JWT", lambda hz, _: _mint(hz, headers={"typ": "JWT"})),
    Attack("typ missing", lambda hz, _: _mint(hz, headers={"typ": None})),
    Attack("typ of a warrant", lambda hz, _: _mint(hz, headers={"typ": WARRANT_TYP})),
    # Just over the gateway's limit: gRPC's default metadata limit (8 KiB soft,
    # refusing a random share of calls up to the hard limit) may refuse it first.
    Attack(
        "oversized token",
        lambda hz, _: _oversized(hz),
        transport=grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    # Far over every limit: always refused by gRPC itself.
    Attack(
        "token of 64 KiB",
        lambda hz, _: _mint(hz, claims={"pad": "A" * 65536}),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    Attack("idn not a keyed hash", lambda hz, _: _mint(hz, idn=hz.DOCUMENT)),
    Attack("assurance too low", lambda hz, _: _mint(hz, acr="low"), PERMISSION_DENIED),
    Attack("assurance unknown", lambda hz, _: _mint(hz, acr="platinum"), PERMISSION_DENIED),
    Attack("empty bearer", lambda hz, _: ""),
    Attack("not a JWT", lambda hz, _: "hello.world"),
]


async def _setup(hz: Harness) -> Any:
    await hz.carrier()
    await hz.provider("pay")
    return await hz.gateway()


async def _invoke(stub: Any, rpc: str, metadata: tuple[tuple[str, str], ...], handle: str) -> None:
    if rpc == "Lookup":
        call = stub.Lookup(gateway_pb2.LookupRequest(), metadata=metadata, timeout=10)
        _ = [m async for m in call]
    else:
        await stub.Unbind(
            gateway_pb2.GatewayUnbindRequest(handle=handle), metadata=metadata, timeout=10
        )


async def _refused(
    hz: Harness, gateway: Any, keys: KeyServer, *, rpc: str, attack: Attack, handle: str
) -> None:
    token = attack.forge(hz, keys)
    before_calls = hz.upstream_calls()
    before = await hz.snapshot(gateway)
    stub = hz.stub(gateway)
    metadata = hz.bearer(token) if token else (("authorization", "Bearer "),)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _invoke(stub, rpc, metadata, handle)
    assert err.value.code() in {attack.code, attack.transport}, (attack.name, err.value.details())
    details = err.value.details() or ""
    for secret in (hz.IDN, hz.CITIZEN_SUB, hz.DOCUMENT):
        assert secret not in details
    if len(token) > 40:
        assert token[-40:] not in details
    # Nothing contacted, nothing written, no key fetched.
    assert hz.upstream_calls() == before_calls, attack.name
    assert await hz.snapshot(gateway) == before, attack.name
    assert keys.requests == [], attack.name


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_forged_assertion_is_refused(
    hz: Harness, attacker_keys: KeyServer, attack: Attack
) -> None:
    """Lookup, and Unbind with a genuine handle, refuse the forged assertion with its
    status, contact no carrier or provider, write nothing (no ticket, no replay entry,
    no audit row), and fetch no key."""
    gateway = await _setup(hz)
    handle = await hz.handle_of(gateway, "pay")
    await _refused(hz, gateway, attacker_keys, rpc="Lookup", attack=attack, handle=handle)
    await _refused(hz, gateway, attacker_keys, rpc="Unbind", attack=attack, handle=handle)


async def test_replayed_assertion_is_refused_by_lookup_and_unbind(hz: Harness) -> None:
    """An assertion works once: replayed to Lookup or to Unbind it is UNAUTHENTICATED,
    and the replay contacts nothing and writes nothing."""
    gateway = await _setup(hz)
    handle = await hz.handle_of(gateway, "pay")
    token = hz.assertion()
    await hz.lookup(gateway, token)
    calls = hz.upstream_calls()
    before = await hz.snapshot(gateway)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hz.lookup(gateway, token)
    assert err.value.code() == UNAUTHENTICATED
    assert "replayed" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hz.unbind(gateway, handle, token)
    assert err.value.code() == UNAUTHENTICATED
    assert hz.upstream_calls() == calls
    assert await hz.snapshot(gateway) == before


async def test_same_jti_in_a_fresh_token_is_a_replay(hz: Harness) -> None:
    """A new token re-using a spent ``jti`` (new signature, new times) is a replay too."""
    gateway = await _setup(hz)
    await hz.lookup(gateway, hz.assertion(jti="once-only"))
    calls = hz.upstream_calls()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hz.lookup(gateway, hz.assertion(jti="once-only", now=time.time() + 1))
    assert err.value.code() == UNAUTHENTICATED
    assert hz.upstream_calls() == calls


async def test_citizen_a_cannot_use_citizen_bs_handle(hz: Harness) -> None:
    """Citizen A's valid assertion with citizen B's handle is PERMISSION_DENIED: no
    ticket, no delivery, and only the refusal is written to the audit log."""
    gateway = await _setup(hz)
    (provider, _address) = hz.providers[0]
    b_handle = await hz.handle_of(gateway, "pay", sub=hz.OTHER_SUB)
    calls = hz.upstream_calls()
    before = await hz.snapshot(gateway)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hz.unbind(gateway, b_handle, hz.assertion())
    assert err.value.code() == PERMISSION_DENIED
    assert hz.OTHER_NUMBER not in (err.value.details() or "")
    after = await hz.snapshot(gateway)
    assert after["unbind_tickets"] == before["unbind_tickets"] == []
    new_audit = [row for row in after["audit_log"] if row not in before["audit_log"]]
    assert [row[2] for row in new_audit] == ["unbind.refused"]
    assert hz.OTHER_NUMBER not in repr(new_audit)
    # Only the citizen's own replay entry is new.
    assert len(after["replay_cache"]) == len(before["replay_cache"]) + 1
    assert hz.upstream_calls() == calls
    assert not provider.unbinds


async def test_get_unbind_with_a_forged_assertion_reveals_nothing(hz: Harness) -> None:
    """GetUnbind of a real ticket with a forged assertion is UNAUTHENTICATED; with the
    other citizen's genuine assertion it is NOT_FOUND, exactly like an unknown ticket."""
    gateway = await _setup(hz)
    handle = await hz.handle_of(gateway, "pay")
    ticket = (await hz.unbind(gateway, handle)).ticket_id
    stub = hz.stub(gateway)
    forged = _none(hz, None)  # type: ignore[arg-type]  # the key server is not used
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetUnbind(
            gateway_pb2.GetUnbindRequest(ticket_id=ticket), metadata=hz.bearer(forged), timeout=5
        )
    assert err.value.code() == UNAUTHENTICATED
    codes = []
    for ticket_id in (ticket, "ut_" + "A" * 24):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetUnbind(
                gateway_pb2.GetUnbindRequest(ticket_id=ticket_id),
                metadata=hz.bearer(hz.assertion(sub=hz.OTHER_SUB, idn=hz.OTHER_IDN)),
                timeout=5,
            )
        codes.append((err.value.code(), err.value.details()))
    assert codes[0] == codes[1]
    assert codes[0][0] == grpc.StatusCode.NOT_FOUND
