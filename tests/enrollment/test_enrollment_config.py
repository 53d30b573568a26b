"""[enrollment] in the gateway's configuration: parsed with its defaults, and refused at start
when the gateway would not accept the certificates its CA signs."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from onecert.gateway import ConfigError, GatewayServer, parse_config
from onecert.gateway._config import UpstreamTLS
from onecert.gateway.testing import Federation, FederationKeys, enrollment_config
from onecert.sdk.devkeys import init_dev_keys
from tests.gateway.config_support import MINIMAL


def test_defaults_and_paths() -> None:
    """Only the CA is required; paths are resolved next to the file; a day's lifetime."""
    config = parse_config(
        tomllib.loads(MINIMAL + '[enrollment]\nca_cert = "k/ca.pem"\nca_key = "k/ca.key.pem"\n'),
        base_dir="/etc/onecert",
    )
    assert config.enrollment is not None
    assert config.enrollment.ca_cert == Path("/etc/onecert/k/ca.pem")
    assert config.enrollment.cert_lifetime_s == 86400
    assert config.enrollment.listen == "[::]:50052"


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('listen = "127.0.0.1:50051"', "another port than gateway.listen"),
        ('listen = "nowhere"', "enrollment.listen must be HOST:PORT"),
        ("cert_lifetime_s = 0", "enrollment.cert_lifetime_s"),
        ("gate_timeout_s = 900", "enrollment.gate_timeout_s"),
    ],
)
def test_bad_values_name_the_key(extra: str, says: str) -> None:
    """A bad [enrollment] value is refused naming its key."""
    text = (
        MINIMAL.replace("dev_plaintext = true", 'dev_plaintext = true\nlisten = "127.0.0.1:50051"')
        + f'[enrollment]\nca_cert = "ca.pem"\nca_key = "ca.key.pem"\n{extra}\n'
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(tomllib.loads(text), base_dir="/etc")
    assert says in str(refused.value)


def test_a_ca_the_gateway_does_not_trust_is_refused_at_start(
    enroll_keys: FederationKeys, tmp_path: Path
) -> None:
    """A federation CA missing from gateway.tls.client_ca would issue certificates the
    gateway refuses: the gateway does not start, naming the key to fix."""
    other = init_dev_keys(tmp_path / "other")
    fed = Federation(enroll_keys, tmp_path, tls=True)
    config = fed.config(
        store="sqlite",
        enrollment=enrollment_config(enroll_keys, ca_cert=other.ca_cert, ca_key=other.ca_key),
    )
    with pytest.raises(ConfigError, match=r"gateway\.tls\.client_ca"):
        GatewayServer(config)


def test_a_gateway_certificate_of_another_ca_is_refused_at_start(
    enroll_keys: FederationKeys, tmp_path: Path
) -> None:
    """Joined providers trust the federation CA only: the gateway's client certificate
    must come from it."""
    other = init_dev_keys(tmp_path / "other", clients=["gateway"])
    bundle = tmp_path / "both.pem"
    bundle.write_bytes(enroll_keys.dev.ca_cert.read_bytes() + other.ca_cert.read_bytes())
    fed = Federation(enroll_keys, tmp_path, tls=True)
    config = fed.config(store="sqlite", enrollment=enrollment_config(enroll_keys))
    assert config.tls is not None
    config = dataclasses.replace(
        config,
        tls=dataclasses.replace(config.tls, client_ca=bundle),
        upstream_tls=UpstreamTLS(
            ca=bundle, cert=other.client_cert("gateway"), key=other.client_key("gateway")
        ),
    )
    with pytest.raises(
        ConfigError, match=r"upstream_tls\.cert .* is not signed by the federation CA"
    ):
        GatewayServer(config)


def test_enrollment_needs_a_store(enroll_keys: FederationKeys, tmp_path: Path) -> None:
    """Without [store] there is no registry to join: refused at start."""
    fed = Federation(enroll_keys, tmp_path, tls=True)
    with pytest.raises(ConfigError, match=r"\[enrollment\] needs \[store\]"):
        GatewayServer(fed.config(store=None, enrollment=enrollment_config(enroll_keys)))
