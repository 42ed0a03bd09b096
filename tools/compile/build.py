#!/usr/bin/env python3
"""Build the compiled sipedge package tree (Cython, see app/setup.py) into a directory.

usage: build.py [--out DIR] [--python PY] [--include DIR] [--jobs N] [--cached]
                [--sysconfigdata FILE]

Copies app/ (setup.py, pyproject.toml, sipedge/) to DIR and runs `PY setup.py build_ext
--inplace` there with SIPEDGE_BUILD=compiled: DIR/sipedge is then the whole package with
the modules of sipedge/compiled.py as C extensions next to their .py files. Use it with
PYTHONPATH=DIR. Nothing is written into app/.

--cached: DIR defaults to out/compiled/<key>, where the key hashes the package sources,
setup.py, the include directories, the interpreter and Cython's version; an existing tree with that key is reused
(the tests and the bench build once). Prints the tree's path on the last line.
--include DIR: headers searched before the interpreter's own; the default is Debian's
/usr/include/python3.X when present (what the offline image's python3 was built with).
--sysconfigdata FILE: cross-build for another architecture: FILE is the target interpreter's
_sysconfigdata_*.py (e.g. from the arm64 image's /usr/lib/python3.X); its compiler (CC,
LDSHARED: Debian's aarch64-linux-gnu-gcc) and EXT_SUFFIX replace the host's, through the
variables CPython's own cross-builds use (_PYTHON_SYSCONFIGDATA_NAME, _PYTHON_HOST_PLATFORM).
PY must be the same 3.X with Cython; --include must then name the target's headers
(Debian libpython3.X-dev of that architecture, unpacked: its usr/include/python3.X and
usr/include, which holds <triplet>/python3.X/pyconfig.h).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app"
KEEP_CACHED = 3  # trees kept under out/compiled/ (older ones are removed)


def _interp_info(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import sys, sysconfig\n"
         "try:\n import Cython; cy = Cython.__version__\nexcept ImportError:\n cy = None\n"
         "print(sys.version, sysconfig.get_config_var('EXT_SUFFIX'), cy)"],
        check=True, capture_output=True, text=True).stdout.strip()


def cython_version(python: str = sys.executable) -> str | None:
    cy = _interp_info(python).rsplit(" ", 1)[-1]
    return None if cy == "None" else cy


def source_key(python: str, include: list[str], sysconfigdata: Path | None = None) -> str:
    h = hashlib.sha256(f"{_interp_info(python)}\n{include}\n".encode())
    if sysconfigdata:  # a cross build: the target's compiler, flags and suffix
        h.update(Path(sysconfigdata).read_bytes())
    files = [APP / "setup.py", APP / "pyproject.toml"]  # setup.py holds the directives
    files += sorted(p for p in (APP / "sipedge").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts
                    and p.suffix not in (".pyc", ".so", ".c"))
    for p in files:
        h.update(f"{p.relative_to(REPO)}\n".encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cross_env(sysconfigdata: Path, into: Path) -> dict[str, str]:
    """Environment that makes the host interpreter's setuptools build for the interpreter
    described by sysconfigdata (copied into `into`, which goes on PYTHONPATH)."""
    sysconfigdata = Path(sysconfigdata)
    cvars = target_vars(sysconfigdata)
    machine = (cvars.get("MULTIARCH") or cvars.get("HOST_GNU_TYPE", "")).split("-")[0]
    if not machine:
        raise RuntimeError(f"{sysconfigdata}: neither MULTIARCH nor HOST_GNU_TYPE")
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy2(sysconfigdata, into / sysconfigdata.name)
    return {"_PYTHON_SYSCONFIGDATA_NAME": sysconfigdata.stem,
            "_PYTHON_HOST_PLATFORM": f"linux-{machine}",
            "PYTHONPATH": str(into)}


def target_vars(sysconfigdata: Path) -> dict:
    """The build_time_vars of a (target) interpreter's _sysconfigdata_*.py."""
    ns: dict = {}
    exec(Path(sysconfigdata).read_text(encoding="utf-8"), ns)
    return ns["build_time_vars"]


def cross_tool(sysconfigdata: Path, tool: str) -> str:
    """The target's binutils program (e.g. aarch64-linux-gnu-strip) for a cross build."""
    return f"{target_vars(sysconfigdata)['MULTIARCH']}-{tool}"


def build(dest: Path, python: str = sys.executable, include: list[str] = (), jobs: int = 2,
          quiet: bool = True, sysconfigdata: Path | None = None) -> Path:
    """Build the compiled tree into dest (replaced if it exists). Returns dest.
    sysconfigdata: cross-build for the interpreter it describes (see the module doc)."""
    dest = Path(dest)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        shutil.copy2(APP / "setup.py", tmp)
        shutil.copy2(APP / "pyproject.toml", tmp)
        if (APP / "README.md").exists():
            shutil.copy2(APP / "README.md", tmp)
        shutil.copytree(APP / "sipedge", tmp / "sipedge",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.c"))
        cmd = [python, "setup.py", "-q", "build_ext", "--inplace", "-j", str(jobs)]
        if include:
            cmd += ["-I", os.pathsep.join(include)]
        # no debug info: it is most of the compile time of Cython's large C files, and the
        # image strips it anyway (CFLAGS from the environment come after the interpreter's)
        env = {**os.environ, "SIPEDGE_BUILD": "compiled",
               "SIPEDGE_CYTHON_BUILD_DIR": str(tmp / "build" / "cython"),
               "CFLAGS": (os.environ.get("CFLAGS", "") + " -g0").strip()}
        if sysconfigdata:
            env.update(cross_env(sysconfigdata, tmp / "build" / "sysconfig"))
        res = subprocess.run(cmd, cwd=tmp, env=env, capture_output=quiet, text=True)
        if res.returncode:
            raise RuntimeError(f"compiled build failed ({' '.join(cmd)}):\n"
                               f"{(res.stdout or '')[-3000:]}{(res.stderr or '')[-5000:]}")
        shutil.rmtree(tmp / "build", ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def system_include(python: str = sys.executable) -> list[str]:
    """[/usr/include/python3.X] when the distribution's headers for the interpreter's version
    exist (Debian's python3.X-dev), else []. The tests and the amd64 offline image share
    one build compiled against them: the image runs Debian's python3, the tests the venv's
    interpreter of the same 3.X (extension modules are ABI-compatible across 3.X.y)."""
    ver = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    inc = Path(f"/usr/include/python{ver}")
    return [str(inc)] if (inc / "Python.h").exists() else []


def cached(python: str = sys.executable, include: list[str] = (), jobs: int = 2,
           root: Path = REPO / "out" / "compiled", sysconfigdata: Path | None = None) -> Path:
    """The compiled tree for the current sources, built once under root/<key>."""
    root.mkdir(parents=True, exist_ok=True)
    dest = root / source_key(python, list(include), sysconfigdata)
    if (dest / "sipedge").is_dir():
        return dest
    with open(root / ".lock", "w") as lock:  # parallel test runs share out/: build once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "sipedge").is_dir():
            build(dest, python, include, jobs, sysconfigdata=sysconfigdata)
    old = sorted((p for p in root.iterdir() if p.is_dir() and p != dest and "." not in p.name),
                 key=lambda p: p.stat().st_mtime)
    for p in old[:max(0, len(old) - (KEEP_CACHED - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--include", action="append", default=None,
                    help="header directory searched first (repeatable); default: "
                         "/usr/include/python3.X when it exists, see system_include()")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cached", action="store_true")
    ap.add_argument("--sysconfigdata", type=Path,
                    help="cross-build for the interpreter this _sysconfigdata_*.py describes")
    args = ap.parse_args(argv)
    if args.include is None:
        if args.sysconfigdata:
            ap.error("--sysconfigdata needs --include (the target's headers)")
        args.include = system_include(args.python)
    if args.cached and not args.out:
        path = cached(args.python, args.include, args.jobs, sysconfigdata=args.sysconfigdata)
    else:
        if not args.out:
            ap.error("--out DIR or --cached")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        path = build(args.out.resolve(), args.python, args.include, args.jobs,
                     sysconfigdata=args.sysconfigdata)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
