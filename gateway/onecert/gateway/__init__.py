"""The onecert gateway: identity-verified lookup across carriers and providers.

Run it with ``onecert gateway serve --config FILE``, or in-process::

    async with GatewayServer(load_config("gateway.toml")) as server:
        print(server.port)
"""

from onecert.gateway._config import ConfigError, GatewayConfig, load_config, parse_config
from onecert.gateway._fanout import AllProviders, Router
from onecert.gateway._server import GatewayServer, serve

__all__ = [
    "AllProviders",
    "ConfigError",
    "GatewayConfig",
    "GatewayServer",
    "Router",
    "load_config",
    "parse_config",
    "serve",
]
