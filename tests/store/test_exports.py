"""The public surface of onecert.gateway.store."""

from __future__ import annotations

import types

import onecert.gateway.store as store_pkg
from onecert.gateway.store import testing


def test_all_lists_exactly_the_public_names() -> None:
    """``__all__`` names every public member and nothing else."""
    public = {
        name
        for name, value in vars(store_pkg).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(store_pkg.__all__) == public
    assert all(hasattr(store_pkg, name) for name in store_pkg.__all__)


def test_testing_module_exports_database() -> None:
    """The test helper module exports its Database helper and the private PostgreSQL server."""
    assert testing.__all__ == ["Database", "PrivatePostgres"]
