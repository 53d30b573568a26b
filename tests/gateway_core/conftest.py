"""Fixtures for the gateway's pure core: identity, attribution, handles, masking."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from onecert.gateway._handles import HandleSealer
from onecert.gateway._identity import AssertionIssuer, AssertionVerifier, MemoryReplayCache
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey, VerificationKey, parse_jwks

ISSUER = "https://id.example.gov.cn"
AUDIENCE = "onecert-gateway"
LEVELS = ("low", "substantial", "high")
NOW = 1_750_000_000.0
IDN_KEY = bytes(range(32))


class FakeClock:
    """A settable clock shared by a verifier and its replay cache."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keyset(*keys: SigningKey) -> dict[str, VerificationKey]:
    return parse_jwks({"keys": [k.public_jwk() for k in keys]})


@pytest.fixture(scope="session")
def identity_key() -> SigningKey:
    return SigningKey.generate("ES256")


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    return SigningKey.generate("EdDSA")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idn() -> str:
    return compute_idn(IDN_KEY, "110101199003070011")


@pytest.fixture
def issuer(identity_key: SigningKey) -> AssertionIssuer:
    return AssertionIssuer(key=identity_key, issuer=ISSUER)


@pytest.fixture
def make_verifier(identity_key: SigningKey, clock: FakeClock) -> Callable[..., AssertionVerifier]:
    def make(**overrides: Any) -> AssertionVerifier:
        options: dict[str, Any] = {
            "issuers": {ISSUER: keyset(identity_key)},
            "audience": AUDIENCE,
            "assurance_levels": LEVELS,
            "required_assurance": "substantial",
            "replay": MemoryReplayCache(clock=clock),
            "clock": clock,
        }
        options.update(overrides)
        return AssertionVerifier(**options)

    return make


@pytest.fixture
def verifier(make_verifier: Callable[..., AssertionVerifier]) -> AssertionVerifier:
    return make_verifier()


@pytest.fixture
def mint(issuer: AssertionIssuer, idn: str) -> Callable[..., str]:
    """Mint an assertion valid at NOW for the default citizen; keywords override."""

    def make(**overrides: Any) -> str:
        options: dict[str, Any] = {
            "sub": "citizen-42",
            "idn": idn,
            "audience": AUDIENCE,
            "now": NOW,
        }
        options.update(overrides)
        return issuer.mint(**options)

    return make


@pytest.fixture(scope="session")
def handle_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def sealer(handle_key: bytes) -> HandleSealer:
    return HandleSealer(handle_key)
