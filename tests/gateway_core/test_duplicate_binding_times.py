"""Duplicate accounts in one provider's answer: disagreeing binding times are cleared."""

from __future__ import annotations

from datetime import UTC, datetime

from onecert.gateway._fanout import _tidy
from onecert.gateway.testing import timed_binding


def test_copies_disagreeing_on_an_interval_lose_every_binding_time() -> None:
    """Copies of one account with different bounds prove nothing: all three are cleared."""
    first = timed_binding(bound_not_before=datetime(2019, 1, 1, tzinfo=UTC))
    second = timed_binding(
        bound_not_before=datetime(2019, 1, 1, tzinfo=UTC),
        bound_not_after=datetime(2019, 6, 1, tzinfo=UTC),
    )
    kept, note = _tidy([first, second], limit=10)
    assert len(kept) == 1
    for name in ("bound_at", "bound_not_before", "bound_not_after"):
        assert not kept[0].HasField(name)
    assert "1 duplicate" in note


def test_identical_copies_keep_their_interval() -> None:
    """Copies that agree keep the interval they agree on."""
    times = {
        "bound_not_before": datetime(2019, 1, 1, tzinfo=UTC),
        "bound_not_after": datetime(2019, 6, 1, tzinfo=UTC),
    }
    kept, _ = _tidy([timed_binding(**times), timed_binding(**times)], limit=10)
    assert kept[0].HasField("bound_not_before")
    assert kept[0].HasField("bound_not_after")
