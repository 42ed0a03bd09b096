"""dispatcher, enum and http_client cores are L1: pure logic, no asyncio/socket/ssl/time/os and
no sipedge.io. Only their drivers (listed here) do I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODULES = Path(__file__).parents[3] / "app" / "sipedge" / "modules"
DRIVERS = {"dispatcher/aio.py", "enum/aio.py", "enum/api.py", "enum/rpc.py",
           "http_client/client.py", "http_client/api.py", "http_client/rpc.py",
           "http_client/__init__.py"}
FORBIDDEN = {"asyncio", "socket", "ssl", "os", "time", "threading", "subprocess", "selectors"}
FILES = [p for m in ("dispatcher", "enum", "http_client") for p in sorted((MODULES / m).glob("*.py"))
         if f"{m}/{p.name}" not in DRIVERS]


def imported(path: Path) -> set[str]:
    """Absolute dotted names of everything the file imports."""
    pkg = ["sipedge", "modules", path.parent.name]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            names.add(".".join(base + ([node.module] if node.module else [])))
    return names


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_core_files_are_sans_io(path):
    names = imported(path)
    bad = sorted(n for n in names if n.split(".")[0] in FORBIDDEN
                 or n.startswith(("sipedge.io", "sipedge.appliance", "sipedge.app")))
    assert not bad, f"{path.name} imports {bad}"


def test_the_check_sees_drivers():
    assert "asyncio" in imported(MODULES / "dispatcher" / "aio.py")
    assert "sipedge.io.dns" in imported(MODULES / "enum" / "aio.py")
