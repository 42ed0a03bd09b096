#!/usr/bin/env python3
"""Strip a Debian root filesystem tree down to what the sipedge appliance needs.

usage: slim.py ROOT

Deletes kernel modules outside modules.keep (next to this file), documentation,
locales, apt caches and unused Python stdlib parts. Runs on the host as an
mmdebstrap customize hook; standard library only. Prints the bytes it freed.
"""
import fnmatch
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Directories (relative to ROOT) removed whole.
DROP_DIRS = (
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/bug",
    "usr/share/bash-completion",
    "usr/share/zsh",
    "usr/share/i18n",
    "usr/lib/python3.11/pydoc_data",
    "usr/lib/python3.11/__phello__",
    "usr/lib/python3.11/idlelib",
    "usr/lib/python3.11/turtledemo",
    "usr/lib/python3.11/ensurepip",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/lib/aarch64-linux-gnu/gconv",
    "var/cache/debconf/templates.dat-old",
    # udev's hardware database (vendor names, keymaps): 22 MB the appliance never reads; the
    # properties the supervisor uses (ID_FS_TYPE, ID_BUS) come from udev builtins
    "usr/lib/udev/hwdb.d",
)
# Files (globs relative to ROOT) removed.
DROP_GLOBS = (
    "boot/System.map-*",
    "usr/lib/udev/hwdb.bin",
    "var/cache/apt/*.bin",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/log/*.log",
    "var/log/apt/*",
)


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirs, files in os.walk(path):
        if Path(dirpath) == path:
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "run")]
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    return total


def load_keep(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def keep_module(rel: str, patterns: list[str]) -> bool:
    # "drivers/i2c/*" keeps the whole subtree, "fs/mbcache.ko" one file.
    for pat in patterns:
        if fnmatch.fnmatchcase(rel, pat):
            return True
        if pat.endswith("/*") and rel.startswith(pat[:-1]):
            return True
    return False


def slim_modules(root: Path, patterns: list[str]) -> None:
    """Keep the modules matching patterns plus everything they depend on (modules.dep)."""
    for moddir in sorted((root / "usr/lib/modules").glob("*/kernel")):
        deps: dict[str, list[str]] = {}
        dep_file = moddir.parent / "modules.dep"
        if dep_file.exists():
            for line in dep_file.read_text().splitlines():
                path, _, rest = line.partition(":")
                deps[path] = rest.split()
        keep: set[str] = set()
        todo = []
        for dirpath, _dirs, files in os.walk(moddir):
            for name in files:
                rel = (Path(dirpath) / name).relative_to(moddir).as_posix()
                if keep_module(rel, patterns):
                    todo.append("kernel/" + rel)
        while todo:
            path = todo.pop()
            if path not in keep:
                keep.add(path)
                todo.extend(deps.get(path, []))
        for dirpath, _dirs, files in os.walk(moddir):
            for name in files:
                p = Path(dirpath) / name
                if "kernel/" + p.relative_to(moddir).as_posix() not in keep:
                    p.unlink()
        # Remove directories left empty (deepest first).
        for dirpath, _dirs, _files in sorted(os.walk(moddir), key=lambda t: -len(t[0])):
            if not os.listdir(dirpath):
                os.rmdir(dirpath)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    root = Path(argv[1])
    before = tree_size(root)
    for rel in DROP_DIRS:
        shutil.rmtree(root / rel, ignore_errors=True)
    for pattern in DROP_GLOBS:
        for p in root.glob(pattern):
            if p.is_file() or p.is_symlink():
                p.unlink()
    # Keep copyright files only; everything else under doc goes.
    doc = root / "usr/share/doc"
    if doc.is_dir():
        for dirpath, _dirs, files in os.walk(doc):
            for name in files:
                if name != "copyright":
                    os.unlink(os.path.join(dirpath, name))
    slim_modules(root, load_keep(HERE / "modules.keep"))
    after = tree_size(root)
    print(f"slim: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
