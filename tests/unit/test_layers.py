"""The layering rule of docs/architecture.md: sans-IO cores import no I/O and no upper layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).parents[2] / "app" / "sipedge"
SANS_IO = ["sip", "resolve", "panel", "xfrm", "diameter", "sdp"]
FORBIDDEN_STDLIB = {"asyncio", "socket", "ssl", "os", "time", "threading", "subprocess",
                    "selectors"}
FORBIDDEN_OURS = {"io", "appliance", "app", "cli", "script", "config"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.lineno, node.module or ""))
            else:
                # resolve relative imports against the package path
                base = path.parent.relative_to(PKG.parent).parts
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                out.append((node.lineno, ".".join(base + ((node.module,) if node.module else ()))))
    return out


FILES = [p for layer in SANS_IO if (PKG / layer).is_dir() for p in sorted((PKG / layer).rglob("*.py"))]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_sans_io_module_imports(path):
    bad = []
    for line, name in _imports(path):
        top = name.split(".")[0]
        if top in FORBIDDEN_STDLIB:
            bad.append(f"{path.name}:{line}: imports {name}")
        if top == "sipedge" and len(name.split(".")) > 1 and name.split(".")[1] in FORBIDDEN_OURS:
            bad.append(f"{path.name}:{line}: imports {name}")
    assert not bad, "sans-IO layer imports I/O or an upper layer:\n" + "\n".join(bad)
