"""Every import in the Python examples of the README and docs/ names something that exists."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _imports() -> list[tuple[str, str, str]]:
    """(page, module, name) for every ``from module import name`` in a python block."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL):
            # Examples may use top-level await; only the imports matter here.
            lines = [line for line in block.splitlines() if line.startswith(("from ", "import "))]
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found += [(page.name, node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize(("page", "module", "name"), _imports())
def test_documented_import_exists(page: str, module: str, name: str) -> None:
    """The page's example imports a name its module really has."""
    assert hasattr(importlib.import_module(module), name), f"{page}: from {module} import {name}"
