"""Routing at the gateway: providers publish filters, replicas share them, lookups ask fewer.

:class:`RoutingService` serves ``Gateway.GetRoutingKey`` and
``Gateway.PublishFilter``, seals every publication into the store
(:class:`FilterSealer`, AES-GCM under a key only the gateway holds), applies
the publications of every replica to its :class:`RoutingIndex` by polling
the store's version counter, and tells the fan-out which providers a number
routes out.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import grpc
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.timestamp_pb2 import Timestamp

from onecert.gateway._config import RoutingConfig
from onecert.gateway._follow import Follower
from onecert.gateway._observers import NO_OBSERVER, Observer
from onecert.gateway._principals import Principal
from onecert.gateway._refusal import AuditNote, Refusal, invalid, store_call
from onecert.gateway.routing._index import (
    FilterRejectedError,
    RoutingIndex,
    UnknownProviderError,
)
from onecert.gateway.routing._keyring import RoutingKeyring
from onecert.gateway.store import (
    AuditDraft,
    FilterKind,
    FilterRow,
    KeyRow,
    KeyState,
    Store,
)
from onecert.sdk._filter import (
    ELEMENT_BYTES,
    SNAPSHOT_FORMATS,
    FilterAdditions,
    FilterFormatError,
    RoutingFilter,
)
from onecert.sdk._keys import KeyConfigError, load_hex_key
from onecert.v1 import gateway_pb2

__all__ = [
    "MAX_SNAPSHOT_INTERVAL_S",
    "MIN_SNAPSHOT_INTERVAL_S",
    "FilterSealer",
    "RoutingService",
    "derive_filter_key",
    "derive_routing_key",
    "keyring_of",
    "load_filter_key",
    "load_routing_keys",
]

_log = structlog.get_logger("onecert.gateway.routing")

MIN_SNAPSHOT_INTERVAL_S = 60
MAX_SNAPSHOT_INTERVAL_S = 7 * 24 * 3600
# A provider without a filter is asked whatever its interval: this only
# stands in until its first snapshot declares one.
_UNDECLARED_INTERVAL_S = float(MAX_SNAPSHOT_INTERVAL_S)
_NONCE = 12
# 256 KiB: a filter of about 100,000 numbers at 1%. Below it the work is a
# fraction of a millisecond, less than a thread hand-off.
DEFAULT_OFFLOAD_BYTES = 1 << 18

_T = TypeVar("_T")


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def derive_filter_key(handle_key: bytes) -> bytes:
    """The key sealing filters at rest, derived from the handle key (HKDF-SHA256).

    Domain-separated: knowing it says nothing about the handle key. Like the
    handle key it never leaves the gateway.
    """
    return _hkdf(handle_key, b"onecert routing filter sealing v1")


def derive_routing_key(handle_key: bytes, version: int) -> bytes:
    """Routing key ``version`` derived from the handle key (no ``routing.key_file``).

    Providers receive it; HKDF is one-way, so it reveals nothing of the
    handle key. A rotation configures a key file instead.
    """
    return _hkdf(handle_key, b"onecert routing key v%d" % version)


def load_filter_key(path: str | Path) -> bytes:
    """Read a filter sealing key file: 32 random bytes as hex (like ``handle.key``).

    Raises:
        KeyConfigError: unreadable, not hex, or not 32 bytes; never quotes the file.
    """
    return load_hex_key(path, what="filter key", size=32)


def load_routing_keys(path: str | Path) -> RoutingKeyring:
    """Read a routing key file: one ``VERSION HEX`` line per live key; the highest is active.

    Raises:
        KeyConfigError: unreadable, malformed, or a key shorter than 32 bytes.
            The message never quotes a key.
    """
    try:
        text = Path(path).read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyConfigError(f"cannot read routing keys {path}: {exc}") from None
    keys: dict[int, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        try:
            version, key = int(parts[0]), bytes.fromhex(parts[1])
        except (ValueError, IndexError):
            raise KeyConfigError(f"{path} line {number}: expected 'VERSION HEX'") from None
        if len(parts) != 2 or version in keys:
            raise KeyConfigError(f"{path} line {number}: one key per version, 'VERSION HEX'")
        keys[version] = key
    if not keys:
        raise KeyConfigError(f"{path} holds no routing key")
    try:
        return RoutingKeyring(keys, active=max(keys))
    except ValueError as exc:
        raise KeyConfigError(f"{path}: {exc}") from None


class FilterSealer:
    """Seals publications at rest: AES-256-GCM, a random 96-bit nonce per row.

    The associated data binds the ciphertext to its row's provider, kind,
    key version and ``created_at``, so a sealed filter moved to another
    provider's row (or another kind) does not open.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the filter sealing key has 32 bytes")
        self._aead = AESGCM(key)

    @staticmethod
    def _ad(provider_id: str, kind: FilterKind, key_version: int, created_at: int) -> bytes:
        head = struct.pack("<QQ", key_version, created_at)
        return b"onecert-filter-v1|" + kind.value.encode() + b"|" + head + provider_id.encode()

    def seal(
        self, data: bytes, *, provider_id: str, kind: FilterKind, key_version: int, created_at: int
    ) -> bytes:
        """``nonce || ciphertext`` of ``data``."""
        nonce = secrets.token_bytes(_NONCE)
        ad = self._ad(provider_id, kind, key_version, created_at)
        return nonce + self._aead.encrypt(nonce, data, ad)

    def open(self, row: FilterRow) -> bytes:
        """The published bytes of a stored row.

        Raises:
            InvalidTag: sealed under another key, or altered.
        """
        ad = self._ad(row.provider_id, row.kind, row.key_version, row.created_at)
        return self._aead.decrypt(row.sealed[:_NONCE], row.sealed[_NONCE:], ad)

    @staticmethod
    def _key_ad(version: int) -> bytes:
        return b"onecert-routing-key-v1|" + struct.pack("<Q", version)

    def seal_key(self, version: int, key: bytes) -> bytes:
        """``nonce || ciphertext`` of routing key ``version``, for ``store.routing``."""
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, key, self._key_ad(version))

    def open_key(self, version: int, sealed: bytes) -> bytes:
        """A stored routing key.

        Raises:
            InvalidTag: sealed under another key, for another version, or altered.
        """
        return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], self._key_ad(version))


class _IndexWriter:
    """Applies publications to a :class:`RoutingIndex`, the large ones' work off the loop.

    Args:
        index: the index written.
        sealer: opens stored publications.
        offload_bytes: publications this large or larger are opened, parsed
            and laid out in a worker thread.
    """

    def __init__(self, index: RoutingIndex, sealer: FilterSealer, offload_bytes: int) -> None:
        self._index = index
        self._sealer = sealer
        self._offload_bytes = offload_bytes

    async def off_loop(self, size: int, work: Callable[[], _T]) -> _T:
        """``work()``, in a worker thread when ``size`` is at least ``offload_bytes``."""
        if size >= self._offload_bytes:
            return await asyncio.to_thread(work)
        return work()

    async def snapshot(self, provider_id: str, snapshot: RoutingFilter, interval: float) -> None:
        """Put a checked snapshot in place and the provider's declared interval with it."""
        # The layout (a copy or an unpacking of the bits) is built off the
        # loop; the index changes on the loop, between two lookups' queries.
        prepared = await self.off_loop(
            len(snapshot.bits), functools.partial(self._index.prepare, snapshot)
        )
        self._index.put_snapshot(provider_id, snapshot, prepared=prepared)
        self._index.register(provider_id, snapshot_interval=interval, opted_out=False)

    def opt_out(self, provider_id: str) -> None:
        """The provider opted out: drop its filter; it is asked about every number."""
        self._index.register(provider_id, snapshot_interval=_UNDECLARED_INTERVAL_S, opted_out=True)
        self._index.drop_filter(provider_id)

    async def row(self, row: FilterRow) -> bool:
        """Apply a stored publication of a registered provider; False if it was skipped."""
        try:
            if row.kind is FilterKind.OPT_OUT:
                self.opt_out(row.provider_id)
                return True
            data = await self.off_loop(len(row.sealed), functools.partial(self._sealer.open, row))
            if row.kind is FilterKind.SNAPSHOT:
                interval = float(row.interval_s or _UNDECLARED_INTERVAL_S)
                snapshot = await self.off_loop(
                    len(data), functools.partial(RoutingFilter.from_bytes, data)
                )
                await self.snapshot(row.provider_id, snapshot, interval)
            else:
                self._index.add(row.provider_id, FilterAdditions.from_bytes(data))
        except InvalidTag:
            _log.error("routing.unsealable", provider=row.provider_id, seq=row.seq)
            return False
        except (FilterRejectedError, FilterFormatError, UnknownProviderError) as exc:
            # Superseded by a newer snapshot, or keyed with a retired version:
            # the provider stays asked; routing never drops it on a bad row.
            _log.info("routing.row_skipped", provider=row.provider_id, seq=row.seq, why=str(exc))
            return False
        return True


class RoutingService:
    """Filters in, routes out: the gateway's side of routing.

    Args:
        keyring: the live routing keys.
        store: where publications are sealed and shared with the other replicas.
        sealer: seals them.
        providers: every configured provider id (each is asked until it has
            a fresh filter).
        config: ``[routing]``.
        clock: Unix time (the index's freshness).
        offload_bytes: publications this large or larger are opened, parsed,
            sealed and laid out in a worker thread, so a large snapshot does
            not stall the lookups the event loop is serving.
    """

    def __init__(
        self,
        *,
        keyring: RoutingKeyring,
        store: Store,
        sealer: FilterSealer,
        providers: Sequence[str],
        config: RoutingConfig,
        clock: Callable[[], float] = time.time,
        offload_bytes: int = DEFAULT_OFFLOAD_BYTES,
    ) -> None:
        self._keyring = keyring
        self._store = store
        self._sealer = sealer
        self._config = config
        self.index = RoutingIndex(
            key_checks=keyring.key_checks(), grace=config.grace_s, clock=clock
        )
        self._writer = _IndexWriter(self.index, sealer, offload_bytes)
        for provider_id in providers:
            self.index.register(provider_id, snapshot_interval=_UNDECLARED_INTERVAL_S)
        self._registered = self.index.providers()
        self._applied = 0
        self._own: set[int] = set()
        self._lock = asyncio.Lock()
        self._follower = Follower(self.sync, interval_s=config.poll_interval_s, name="routing.sync")
        # Told of every provider's accepted additions published to this
        # replica, as route tags (notices routed late, see route_tag).
        self.additions_listeners: list[Callable[[str, list[str]], Awaitable[object]]] = []
        # Told what routing decided about each number (metrics); set by the server.
        self.observer: Observer = NO_OBSERVER
        # The stored keyring last applied, as (version, state) pairs.
        self._keys_seen: tuple[tuple[int, KeyState], ...] = ()

    @property
    def applied(self) -> int:
        """The store's publication seq this replica has applied up to."""
        return self._applied

    def set_providers(self, providers: Iterable[str]) -> None:
        """Route among ``providers`` from now on (the registry's active providers).

        A provider that left is forgotten with its filter (routing never
        asks it again: the fan-out no longer holds it); a new one is asked
        about every number until it publishes a filter. Filters it
        published before this replica saw it join count from its next
        snapshot.
        """
        wanted = set(providers)
        for provider_id in self._registered - wanted:
            self.index.unregister(provider_id)
        for provider_id in wanted - self._registered:
            self.index.register(provider_id, snapshot_interval=_UNDECLARED_INTERVAL_S)
        self._registered = self.index.providers()

    # --------------------------------------------------------------- lookups

    def route(self, msisdn: str) -> tuple[frozenset[str], frozenset[str]]:
        """``(asked, known)``: the configured providers to ask about ``msisdn``
        (fresh filters that may hold it, and those always asked) and every
        configured provider; the others' fresh filters rule the number out."""
        route = self.index.query(self._keyring.digests(msisdn))
        asked = route.asked()
        counts: Counter[str] = Counter(route.must_ask.values())
        counts.update(
            routed_out=len(self._registered) - len(asked), candidate=len(route.candidates)
        )
        self.observer.routing_decided(counts)
        return asked, self._registered

    def routed_out(self, msisdn: str) -> frozenset[str]:
        """The configured providers not to ask about ``msisdn``: fresh filters without it."""
        asked, known = self.route(msisdn)
        return known.difference(asked)

    def routed_to(self, msisdn: str) -> frozenset[str]:
        """The registered providers that may hold ``msisdn``, or have no fresh filter.

        The same query as a lookup's; its cost follows the providers returned.
        """
        return self.index.query(self._keyring.digests(msisdn)).asked()

    def route_tag(self, msisdn: str) -> str:
        """``"VERSION:HEX"`` of the number's element under the active routing key.

        The same tag is derived from a provider's filter additions, so the
        additions that show a provider now holds the number find the notices
        about it.
        """
        version = self._keyring.active_version
        return _tag(version, self._keyring.digests(msisdn)[version][:ELEMENT_BYTES])

    @property
    def registered(self) -> frozenset[str]:
        """The providers routing knows; any other is always asked."""
        return self._registered

    # ------------------------------------------------------------------ RPCs

    def routing_key(self, caller: Principal) -> gateway_pb2.GetRoutingKeyResponse:
        """``Gateway.GetRoutingKey``: the active key, for ``caller`` (a provider)."""
        ring = self._keyring
        _log.info("routing.key_fetched", caller=caller.actor, key_version=ring.active_version)
        return gateway_pb2.GetRoutingKeyResponse(
            key_version=ring.active_version,
            key=ring.key(ring.active_version),
            live_versions=sorted(ring.versions),
            filter_formats=SNAPSHOT_FORMATS,
        )

    async def publish(
        self, request: gateway_pb2.PublishFilterRequest, caller: Principal
    ) -> gateway_pb2.PublishFilterResponse:
        """``Gateway.PublishFilter``: check, seal, store, apply; nothing changes when refused."""
        provider_id = caller.id
        which = request.WhichOneof("update")
        if provider_id not in self._registered:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"provider {provider_id!r} is not configured at this gateway",
                reason="unknown_provider",
            )
        async with self._lock:
            if which == "snapshot":
                await self._publish_snapshot(request.snapshot, caller)
            elif which == "additions":
                await self._publish_additions(request.additions, caller)
            elif which == "opt_out":
                await self._publish_opt_out(caller)
            else:
                raise invalid("set one of snapshot, additions or opt_out")
        response = gateway_pb2.PublishFilterResponse(
            active_key_version=self._keyring.active_version
        )
        status = self.index.status(provider_id)
        if status.reason is None and status.fresh_until is not None:
            stamp = Timestamp()
            stamp.FromNanoseconds(round(status.fresh_until * 1e9))
            response.fresh_until.CopyFrom(stamp)
        return response

    async def _publish_snapshot(
        self, message: gateway_pb2.RoutingSnapshot, caller: Principal
    ) -> None:
        if not message.HasField("snapshot_interval"):
            raise invalid("snapshot_interval is required with a snapshot")
        interval = message.snapshot_interval.ToTimedelta().total_seconds()
        if not MIN_SNAPSHOT_INTERVAL_S <= interval <= MAX_SNAPSHOT_INTERVAL_S:
            raise invalid(
                f"snapshot_interval must be from {MIN_SNAPSHOT_INTERVAL_S} s to "
                f"{MAX_SNAPSHOT_INTERVAL_S} s (7 days)"
            )
        try:
            snapshot = await self._writer.off_loop(
                len(message.filter), functools.partial(RoutingFilter.from_bytes, message.filter)
            )
        except FilterFormatError as exc:
            raise invalid(f"malformed filter: {exc}") from None
        # The audit log refuses integers of 8 digits (phone numbers): sizes
        # are written as powers of two and thousands, instants as ISO text.
        detail: dict[str, str | int | bool] = {
            "kind": "snapshot",
            "key_version": snapshot.key_version,
            "m_log2": snapshot.m.bit_length() - 1,
            "count_k": -(-snapshot.count // 1000),
            "created_at": _iso(snapshot.created_at),
            "interval_s": int(interval),
        }
        self._checked(caller, detail, lambda: self.index.check_snapshot(caller.id, snapshot))
        seq = await self._store_filter(
            caller,
            message.filter,
            FilterKind.SNAPSHOT,
            key_version=snapshot.key_version,
            created_at=snapshot.created_at,
            detail=detail,
            interval_s=int(interval),
        )
        await self._writer.snapshot(caller.id, snapshot, interval)
        self._own.add(seq)

    async def _publish_additions(self, data: bytes, caller: Principal) -> None:
        try:
            additions = FilterAdditions.from_bytes(data)
        except FilterFormatError as exc:
            raise invalid(f"malformed additions: {exc}") from None
        detail: dict[str, str | int | bool] = {
            "kind": "additions",
            "key_version": additions.key_version,
            "count": len(additions.elements),
            "created_at": _iso(additions.created_at),
        }
        self._checked(caller, detail, lambda: self.index.check_additions(caller.id, additions))
        seq = await self._store_filter(
            caller,
            data,
            FilterKind.ADDITIONS,
            key_version=additions.key_version,
            created_at=additions.created_at,
            detail=detail,
        )
        self.index.add(caller.id, additions)
        self._own.add(seq)
        tags = [_tag(additions.key_version, e) for e in additions.elements]
        for listener in self.additions_listeners:
            try:
                await listener(caller.id, tags)
            except Exception:  # noqa: BLE001 - the filter is stored; CheckRecycled still covers
                _log.exception("routing.additions_listener_failed", provider=caller.id)

    async def _store_filter(
        self,
        caller: Principal,
        data: bytes,
        kind: FilterKind,
        *,
        key_version: int,
        created_at: int,
        detail: dict[str, str | int | bool],
        interval_s: int | None = None,
    ) -> int:
        """Seal a checked filter publication for ``caller`` and store it with its audit row."""
        sealed = await self._writer.off_loop(
            len(data),
            functools.partial(
                self._sealer.seal,
                data,
                provider_id=caller.id,
                kind=kind,
                key_version=key_version,
                created_at=created_at,
            ),
        )
        seq: int = await store_call(
            self._store.routing.publish(
                provider_id=caller.id,
                kind=kind,
                key_version=key_version,
                created_at=created_at,
                interval_s=interval_s,
                sealed=sealed,
                audit=_draft(caller, {**detail, "accepted": True}),
            ),
            "routing.publish",
        )
        return seq

    async def _publish_opt_out(self, caller: Principal) -> None:
        now = int(time.time())
        seq = await store_call(
            self._store.routing.publish(
                provider_id=caller.id,
                kind=FilterKind.OPT_OUT,
                key_version=0,
                created_at=now,
                sealed=b"",
                audit=_draft(caller, {"kind": "opt_out", "accepted": True}),
            ),
            "routing.publish",
        )
        self._writer.opt_out(caller.id)
        self._own.add(seq)

    @staticmethod
    def _checked(
        caller: Principal, detail: dict[str, str | int | bool], check: Callable[[], None]
    ) -> None:
        try:
            check()
        except FilterRejectedError as exc:
            message = str(exc)
            # A clock or a size is the request's fault; a key or an order is
            # the state the provider must catch up with.
            code = (
                grpc.StatusCode.INVALID_ARGUMENT
                if "future" in message or "larger than" in message
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            raise Refusal(
                code,
                message,
                reason="filter_refused",
                audit=AuditNote(
                    kind="routing.publish",
                    actor=caller.actor,
                    subject=f"provider:{caller.id}",
                    detail={**detail, "accepted": False, "why": message[:120]},
                ),
            ) from None

    # -------------------------------------------------------------- replicas

    async def sync(self) -> int:
        """Apply the stored keyring and every publication stored since the last sync.

        Returns how many publications were applied.
        """
        async with self._lock:
            await self._sync_keys()
            if await self._store.routing.head() <= self._applied:
                return 0
            applied = 0
            while True:
                rows = await self._store.routing.since(self._applied)
                if not rows:
                    return applied
                for row in rows:
                    if row.seq in self._own:
                        self._own.discard(row.seq)
                    elif row.provider_id not in self._registered:
                        pass  # a provider this replica is not configured with
                    elif await self._writer.row(row):
                        applied += 1
                    self._applied = row.seq

    async def _sync_keys(self) -> None:
        """Follow an operator's rotation or retirement (``store.routing.keys``)."""
        rows = await self._store.routing.keys()
        seen = tuple((r.version, r.state) for r in rows)
        if not rows or seen == self._keys_seen:
            return
        try:
            ring = keyring_of(rows, self._sealer)
        except (InvalidTag, ValueError) as exc:
            # Sealed under another filter key (a misconfigured replica): keep routing
            # with the keys in hand rather than drop every filter.
            _log.error("routing.keys_unreadable", why=type(exc).__name__)
            return
        self._keys_seen = seen
        if ring is None:
            return
        self._keyring = ring
        self.index.set_key_versions(ring.key_checks())
        _log.info("routing.keys_changed", active=ring.active_version, live=sorted(ring.versions))

    async def start(self) -> None:
        """Load every stored filter, then follow the store every ``poll_interval_s``."""
        await self.sync()
        self._follower.start()

    async def stop(self) -> None:
        """Stop following the store."""
        await self._follower.stop()


def _tag(version: int, element: bytes) -> str:
    return f"{version}:{element.hex()}"


def keyring_of(rows: Sequence[KeyRow], sealer: FilterSealer) -> RoutingKeyring | None:
    """The keyring the stored rows describe (None if none is live).

    Raises:
        InvalidTag: a key sealed under another filter key.
        ValueError: no active version among the live ones.
    """
    live = {
        r.version: sealer.open_key(r.version, r.sealed)
        for r in rows
        if r.state is not KeyState.RETIRED
    }
    if not live:
        return None
    active = [r.version for r in rows if r.state is KeyState.ACTIVE]
    if len(active) != 1:
        raise ValueError("the stored routing keys have no single active version")
    return RoutingKeyring(live, active=active[0])


def _iso(unix: int) -> str:
    try:
        return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def _draft(caller: Principal, detail: dict[str, str | int | bool]) -> AuditDraft:
    return AuditDraft(
        kind="routing.publish",
        actor=caller.actor,
        subject=f"provider:{caller.id}",
        detail=detail,
    )
