"""The gateway's TOML configuration: defaults, clear errors, transport rules."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from onecert.cli import main
from onecert.gateway import ConfigError, GatewayServer, load_config, parse_config
from onecert.gateway._config import (
    _TABLES,
    AdminConfig,
    CheckRecycledConfig,
    DeliveryConfig,
    EnrollmentConfig,
    FanoutConfig,
    GatewayConfig,
    IdentityConfig,
    KeysConfig,
    NoticesConfig,
    PortalConfig,
    RoutingConfig,
    StoreConfig,
    TracingConfig,
)
from onecert.sdk._tls import TLSFiles
from onecert.v1 import common_pb2
from tests.gateway.config_support import MINIMAL

if TYPE_CHECKING:
    from onecert.gateway.testing import Federation

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), **kwargs)
    return str(info.value)


def docs_examples() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


def test_documented_examples_are_valid() -> None:
    """Both examples in docs/configuration.md parse, the production one in production mode."""
    production, development = docs_examples()
    config = parse_config(tomllib.loads(production), base_dir="/etc/onecert")
    assert not config.dev_plaintext
    assert config.tls is not None
    assert config.tls.client_ca == Path("/etc/onecert/keys/ca.pem")
    assert config.providers[0].category == common_pb2.PROVIDER_CATEGORY_PAYMENT
    assert config.providers[0].max_concurrency == 64
    assert config.fanout.retry_max_attempts == 2
    assert config.json_logs
    dev = parse_config(tomllib.loads(development), base_dir="/srv")
    assert dev.dev_plaintext
    assert not dev.json_logs


def test_documented_keys_are_exactly_the_parsed_keys() -> None:
    """Every key the production example spells out is one the parser knows (a typo
    in the docs would be an unknown key), and it sets every documented table."""
    production, _ = docs_examples()
    data = tomllib.loads(production)
    assert set(data) == set(_TABLES)
    assert set(data["tracing"]) == {f.name for f in dataclasses.fields(TracingConfig)}
    assert set(data["routing"]) == {f.name for f in dataclasses.fields(RoutingConfig)}
    assert set(data["enrollment"]) == {f.name for f in dataclasses.fields(EnrollmentConfig)}
    fields = {f.name for f in dataclasses.fields(FanoutConfig)}
    assert set(data["fanout"]) == fields
    assert set(data["delivery"]) == {f.name for f in dataclasses.fields(DeliveryConfig)}
    # notices.deadline_s is shown commented out: setting it replaces the rules.
    notice_fields = {f.name for f in dataclasses.fields(NoticesConfig)}
    assert set(data["notices"]) | {"deadline_s"} == notice_fields


# The documented tables whose rows are exactly one dataclass's fields.
DOCUMENTED_TABLES: dict[str, type[Any]] = {
    "[gateway]": GatewayConfig,
    "[keys]": KeysConfig,
    "[identity]": IdentityConfig,
    "[fanout]": FanoutConfig,
    "[store]": StoreConfig,
    "[delivery]": DeliveryConfig,
    "[notices]": NoticesConfig,
    "[check_recycled]": CheckRecycledConfig,
    "[admin]": AdminConfig,
    "[portal]": PortalConfig,
    "[tracing]": TracingConfig,
    "[routing]": RoutingConfig,
    "[enrollment]": EnrollmentConfig,
}


def documented_defaults() -> list[tuple[str, str, object]]:
    """(table, key, default) for every row of docs/configuration.md whose default is a literal."""
    rows: list[tuple[str, str, object]] = []
    table = ""
    for line in DOCS.read_text().splitlines():
        heading = re.match(r"### `([^`]+)`", line)
        if heading:
            table = heading.group(1)
            continue
        row = re.match(r"\| `([a-z_]+)` \| `([^`]+)`", line)
        if row and table in DOCUMENTED_TABLES:
            rows.append((table, row.group(1), tomllib.loads(f"v = {row.group(2)}")["v"]))
    return rows


def test_documented_defaults_are_the_fields_defaults() -> None:
    """Every default docs/configuration.md spells out is the one on the dataclass field."""
    rows = documented_defaults()
    assert len(rows) > 50
    for table, key, documented in rows:
        field = {f.name: f for f in dataclasses.fields(DOCUMENTED_TABLES[table])}[key]
        default = field.default
        if default is dataclasses.MISSING:
            assert field.default_factory is not dataclasses.MISSING, (table, key)
            default = field.default_factory()
        wanted = tuple(documented) if isinstance(documented, list) else documented
        assert default == wanted, (table, key)


def test_minimal_config_takes_defaults_and_resolves_paths(tmp_path: Path) -> None:
    """Unset keys take their documented defaults; relative paths are resolved
    against the config file's directory."""
    config = load_config(write(tmp_path, MINIMAL))
    assert config.id == "onecert-gateway"
    assert config.identity.audience == "onecert-gateway"
    assert config.identity.required_assurance == "substantial"
    assert config.keys.warrant_key == tmp_path.resolve() / "keys/warrant.key.pem"
    assert config.identity.issuers[0].jwks == tmp_path.resolve() / "keys/identity.jwks.json"
    assert config.carriers[0].display_name == "cm"
    assert config.providers == ()
    assert config.fanout.provider_deadline_s == 3.0
    assert config.max_concurrent_lookups == 100


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("[keys]", "[key]"), "unknown key 'key' (did you mean 'keys'?)"),
        (
            lambda t: t + "\n[fanout]\nprovider_deadline = 2\n",
            "unknown key 'fanout.provider_deadline' (did you mean 'provider_deadline_s'?)",
        ),
        (
            lambda t: t + "\n[fanout]\nprovider_deadline_s = 0\n",
            "fanout.provider_deadline_s must be more than zero seconds",
        ),
        (
            lambda t: t + "\n[fanout]\nretry_budget_ratio = 2\n",
            "fanout.retry_budget_ratio must be at most 1.0",
        ),
        (
            lambda t: t.replace("dev_plaintext = true", 'dev_plaintext = "yes"'),
            "gateway.dev_plaintext must be true or false",
        ),
        (
            lambda t: t.replace("[gateway]", "[gateway]\nmax_concurrent_lookups = 1.5"),
            "gateway.max_concurrent_lookups must be an integer",
        ),
        (
            lambda t: t.replace('address = "127.0.0.1:50061"\n', ""),
            "carriers[0].address is required",
        ),
        (
            lambda t: t.replace('id = "cm"', 'id = "CM!"'),
            "carriers[0].id must be 1 to 64 characters",
        ),
        (
            lambda t: t + '\n[[carriers]]\nid = "cm"\naddress = "x:1"\nplaintext = true\n',
            "carriers: 'cm' appears twice",
        ),
        (
            lambda t: t + '\n[[providers]]\nid = "p"\naddress = "x:1"\ncategory = "bank"\n',
            "providers[0].category must be one of social, payment",
        ),
        (
            lambda t: t.replace("[keys]\n", "[keys]\nwarrant_lifetime_s = 90\n"),
            "keys.warrant_lifetime_s must be at most 60",
        ),
        (
            lambda t: t.replace('handle_key = "keys/handle.key"\n', ""),
            "keys.handle_key is required",
        ),
        (
            lambda t: t + '\n[identity]\nrequired_assurance = "ultra"\n',
            "identity.required_assurance 'ultra' is not one of identity.assurance_levels",
        ),
        (lambda t: t.split("[[carriers]]")[0], "at least one carrier is required"),
        (
            lambda t: t.replace("[gateway]", '[gateway]\nlisten = "localhost"'),
            "gateway.listen must be HOST:PORT",
        ),
        (lambda t: t + "\n[gateway\n", "is not valid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, edit: Any, message: str) -> None:
    """Each invalid config is refused with a message naming the key at fault."""
    assert message in error_of(tmp_path, edit(MINIMAL))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A config path that does not exist says so."""
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_production_mode_refuses_to_start_without_tls(tmp_path: Path) -> None:
    """Without dev_plaintext, a config lacking [gateway.tls] is refused."""
    text = MINIMAL.replace("dev_plaintext = true", "dev_plaintext = false")
    assert "production mode (gateway.dev_plaintext = false) needs [gateway.tls]" in error_of(
        tmp_path, text
    )


def test_production_mode_needs_client_certificates(tmp_path: Path) -> None:
    """Production TLS without client_ca is refused: callers must present a certificate."""
    text = MINIMAL.replace("dev_plaintext = true", 'listen = "[::]:1"') + (
        '\n[gateway.tls]\ncert = "s.pem"\nkey = "s.key"\n'
    )
    assert "gateway.tls.client_ca" in error_of(tmp_path, text)


def test_production_mode_refuses_plaintext_upstreams(tmp_path: Path) -> None:
    """A plaintext carrier is refused in production mode, naming it."""
    text = MINIMAL.replace("dev_plaintext = true", "") + (
        '\n[gateway.tls]\ncert = "s.pem"\nkey = "s.key"\nclient_ca = "ca.pem"\n'
    )
    message = error_of(tmp_path, text)
    assert "carriers[0].plaintext (id 'cm') is allowed only with gateway.dev_plaintext" in message


def test_production_mode_needs_upstream_client_certificate(tmp_path: Path) -> None:
    """Production upstream TLS without the gateway's client certificate is refused."""
    text = (
        MINIMAL.replace("dev_plaintext = true", "").replace("\nplaintext = true", "")
        + '\n[gateway.tls]\ncert = "s.pem"\nkey = "s.key"\nclient_ca = "ca.pem"\n'
        + '\n[upstream_tls]\nca = "ca.pem"\n'
    )
    assert "upstream_tls.cert" in error_of(tmp_path, text)


def test_non_plaintext_upstream_needs_upstream_tls(tmp_path: Path) -> None:
    """Even in development, a carrier not marked plaintext needs [upstream_tls]."""
    text = MINIMAL.replace("\nplaintext = true", "")
    assert "carriers[0] (id 'cm') needs [upstream_tls]" in error_of(tmp_path, text)


def test_dev_flag_allows_plaintext(tmp_path: Path) -> None:
    """The --dev-plaintext override makes a config without TLS acceptable."""
    text = MINIMAL.replace("dev_plaintext = true", "dev_plaintext = false")
    assert load_config(write(tmp_path, text), dev_plaintext=True).dev_plaintext


async def test_server_refuses_insecure_config_built_in_code(fed: Federation) -> None:
    """GatewayServer re-checks the transport rules of a config not made by the loader."""
    await fed.carrier("cm", {})
    config = dataclasses.replace(fed.config(), dev_plaintext=False)
    with pytest.raises(ConfigError, match=r"needs \[gateway.tls\]"):
        GatewayServer(config)
    tls = TLSFiles(cert=Path("s.pem"), key=Path("s.key"), client_ca=Path("ca.pem"))
    with pytest.raises(ConfigError, match="plaintext"):
        GatewayServer(dataclasses.replace(config, tls=tls))


async def test_cli_serve_reports_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`onecert gateway serve` exits 2 with the config error on stderr."""
    path = write(tmp_path, MINIMAL.replace("dev_plaintext = true", ""))
    status = await asyncio.to_thread(main, ["gateway", "serve", "--config", str(path)])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("onecert: production mode")


async def test_cli_serve_reports_unreadable_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config whose key files do not exist fails with the file named, exit 2."""
    path = write(tmp_path, MINIMAL)
    status = await asyncio.to_thread(main, ["gateway", "serve", "--config", str(path)])
    assert status == 2
    assert "identity.jwks.json" in capsys.readouterr().err
