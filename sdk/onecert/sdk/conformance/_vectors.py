"""The contract's test vectors: a fixed key, fixed tokens, and the verdict each must get.

``docs/contract-vectors.json`` is :func:`build_vectors` written out; a test
regenerates it (Ed25519 signatures are deterministic, so the file is
reproducible byte for byte) and runs every vector through the SDK's own
verifiers. An implementer in any language loads the JSON, verifies each
token at the vector's ``now`` with the JWKS it gives, and compares verdicts.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Unpack

from cryptography.hazmat.primitives.asymmetric import ed25519

from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import sha256_hex
from onecert.sdk._set import RISC_IDENTIFIER_RECYCLED, SET_TYP
from onecert.sdk._warrant import WARRANT_TYP
from onecert.sdk.conformance._tokens import Forge, Signer, Tampering, b64url, tampered

NOW = 1767225600  # 2026-01-01T00:00:00Z
ISSUER = "onecert-gateway"
PROVIDER = "example-forum"
CARRIER = "example-carrier"
MSISDN = "+8613800138000"
IDN = hashlib.sha256(b"onecert contract vectors: idn").hexdigest()
_OTHER_EVENT = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"


def _key(name: str) -> SigningKey:
    seed = hashlib.sha256(f"onecert contract vectors: {name}".encode()).digest()
    return SigningKey.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def _private_jwk(key: SigningKey) -> dict[str, str]:
    private = key.private_key
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    return {**key.public_jwk(), "d": b64url(private.private_bytes_raw())}


def _warrant_claims(target: str, purpose: str, audience: str) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": audience,
        "iat": NOW - 10,
        "exp": NOW + 20,
        "jti": "w-5f1c2a9e",
        "purpose": purpose,
        "qid": "q-0c9d5b",
        "target_sha256": sha256_hex(target),
    }


def _set_claims(audience: str = PROVIDER) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": audience,
        "iat": NOW - 10,
        "jti": "n-7a41e03b",
        "toe": NOW - 86400,
        "events": {
            RISC_IDENTIFIER_RECYCLED: {
                "subject": {"format": "phone_number", "phone_number": MSISDN},
                "act_by": NOW + 3 * 86400,
            }
        },
    }


def _keys() -> tuple[SigningKey, SigningKey, SigningKey]:
    """The gateway's key, another key under its kid, and a key nobody trusts."""
    gateway, impostor, stranger = _key("gateway"), _key("impostor"), _key("stranger")
    impostor = SigningKey(private_key=impostor.private_key, kid=gateway.kid, alg=gateway.alg)
    return gateway, impostor, stranger


def _forgeries(impostor: SigningKey, stranger: SigningKey) -> list[tuple[str, str, Tampering]]:
    """What every token the gateway signs must be refused for, in the vectors' order:
    each forgery's name, what it breaks (``typ``, ``kid``, ``alg``, ``key``,
    ``iss``, ``aud``: warrants and SETs number these rules apart) and how."""
    return [
        ("no_typ", "typ", {"drop_header": ("typ",)}),
        ("unknown_kid", "kid", {"signer": Signer(key=stranger)}),
        ("no_kid", "kid", {"drop_header": ("kid",)}),
        ("alg_none", "alg", {"signer": Signer("none")}),
        ("hs256_public_key", "alg", {"signer": Signer("hs256")}),
        ("wrong_key_same_kid", "key", {"signer": Signer(key=impostor)}),
        ("wrong_issuer", "iss", {"change": {"iss": "onecert-gateway-other"}}),
        ("wrong_audience", "aud", {"change": {"aud": "example-forum-other"}}),
    ]


def _vector(name: str, rule: str, status: str, token: str, **where: str) -> dict[str, Any]:
    """One test vector: the token, where it is presented, and the verdict it must get."""
    return {
        "name": name,
        "rule": rule,
        **where,
        "token": token,
        "verdict": "accept" if status == "OK" else "reject",
        "status": status,
    }


def _warrant_vectors() -> list[dict[str, Any]]:
    gateway, impostor, stranger = _keys()
    forge = Forge(key=gateway, issuer=ISSUER, audience=PROVIDER)
    warrants: list[dict[str, Any]] = []

    def warrant(
        name: str,
        rule: str,
        status: str,
        *,
        rpc: str = "onecert.v1.BindingProvider/ListBindings",
        purpose: str = "lookup",
        raw: str | None = None,
        **tampering: Unpack[Tampering],
    ) -> None:
        carrier = rpc.startswith("onecert.v1.NumberRegistry/")
        target, audience = (IDN, CARRIER) if carrier else (MSISDN, PROVIDER)
        claims = _warrant_claims(target, purpose, audience)
        token = raw or forge.forged(claims, tampering, typ=WARRANT_TYP)
        warrants.append(
            _vector(name, rule, status, token, rpc=rpc, audience=audience, target=target)
        )

    ok, unauth = "OK", "UNAUTHENTICATED"
    warrant("good_lookup", "W-13", ok)
    unbind_rpc = "onecert.v1.BindingProvider/Unbind"
    warrant("good_unbind", "W-13", ok, rpc=unbind_rpc, purpose="unbind")
    warrant("good_list_numbers", "W-14", ok, rpc="onecert.v1.NumberRegistry/ListNumbers")
    warrant("not_a_jws", "W-2", unauth, raw="not-a-jwt")
    warrant("set_typ", "W-3", unauth, typ=SET_TYP)
    rules = {"typ": "W-3", "kid": "W-4", "alg": "W-5", "key": "W-6", "iss": "W-7", "aud": "W-8"}
    for name, broken, tampering in _forgeries(impostor, stranger):
        warrant(name, rules[broken], unauth, **tampering)
    warrant("audience_list_with_id", "W-8", ok, change={"aud": ["other", PROVIDER]})
    warrant("audience_list_without_id", "W-8", unauth, change={"aud": ["other", "x"]})
    warrant("expired", "W-9", unauth, change={"iat": NOW - 90, "exp": NOW - 60})
    warrant("not_yet_valid", "W-9", unauth, change={"nbf": NOW + 60})
    warrant("iat_future", "W-10", unauth, change={"iat": NOW + 60, "exp": NOW + 90})
    warrant("no_iat", "W-10", unauth, drop=("iat",))
    warrant("lifetime_60s", "W-11", ok, change={"iat": NOW - 10, "exp": NOW + 50})
    warrant("lifetime_61s", "W-11", unauth, change={"iat": NOW - 10, "exp": NOW + 51})
    warrant("no_exp", "W-11", unauth, drop=("exp",))
    warrant("no_jti", "W-12", unauth, drop=("jti",))
    warrant("unbind_purpose_on_list", "W-13", unauth, purpose="unbind")
    warrant("lookup_purpose_on_unbind", "W-13", unauth, rpc="onecert.v1.BindingProvider/Unbind")
    warrant("conformance_purpose", "W-13", unauth, purpose="conformance")
    warrant("no_purpose", "W-13", unauth, drop=("purpose",))
    other = sha256_hex("+8613800138001")
    warrant("other_target", "W-14", unauth, change={"target_sha256": other})
    warrant(
        "uppercase_target", "W-14", unauth, change={"target_sha256": sha256_hex(MSISDN).upper()}
    )
    warrant("no_target", "W-14", unauth, drop=("target_sha256",))
    warrant("no_qid", "W-15", ok, drop=("qid",))
    warrant("unknown_claim", "W-16", ok, change={"x_future": {"a": 1}})
    warrant("unknown_crit", "W-16", unauth, header={"crit": ["x-future"], "x-future": True})
    return warrants


def _set_vectors() -> list[dict[str, Any]]:
    gateway, impostor, stranger = _keys()
    forge = Forge(key=gateway, issuer=ISSUER, audience=PROVIDER)
    ok, unauth = "OK", "UNAUTHENTICATED"
    sets: list[dict[str, Any]] = []

    def notice(
        name: str, rule: str, status: str, *, raw: str | None = None, **tampering: Unpack[Tampering]
    ) -> None:
        token = raw or forge.forged(_set_claims(), tampering, typ=SET_TYP)
        vector = _vector(name, rule, status, token, audience=PROVIDER)
        if status == "OK":
            claims = tampered(_set_claims(), tampering)
            event = claims["events"][RISC_IDENTIFIER_RECYCLED]
            vector["notice"] = {
                "jti": claims["jti"],
                "msisdn": event["subject"]["phone_number"],
                "recycled_at": claims["toe"],
                "act_by": event.get("act_by"),
            }
        sets.append(vector)

    invalid = "INVALID_ARGUMENT"
    event = _set_claims()["events"][RISC_IDENTIFIER_RECYCLED]
    no_act_by = {"subject": event["subject"]}
    notice("good", "E-1", ok)
    notice(
        "good_without_act_by", "E-8", ok, change={"events": {RISC_IDENTIFIER_RECYCLED: no_act_by}}
    )
    notice("not_a_jws", "E-2", invalid, raw="not-a-set")
    notice("warrant_typ", "E-3", invalid, typ=WARRANT_TYP)
    rules = {"typ": "E-3", "kid": "E-4", "alg": "E-4", "key": "E-4", "iss": "E-5", "aud": "E-6"}
    for name, broken, tampering in _forgeries(impostor, stranger):
        notice(name, rules[broken], invalid if broken == "typ" else unauth, **tampering)
    notice("other_event_type", "E-7", invalid, change={"events": {_OTHER_EVENT: event}})
    notice(
        "two_events",
        "E-7",
        invalid,
        change={"events": {RISC_IDENTIFIER_RECYCLED: event, _OTHER_EVENT: event}},
    )
    notice(
        "subject_not_a_phone",
        "E-7",
        invalid,
        change={
            "events": {
                RISC_IDENTIFIER_RECYCLED: {"subject": {"format": "email", "email": "a@b.example"}}
            }
        },
    )
    notice("no_toe", "E-8", invalid, drop=("toe",))
    notice("no_jti", "E-8", invalid, drop=("jti",))
    notice("old", "E-9", unauth, change={"iat": NOW - 3600})
    notice("expired", "E-9", unauth, change={"iat": NOW - 100, "exp": NOW - 60})
    notice("iat_future", "E-9", unauth, change={"iat": NOW + 60})
    return sets


def build_vectors() -> dict[str, Any]:
    """Every vector, as the JSON document committed under docs/."""
    gateway, impostor, stranger = _keys()
    return {
        "description": (
            "Test vectors of docs/contract.md. Verify every token at time `now` (seconds "
            "since the epoch) against `jwks`, as the callee named by `audience`, for the "
            "warrants on the RPC `rpc` about `target`; compare your verdict and gRPC "
            "status with `verdict` and `status`. The private keys are published test "
            "keys: never trust them anywhere."
        ),
        "now": NOW,
        "issuer": ISSUER,
        "jwks": gateway.jwks(),
        "test_private_keys": {
            "gateway": _private_jwk(gateway),
            "impostor_same_kid": {**_private_jwk(impostor), "kid": gateway.kid},
            "stranger": _private_jwk(stranger),
        },
        "warrants": _warrant_vectors(),
        "sets": _set_vectors(),
    }


def vectors_json() -> str:
    """:func:`build_vectors` as the committed file's text."""
    return json.dumps(build_vectors(), indent=2, ensure_ascii=False) + "\n"
