"""The smallest gateway configuration that parses, for tests that add to it."""

from __future__ import annotations

__all__ = ["MINIMAL"]

MINIMAL = """
[gateway]
dev_plaintext = true

[keys]
warrant_key = "keys/warrant.key.pem"
handle_key = "keys/handle.key"

[[identity.issuers]]
issuer = "https://id.example.test"
jwks = "keys/identity.jwks.json"

[[carriers]]
id = "cm"
address = "127.0.0.1:50061"
plaintext = true
"""
