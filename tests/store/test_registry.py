"""The provider registry in the store: invitations, tokens, the gate, statuses, seeding."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from onecert.gateway.store import (
    AlreadyExistsError,
    DeliveryMode,
    EntryKind,
    EntryOrigin,
    NotFoundError,
    RedeemOutcome,
    RegistryStatus,
    SeedEntry,
    Store,
    TransitionError,
    token_digest,
)
from onecert.gateway.store._models import enrollment_tokens

ADMIN = "admin:regulator"
HOUR = timedelta(hours=1)


async def _invite(store: Store, t0: datetime, provider_id: str = "shop") -> str:
    invitation = await store.registry.invite(
        provider_id, name="A shop", category="ecommerce", ttl=HOUR, actor=ADMIN, now=t0
    )
    return invitation.token


async def _activate(store: Store, t0: datetime, provider_id: str = "shop") -> None:
    token = await _invite(store, t0, provider_id)
    result = await store.registry.redeem_token(
        provider_id, token, address="127.0.0.1:1", delivery="push", now=t0
    )
    assert result.outcome is RedeemOutcome.REDEEMED
    await store.registry.record_gate(provider_id, passed=True, now=t0)


async def test_invite_stores_only_the_tokens_hash(store: Store, t0: datetime) -> None:
    """An invitation returns the raw token once; the database holds its SHA-256 only."""
    invitation = await store.registry.invite(
        "shop", name="A shop", category="ecommerce", ttl=HOUR, actor=ADMIN, now=t0
    )
    assert invitation.entry.status is RegistryStatus.INVITED
    assert invitation.entry.origin is EntryOrigin.ENROLLED
    assert invitation.expires_at == t0 + HOUR
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(enrollment_tokens))).mappings().all()
    assert [r["token_hash"] for r in rows] == [token_digest(invitation.token)]
    assert all(invitation.token not in str(dict(r)) for r in rows)


async def test_redeem_is_single_use_and_moves_to_pending(store: Store, t0: datetime) -> None:
    """A token joins its provider once (invited -> pending); a second use is refused."""
    token = await _invite(store, t0)
    first = await store.registry.redeem_token(
        "shop", token, address=None, delivery=DeliveryMode.POLL, now=t0
    )
    assert first.outcome is RedeemOutcome.REDEEMED
    assert first.entry is not None
    assert first.entry.status is RegistryStatus.PENDING
    assert first.entry.address is None
    assert first.entry.joined_at == t0
    again = await store.registry.redeem_token("shop", token, address=None, delivery="poll", now=t0)
    assert again.outcome is RedeemOutcome.USED


async def test_redeem_refusals_are_distinct_and_change_nothing(store: Store, t0: datetime) -> None:
    """Unknown, expired, another id's and replaced tokens are refused, each for its reason."""
    token = await _invite(store, t0, "shop")
    await _invite(store, t0, "forum")
    version = await store.registry.version()

    async def redeem(provider_id: str, raw: str, at: datetime) -> RedeemOutcome:
        result = await store.registry.redeem_token(
            provider_id, raw, address="h:1", delivery="push", now=at
        )
        return result.outcome

    assert await redeem("shop", "nonsense", t0) is RedeemOutcome.UNKNOWN
    assert await redeem("forum", token, t0) is RedeemOutcome.OTHER_ID
    assert await redeem("shop", token, t0 + HOUR) is RedeemOutcome.EXPIRED
    assert await store.registry.version() == version
    fresh = await _invite(store, t0, "shop")
    assert await redeem("shop", token, t0) is RedeemOutcome.REVOKED
    assert await redeem("shop", fresh, t0) is RedeemOutcome.REDEEMED


async def test_concurrent_redemptions_admit_one(
    store: Store, other_store: Store, t0: datetime
) -> None:
    """The same token spent on two replicas at once joins exactly once."""
    token = await _invite(store, t0)
    results = await asyncio.gather(
        *(
            s.registry.redeem_token("shop", token, address="h:1", delivery="push", now=t0)
            for s in (store, other_store, store, other_store)
        )
    )
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["redeemed", "used", "used", "used"]


async def test_gate_activates_and_failures_are_kept(store: Store, t0: datetime) -> None:
    """A failed gate leaves the provider pending with its failures; a passed one activates it."""
    token = await _invite(store, t0)
    await store.registry.redeem_token("shop", token, address="h:1", delivery="push", now=t0)
    failed = await store.registry.record_gate(
        "shop", passed=False, failures=["C-3: no warrant check"], now=t0
    )
    assert failed.status is RegistryStatus.PENDING
    assert failed.gate_failures == ("C-3: no warrant check",)
    passed = await store.registry.record_gate("shop", passed=True, now=t0 + HOUR)
    assert passed.status is RegistryStatus.ACTIVE
    assert passed.activated_at == t0 + HOUR
    cert = await store.registry.record_certificate(
        "shop", serial="0a1b", not_after=t0 + 24 * HOUR, now=t0
    )
    assert cert.cert_serial == "0a1b"
    assert cert.cert_not_after == t0 + 24 * HOUR


async def test_status_transitions(store: Store, t0: datetime) -> None:
    """Suspend, resume and remove follow the allowed moves; others are refused unchanged."""
    await _activate(store, t0)
    with pytest.raises(TransitionError):
        await store.registry.set_status("shop", RegistryStatus.ACTIVE, actor=ADMIN)
    suspended = await store.registry.set_status(
        "shop", RegistryStatus.SUSPENDED, actor=ADMIN, reason="ignores notices"
    )
    assert suspended.status is RegistryStatus.SUSPENDED
    assert suspended.status_reason == "ignores notices"
    with pytest.raises(AlreadyExistsError):
        await _invite(store, t0)
    with pytest.raises(TransitionError):
        await store.registry.record_gate("shop", passed=True)
    resumed = await store.registry.set_status("shop", RegistryStatus.ACTIVE, actor=ADMIN)
    assert resumed.status is RegistryStatus.ACTIVE
    await store.registry.set_status("shop", RegistryStatus.REMOVED, actor=ADMIN)
    version = await store.registry.version()
    with pytest.raises(TransitionError):
        await store.registry.set_status("shop", RegistryStatus.ACTIVE, actor=ADMIN)
    with pytest.raises(NotFoundError):
        await store.registry.set_status("nobody", RegistryStatus.SUSPENDED, actor=ADMIN)
    assert await store.registry.version() == version
    snapshot = await store.registry.snapshot()
    assert snapshot.entries == ()
    assert snapshot.removed == {(EntryKind.PROVIDER, "shop")}
    actions = [e.action for e in await store.registry.history("shop")]
    assert actions == ["invite", "join", "gate", "suspend", "resume", "remove"]


async def test_every_change_is_an_audit_row(store: Store, t0: datetime) -> None:
    """Each registry change appends one row to the audit chain, and the chain verifies."""
    await _activate(store, t0)
    await store.registry.set_status("shop", RegistryStatus.SUSPENDED, actor=ADMIN, reason="x")
    verification = await store.audit.verify()
    assert verification.ok
    assert verification.rows_checked == 4


async def test_seeding_is_idempotent_and_follows_the_configuration(
    store: Store, t0: datetime
) -> None:
    """Seeding adds config entries active, changes nothing when run again, updates
    changed settings, removes entries no longer listed and leaves enrolled ids alone."""
    await _activate(store, t0, "enrolled")
    seeds = [
        SeedEntry(EntryKind.PROVIDER, "pay", name="Pay", category="payment", address="h:1"),
        SeedEntry(EntryKind.CARRIER, "cm", address="h:2", prefixes=("+86138",)),
        SeedEntry(EntryKind.PROVIDER, "enrolled", address="h:3"),
    ]
    first = await store.registry.seed(seeds, now=t0)
    assert first.added == ("pay", "cm")
    assert first.skipped == ("enrolled",)
    version = await store.registry.version()
    assert not (await store.registry.seed(seeds, now=t0)).changed
    assert await store.registry.version() == version
    carrier = await store.registry.get("cm", kind=EntryKind.CARRIER)
    assert carrier is not None
    assert carrier.prefixes == ("+86138",)
    changed = [SeedEntry(EntryKind.PROVIDER, "pay", name="Pay Ltd", address="h:9")]
    report = await store.registry.seed(changed, now=t0)
    assert report.updated == ("pay",)
    assert report.removed == ("cm",)
    pay = await store.registry.get("pay")
    assert pay is not None
    assert pay.name == "Pay Ltd"
    assert pay.status is RegistryStatus.ACTIVE
    enrolled = await store.registry.get("enrolled")
    assert enrolled is not None
    assert enrolled.origin is EntryOrigin.ENROLLED
    back = await store.registry.seed(seeds, now=t0)
    assert back.updated == ("pay", "cm")
    again = await store.registry.get("cm", kind=EntryKind.CARRIER)
    assert again is not None
    assert again.status is RegistryStatus.ACTIVE


async def test_seeding_keeps_an_admins_suspension(store: Store, t0: datetime) -> None:
    """A config provider an admin suspended stays suspended across restarts."""
    seeds = [SeedEntry(EntryKind.PROVIDER, "pay", address="h:1")]
    await store.registry.seed(seeds, now=t0)
    await store.registry.set_status("pay", RegistryStatus.SUSPENDED, actor=ADMIN)
    assert not (await store.registry.seed(seeds, now=t0)).changed
    pay = await store.registry.get("pay")
    assert pay is not None
    assert pay.status is RegistryStatus.SUSPENDED


async def test_bad_input_is_refused(store: Store, t0: datetime) -> None:
    """Bad ids, categories, names and a push provider without address raise ValueError."""
    for kwargs in (
        {"provider_id": "Bad Id"},
        {"provider_id": "ok", "category": "no such!"},
        {"provider_id": "ok", "name": "a\nb"},
    ):
        args = {"name": "n", "category": "other", **kwargs}
        with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by the service tests
            await store.registry.invite(
                args["provider_id"],
                name=args["name"],
                category=args["category"],
                ttl=HOUR,
                actor=ADMIN,
            )
    token = await _invite(store, t0)
    with pytest.raises(ValueError, match="needs an address"):
        await store.registry.redeem_token("shop", token, address=None, delivery="push")
    assert await store.registry.version() == 1


async def test_rate_limit_is_shared_by_replicas(store: Store, other_store: Store) -> None:
    """Two replicas take from one bucket: its burst holds for the pair, then it refills."""
    results = [
        await s.rates.take("k", rate=2.0, burst=3, now=100.0)
        for s in (store, other_store, store, other_store)
    ]
    assert results[:3] == [0.0, 0.0, 0.0]
    assert results[3] == pytest.approx(0.5)
    assert await other_store.rates.take("other", rate=2.0, burst=3, now=100.0) == 0.0
    assert await store.rates.take("k", rate=2.0, burst=3, now=100.5) == 0.0
    assert await store.rates.take("k", rate=2.0, burst=3, now=100.5) == pytest.approx(0.5)
    assert await store.rates.purge(now=200.0) == 2
