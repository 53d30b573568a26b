"""The rows `onecert lookup` numbers: one number per handle, in printed order, none twice."""

from __future__ import annotations

from datetime import timedelta

from onecert.cli._lookup import render_table
from onecert.cli._rows import number_rows
from onecert.sdk.client import Coverage, Started, Summary
from tests.client.client_support import provider_result


def test_rows_are_numbered_once_each() -> None:
    """Every handle gets its own row number, in printed order, with no number twice:
    a provider holding two previous holders' accounts gets two consecutive rows."""
    two = provider_result("bazaar", handles=("h1", "h2"))
    one = provider_result("chirp", handles=("h3",))
    rows = number_rows([two, one])
    assert [(r.number, r.handle) for r in rows] == [(1, "h1"), (2, "h2"), (3, "h3")]
    started = Started(query_id="q", numbers=(), carriers=(), provider_calls=2)
    summary = Summary("q", Coverage(2, 2, 0, 0, 0), (), (), timedelta(seconds=1))
    lines = render_table(started, [two, one], summary).splitlines()
    assert any(line.split()[:1] == ["1-2"] and "Bazaar" in line for line in lines)
    assert any(line.split()[:1] == ["3"] and "Chirp" in line for line in lines)
