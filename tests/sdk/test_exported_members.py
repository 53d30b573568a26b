"""What onecert.sdk and its client export is documented (tests/test_public_api.py pins
which names they export)."""

from __future__ import annotations

import onecert.sdk
import onecert.sdk.client


def test_exported_members_say_where_they_belong() -> None:
    """Every exported class is documented (the names are the API a provider reads)."""
    for name in onecert.sdk.__all__:
        member = getattr(onecert.sdk, name)
        assert member.__doc__, name


def test_client_exports_are_documented() -> None:
    """Every name onecert.sdk.client exports is documented."""
    for name in onecert.sdk.client.__all__:
        assert getattr(onecert.sdk.client, name).__doc__, name
