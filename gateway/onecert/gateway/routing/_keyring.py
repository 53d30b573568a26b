"""The federation's routing keys, by version: what filters are keyed with."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from types import MappingProxyType

from onecert.sdk._filter import key_check, routing_digest

MIN_KEY_BYTES = 32


class RoutingKeyring:
    """Routing keys by version: one active (providers build with it) and older ones still live.

    During a rotation the keyring holds the new active key and the previous
    one, so filters published under either are routed; a lookup hashes the
    number once per live version. Retiring a version sends every provider
    whose filter still uses it back to being always asked.

    Example::

        ring = RoutingKeyring({1: key1}, active=1)
        ring = ring.rotated(2, key2)      # 1 and 2 live, 2 active
        ring = ring.retired(1)            # after every provider republished
    """

    def __init__(self, keys: Mapping[int, bytes], *, active: int) -> None:
        if active not in keys:
            raise ValueError(f"the active routing key version {active} has no key")
        for version, key in keys.items():
            if not 0 < version < 1 << 32:
                raise ValueError("routing key versions are from 1 to 2**32 - 1")
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"routing key {version} is shorter than {MIN_KEY_BYTES} bytes")
        self._keys = dict(keys)
        self._active = active
        self._checks = MappingProxyType({v: key_check(k) for v, k in self._keys.items()})

    @classmethod
    def generate(cls, version: int = 1) -> RoutingKeyring:
        """A keyring with one fresh random key."""
        return cls({version: secrets.token_bytes(MIN_KEY_BYTES)}, active=version)

    @property
    def active_version(self) -> int:
        """The version providers build new filters with."""
        return self._active

    @property
    def versions(self) -> frozenset[int]:
        """Every live version."""
        return frozenset(self._keys)

    def key(self, version: int) -> bytes:
        """The key of a live version (handed to providers over their authenticated channel)."""
        return self._keys[version]

    def key_checks(self) -> Mapping[int, bytes]:
        """Each live version's key check: what the routing index verifies filters against."""
        return self._checks

    def digests(self, msisdn: str) -> dict[int, bytes]:
        """The number's routing digest under every live version."""
        return {version: routing_digest(key, msisdn) for version, key in self._keys.items()}

    def rotated(self, version: int, key: bytes) -> RoutingKeyring:
        """A keyring with a new active version; the others stay live."""
        if version <= max(self._keys):
            raise ValueError("a new routing key version must be higher than every live one")
        return RoutingKeyring({**self._keys, version: key}, active=version)

    def retired(self, version: int) -> RoutingKeyring:
        """A keyring without an old version (never the active one)."""
        if version == self._active:
            raise ValueError("the active routing key cannot be retired")
        keys = {v: k for v, k in self._keys.items() if v != version}
        return RoutingKeyring(keys, active=self._active)
