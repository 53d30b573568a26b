"""Security Event Tokens (RFC 8417) carrying the RISC ``identifier-recycled`` event.

The gateway issues one per provider when a carrier reports a number recycled;
providers verify it (pushed to ``ReceiveEvent`` or fetched by polling).
Claims: ``iss``, ``iat``, ``jti``, ``aud``, ``toe`` (when the number was
recycled) and ``events`` holding exactly one event::

    {RISC_IDENTIFIER_RECYCLED: {
        "subject": {"format": "phone_number", "phone_number": "+8613800138000"},
        "act_by": 1767225600}}      # optional: onecert's deadline to act, epoch s

The gateway signs a SET afresh for every delivery (push or poll), so a
verifier refuses one issued more than :data:`MAX_SET_AGE` ago, or past an
``exp`` if the token has one; redeliveries are recognised by ``jti``. The
rules are E-1 to E-12 of docs/contract.md.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from onecert.sdk._jwt import GatewayTokenVerifier, TokenError, TokenIssuer
from onecert.sdk._msisdn import is_e164
from onecert.sdk._types import RecycledNotice

SET_TYP = "secevent+jwt"
RISC_IDENTIFIER_RECYCLED = "https://schemas.openid.net/secevent/risc/event-type/identifier-recycled"
MAX_JTI = 256
# How old (by ``iat``) a SET may be when it is verified (E-9).
MAX_SET_AGE = 300.0

# Reasons for which the token is not a well-formed SET at all (the caller
# sent the wrong thing: INVALID_ARGUMENT); every other refusal is about
# trust (signature, key, issuer, audience, time: UNAUTHENTICATED).
MALFORMED_REASONS = frozenset({"missing", "oversized", "malformed", "typ", "claims", "event"})


class SetError(TokenError):
    """A Security Event Token was refused; ``message`` is safe to return."""

    @property
    def malformed(self) -> bool:
        """True if the token is not a well-formed SET (rather than untrusted)."""
        return self.reason in MALFORMED_REASONS


def _epoch(value: datetime, name: str) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return int(value.timestamp())


class SetIssuer(TokenIssuer):
    """Signs recycled-number notices (the gateway's side; also tests').

    Args:
        key: the gateway's signing key (the one whose JWKS providers trust).
        issuer: the gateway id (``iss``).
    """

    def issue(
        self,
        *,
        audience: str,
        msisdn: str,
        recycled_at: datetime,
        deadline: datetime | None = None,
        jti: str | None = None,
        now: float | None = None,
    ) -> str:
        """A signed SET telling ``audience`` that ``msisdn`` was recycled at ``recycled_at``.

        Args:
            audience: the provider id.
            msisdn: the number, E.164.
            recycled_at: when it went to a new subscriber (timezone-aware).
            deadline: when the provider must have acted (timezone-aware).
            jti: the notice id; random when omitted. Reuse it for redeliveries.
            now: the issue time (seconds since the epoch); for tests.
        """
        if not is_e164(msisdn):
            raise ValueError("msisdn must be E.164")
        event: dict[str, Any] = {"subject": {"format": "phone_number", "phone_number": msisdn}}
        if deadline is not None:
            event["act_by"] = _epoch(deadline, "deadline")
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": audience,
            "iat": int(time.time() if now is None else now),
            "jti": jti or secrets.token_urlsafe(16),
            "toe": _epoch(recycled_at, "recycled_at"),
            "events": {RISC_IDENTIFIER_RECYCLED: event},
        }
        return self._key.sign(claims, typ=SET_TYP)


def _instant(value: Any, name: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SetError("claims", f"SET claim {name!r} must be a number")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):  # beyond a datetime, or NaN
        raise SetError("claims", f"SET claim {name!r} is out of range") from None


class SetVerifier(GatewayTokenVerifier):
    """Checks recycled-number notices on the provider's side.

    Args:
        keys: the gateway's public keys.
        issuer: the gateway id the SET must name (``iss``).
        audience: your provider id (``aud``).
        leeway: seconds of clock skew allowed on ``iat`` and ``exp``, at most
            ``MAX_CLOCK_SKEW``.
    """

    kind = "SET"
    error = SetError
    refused = "event token refused"

    def verify(self, token: str, *, now: float | None = None) -> RecycledNotice:
        """Verify ``token`` and return its notice; raise :class:`SetError`."""
        current = time.time() if now is None else now
        claims = self._claims(
            token,
            typ=SET_TYP,
            max_lifetime=None,
            required=("iss", "aud", "iat", "jti", "toe", "events"),
            now=current,
        )
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
            raise SetError("claims", f"SET 'jti' must be a string of 1 to {MAX_JTI} characters")
        events = claims["events"]
        if not isinstance(events, dict) or list(events) != [RISC_IDENTIFIER_RECYCLED]:
            raise SetError(
                "event", "SET must carry exactly one event: the RISC identifier-recycled event"
            )
        event = events[RISC_IDENTIFIER_RECYCLED]
        subject = event.get("subject") if isinstance(event, dict) else None
        if (
            not isinstance(subject, dict)
            or subject.get("format") != "phone_number"
            or not isinstance(subject.get("phone_number"), str)
            or not is_e164(subject["phone_number"])
        ):
            raise SetError(
                "event", "SET subject must be {format: phone_number, phone_number: E.164}"
            )
        assert isinstance(event, dict)
        act_by = event.get("act_by")
        notice = RecycledNotice(
            jti=jti,
            msisdn=subject["phone_number"],
            recycled_at=_instant(claims["toe"], "toe"),
            act_by=None if act_by is None else _instant(act_by, "act_by"),
            issued_at=_instant(claims["iat"], "iat"),
        )
        # Checked once the token is known to be a well-formed SET, so a
        # malformed one is reported as such (INVALID_ARGUMENT) however old
        # it is. verify_jwt has checked that iat is a finite number.
        if current - float(claims["iat"]) > MAX_SET_AGE + self._leeway:
            raise SetError(
                "expired", f"event token refused: issued more than {MAX_SET_AGE:.0f} s ago"
            )
        return notice
