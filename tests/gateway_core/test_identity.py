"""Identity assertions: every RFC 8725 check, replay refusal, bearer metadata."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecert.gateway._identity import (
    ASSERTION_TYP,
    REQUIRED_CLAIMS,
    AssertionIssuer,
    AssertionVerifier,
    Citizen,
    IdentityError,
    MemoryReplayCache,
    ReplayCacheFullError,
    ReplayCacheUnavailableError,
    bearer_token,
)
from onecert.sdk._keys import SigningKey, parse_jwks

Mint = Callable[..., str]
MakeVerifier = Callable[..., AssertionVerifier]

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


SECOND_ISSUER = "https://id2.example.gov.cn"


def _two_issuers(
    make_verifier: MakeVerifier, identity_key: SigningKey, second: SigningKey
) -> AssertionVerifier:
    """A verifier trusting the usual identity service and :data:`SECOND_ISSUER` (``second``)."""
    return make_verifier(
        issuers={
            "https://id.example.gov.cn": parse_jwks(identity_key.jwks()),
            SECOND_ISSUER: parse_jwks(second.jwks()),
        }
    )


def _forged(
    other_key: SigningKey,
    identity_key: SigningKey,
    *,
    idn: str,
    jti: str | None = None,
    **headers: Any,
) -> str:
    """An assertion signed with ``other_key`` whose header names the identity service's key."""
    forger = AssertionIssuer(key=other_key, issuer="https://id.example.gov.cn")
    return forger.mint(
        sub="citizen-42",
        idn=idn,
        audience="onecert-gateway",
        jti=jti,
        now=1_750_000_000,
        headers={"kid": identity_key.kid, "alg": "ES256", **headers},
    )


def _raw_claims(*, jti: str) -> dict[str, Any]:
    """A citizen's valid assertion claims, for tokens the tests sign (or not) by hand."""
    return {
        "iss": "https://id.example.gov.cn",
        "sub": "citizen-42",
        "aud": "onecert-gateway",
        "iat": 1_750_000_000,
        "exp": 1_750_000_100,
        "jti": jti,
        "idn": "a" * 64,
        "acr": "high",
    }


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


async def refused(
    verifier: AssertionVerifier, token: str, code: grpc.StatusCode, reason: str
) -> IdentityError:
    """Verify ``token`` expecting a refusal; the message must not leak the token or the idn."""
    with pytest.raises(IdentityError) as info:
        await verifier.verify(token)
    error = info.value
    assert (error.code, error.reason) == (code, reason), error.message
    assert not token or token not in error.message
    for part in token.split("."):
        if len(part) >= 16:
            assert part not in error.message
    assert "citizen-42" not in error.message
    assert error.message
    return error


async def test_valid_assertion_gives_the_citizen(
    verifier: AssertionVerifier, mint: Mint, idn: str, clock: Any
) -> None:
    """A well-formed assertion yields the citizen's sub, idn, acr, jti, issuer and expiry."""
    token = mint(jti="j-1", lifetime=120)
    citizen = await verifier.verify(token)
    assert citizen == Citizen(
        sub="citizen-42",
        idn=idn,
        acr="substantial",
        jti="j-1",
        issuer="https://id.example.gov.cn",
        expires_at=clock.now + 120,
    )


async def test_replayed_jti_is_refused(verifier: AssertionVerifier, mint: Mint) -> None:
    """The same assertion presented twice is refused the second time."""
    token = mint()
    await verifier.verify(token)
    await refused(verifier, token, UNAUTHENTICATED, "replayed")


async def test_replayed_jti_in_another_token_is_refused(
    verifier: AssertionVerifier, mint: Mint
) -> None:
    """A second, differently signed-over assertion reusing a live jti is refused."""
    await verifier.verify(mint(jti="same", sub="a"))
    await refused(verifier, mint(jti="same", sub="b"), UNAUTHENTICATED, "replayed")


async def test_same_jti_from_another_issuer_is_not_a_replay(
    make_verifier: MakeVerifier, identity_key: SigningKey, mint: Mint, idn: str, clock: Any
) -> None:
    """Replay is judged per issuer: two identity services may pick the same jti."""
    second = SigningKey.generate("EdDSA")
    verifier = _two_issuers(make_verifier, identity_key, second)
    other = AssertionIssuer(key=second, issuer=SECOND_ISSUER)
    await verifier.verify(mint(jti="shared"))
    citizen = await verifier.verify(
        other.mint(sub="s", idn=idn, audience="onecert-gateway", jti="shared", now=clock.now)
    )
    assert citizen.issuer == SECOND_ISSUER


async def test_replay_is_checked_only_after_the_signature(
    verifier: AssertionVerifier, mint: Mint, other_key: SigningKey, identity_key: SigningKey
) -> None:
    """A forged assertion never burns the jti of the genuine one that follows."""
    forged = _forged(other_key, identity_key, idn="0" * 64, jti="victim")
    await refused(verifier, forged, UNAUTHENTICATED, "signature")
    assert (await verifier.verify(mint(jti="victim"))).jti == "victim"


async def test_refused_assertion_does_not_burn_its_jti(
    verifier: AssertionVerifier, mint: Mint
) -> None:
    """An assertion refused for its assurance level leaves its jti unused."""
    await refused(verifier, mint(jti="k", acr="low"), PERMISSION_DENIED, "acr")
    await verifier.verify(mint(jti="k"))


async def test_unknown_issuer_is_refused(make_verifier: MakeVerifier, idn: str) -> None:
    """An assertion from an issuer that is not configured is refused."""
    verifier = make_verifier()
    stranger = AssertionIssuer(key=SigningKey.generate("ES256"), issuer="https://evil.example")
    token = stranger.mint(sub="citizen-42", idn=idn, audience="onecert-gateway", now=1.75e9)
    await refused(verifier, token, UNAUTHENTICATED, "iss")


async def test_missing_issuer_is_refused(verifier: AssertionVerifier, mint: Mint) -> None:
    """An assertion without iss is refused as from an untrusted issuer."""
    await refused(verifier, mint(claims={"iss": None}), UNAUTHENTICATED, "iss")


async def test_issuer_cannot_borrow_another_issuers_name(
    make_verifier: MakeVerifier, identity_key: SigningKey, idn: str
) -> None:
    """An issuer naming another trusted issuer is checked against that issuer's keys only."""
    second = SigningKey.generate("ES256")
    verifier = _two_issuers(make_verifier, identity_key, second)
    impostor = AssertionIssuer(key=second, issuer="https://id.example.gov.cn")
    token = impostor.mint(sub="citizen-42", idn=idn, audience="onecert-gateway", now=1.75e9)
    await refused(verifier, token, UNAUTHENTICATED, "kid")


async def test_issuer_compared_exactly(verifier: AssertionVerifier, mint: Mint) -> None:
    """An issuer that differs by a trailing slash or in case is not trusted."""
    await refused(
        verifier, mint(claims={"iss": "https://id.example.gov.cn/"}), UNAUTHENTICATED, "iss"
    )
    await refused(
        verifier, mint(claims={"iss": "https://ID.example.gov.cn"}), UNAUTHENTICATED, "iss"
    )


async def test_key_rotation_accepts_every_configured_key(
    make_verifier: MakeVerifier, identity_key: SigningKey, idn: str, clock: Any
) -> None:
    """During rotation, assertions signed by either of the issuer's keys verify."""
    new_key = SigningKey.generate("EdDSA")
    jwks = {"keys": [identity_key.public_jwk(), new_key.public_jwk()]}
    verifier = make_verifier(issuers={"https://id.example.gov.cn": parse_jwks(jwks)})
    for key in (identity_key, new_key):
        token = AssertionIssuer(key=key, issuer="https://id.example.gov.cn").mint(
            sub="citizen-42", idn=idn, audience="onecert-gateway", now=clock.now
        )
        assert (await verifier.verify(token)).sub == "citizen-42"


@pytest.mark.parametrize(
    "audience", ["other-service", "onecert-gateway ", ["onecert-gateway", "other-service"], []]
)
async def test_wrong_audience_is_refused(
    verifier: AssertionVerifier, mint: Mint, audience: Any
) -> None:
    """An assertion meant for another audience, or for others too, is refused."""
    token = mint(claims={"aud": audience})
    with pytest.raises(IdentityError) as info:
        await verifier.verify(token)
    assert info.value.code == UNAUTHENTICATED
    assert info.value.reason in {"aud", "claims"}


async def test_audience_as_single_element_list_is_accepted(
    verifier: AssertionVerifier, mint: Mint
) -> None:
    """RFC 7519 allows aud as a list; one naming only the gateway is accepted."""
    await verifier.verify(mint(claims={"aud": ["onecert-gateway"]}))


async def test_expired_assertion_is_refused_after_leeway(
    make_verifier: MakeVerifier, mint: Mint, clock: Any
) -> None:
    """An assertion is accepted up to exp + leeway and refused after it."""
    verifier = make_verifier(leeway=30)
    clock.now += 120 + 30
    await verifier.verify(mint(lifetime=120, now=clock.now - 150))
    clock.now += 1
    await refused(verifier, mint(lifetime=120, now=clock.now - 151), UNAUTHENTICATED, "expired")


async def test_not_yet_valid_assertion_is_refused(verifier: AssertionVerifier, mint: Mint) -> None:
    """An nbf beyond the leeway, or an iat in the future, is refused."""
    await refused(verifier, mint(claims={"nbf": 1_750_000_100}), UNAUTHENTICATED, "nbf")
    await refused(verifier, mint(now=1_750_000_100), UNAUTHENTICATED, "iat")


async def test_nbf_within_leeway_is_accepted(verifier: AssertionVerifier, mint: Mint) -> None:
    """A clock a few seconds behind the identity service's does not refuse a fresh assertion."""
    await verifier.verify(mint(claims={"nbf": 1_750_000_010}, now=1_750_000_010))


async def test_lifetime_above_maximum_is_refused(make_verifier: MakeVerifier, mint: Mint) -> None:
    """An assertion that lives longer than max_lifetime is refused even while valid."""
    verifier = make_verifier(max_lifetime=300)
    await verifier.verify(mint(lifetime=300))
    await refused(verifier, mint(lifetime=301), UNAUTHENTICATED, "lifetime")


@pytest.mark.parametrize("typ", ["JWT", "onecert-warrant+jwt", "application/onecert-id+jwt", None])
async def test_wrong_or_missing_typ_is_refused(
    verifier: AssertionVerifier, mint: Mint, typ: str | None
) -> None:
    """Only the explicit assertion type is accepted (RFC 8725 3.11)."""
    await refused(verifier, mint(headers={"typ": typ}), UNAUTHENTICATED, "typ")


async def test_warrant_is_not_an_assertion(
    verifier: AssertionVerifier, identity_key: SigningKey
) -> None:
    """A gateway warrant signed by a trusted key is still refused as an assertion (typ)."""
    from onecert.sdk._warrant import WarrantIssuer

    warrant = WarrantIssuer(key=identity_key, issuer="https://id.example.gov.cn").issue(
        audience="onecert-gateway", target="+8613800138000", now=1_750_000_000
    )
    await refused(verifier, warrant, UNAUTHENTICATED, "typ")


async def test_alg_none_is_refused(verifier: AssertionVerifier, identity_key: SigningKey) -> None:
    """An unsigned assertion (alg none) is refused."""
    header = {"alg": "none", "typ": ASSERTION_TYP, "kid": identity_key.kid}
    claims = _raw_claims(jti="n")
    for token in (f"{b64json(header)}.{b64json(claims)}.", f"{b64json(header)}.{b64json(claims)}"):
        with pytest.raises(IdentityError) as info:
            await verifier.verify(token)
        assert info.value.code == UNAUTHENTICATED


async def test_hmac_with_the_public_key_is_refused(
    verifier: AssertionVerifier, identity_key: SigningKey
) -> None:
    """An HS256 token keyed with the issuer's public key (algorithm confusion) is refused."""
    from cryptography.hazmat.primitives import serialization

    public_pem = identity_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": ASSERTION_TYP, "kid": identity_key.kid}
    claims = _raw_claims(jti="h")
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    await refused(verifier, f"{signing_input}.{b64(mac)}", UNAUTHENTICATED, "alg")


async def test_header_alg_other_than_the_keys_is_refused(
    verifier: AssertionVerifier, mint: Mint
) -> None:
    """A header naming another algorithm than the one pinned to the kid is refused."""
    await refused(verifier, mint(headers={"alg": "EdDSA"}), UNAUTHENTICATED, "alg")


async def test_unknown_or_missing_kid_is_refused(verifier: AssertionVerifier, mint: Mint) -> None:
    """An assertion naming no key, or a key the issuer does not publish, is refused."""
    await refused(verifier, mint(headers={"kid": "not-a-key"}), UNAUTHENTICATED, "kid")
    await refused(verifier, mint(headers={"kid": None}), UNAUTHENTICATED, "kid")


async def test_embedded_key_is_ignored(
    verifier: AssertionVerifier, other_key: SigningKey, identity_key: SigningKey
) -> None:
    """A jwk or jku header never supplies the verification key."""
    token = _forged(
        other_key,
        identity_key,
        idn="a" * 64,
        jwk=other_key.public_jwk(),
        jku="https://evil.example/jwks.json",
    )
    await refused(verifier, token, UNAUTHENTICATED, "signature")


async def test_crit_header_is_refused(verifier: AssertionVerifier, mint: Mint) -> None:
    """A critical header extension the gateway does not know is refused."""
    # PyJWT itself refuses an unknown crit while parsing the header, so the
    # reason is "malformed" rather than verify_jwt's own "crit".
    with pytest.raises(IdentityError) as info:
        await verifier.verify(mint(headers={"crit": ["exp2"], "exp2": 1}))
    assert info.value.code == UNAUTHENTICATED
    assert info.value.reason in {"crit", "malformed"}


async def test_tampered_payload_is_refused(verifier: AssertionVerifier, mint: Mint) -> None:
    """Changing the payload of a signed assertion breaks its signature."""
    header, payload, signature = mint().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["acr"] = "high"
    await refused(verifier, f"{header}.{b64json(claims)}.{signature}", UNAUTHENTICATED, "signature")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
async def test_missing_required_claim_is_refused(
    verifier: AssertionVerifier, mint: Mint, claim: str
) -> None:
    """Every required claim must be present."""
    with pytest.raises(IdentityError) as info:
        await verifier.verify(mint(claims={claim: None}))
    assert info.value.code == UNAUTHENTICATED
    assert "citizen-42" not in info.value.message


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"idn": "A" * 64}, "idn"),
        ({"idn": "a" * 63}, "idn"),
        ({"idn": "110101199003070011"}, "idn"),
        ({"idn": 7}, "idn"),
        ({"sub": ""}, "sub"),
        ({"sub": "x" * 257}, "sub"),
        ({"sub": "bad\nsub"}, "sub"),
        ({"jti": ""}, "jti"),
        ({"jti": "j" * 257}, "jti"),
        ({"acr": 3}, "claims"),
    ],
)
async def test_malformed_claims_are_refused(
    verifier: AssertionVerifier, mint: Mint, claims: dict[str, Any], reason: str
) -> None:
    """Claims of the wrong shape are refused, without quoting them."""
    error = await refused(verifier, mint(claims=claims), UNAUTHENTICATED, reason)
    assert "110101199003070011" not in error.message


async def test_message_never_contains_the_idn(
    verifier: AssertionVerifier, mint: Mint, idn: str
) -> None:
    """No refusal message repeats the idn."""
    for token in (mint(acr="low"), mint(claims={"aud": "x"}), mint(lifetime=9999)):
        with pytest.raises(IdentityError) as info:
            await verifier.verify(token)
        assert idn not in info.value.message


async def test_low_assurance_is_permission_denied(verifier: AssertionVerifier, mint: Mint) -> None:
    """An acr below the required level is PERMISSION_DENIED, naming the required level."""
    error = await refused(verifier, mint(acr="low"), PERMISSION_DENIED, "acr")
    assert "substantial" in error.message


async def test_unknown_assurance_is_permission_denied(
    verifier: AssertionVerifier, mint: Mint
) -> None:
    """An acr the gateway cannot rank is PERMISSION_DENIED."""
    await refused(verifier, mint(acr="ultra"), PERMISSION_DENIED, "acr_unknown")


async def test_higher_assurance_is_accepted(verifier: AssertionVerifier, mint: Mint) -> None:
    """An acr above the required level is accepted."""
    assert (await verifier.verify(mint(acr="high"))).acr == "high"


async def test_oversized_and_empty_tokens_are_refused(verifier: AssertionVerifier) -> None:
    """An empty or huge token is refused before any parsing."""
    await refused(verifier, "", UNAUTHENTICATED, "missing")
    await refused(verifier, "a" * 10_000, UNAUTHENTICATED, "oversized")


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        "..",
        f"{b64(b'[' * 3000)}.{b64(b'{}')}.",
        f"{b64json({'typ': ASSERTION_TYP})}.{b64(b'[' * 3000)}.sig",
        f"{b64(b'[' * 3000)}.{b64json({'iss': 'https://id.example.gov.cn'})}.sig",
        f"{b64json({'typ': ASSERTION_TYP})}.{b64json(['iss'])}.sig",
        f"{b64json({'typ': ASSERTION_TYP})}.{b64json({'iss': 'https://id.example.gov.cn'})}.sig",
    ],
)
async def test_garbage_is_unauthenticated(verifier: AssertionVerifier, token: str) -> None:
    """Malformed tokens, including deeply nested JSON, are UNAUTHENTICATED, never a crash."""
    with pytest.raises(IdentityError) as info:
        await verifier.verify(token)
    assert info.value.code == UNAUTHENTICATED


@settings(max_examples=150)
@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_\-]{0,80}(\.[A-Za-z0-9_\-]{0,80}){2}"))
def test_fuzzed_tokens_are_unauthenticated(token: str) -> None:
    """Any string that is not a valid assertion is refused with UNAUTHENTICATED."""
    verifier = AssertionVerifier(
        issuers={"iss": parse_jwks(_FUZZ_KEY.jwks())},
        audience="onecert-gateway",
        assurance_levels=["low", "high"],
        required_assurance="low",
        replay=MemoryReplayCache(),
    )
    with pytest.raises(IdentityError) as info:
        asyncio.run(verifier.verify(token))
    assert info.value.code == UNAUTHENTICATED


_FUZZ_KEY = SigningKey.generate("EdDSA")


def test_verifier_configuration_is_checked(identity_key: SigningKey) -> None:
    """A verifier with no issuers, an unknown required level or duplicate levels cannot be built."""
    keys = parse_jwks(identity_key.jwks())
    base: dict[str, Any] = {
        "issuers": {"i": keys},
        "audience": "g",
        "assurance_levels": ["low", "high"],
        "required_assurance": "high",
        "replay": MemoryReplayCache(),
    }
    AssertionVerifier(**base)
    bad: dict[str, Any]
    for bad in (
        {"issuers": {}},
        {"issuers": {"i": {}}},
        {"audience": ""},
        {"required_assurance": "substantial"},
        {"assurance_levels": ["low", "low"], "required_assurance": "low"},
        {"max_lifetime": 0},
        {"leeway": -1},
    ):
        with pytest.raises(ValueError, match=r"."):
            AssertionVerifier(**{**base, **bad})


# ------------------------------------------------------------- replay cache


async def test_replay_cache_forgets_after_expiry(clock: Any) -> None:
    """An entry is refused while live and forgotten once its expiry has passed."""
    cache = MemoryReplayCache(clock=clock)
    assert await cache.remember("k", clock.now + 10)
    assert not await cache.remember("k", clock.now + 10)
    clock.now += 10
    assert await cache.remember("k", clock.now + 10)


async def test_replay_cache_evicts_expired_entries_first(clock: Any) -> None:
    """A full cache makes room by dropping expired entries."""
    cache = MemoryReplayCache(max_entries=2, clock=clock)
    assert await cache.remember("a", clock.now + 5)
    assert await cache.remember("b", clock.now + 50)
    clock.now += 6
    assert await cache.remember("c", clock.now + 50)
    assert len(cache) == 2
    assert not await cache.remember("b", clock.now + 50)


async def test_replay_cache_full_of_live_entries_fails_closed(clock: Any) -> None:
    """A cache full of live entries refuses new ones instead of forgetting live ones."""
    cache = MemoryReplayCache(max_entries=2, clock=clock)
    assert await cache.remember("a", clock.now + 50)
    assert await cache.remember("b", clock.now + 50)
    with pytest.raises(ReplayCacheFullError):
        await cache.remember("c", clock.now + 50)
    assert not await cache.remember("a", clock.now + 50)


async def test_full_replay_cache_is_resource_exhausted(
    make_verifier: MakeVerifier, mint: Mint, clock: Any
) -> None:
    """When the replay cache is full the assertion is refused with RESOURCE_EXHAUSTED."""
    verifier = make_verifier(replay=MemoryReplayCache(max_entries=1, clock=clock))
    await verifier.verify(mint())
    await refused(verifier, mint(), grpc.StatusCode.RESOURCE_EXHAUSTED, "replay_cache_full")


class _UnreachableReplay:
    """A replay cache whose database cannot be reached."""

    async def remember(self, jti: str, expires_at: float) -> bool:
        raise ReplayCacheUnavailableError("connection refused")


async def test_unreachable_replay_cache_is_unavailable_not_capacity(
    make_verifier: MakeVerifier, mint: Mint
) -> None:
    """A replay cache that cannot be reached refuses the assertion with UNAVAILABLE and
    says so, instead of RESOURCE_EXHAUSTED "at capacity"."""
    verifier = make_verifier(replay=_UnreachableReplay())
    await refused(verifier, mint(), grpc.StatusCode.UNAVAILABLE, "replay_cache_unavailable")


async def test_replay_entry_outlives_the_leeway(
    make_verifier: MakeVerifier, mint: Mint, clock: Any
) -> None:
    """A token replayed inside the exp leeway is still refused as a replay."""
    verifier = make_verifier(leeway=30)
    token = mint(lifetime=60)
    await verifier.verify(token)
    clock.now += 60 + 29
    await refused(verifier, token, UNAUTHENTICATED, "replayed")


# ---------------------------------------------------------- bearer metadata


def test_bearer_token_is_extracted() -> None:
    """The token follows 'Bearer ' (scheme in any case); other metadata is ignored."""
    assert bearer_token([("x-request-id", "1"), ("authorization", "Bearer abc.def.ghi")]) == (
        "abc.def.ghi"
    )
    assert bearer_token([("authorization", "bearer  abc.def.ghi ")]) == "abc.def.ghi"
    assert bearer_token([("authorization", b"Bearer abc.def.ghi")]) == "abc.def.ghi"


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("x-other", "Bearer a.b.c")],
        [("authorization", "Basic dXNlcjpwYXNz")],
        [("authorization", "Bearer")],
        [("authorization", "Bearer ")],
        [("authorization", "Bearer a.b.c extra")],
        [("authorization", "a.b.c")],
        [("authorization", b"Bearer \xff")],
        [("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")],
    ],
)
def test_bad_bearer_metadata_is_unauthenticated(metadata: Any) -> None:
    """Missing, repeated, non-Bearer or empty authorization metadata is UNAUTHENTICATED."""
    with pytest.raises(IdentityError) as info:
        bearer_token(metadata)
    assert info.value.code == UNAUTHENTICATED
    assert "dXNlcjpwYXNz" not in info.value.message


async def test_bearer_token_from_real_grpc_metadata(
    verifier: AssertionVerifier, mint: Mint
) -> None:
    """A token sent as call metadata over a real server reaches the verifier intact."""
    token = mint()
    seen: list[str] = []

    async def handler(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            citizen = await verifier.verify(bearer_token(context.invocation_metadata()))
        except IdentityError as exc:
            await context.abort(exc.code, exc.message)
        seen.append(citizen.sub)
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "t.T", {"Echo": grpc.unary_unary_rpc_method_handler(handler)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/t.T/Echo")
            assert await echo(b"x", metadata=[("authorization", f"Bearer {token}")], timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await echo(b"x", metadata=[("authorization", f"Bearer {token}")], timeout=5)
            assert info.value.code() == UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await echo(b"x", timeout=5)
            assert info.value.code() == UNAUTHENTICATED
    finally:
        await server.stop(None)
    assert seen == ["citizen-42"]
