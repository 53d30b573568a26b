"""Each package's public API is exactly what tests/public_api.toml pins, and all of it imports."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

PINNED: dict[str, list[str]] = tomllib.loads(
    (Path(__file__).parent / "public_api.toml").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("module", sorted(PINNED))
def test_all_is_exactly_the_pinned_api_and_each_name_is_defined(module: str) -> None:
    """__all__ names the pinned names once each, and the module defines every one of them."""
    package = importlib.import_module(module)
    assert sorted(package.__all__) == sorted(PINNED[module])
    assert len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is not None, name
