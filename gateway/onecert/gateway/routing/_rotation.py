"""Routing-key rotation and retirement, driven by the operator (``onecert routing``).

The keyring starts as the configuration's (``[routing] key_file``, or
version 1 derived from the handle key). The first rotation writes those
versions to the store, sealed with the filter sealing key, and a new random
active version beside them; from then on every replica reads the keyring from
the store (its routing poll) and hands the new version to providers in
``GetRoutingKey`` and ``PublishFilter`` answers. Filters keyed with the older
versions keep routing until the operator retires them, which the command
refuses while a provider's stored snapshot still uses the version (unless
forced: those providers are then asked about every number until they
publish again). Every rotation and retirement is an audit row committed with
the change. See ``docs/routing.md`` ("Key rotation").
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from onecert.gateway._config import GatewayConfig
from onecert.gateway._handles import load_handle_key
from onecert.gateway.routing._keyring import MIN_KEY_BYTES, RoutingKeyring
from onecert.gateway.routing._service import (
    FilterSealer,
    derive_filter_key,
    derive_routing_key,
    keyring_of,
    load_filter_key,
    load_routing_keys,
)
from onecert.gateway.store import AuditDraft, ConflictError, KeyState, NotFoundError, Store

__all__ = [
    "OPERATOR",
    "KeyStatus",
    "RotationError",
    "configured_keyring",
    "filter_sealer",
    "key_statuses",
    "operator_keys",
    "retire_key",
    "rotate_key",
]

# The audit log's actor for the operator's command.
OPERATOR = "operator:cli"


class RotationError(Exception):
    """A rotation or retirement refused; the message says why. Nothing changed."""


@dataclass(frozen=True)
class KeyStatus:
    """One routing key version as the operator sees it (never the key).

    Attributes:
        version: the version.
        state: active, live or retired.
        changed_at: when it last changed state (None: from the configuration).
        snapshots: providers whose stored snapshot is keyed with it.
    """

    version: int
    state: KeyState
    changed_at: datetime | None
    snapshots: int


def configured_keyring(config: GatewayConfig, handle_key: bytes) -> RoutingKeyring:
    """The keyring of the configuration: ``[routing] key_file``, or version 1 derived."""
    key_file = config.routing.key_file
    if key_file is None:
        return RoutingKeyring({1: derive_routing_key(handle_key, 1)}, active=1)
    return load_routing_keys(key_file)


def filter_sealer(config: GatewayConfig, handle_key: bytes) -> FilterSealer:
    """The sealer of filters and stored keys: ``keys.filter_key``, or derived."""
    path = config.keys.filter_key
    return FilterSealer(derive_filter_key(handle_key) if path is None else load_filter_key(path))


def operator_keys(config: GatewayConfig) -> tuple[RoutingKeyring, FilterSealer]:
    """The configuration's keyring and the sealer, read from its key files.

    Raises:
        KeyConfigError: a key file is unreadable or malformed.
    """
    handle_key = load_handle_key(config.keys.handle_key)
    return configured_keyring(config, handle_key), filter_sealer(config, handle_key)


async def rotate_key(
    store: Store,
    *,
    base: RoutingKeyring,
    sealer: FilterSealer,
    actor: str = OPERATOR,
    key: bytes | None = None,
) -> int:
    """Add a new active routing key version (random unless ``key``); returns it.

    The active version before it stays live, so filters keyed with it keep
    routing until it is retired.

    Raises:
        RotationError: another rotation got there first.
    """
    rows = await store.routing.keys()
    current = (keyring_of(rows, sealer) if rows else None) or base
    version = max([*current.versions, *(r.version for r in rows)]) + 1
    new_key = key if key is not None else secrets.token_bytes(MIN_KEY_BYTES)
    seed = [] if rows else [(v, sealer.seal_key(v, base.key(v))) for v in sorted(base.versions)]
    detail: dict[str, str | int | bool] = {
        "version": version,
        "previous_active": current.active_version,
        "live": ",".join(str(v) for v in sorted({*current.versions, version})),
    }
    try:
        await store.routing.rotate_key(
            version=version,
            sealed=sealer.seal_key(version, new_key),
            seed=seed,
            audit=AuditDraft(
                kind="routing.key_rotated",
                actor=actor,
                subject=f"routing_key:{version}",
                detail=detail,
            ),
        )
    except ConflictError as exc:
        raise RotationError(f"{exc}: another rotation ran at the same time; look again") from None
    return version


async def retire_key(
    store: Store,
    version: int,
    *,
    sealer: FilterSealer,
    force: bool = False,
    actor: str = OPERATOR,
) -> int:
    """Retire a live, not active, version; returns how many snapshots were still keyed with it.

    Raises:
        RotationError: never rotated (the configuration's keys are not in the
            store), not live, the active version, or still used by a
            provider's snapshot and not ``force``.
    """
    rows = await store.routing.keys()
    if not rows:
        raise RotationError(
            "the routing keys are still the configuration's: rotate first, then retire "
            "the old version once every provider republished"
        )
    keyring_of(rows, sealer)  # the filter key must open them: the same gateway's store
    still = sum(v == version for v in (await store.routing.snapshot_versions()).values())
    if still and not force:
        raise RotationError(
            f"{still} provider(s) still have a snapshot keyed with version {version}: wait "
            "until they publish under the active version (at most their snapshot interval "
            "plus grace after the rotation), or retire with --force (they are then asked "
            "about every number until they do)"
        )
    detail: dict[str, str | int | bool] = {
        "version": version,
        "snapshots_still_keyed": still,
        "forced": force,
    }
    try:
        await store.routing.retire_key(
            version,
            audit=AuditDraft(
                kind="routing.key_retired",
                actor=actor,
                subject=f"routing_key:{version}",
                detail=detail,
            ),
        )
    except (ConflictError, NotFoundError) as exc:
        raise RotationError(str(exc)) from None
    return still


async def key_statuses(
    store: Store, *, base: RoutingKeyring, sealer: FilterSealer
) -> Sequence[KeyStatus]:
    """Every routing key version, stored or configured, with the snapshots keyed with it."""
    rows = await store.routing.keys()
    used = Counter((await store.routing.snapshot_versions()).values())
    if rows:
        keyring_of(rows, sealer)
        return [KeyStatus(r.version, r.state, r.changed_at, used[r.version]) for r in rows]
    return [
        KeyStatus(v, KeyState.ACTIVE if v == base.active_version else KeyState.LIVE, None, used[v])
        for v in sorted(base.versions)
    ]
