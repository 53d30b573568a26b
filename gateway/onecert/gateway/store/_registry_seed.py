"""Seeding the registry from the configuration: what to insert, update and remove (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from onecert.gateway.store._registry_types import (
    EntryKind,
    EntryOrigin,
    RegistryEntry,
    RegistryStatus,
    SeedEntry,
    SeedReport,
)

__all__ = ["CONFIG_ACTOR", "SeedPlan", "SeedStep", "plan_seed"]

CONFIG_ACTOR = "config"
"""The actor of every change seeding makes."""

_GONE = "no longer in the configuration"


@dataclass(frozen=True)
class SeedStep:
    """One entry to insert or update, with its history row."""

    kind: EntryKind
    id: str
    insert: bool
    values: Mapping[str, Any]
    action: str
    old: RegistryStatus | None
    new: RegistryStatus | None
    detail: Mapping[str, str | int | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class SeedPlan:
    """The steps, in order, and the report they add up to."""

    steps: tuple[SeedStep, ...]
    report: SeedReport


# What a configuration block sets; RegistryEntry and SeedEntry both carry these.
_SETTINGS = (
    "name",
    "category",
    "address",
    "delivery",
    "plaintext",
    "client_cn",
    "deadline_s",
    "max_concurrency",
    "prefixes",
)


def _settings(source: SeedEntry | RegistryEntry) -> dict[str, Any]:
    """The settings as the table's columns hold them."""
    values = {name: getattr(source, name) for name in _SETTINGS}
    values["delivery"] = source.delivery.value
    values["prefixes"] = " ".join(source.prefixes) or None
    return values


def _active(now: datetime, reason: str) -> dict[str, Any]:
    return {
        "status": RegistryStatus.ACTIVE.value,
        "status_changed_at": now,
        "status_actor": CONFIG_ACTOR,
        "status_reason": reason,
    }


def _step_for(seed: SeedEntry, found: RegistryEntry | None, now: datetime) -> SeedStep | None:
    """The step that makes ``found`` match ``seed`` (None: nothing to do, or not ours)."""
    settings = _settings(seed)
    if found is None:
        values = {
            "kind": seed.kind.value,
            "id": seed.id,
            **settings,
            **_active(now, "in the configuration"),
            "origin": EntryOrigin.CONFIG.value,
            "created_at": now,
            "activated_at": now,
        }
        return SeedStep(seed.kind, seed.id, True, values, "seed", None, RegistryStatus.ACTIVE)
    if found.origin is not EntryOrigin.CONFIG:
        return None
    changed = sorted(k for k, v in settings.items() if _settings(found)[k] != v)
    # Back in the configuration after seeding removed it: active again. A
    # status an admin set (suspended, removed) is the admin's to change.
    back = found.status is RegistryStatus.REMOVED and found.status_actor == CONFIG_ACTOR
    if not changed and not back:
        return None
    values = {k: settings[k] for k in changed}
    new = found.status
    if back:
        new = RegistryStatus.ACTIVE
        values.update(_active(now, "back in the configuration"))
        values["activated_at"] = found.activated_at or now
    detail = {"changed": ",".join(changed)} if changed else {}
    return SeedStep(seed.kind, seed.id, False, values, "seed", found.status, new, detail)


def plan_seed(
    seeds: Sequence[SeedEntry], existing: Sequence[RegistryEntry], now: datetime
) -> SeedPlan:
    """What seeding ``seeds`` into a registry holding ``existing`` must do."""
    by_key = {(e.kind, e.id): e for e in existing}
    listed = {(s.kind, s.id) for s in seeds}
    steps: list[SeedStep] = []
    added: list[str] = []
    updated: list[str] = []
    skipped: list[str] = []
    for seed in seeds:
        found = by_key.get((seed.kind, seed.id))
        step = _step_for(seed, found, now)
        if found is not None and found.origin is not EntryOrigin.CONFIG:
            skipped.append(seed.id)
        if step is None:
            continue
        steps.append(step)
        (added if found is None else updated).append(seed.id)
    removed: list[str] = []
    for entry in existing:
        gone = (entry.kind, entry.id) not in listed
        if (
            gone
            and entry.origin is EntryOrigin.CONFIG
            and entry.status is not RegistryStatus.REMOVED
        ):
            values = {
                "status": RegistryStatus.REMOVED.value,
                "status_changed_at": now,
                "status_actor": CONFIG_ACTOR,
                "status_reason": _GONE,
            }
            steps.append(
                SeedStep(
                    entry.kind,
                    entry.id,
                    False,
                    values,
                    "remove",
                    entry.status,
                    RegistryStatus.REMOVED,
                    {"reason": _GONE},
                )
            )
            removed.append(entry.id)
    report = SeedReport(tuple(added), tuple(updated), tuple(removed), tuple(skipped))
    return SeedPlan(tuple(steps), report)
