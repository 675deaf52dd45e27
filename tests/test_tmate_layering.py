"""relay.tmate is sans-IO: no sockets, select, threads or paramiko, and within the relay only what
its package docstring allows (relay.tmux, relay.screen.terminal, itself)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "relay" / "tmate"
FORBIDDEN = {"socket", "select", "selectors", "threading", "asyncio", "paramiko"}
ALLOWED_RELAY = ("relay.tmate", "relay.tmux", "relay.screen.terminal")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "relay")
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_tmate_module_is_sans_io(path):
    names = imported_modules(path)
    assert not {n for n in names if n.split(".")[0] in FORBIDDEN}
    relay = {n for n in names if n == "relay" or n.startswith("relay.")}
    assert all(n.startswith(ALLOWED_RELAY) for n in relay), relay
