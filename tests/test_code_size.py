"""The size limits docs/architecture.md promises a reader: no class in the
packages longer than 400 lines, no function longer than 80 (migrations, frozen
per revision, aside), and the conftest files at most 1,500 lines together.

A change that grows past one of them fails here, naming the place, so it is
split while its author still knows why it grew."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "sdk", "adapters", "cli")
MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_CONFTEST_LINES = 1500


def _sources() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "_pb2" not in path.name and ".venv" not in path.parts
    ]


def _too_long() -> list[str]:
    found = []
    for path in _sources():
        migration = "migrations" in path.parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                kind, limit = "class", MAX_CLASS_LINES
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not migration:
                kind, limit = "function", MAX_FUNCTION_LINES
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.append(f"{kind} {node.name} at {where}: {lines} lines")
    return found


def test_the_walk_reads_the_packages() -> None:
    """The walk finds the gateway's server and the SDK's provider core, so an empty
    walk cannot pass the size check below."""
    names = {path.relative_to(ROOT).as_posix() for path in _sources()}
    assert "gateway/onecert/gateway/_server.py" in names
    assert "sdk/onecert/sdk/_provider.py" in names


def test_no_class_or_function_is_too_long() -> None:
    """No class over 400 lines and no function over 80 in gateway/, sdk/,
    adapters/ and cli/ (migrations aside)."""
    assert _too_long() == []


def test_conftest_files_stay_small() -> None:
    """Fixtures live in the harnesses (onecert.gateway.testing, *_support.py), not
    in conftest files: those hold at most 1,500 lines together."""
    conftests = [
        p for p in ROOT.rglob("conftest.py") if not {".venv", "node_modules"} & set(p.parts)
    ]
    total = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in conftests)
    assert conftests
    assert total <= MAX_CONFTEST_LINES, f"{len(conftests)} conftest files hold {total} lines"
