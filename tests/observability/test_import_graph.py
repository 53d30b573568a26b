"""The gateway's modules import each other without a circle, type-only imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import onecert.gateway

PACKAGE = "onecert.gateway"


def _modules() -> dict[str, Path]:
    root = Path(onecert.gateway.__file__).parent
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere (top, TYPE_CHECKING, functions)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in modules and node.module != name:
                deps.add(node.module)
        graph[name] = deps
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_circle_in_the_gateway() -> None:
    """No gateway module reaches itself through imports, not even type-only or lazy ones."""
    circle = _circle(_graph())
    assert circle is None, " -> ".join(circle or ())


def test_observers_depend_on_neither_side() -> None:
    """The observer contract imports neither the parts that report nor those that count."""
    deps = _graph()[f"{PACKAGE}._observers"]
    for side in ("_fanout", "_lookup", "_delivery", "_notice_delivery", "_metrics", "_tracing"):
        assert f"{PACKAGE}.{side}" not in deps
    assert f"{PACKAGE}._fanout" not in _graph()[f"{PACKAGE}._metrics"]
    assert f"{PACKAGE}._metrics" not in _graph()[f"{PACKAGE}._tracing"]
