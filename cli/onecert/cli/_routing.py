"""``onecert routing``: the federation's routing keys (list, rotate, retire).

Run with the gateway's configuration file: the command reads its store and
its keys (the filter sealing key seals the routing keys in the store). Every
replica follows a rotation or retirement within its routing poll interval;
each change is an audit row.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_group
from onecert.cli._db import _run

if TYPE_CHECKING:
    from onecert.gateway._config import GatewayConfig
    from onecert.gateway.routing._rotation import KeyStatus


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """the federation's routing keys

    List, rotate and retire the routing keys providers key their filters with (docs/routing.md,
    'Key rotation').
    """
    commands = add_group(sub, "routing", register, metavar="ACTION")
    keys = add_command(commands, "keys", _keys)
    rotate = add_command(commands, "rotate-key", _rotate)
    retire = add_command(commands, "retire-key", _retire)
    retire.add_argument("version", type=int, help="the version to retire")
    retire.add_argument(
        "--force",
        action="store_true",
        help="retire even though providers' snapshots are still keyed with it",
    )
    for parser in (keys, rotate, retire):
        parser.add_argument(
            "--config", required=True, type=Path, metavar="FILE", help="the gateway's TOML file"
        )


def _config(args: argparse.Namespace) -> GatewayConfig:
    from onecert.gateway._config import ConfigError, load_config  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    if config.store is None:
        raise CommandError(f"{args.config}: routing needs [store]; this gateway has none")
    return config


def _operate(args: argparse.Namespace, action: str) -> Any:
    """Open the gateway's store and keys, run ``action`` on them, close the store."""
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    from onecert.gateway.routing._rotation import (  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
        RotationError,
        key_statuses,
        operator_keys,
        retire_key,
        rotate_key,
    )
    from onecert.gateway.store import Store  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk._keys import KeyConfigError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    config = _config(args)
    store_config = config.store
    assert store_config is not None  # _config refuses a configuration without one
    try:
        base, sealer = operator_keys(config)
    except KeyConfigError as exc:
        raise CommandError(str(exc)) from None
    store = Store.open(store_config.url, schema=store_config.schema)

    async def run() -> Any:
        try:
            if store_config.auto_migrate:
                await store.upgrade()
            if action == "rotate":
                return await rotate_key(store, base=base, sealer=sealer)
            if action == "retire":
                return await retire_key(store, args.version, sealer=sealer, force=args.force)
            return await key_statuses(store, base=base, sealer=sealer)
        except RotationError as exc:
            raise CommandError(str(exc)) from None
        except InvalidTag:
            raise CommandError(
                "the stored routing keys do not open with this configuration's filter key: "
                "is it this gateway's configuration?"
            ) from None
        except ValueError as exc:
            raise CommandError(f"cannot read the stored routing keys: {exc}") from None
        finally:
            await store.close()

    return _run(run(), store)


def _keys(args: argparse.Namespace) -> int:
    """list the routing key versions and the snapshots keyed with each

    List every routing key version (never a key): active, live or retired, and how many
    providers' stored snapshots are keyed with it.
    """
    statuses: list[KeyStatus] = _operate(args, "keys")
    for status in statuses:
        since = "configured" if status.changed_at is None else status.changed_at.isoformat()
        print(
            f"version {status.version}: {status.state.value} (since {since}), "
            f"{status.snapshots} snapshot(s) keyed with it"
        )
    return 0


def _rotate(args: argparse.Namespace) -> int:
    """add a new random active routing key version

    Add a new random routing key version and make it active. The version active before stays
    live: filters keyed with it keep routing until it is retired. Providers receive the new
    version from GetRoutingKey and PublishFilter answers and key their next snapshot with it.
    """
    version: int = _operate(args, "rotate")
    print(
        f"routing key version {version} is active; the versions before it stay live until "
        "retired (every replica applies this within its routing poll interval)"
    )
    return 0


def _retire(args: argparse.Namespace) -> int:
    """retire an old routing key version once every provider republished

    Retire a live routing key version: its key is erased from the store, filters keyed with it
    are dropped (their providers are asked about every number) and refused. Refused while a
    provider's snapshot is still keyed with it, unless --force.
    """
    still: int = _operate(args, "retire")
    forced = f" ({still} provider(s) are asked about every number until they republish)"
    print(f"routing key version {args.version} retired" + (forced if still else ""))
    return 0
