"""The test vectors of docs/contract.md are reproducible and the SDK's verifiers give each
its verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from onecert.sdk._keys import parse_jwks
from onecert.sdk._set import SetError, SetVerifier
from onecert.sdk._types import RecycledNotice
from onecert.sdk._warrant import RPC_PURPOSES, WarrantError, WarrantVerifier
from onecert.sdk.conformance._vectors import vectors_json

VECTORS_FILE = Path(__file__).resolve().parents[2] / "docs" / "contract-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_FILE.read_text())


def test_the_committed_vectors_are_the_generated_ones() -> None:
    """docs/contract-vectors.json is exactly what the generator makes (Ed25519 signs
    deterministically), so nobody edits a token or a verdict by hand."""
    assert VECTORS_FILE.read_text() == vectors_json()


def test_every_verdict_and_rule_is_covered() -> None:
    """Vectors exist for accepting and refusing, and each names a rule of the contract."""
    contract = (VECTORS_FILE.parent / "contract.md").read_text()
    for vector in [*VECTORS["warrants"], *VECTORS["sets"]]:
        assert f"**{vector['rule']}**" in contract, vector["name"]
    assert {v["verdict"] for v in VECTORS["warrants"]} == {"accept", "reject"}
    assert {v["status"] for v in VECTORS["sets"]} == {
        "OK",
        "INVALID_ARGUMENT",
        "UNAUTHENTICATED",
    }


def _warrant_status(vector: dict[str, Any]) -> str:
    verifier = WarrantVerifier(
        keys=parse_jwks(VECTORS["jwks"]), issuer=VECTORS["issuer"], audience=vector["audience"]
    )
    try:
        warrant = verifier.verify(vector["token"], target=vector["target"], now=VECTORS["now"])
    except WarrantError:
        return "UNAUTHENTICATED"
    return "OK" if warrant.purpose == RPC_PURPOSES[vector["rpc"]] else "UNAUTHENTICATED"


@pytest.mark.parametrize("vector", VECTORS["warrants"], ids=lambda v: v["name"])
def test_warrant_vector_gets_its_verdict(vector: dict[str, Any]) -> None:
    """The SDK's warrant verifier, with the purpose its RPC requires, answers each warrant
    vector as the contract says."""
    assert _warrant_status(vector) == vector["status"]


@pytest.mark.parametrize("vector", VECTORS["sets"], ids=lambda v: v["name"])
def test_set_vector_gets_its_verdict(vector: dict[str, Any]) -> None:
    """The SDK's SET verifier answers each notice vector as the contract says, with the
    status that separates a token that is not a SET from one that cannot be trusted."""
    verifier = SetVerifier(
        keys=parse_jwks(VECTORS["jwks"]), issuer=VECTORS["issuer"], audience=vector["audience"]
    )
    notice: RecycledNotice | None = None
    try:
        notice = verifier.verify(vector["token"], now=VECTORS["now"])
        status = "OK"
    except SetError as exc:
        status = "INVALID_ARGUMENT" if exc.malformed else "UNAUTHENTICATED"
    assert status == vector["status"]
    if notice is None:
        return
    expected = vector["notice"]
    assert notice.jti == expected["jti"]
    assert notice.msisdn == expected["msisdn"]
    assert notice.recycled_at.timestamp() == expected["recycled_at"]
    act_by = None if notice.act_by is None else notice.act_by.timestamp()
    assert act_by == expected["act_by"]
