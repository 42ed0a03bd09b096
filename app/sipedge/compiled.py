"""Which modules the compiled build compiles, and whether this process runs them compiled.

The same .py source runs as plain Python or, built by `app/setup.py` when Cython and a C
compiler are present, as C extension modules (Cython's pure-Python mode: no .pyx, no
logic of their own). MODULES is the one list: setup.py, tools/compile/build.py, the image
builder and the tests read it. It holds the sans-IO modules a forwarded message runs
through, chosen by instruction counts (bench/README.md "Compiled build").

This file imports nothing of sipedge, so setup.py can read it without the dependencies.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

MODULES: tuple[str, ...] = (
    "sipedge.sip.message",
    "sipedge.sip.proxy",
    "sipedge.sip.uri",
    "sipedge.sip.grammar",
    "sipedge.sip.headers.address",
    "sipedge.sip.headers.via",
    "sipedge.sip.headers.cseq",
    "sipedge.sip.transaction",
    "sipedge.sip.stateful",
    "sipedge.io.transport",
    "sipedge.script.api",
)


def is_compiled(module: str) -> bool:
    """True when `module` is (or would be) loaded from a C extension, not from .py."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    origin = (spec and spec.origin) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def status() -> dict[str, bool]:
    """{module: compiled?} for every module of MODULES."""
    return {m: is_compiled(m) for m in MODULES}


def summary() -> str:
    """One line for the start-up log: 'compiled (11/11 modules)', 'pure Python' or mixed."""
    st = status()
    n = sum(st.values())
    if n == len(st):
        return f"compiled ({n}/{n} hot modules are C extensions)"
    if n == 0:
        return "pure Python (no compiled modules)"
    missing = ", ".join(m.removeprefix("sipedge.") for m, c in st.items() if not c)
    return f"partly compiled ({n}/{len(st)}; pure: {missing})"
