"""The boot's read-ahead list: the files the proxy reads on its way to the first answer.

usage: readahead.py ROOT CONFIG   (run by mkimage.py; writes ROOT/usr/share/sipedge/readahead.list;
       CONFIG is a path inside ROOT)

Under emulation the proxy's interpreter start and imports read the interpreter, its
libraries, the standard library's byte code and sipedge's modules from a cold page cache
(about a second of its start, issue 13). rootfs/etc/init.d/rcS reads the listed files in the
background as soon as init runs, on the other CPU, while the mounts and init scripts go on,
so that the proxy started after them finds them in the page cache.

The list is made at build time by the image's own interpreter (chroot; qemu-user for a
foreign image) doing the proxy's imports for CONFIG, the boot config the image ships: the
modules' files (byte code, extension modules) in import order, then the shared objects
mapped into it (read from /proc/PID/maps on the host, the chroot's prefix removed), with
the interpreter first. A file the proxy does not read costs only its read; a file missing
from the list is read by the proxy as before.

The same run stores the byte code of the methods its dataclasses compile
(`sipedge/dccode.py`, `/usr/share/sipedge/dataclass-code.marshal`), which the proxy then
loads instead of compiling them.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

LIST = "usr/share/sipedge/readahead.list"

# Run by the image's python3 in the chroot: the proxy's start (cli.main up to its listener,
# without binding anything): sipedge.app, the config load, the event loop and the runtime
# modules of the configured feature modules. Prints one file a line, then "READY", and
# waits for stdin to close so that the host can read its mappings.
PROBE = r"""
import importlib, pkgutil, sys
from sipedge import dccode
texts = dccode.record()
import sipedge.cli
from sipedge.app import load_config_or_exit
config = load_config_or_exit(sys.argv[1])
for name in ("uvloop", "sqlite3"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
inst = next(iter(config.instances.values()))
for mod in getattr(inst, "modules", None) or ():
    name = getattr(mod, "name", mod)
    try:
        pkg = importlib.import_module(f"sipedge.modules.{name}")
    except ImportError:
        continue
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        try:
            importlib.import_module(f"{pkg.__name__}.{info.name}")
        except Exception:
            pass
dccode.save(texts)
print(dccode.CODE_FILE)  # read by the proxy right before its imports
for m in list(sys.modules.values()):
    # the byte code where there is one, else the file itself (source, extension module)
    f = getattr(m, "__cached__", None) or getattr(m, "__file__", None)
    if f:
        print(f)
print("READY", flush=True)
sys.stdin.read()
"""


def probe(root: Path, config_in_root: str) -> list[str]:
    """Files (absolute paths inside root) the proxy's start reads, in the order it needs them."""
    proc = subprocess.Popen(["chroot", str(root), "python3", "-c", PROBE, config_in_root],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    files: list[str] = []
    try:
        for line in proc.stdout:
            line = line.strip()
            if line == "READY":
                break
            if line:
                files.append(line)
        else:
            raise SystemExit(f"readahead: the probe ended early (rc {proc.wait()})")
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.stdin.close()
        proc.wait()
    prefix = str(root.resolve()).rstrip("/")
    mapped = []
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith(prefix + "/"):
            mapped.append(parts[5][len(prefix):])
    interp = [p for p in mapped if "/bin/python3" in p]
    libs = [p for p in mapped if p not in interp]
    ordered: list[str] = []
    for p in interp + libs + files:
        if p not in ordered and (root / p.lstrip("/")).is_file():
            ordered.append(p)
    return ordered


def write_list(root: Path, config_in_root: str) -> int:
    files = probe(root, config_in_root)
    out = root / LIST
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{p}\n" for p in files))
    size = sum((root / p.lstrip("/")).stat().st_size for p in files)
    print(f"readahead: {out} {len(files)} files, {size >> 10} KiB")
    return len(files)


if __name__ == "__main__":
    import sys

    write_list(Path(sys.argv[1]), sys.argv[2])
