"""auth, registrar and security are L1: pure logic. Only the store (sqlite3) and its asyncio
wrapper touch I/O, and nothing imports the io/ or script/ layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODULES = Path(__file__).parents[3] / "app" / "sipedge" / "modules"
FORBIDDEN = {"asyncio", "socket", "ssl", "os", "time", "threading", "subprocess", "selectors",
             "sqlite3", "concurrent", "logging"}
ALLOWED = {"registrar/store.py": {"sqlite3"},
           "registrar/aio.py": {"asyncio", "threading", "sqlite3", "logging"}}
FILES = [p for m in ("auth", "registrar", "security") for p in sorted((MODULES / m).glob("*.py"))]


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_imports(path):
    rel = f"{path.parent.name}/{path.name}"
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [("." * node.level) + (node.module or "")]
        for n in names:
            top = n.lstrip(".").split(".")[0]
            if node.__class__ is ast.Import or not n.startswith("."):
                if top in FORBIDDEN and top not in ALLOWED.get(rel, set()):
                    bad.append(n)
            elif n.startswith("...") and top in ("io", "script", "app", "appliance"):
                bad.append(n)
    assert not bad, f"{rel} imports {bad}"


@pytest.mark.parametrize("name", ["auth", "registrar", "security"])
def test_readme_documents_every_parameter(name):
    import dataclasses
    import importlib

    module = importlib.import_module(f"sipedge.modules.{name}")
    readme = (MODULES / name / "README.md").read_text()
    for heading in ("## Overview", "## Dependencies", "## Parameters", "## Script API",
                    "## RPC", "## Events"):
        assert heading in readme
    for f in dataclasses.fields(module.MODULE.params):
        assert f"`{f.name}`" in readme, f"{name}/README.md lacks parameter {f.name}"
    for method in module.MODULE.rpc:
        assert f"`{method}`" in readme
