"""One naming rule for log events across the tree: dotted names (``unbind.answered``), not
sentences, so logs can be searched and counted by event."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "sdk" / "onecert" / "sdk", ROOT / "gateway" / "onecert" / "gateway"]
_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
_LOGGERS = {"log", "_log", "logger"}
_DOTTED = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


def _event_name(node: ast.AST) -> str | None:
    """The event of a ``log.info("name", ...)``-shaped call, else None."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _LEVELS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in _LOGGERS
        and node.args
    ):
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _events(package: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        names = [_event_name(n) for n in ast.walk(ast.parse(path.read_text(), str(path)))]
        found += [(str(path.relative_to(ROOT)), name) for name in names if name is not None]
    return found


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.parent.parent.name)
def test_log_events_are_dotted_names(package: Path) -> None:
    """Every structlog event the package logs is a dotted name."""
    events = _events(package)
    assert events  # the scan finds the package's log calls
    assert [e for e in events if not _DOTTED.fullmatch(e[1])] == []
