"""Build of the sipedge package: pure Python, plus the compiled build when it can.

The metadata is in pyproject.toml. This file only adds the compiled build: the modules
listed in sipedge/compiled.py are compiled by Cython (pure-Python mode: the .py files
are the source) into C extension modules, next to the same .py files, which Python then
no longer imports. Without Cython, or with SIPEDGE_BUILD=pure, the package is pure Python
and behaves the same.

  SIPEDGE_BUILD=auto      (default) compile when Cython is importable; a module that does
                          not compile (no C compiler, ...) stays pure, with a warning
  SIPEDGE_BUILD=compiled  compile, and fail when that is not possible
  SIPEDGE_BUILD=pure      never compile

Cython is not in pyproject's build requirements: `pip install ./app` (isolated build) is
pure Python; `pip install --no-build-isolation ./app` with Cython installed, Buildroot
(host-python-cython) and tools/compile/build.py give the compiled build. An editable install
stays pure unless SIPEDGE_BUILD=compiled: a stale .so next to the .py being edited would
silently win.
"""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent


def compiled_modules() -> tuple[str, ...]:
    ns: dict = {}
    exec((HERE / "sipedge" / "compiled.py").read_text(encoding="utf-8"), ns)
    return ns["MODULES"]


# Cython directives for every compiled module (no per-module .pxd or decorators needed).
# Python semantics are kept: annotations are not turned into C-level type checks (a
# script passing a function where a str is annotated must get the module's own
# ValueError, not Cython's TypeError), no C integer types, bounds and wraparound checks on.
DIRECTIVES = {
    "language_level": 3,
    "annotation_typing": False,
    "binding": True,          # functions keep introspection (inspect.signature, pickling)
    "embedsignature": False,
    "always_allow_keywords": True,
}


def extensions() -> list:
    mode = os.environ.get("SIPEDGE_BUILD", "auto")
    if mode not in ("auto", "pure", "compiled"):
        raise SystemExit(f"setup.py: SIPEDGE_BUILD={mode!r}: expected auto, pure or compiled")
    editable = any(a in ("develop", "editable_wheel") for a in sys.argv)
    if mode == "pure" or (mode == "auto" and editable):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if mode == "compiled":
            raise SystemExit("setup.py: SIPEDGE_BUILD=compiled but Cython is not importable")
        print("setup.py: Cython not importable: sipedge is built as pure Python", file=sys.stderr)
        return []
    exts = [Extension(m, [str(Path(*m.split(".")).with_suffix(".py"))],
                      optional=(mode == "auto"))
            for m in compiled_modules()]
    return cythonize(exts, compiler_directives=DIRECTIVES, quiet=True,
                     build_dir=os.environ.get("SIPEDGE_CYTHON_BUILD_DIR", "build/cython"))


setup(ext_modules=extensions())
