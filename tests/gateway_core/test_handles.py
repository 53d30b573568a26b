"""Handles: sealed for one citizen, tamper-evident, expiring, and never a crash."""

from __future__ import annotations

import base64
import dataclasses
import secrets
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onecert.gateway._attribution import Attribution
from onecert.gateway._handles import (
    HandleClaims,
    HandleError,
    HandleSealer,
    load_handle_key,
)
from onecert.sdk._keys import KeyConfigError

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
NOW = 1_750_000_000.0

CLAIMS = HandleClaims(
    sub="citizen-42",
    provider_id="pay.example",
    msisdn="+8613800138000",
    account_ref="acct-000123456",
    attribution=Attribution.LEFT_BEHIND,
    expires_at=NOW + 900,
    query_id="q-5f0c2a9e1b7d4c3a",
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def refused(sealer: HandleSealer, handle: str, *, sub: str = "citizen-42") -> HandleError:
    with pytest.raises(HandleError) as info:
        sealer.open(handle, sub=sub, now=NOW)
    assert info.value.code in {INVALID_ARGUMENT, PERMISSION_DENIED}
    assert CLAIMS.msisdn not in info.value.message
    assert CLAIMS.account_ref not in info.value.message
    return info.value


def test_round_trip(sealer: HandleSealer) -> None:
    """A sealed handle opens to the same claims for the same citizen."""
    handle = sealer.seal(CLAIMS)
    assert sealer.open(handle, sub="citizen-42", now=NOW) == CLAIMS


def test_handle_is_short_opaque_text(sealer: HandleSealer) -> None:
    """A typical handle is short URL-safe text that reveals none of its claims."""
    handle = sealer.seal(CLAIMS)
    assert len(handle) < 200
    assert set(handle) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    for secret in (CLAIMS.msisdn, CLAIMS.account_ref, CLAIMS.provider_id, CLAIMS.sub):
        assert secret not in handle
        assert secret.encode() not in unb64(handle)


def test_longest_claims_stay_bounded(sealer: HandleSealer) -> None:
    """Even with every field at its limit a handle stays well under MAX_HANDLE_CHARS."""
    longest = dataclasses.replace(
        CLAIMS,
        sub="s" * 256,
        provider_id="p" * 128,
        msisdn="+" + "9" * 15,
        account_ref="a" * 256,
        query_id="q" * 64,
    )
    handle = sealer.seal(longest)
    assert len(handle) < 700
    assert sealer.open(handle, sub="s" * 256, now=NOW) == longest


def test_each_seal_differs(sealer: HandleSealer) -> None:
    """Sealing the same claims twice gives different handles (random nonce)."""
    assert sealer.seal(CLAIMS) != sealer.seal(CLAIMS)


@pytest.mark.parametrize("attribution", list(Attribution))
def test_every_attribution_round_trips(sealer: HandleSealer, attribution: Attribution) -> None:
    """MINE, LEFT_BEHIND and PREVIOUS_HOLDER handles all round-trip, with unicode refs."""
    claims = dataclasses.replace(
        CLAIMS, attribution=attribution, account_ref="账户-7", sub="市民-1", query_id=""
    )
    assert sealer.open(sealer.seal(claims), sub="市民-1", now=NOW) == claims


def test_another_citizen_is_refused(sealer: HandleSealer) -> None:
    """A handle sealed for one citizen is PERMISSION_DENIED for another."""
    error = refused(sealer, sealer.seal(CLAIMS), sub="citizen-43")
    assert error.code == PERMISSION_DENIED


def test_expired_handle_is_refused_unless_allowed(sealer: HandleSealer) -> None:
    """An expired handle is INVALID_ARGUMENT; the delivery worker may still open it."""
    handle = sealer.seal(CLAIMS)
    sealer.open(handle, sub="citizen-42", now=CLAIMS.expires_at - 1)
    with pytest.raises(HandleError) as info:
        sealer.open(handle, sub="citizen-42", now=CLAIMS.expires_at)
    assert (info.value.code, info.value.reason) == (INVALID_ARGUMENT, "expired")
    opened = sealer.open(
        handle, sub="citizen-42", now=CLAIMS.expires_at + 86_400, allow_expired=True
    )
    assert opened == CLAIMS


def test_expiry_is_checked_after_authenticity(sealer: HandleSealer) -> None:
    """An expired handle of another citizen is refused as not theirs, revealing no expiry."""
    handle = sealer.seal(CLAIMS)
    with pytest.raises(HandleError) as info:
        sealer.open(handle, sub="someone-else", now=CLAIMS.expires_at + 1)
    assert info.value.code == PERMISSION_DENIED


def test_other_key_is_refused(sealer: HandleSealer) -> None:
    """A handle sealed under another gateway key is PERMISSION_DENIED."""
    other = HandleSealer(secrets.token_bytes(32))
    assert refused(sealer, other.seal(CLAIMS)).code == PERMISSION_DENIED


def test_rotation_opens_with_previous_keys(handle_key: bytes) -> None:
    """After rotation, handles sealed with the previous key still open; new ones use the new key."""
    old = HandleSealer(handle_key)
    rotated = HandleSealer(secrets.token_bytes(32), previous_keys=[handle_key])
    assert rotated.open(old.seal(CLAIMS), sub="citizen-42", now=NOW) == CLAIMS
    with pytest.raises(HandleError):
        old.open(rotated.seal(CLAIMS), sub="citizen-42", now=NOW)


def test_every_single_byte_alteration_is_refused(sealer: HandleSealer) -> None:
    """Flipping any bit of any byte of a handle makes it refused."""
    raw = unb64(sealer.seal(CLAIMS))
    for i in range(len(raw)):
        for flip in (0x01, 0x80):
            altered = bytearray(raw)
            altered[i] ^= flip
            error = refused(sealer, b64(bytes(altered)))
            if i >= 5:  # past version and key id: the AEAD catches it
                assert error.code == PERMISSION_DENIED


def test_every_character_alteration_is_refused(sealer: HandleSealer) -> None:
    """Replacing any character of the handle text makes it refused."""
    handle = sealer.seal(CLAIMS)
    for i, ch in enumerate(handle):
        for replacement in {"A", "_", "-", "z"} - {ch}:
            refused(sealer, handle[:i] + replacement + handle[i + 1 :])


@pytest.mark.parametrize(
    "handle",
    ["", "not a handle", "====", "A", "AAAA", "x" * 5000, "é", "a.b.c", "AQ", "AQAAAAAA" * 3],
)
def test_garbage_is_invalid_argument(sealer: HandleSealer, handle: str) -> None:
    """Garbage and truncated text is INVALID_ARGUMENT."""
    assert refused(sealer, handle).code == INVALID_ARGUMENT


def test_truncated_handles_are_refused(sealer: HandleSealer) -> None:
    """Every prefix of a handle is refused, never accepted nor a crash."""
    handle = sealer.seal(CLAIMS)
    for end in range(len(handle)):
        refused(sealer, handle[:end])


def test_non_canonical_base64_is_refused(sealer: HandleSealer) -> None:
    """A handle respelled with padding or different trailing bits is refused."""
    handle = sealer.seal(CLAIMS)
    refused(sealer, handle + "=" * (-len(handle) % 4 or 4))
    raw = unb64(handle)
    if len(raw) % 3:  # trailing bits exist: set one that the canonical form leaves clear
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(handle[-1])
        assert refused(sealer, handle[:-1] + alphabet[last | 1]).code in {
            INVALID_ARGUMENT,
            PERMISSION_DENIED,
        }


def test_unknown_version_is_invalid_argument(sealer: HandleSealer) -> None:
    """A handle of an unknown version is INVALID_ARGUMENT."""
    raw = bytearray(unb64(sealer.seal(CLAIMS)))
    raw[0] = 2
    assert refused(sealer, b64(bytes(raw))).code == INVALID_ARGUMENT


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400) | st.binary(max_size=300).map(b64))
def test_fuzz_never_crashes(sealer: HandleSealer, handle: str) -> None:
    """Arbitrary text is refused with INVALID_ARGUMENT or PERMISSION_DENIED, never anything else."""
    with pytest.raises(HandleError) as info:
        sealer.open(handle, sub="citizen-42", now=NOW)
    assert info.value.code in {INVALID_ARGUMENT, PERMISSION_DENIED}


_CLAIMS = st.builds(
    HandleClaims,
    sub=st.text(min_size=1, max_size=300),
    provider_id=st.text(min_size=1, max_size=32),
    msisdn=st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True),
    account_ref=st.text(min_size=1, max_size=256),
    attribution=st.sampled_from(list(Attribution)),
    expires_at=st.integers(min_value=int(NOW) + 1, max_value=2**32 - 1).map(float),
    query_id=st.text(max_size=32),
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_CLAIMS)
def test_round_trip_property(sealer: HandleSealer, claims: HandleClaims) -> None:
    """Any claims within the limits round-trip exactly, and only for their citizen."""
    handle = sealer.seal(claims)
    assert sealer.open(handle, sub=claims.sub, now=NOW) == claims
    with pytest.raises(HandleError) as info:
        sealer.open(handle, sub=claims.sub + "x", now=NOW)
    assert info.value.code == PERMISSION_DENIED


@pytest.mark.parametrize(
    "change",
    [
        {"sub": ""},
        {"provider_id": ""},
        {"msisdn": "13800138000"},
        {"account_ref": ""},
        {"account_ref": "a" * 1025},
        {"provider_id": "p" * 129},
        {"expires_at": -1.0},
        {"expires_at": float(2**32)},
    ],
)
def test_seal_refuses_out_of_bounds_claims(sealer: HandleSealer, change: dict[str, object]) -> None:
    """Claims the format cannot hold are a ValueError at sealing, not a broken handle."""
    with pytest.raises(ValueError, match=r"."):
        sealer.seal(dataclasses.replace(CLAIMS, **change))  # type: ignore[arg-type]  # test data


def test_sealer_refuses_wrong_key_sizes() -> None:
    """Handle keys must be exactly 32 bytes, and not configured twice."""
    key = secrets.token_bytes(32)
    with pytest.raises(KeyConfigError):
        HandleSealer(b"short")
    with pytest.raises(KeyConfigError):
        HandleSealer(key, previous_keys=[b"x" * 16])
    with pytest.raises(KeyConfigError):
        HandleSealer(key, previous_keys=[key])


def test_load_handle_key(tmp_path: Path) -> None:
    """The hex key file loads; a missing, non-hex or short one is refused without quoting it."""
    key = secrets.token_bytes(32)
    good = tmp_path / "handle.key"
    good.write_text(key.hex() + "\n")
    assert load_handle_key(good) == key
    bad = tmp_path / "bad.key"
    for content in (b"zz" * 32, key.hex()[:40].encode(), b"\xff\xfe"):
        bad.write_bytes(content)
        with pytest.raises(KeyConfigError) as info:
            load_handle_key(bad)
        assert content.decode(errors="replace") not in str(info.value)
    with pytest.raises(KeyConfigError):
        load_handle_key(tmp_path / "missing.key")
