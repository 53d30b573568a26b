"""Citizens' identity assertions: verification by RFC 8725, replay refusal, dev minting.

The portal sends a short-lived JWT from the identity service in the
``authorization: Bearer <JWT>`` metadata of every citizen call. The gateway
trusts it only after every check below passes; any failure refuses the call
before a carrier or a provider is contacted.

Messages of :class:`IdentityError` are meant for the caller: they never hold
the token, the ``idn`` or the ``sub``.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from onecert.gateway._refusal import CheckError
from onecert.sdk._idn import is_idn
from onecert.sdk._jwt import MAX_TOKEN_BYTES, TokenError, TokenIssuer, verify_jwt
from onecert.sdk._keys import KeySet, SigningKey, b64url_json, sign_compact

ASSERTION_TYP = "onecert-id+jwt"
# Every assertion must carry all of these (DESIGN.md, "Lookup, step by step").
REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "exp", "jti", "idn", "acr")
# DESIGN.md: an assertion lives at most five minutes.
DEFAULT_MAX_LIFETIME = 300.0
MAX_SUB_LENGTH = 256
MAX_JTI_LENGTH = 256

Metadata = Iterable[tuple[str, str | bytes]]
"""A call's invocation metadata as gRPC hands it over (where the assertion travels)."""


@dataclass(frozen=True)
class Citizen:
    """The verified caller of a citizen RPC.

    Attributes:
        sub: the identity service's opaque, stable citizen id.
        idn: keyed hash of the ID document number (64 lowercase hex), asked of carriers.
        acr: the assurance level the identity service vouches for.
        jti: the assertion's unique id (already remembered by the replay cache).
        issuer: the identity service that signed the assertion (``iss``).
        expires_at: the assertion's ``exp``, seconds since the epoch.
    """

    sub: str
    idn: str
    acr: str
    jti: str
    issuer: str
    expires_at: float


class IdentityError(CheckError):
    """An identity assertion was refused.

    Attributes:
        code: the gRPC status to answer with: UNAUTHENTICATED for an invalid,
            expired or replayed assertion, PERMISSION_DENIED for an assurance
            level that is too low or unknown, RESOURCE_EXHAUSTED when the replay
            cache is full of live assertions (the gateway fails closed).
        reason: a short machine-readable code for metrics ("expired", "replayed",
            "acr", ...).
        message: a clear explanation, safe to send to the caller.
    """


def _unauthenticated(reason: str, message: str) -> IdentityError:
    return IdentityError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


class ReplayCacheFullError(Exception):
    """The replay cache holds only live entries and cannot take another."""


class ReplayCacheUnavailableError(Exception):
    """The replay cache cannot be reached (its database is down or cut off)."""


class ReplayCache(Protocol):
    """Remembers assertion ids while their assertions live.

    ``key`` is opaque to the cache: the verifier passes a fixed-length digest of
    the issuer and the ``jti``. ``expires_at`` (seconds since the epoch) is the
    last instant at which the assertion could still be accepted; the entry may
    be forgotten after it. An implementation that cannot remember a new entry
    raises :class:`ReplayCacheFullError` (no room) or
    :class:`ReplayCacheUnavailableError` (its storage cannot be reached)
    rather than answer True.
    """

    async def remember(self, jti: str, expires_at: float) -> bool:
        """Record ``jti``; True if it was not seen before (or only expired), else False."""
        ...


class MemoryReplayCache:
    """An in-process :class:`ReplayCache` with bounded memory.

    Enough for a single gateway process; several replicas need a shared,
    durable cache. Expired entries are evicted first; when every entry is still
    live and the cache is full, :meth:`remember` raises
    :class:`ReplayCacheFullError` (fail closed: a replay is never let through
    because memory ran out).
    """

    def __init__(
        self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError("a replay cache needs room for at least one entry")
        self._max_entries = max_entries
        self._clock = clock
        self._expiry: dict[str, float] = {}
        # Min-heap of (expires_at, key); stale pairs (re-remembered keys) are
        # skipped when popped.
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _evict_expired(self, now: float) -> None:
        heap, expiry = self._heap, self._expiry
        while heap and heap[0][0] <= now:
            expires_at, key = heapq.heappop(heap)
            if expiry.get(key) == expires_at:
                del expiry[key]

    async def remember(self, jti: str, expires_at: float) -> bool:
        """Record ``jti`` until ``expires_at``; False if it is already live."""
        # No await inside: atomic with respect to other tasks on the loop.
        now = self._clock()
        self._evict_expired(now)
        if jti in self._expiry:
            return False
        if expires_at <= now:
            # Already dead: it can never be accepted again, nothing to keep.
            return True
        if len(self._expiry) >= self._max_entries:
            raise ReplayCacheFullError(f"replay cache full ({self._max_entries} live entries)")
        self._expiry[jti] = expires_at
        heapq.heappush(self._heap, (expires_at, jti))
        return True


def _replay_key(issuer: str, jti: str) -> str:
    # Scoped by issuer (two identity services may pick the same jti) and
    # hashed so that every entry has the same small size.
    return hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()


# Short, fixed explanations per verify_jwt reason; the token is never quoted.
_TOKEN_MESSAGES = {
    "missing": "no identity assertion",
    "oversized": f"the identity assertion is larger than {MAX_TOKEN_BYTES} bytes",
    "malformed": "the identity assertion is not a well-formed signed JWT",
    "typ": f"the identity assertion must have header typ {ASSERTION_TYP!r}",
    "crit": "the identity assertion has critical header parameters the gateway does not know",
    "kid": "the identity assertion is signed with a key the gateway does not trust",
    "alg": "the identity assertion uses an algorithm its key is not allowed to use",
    "signature": "the identity assertion's signature does not verify",
    "iss": "the identity assertion's issuer is not trusted",
    "aud": "the identity assertion is meant for another audience",
    "expired": "the identity assertion has expired",
    "nbf": "the identity assertion is not valid yet (nbf)",
    "iat": "the identity assertion is issued in the future (iat)",
    "lifetime": "the identity assertion lives longer than the gateway allows",
}


class AssertionVerifier:
    """Verifies citizens' identity assertions (RFC 8725) and refuses replays.

    Args:
        issuers: trusted identity services: ``iss`` -> their keys by ``kid``
            (several keys at once allow rotation).
        audience: the gateway's own id; ``aud`` must be exactly it.
        assurance_levels: every known ``acr`` value, lowest first.
        required_assurance: the lowest ``acr`` accepted; one of ``assurance_levels``.
        leeway: seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        max_lifetime: the longest ``exp - iat`` accepted, in seconds.
        replay: where ``jti``s are remembered while their assertions live.
        clock: the current time in seconds since the epoch; for tests.
    """

    def __init__(
        self,
        *,
        issuers: Mapping[str, KeySet],
        audience: str,
        assurance_levels: Sequence[str],
        required_assurance: str,
        leeway: float = 30.0,
        max_lifetime: float = DEFAULT_MAX_LIFETIME,
        replay: ReplayCache,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuers:
            raise ValueError("at least one identity issuer must be trusted")
        for name, keys in issuers.items():
            if not name:
                raise ValueError("an identity issuer needs a non-empty name")
            if not keys:
                raise ValueError(f"identity issuer {name!r} has no keys")
        if not audience:
            raise ValueError("the assertion audience (the gateway's id) is required")
        levels = list(assurance_levels)
        if not levels or len(set(levels)) != len(levels):
            raise ValueError("assurance levels must be a non-empty list without duplicates")
        if required_assurance not in levels:
            raise ValueError(f"required assurance {required_assurance!r} is not one of {levels}")
        if not 0 <= leeway <= 300:
            raise ValueError("leeway must be between 0 and 300 seconds")
        if max_lifetime <= 0:
            raise ValueError("max_lifetime must be positive")
        self._issuers = {name: dict(keys) for name, keys in issuers.items()}
        self._audience = audience
        self._rank = {level: i for i, level in enumerate(levels)}
        self._required = required_assurance
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._replay = replay
        self._clock = clock

    @property
    def audience(self) -> str:
        return self._audience

    async def verify(self, token: str) -> Citizen:
        """Verify ``token`` and remember its ``jti``; raise :class:`IdentityError`.

        :meth:`check`, then :meth:`spend`: refused tokens never take room in
        the replay cache.
        """
        citizen = self.check(token)
        await self.spend(citizen)
        return citizen

    def check(self, token: str) -> Citizen:
        """Everything but the replay cache; raise :class:`IdentityError`.

        Checks, in order: size and structure; the issuer (its unverified ``iss``
        only chooses which key set to try); ``typ``; ``kid`` and the algorithm
        pinned to that key; the signature; exact ``iss`` and ``aud``; the
        required claims; ``exp``, ``nbf``, ``iat`` with leeway and the lifetime;
        the shapes of ``sub``, ``idn`` and ``jti``; ``acr``. A citizen it
        returns is not yet trusted: :meth:`spend` must succeed before anything
        is revealed to the caller.
        """
        if not token:
            raise _unauthenticated("missing", "identity assertion refused: no token")
        if len(token) > MAX_TOKEN_BYTES:
            raise _unauthenticated(
                "oversized", f"identity assertion refused: {_TOKEN_MESSAGES['oversized']}"
            )
        issuer = self._unverified_issuer(token)
        keys = self._issuers.get(issuer) if issuer is not None else None
        if issuer is None or keys is None:
            raise _unauthenticated("iss", f"identity assertion refused: {_TOKEN_MESSAGES['iss']}")
        now = self._clock()
        try:
            claims = verify_jwt(
                token,
                keys=keys,
                typ=ASSERTION_TYP,
                issuer=issuer,
                audience=self._audience,
                leeway=self._leeway,
                max_lifetime=self._max_lifetime,
                required=REQUIRED_CLAIMS,
                now=now,
            )
        except TokenError as exc:
            # verify_jwt's own messages are safe but name a generic "token";
            # say which token, and keep parser details (which may quote
            # fragments of the input) out of the answer.
            detail = _TOKEN_MESSAGES.get(exc.reason)
            if detail is None:
                detail = exc.message if exc.reason == "claims" else _TOKEN_MESSAGES["malformed"]
            raise _unauthenticated(exc.reason, f"identity assertion refused: {detail}") from exc
        except RecursionError:
            # A deeply nested JSON header: malformed, not an internal error.
            raise _unauthenticated(
                "malformed", f"identity assertion refused: {_TOKEN_MESSAGES['malformed']}"
            ) from None
        citizen = self._citizen(claims, issuer)
        self._check_assurance(citizen.acr)
        return citizen

    async def spend(self, citizen: Citizen) -> None:
        """Remember the assertion's ``jti`` in the replay cache; raise
        :class:`IdentityError` if it was used before (or cannot be recorded).

        Returns once the cache has recorded it (durably, for a store-backed
        cache). The cache's in-process front answers a replay it already
        holds before its first pause, so a task running this ends at its
        first step for such a replay.
        """
        try:
            first = await self._replay.remember(
                _replay_key(citizen.issuer, citizen.jti), citizen.expires_at + self._leeway
            )
        except ReplayCacheFullError as exc:
            raise IdentityError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "replay_cache_full",
                "identity assertion not accepted: the gateway is at capacity, try again shortly",
            ) from exc
        except ReplayCacheUnavailableError as exc:
            # Not capacity: the database that remembers assertion ids cannot
            # be reached, so the assertion can be neither accepted nor refused.
            raise IdentityError(
                grpc.StatusCode.UNAVAILABLE,
                "replay_cache_unavailable",
                "identity assertion not checked: the gateway's database is unavailable; "
                "try again later with a fresh assertion",
            ) from exc
        if not first:
            raise _unauthenticated(
                "replayed",
                "identity assertion refused: it was already used (jti replayed); "
                "get a fresh assertion for every call",
            )

    @staticmethod
    def _unverified_issuer(token: str) -> str | None:
        # Only to pick the key set: verify_jwt then checks iss exactly against
        # the signed claims. The header is left to verify_jwt, which names
        # precisely what is wrong with it.
        malformed = _unauthenticated(
            "malformed", f"identity assertion refused: {_TOKEN_MESSAGES['malformed']}"
        )
        parts = token.split(".")
        if len(parts) != 3:
            raise malformed
        payload = parts[1]
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, RecursionError):
            # RecursionError: deeply nested JSON must not become INTERNAL.
            raise malformed from None
        issuer = claims.get("iss") if isinstance(claims, dict) else None
        return issuer if isinstance(issuer, str) and issuer else None

    def _citizen(self, claims: Mapping[str, Any], issuer: str) -> Citizen:
        # RFC 7519 allows an audience list; an assertion addressed to others
        # too could be replayed at them, so only the gateway alone is accepted.
        if claims.get("aud") not in (self._audience, [self._audience]):
            raise _unauthenticated("aud", f"identity assertion refused: {_TOKEN_MESSAGES['aud']}")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH:
            raise _unauthenticated(
                "sub",
                f"identity assertion refused: 'sub' must be 1 to {MAX_SUB_LENGTH} characters",
            )
        if not sub.isprintable():
            raise _unauthenticated(
                "sub", "identity assertion refused: 'sub' holds control characters"
            )
        idn = claims.get("idn")
        if not isinstance(idn, str) or not is_idn(idn):
            raise _unauthenticated(
                "idn", "identity assertion refused: 'idn' must be 64 lowercase hex characters"
            )
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise _unauthenticated(
                "jti",
                f"identity assertion refused: 'jti' must be 1 to {MAX_JTI_LENGTH} characters",
            )
        acr = claims.get("acr")
        if not isinstance(acr, str):
            raise _unauthenticated("claims", "identity assertion refused: 'acr' must be a string")
        exp = claims["exp"]  # a number: verify_jwt checked it
        return Citizen(sub=sub, idn=idn, acr=acr, jti=jti, issuer=issuer, expires_at=float(exp))

    def _check_assurance(self, acr: str) -> None:
        rank = self._rank.get(acr)
        if rank is None:
            # An acr the gateway cannot rank vouches for nothing it knows.
            raise IdentityError(
                grpc.StatusCode.PERMISSION_DENIED,
                "acr_unknown",
                f"identity assertion refused: unknown assurance level; "
                f"at least {self._required!r} is required",
            )
        if rank < self._rank[self._required]:
            raise IdentityError(
                grpc.StatusCode.PERMISSION_DENIED,
                "acr",
                f"identity assertion refused: assurance level {acr!r} is too low; "
                f"at least {self._required!r} is required",
            )


def bearer_token(metadata: Metadata | None) -> str:
    """The JWT of the single ``authorization: Bearer <JWT>`` entry of call metadata.

    Raises :class:`IdentityError` (UNAUTHENTICATED) when the entry is missing,
    repeated, uses another scheme, or holds no token.
    """
    values = [value for key, value in metadata or () if key.lower() == "authorization"]
    if not values:
        raise _unauthenticated(
            "missing", "no identity assertion: send metadata 'authorization: Bearer <JWT>'"
        )
    if len(values) > 1:
        raise _unauthenticated("malformed", "more than one 'authorization' metadata entry")
    value = values[0]
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise _unauthenticated(
                "malformed", "'authorization' metadata must be ASCII text"
            ) from None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise _unauthenticated(
            "scheme", "'authorization' metadata must use the Bearer scheme: 'Bearer <JWT>'"
        )
    token = token.strip()
    if not token or any(ch.isspace() for ch in token):
        raise _unauthenticated(
            "malformed", "'authorization' metadata must be 'Bearer <JWT>' with one token"
        )
    return token


class AssertionIssuer(TokenIssuer):
    """Mints identity assertions, standing in for the identity service.

    The real identity service is outside onecert; this one serves the demo, the
    tests and ``onecert assertion mint``. Its attack knobs (``headers``,
    ``claims``) exist so tests can forge every kind of bad assertion.
    """

    def __init__(self, *, key: SigningKey, issuer: str) -> None:
        if not issuer:
            raise ValueError("an assertion issuer needs a name (iss)")
        super().__init__(key=key, issuer=issuer)

    def mint(
        self,
        *,
        sub: str,
        idn: str,
        audience: str,
        acr: str = "substantial",
        lifetime: float = 120,
        now: float | None = None,
        jti: str | None = None,
        headers: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed assertion for ``sub``.

        Args:
            sub: the citizen's opaque id.
            idn: the keyed hash of their document number (see ``compute_idn``).
            audience: the gateway's id.
            acr: the assurance level.
            lifetime: seconds from ``iat`` to ``exp``.
            now: ``iat`` in seconds since the epoch; the current time by default.
            jti: the assertion id; random by default.
            headers: extra or replacing JOSE header members (``typ``, ``kid``,
                ``alg``, ``crit``...), for attack tests; a value of None removes
                the member. The signature is always made with this issuer's key
                and its own algorithm, whatever the header then claims.
            claims: extra or replacing claims; a value of None removes the claim.
        """
        issued = int(time.time() if now is None else now)
        body: dict[str, Any] = {
            "iss": self._issuer,
            "sub": sub,
            "aud": audience,
            "iat": issued,
            "exp": issued + int(lifetime),
            "jti": jti if jti is not None else secrets.token_urlsafe(16),
            "idn": idn,
            "acr": acr,
        }
        for name, value in (claims or {}).items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        header: dict[str, Any] = {"alg": self._key.alg, "kid": self._key.kid, "typ": ASSERTION_TYP}
        for name, value in (headers or {}).items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        # Encoded by hand: PyJWT would sign with whatever "alg" the header
        # names, and the attack knobs must only change what the header says.
        return sign_compact(
            b64url_json(header), b64url_json(body), self._key.private_key, self._key.alg
        )
