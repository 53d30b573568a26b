"""[metrics] and [tracing] in the configuration file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from onecert.gateway import ConfigError, parse_config
from onecert.gateway._config import MetricsConfig, TracingConfig


def parse(**tables: Any) -> Any:
    data: dict[str, Any] = {
        "gateway": {"dev_plaintext": True, "listen": "127.0.0.1:7443"},
        "keys": {"warrant_key": "w.pem", "handle_key": "h.key"},
        "identity": {"issuers": [{"issuer": "https://id.example.test", "jwks": "j.json"}]},
        "carriers": [{"id": "cm", "address": "127.0.0.1:1", "plaintext": True}],
    }
    data.update(tables)
    return parse_config(data, base_dir=Path("/etc/onecert"))


def test_both_are_off_by_default() -> None:
    """Without the tables there are no metrics and no tracing."""
    config = parse()
    assert config.metrics == MetricsConfig(listen=None)
    assert config.tracing == TracingConfig()
    assert not config.tracing.enabled


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "[::]:9464", "127.0.0.1:0", ":9464"])
def test_metrics_listen_is_host_and_port(listen: str) -> None:
    """metrics.listen takes HOST:PORT like gateway.listen."""
    assert parse(metrics={"listen": listen}).metrics.listen == listen


def test_an_empty_metrics_listen_means_off() -> None:
    """metrics.listen = "" turns metrics off, like leaving it out."""
    assert parse(metrics={"listen": ""}).metrics.listen is None


def test_tracing_keys_are_read() -> None:
    """Every [tracing] key reaches the configuration."""
    tracing = parse(
        tracing={
            "enabled": True,
            "exporter": "otlp",
            "endpoint": "http://collector:4317",
            "service_name": "gateway-a",
            "sample_ratio": 0.25,
        }
    ).tracing
    assert tracing == TracingConfig(
        enabled=True,
        exporter="otlp",
        endpoint="http://collector:4317",
        service_name="gateway-a",
        sample_ratio=0.25,
    )


@pytest.mark.parametrize(
    ("section", "keys", "message"),
    [
        ("metrics", {"listen": "9464"}, "metrics.listen must be HOST:PORT"),
        ("metrics", {"listen": "[::]:99999"}, "metrics.listen must be HOST:PORT"),
        ("metrics", {"listen": 9464}, "metrics.listen must be a string"),
        ("metrics", {"listen": "127.0.0.1:7443"}, "another port than gateway.listen"),
        ("metrics", {"port": 9464}, "unknown key 'metrics.port'"),
        ("tracing", {"exporter": "jaeger"}, "tracing.exporter must be one of otlp, console"),
        ("tracing", {"exporter": "console", "endpoint": "http://x:4317"}, "applies to exporter"),
        ("tracing", {"sample_ratio": 1.5}, "tracing.sample_ratio must be at most 1.0"),
        ("tracing", {"sample_ratio": -0.1}, "tracing.sample_ratio must be at least 0.0"),
        ("tracing", {"enabled": "yes"}, "tracing.enabled must be true or false"),
        ("tracing", {"sampling": 0.5}, "unknown key 'tracing.sampling'"),
    ],
)
def test_bad_keys_are_named(section: str, keys: dict[str, Any], message: str) -> None:
    """A bad [metrics] or [tracing] key stops the gateway with a message naming it."""
    with pytest.raises(ConfigError, match=message):
        parse(**{section: keys})


def test_the_otlp_exporter_is_built_from_the_config() -> None:
    """tracing.exporter = "otlp" builds an exporter towards tracing.endpoint when the gateway
    is built (nothing is sent until a span ends)."""
    from onecert.gateway._metrics import Telemetry

    config = parse(
        tracing={"enabled": True, "endpoint": "http://127.0.0.1:4317", "sample_ratio": 0.5}
    )
    telemetry = Telemetry.from_config(config)
    assert telemetry is not None
    assert telemetry.metrics is None
    assert telemetry.tracing is not None


def test_a_missing_otlp_exporter_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the OTLP exporter package, tracing.exporter = "otlp" is refused with the
    package to install, before the gateway listens."""
    from onecert.gateway._metrics import Telemetry

    # None in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-grpc"):
        Telemetry.from_config(parse(tracing={"enabled": True}))
