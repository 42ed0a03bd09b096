#!/usr/bin/env python3
"""Build the offline sipedge disk image from Debian packages (no Buildroot, no internet).

usage: mkimage.py [--arch amd64|arm64] [--out DIR] [--force] [--check] [--compress]

Two stages, each skipped when its inputs have not changed:
  base      tools/image/mkbase.sh: mmdebstrap of debian-packages.txt, slimmed (about 50 s on
            amd64, about 4 min on arm64 with a cold .deb cache).
  assemble  copy of the base + rootfs/ overlay + the app from app/sipedge (byte-compiled, the
            hot modules also as C extensions: the compiled build, tools/compile/build.py) +
            tiny initrd (mkinitrd.py) + ext4 images + genimage with the board's genimage.cfg
            (seconds).
Outputs in DIR (default out/image-ARCH): sipedge.img (FAT boot, rootfs A, rootfs B, data),
the kernel and initrd.img (also on the FAT), and manifest.json describing how to boot it.
--check exits 0 when the image is up to date and 1 when a build is needed. Needs root.
"""
import argparse
import fcntl
import gzip
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BOARDS = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}
BASE_INPUTS = ("mkbase.sh", "slim.py", "debian-packages.txt", "modules.keep")
ENTRY_POINTS = {
    "sipedge": ("sipedge.cli", "main"),
    "sipedgectl": ("sipedge.cli", "ctl_main"),
    "sipedge-supervisor": ("sipedge.appliance.supervisor_main", "main"),
}


def log(msg: str) -> None:
    print(f"mkimage: {msg}", flush=True)


def run(*cmd, **kw) -> None:
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def read_meta(path: Path) -> dict[str, str]:
    meta = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        meta[key.strip()] = value.strip().strip('"')
    return meta


def size_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1:].upper()]
    return int(text)


def hash_paths(h, paths) -> None:
    """Feed file names, modes and contents below each path into the hash h."""
    for top in paths:
        top = Path(top)
        files = [top] if top.is_file() or top.is_symlink() else sorted(p for p in top.rglob("*"))
        for p in files:
            if "__pycache__" in p.parts or p.suffix == ".pyc":
                continue
            rel = p.relative_to(REPO).as_posix()
            if p.is_symlink():
                h.update(f"L {rel} {os.readlink(p)}\n".encode())
            elif p.is_file():
                h.update(f"F {rel} {p.stat().st_mode & 0o777:o}\n".encode())
                h.update(p.read_bytes())


def host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def base_key(arch: str) -> str:
    h = hashlib.sha256(f"base {arch}\n".encode())
    inputs = BASE_INPUTS + (("mkbase_foreign.py",) if arch != host_arch() else ())
    hash_paths(h, [HERE / name for name in inputs])
    return h.hexdigest()


def image_key(arch: str, board: str) -> str:
    h = hashlib.sha256(f"image {arch} {base_key(arch)}\n".encode())
    hash_paths(h, [REPO / "app/sipedge", REPO / "rootfs", REPO / "board/common",
                   REPO / "board" / board, HERE / "mkimage.py", HERE / "mkinitrd.py",
                   HERE / "readahead.py", REPO / "app/setup.py", REPO / "tools/compile/build.py"])
    h.update(f"app build {os.environ.get('SIPEDGE_IMAGE_BUILD', 'auto')}\n".encode())
    return h.hexdigest()


def copy_overlay(src: Path, dst: Path) -> None:
    """Copy a tree over another, replacing files and symlinks, keeping modes."""
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_dir() and not p.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if target.is_symlink() or target.exists():
            target.unlink()
        if p.is_symlink():
            target.symlink_to(os.readlink(p))
        else:
            shutil.copy2(p, target)


def _compile_tool():
    spec = importlib.util.spec_from_file_location("compile_build", REPO / "tools/compile/build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compiled_modules() -> tuple[str, ...]:
    ns: dict = {}
    exec((REPO / "app/sipedge/compiled.py").read_text(encoding="utf-8"), ns)
    return ns["MODULES"]


def target_python(root: Path) -> tuple[str, str]:
    """(version 3.X, EXT_SUFFIX) of the image's python3."""
    out = subprocess.run(
        ["chroot", str(root), "python3", "-c",
         "import sys, sysconfig; print('%d.%d' % sys.version_info[:2]); "
         "print(sysconfig.get_config_var('EXT_SUFFIX'))"],
        check=True, capture_output=True, text=True).stdout.split()
    return out[0], out[1]


def _cython_interpreters(ver: str) -> list[str]:
    return [py for py in dict.fromkeys([sys.executable, shutil.which(f"python{ver}"), "/usr/bin/python3"])
            if py and Path(py).exists()]


def compiled_builder(root: Path) -> tuple[str, list[str], Path | None] | str:
    """(interpreter, include dirs, target sysconfigdata or None) that can build the compiled
    modules for the image's python3, or the reason why none can. The generated C is the same
    for every architecture; the compile needs an interpreter with Cython whose extension
    suffix (version and architecture) is the image's and the image Python's headers, or,
    for another architecture, a cross build (cross_builder)."""
    ver, suffix = target_python(root)
    same_version = None
    seen = []
    for py in _cython_interpreters(ver):
        res = subprocess.run([py, "-c", "import sys, sysconfig, Cython; "
                              "print(sysconfig.get_config_var('EXT_SUFFIX'), '%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True)
        have, pyver = res.stdout.split() if res.returncode == 0 else ("no Cython", "")
        if have == suffix:
            inc = Path(f"/usr/include/python{ver}")
            if not (inc / "Python.h").exists():
                return f"no host headers for Python {ver} ({inc}; Debian python{ver}-dev)"
            return py, [str(inc)], None
        if pyver == ver and same_version is None:
            same_version = py
        seen.append(f"{py}: {have}")
    if same_version is None:
        return f"no host interpreter with Cython builds {suffix} ({'; '.join(seen)})"
    return cross_builder(root, ver, same_version)


def cross_builder(root: Path, ver: str, python: str) -> tuple[str, list[str], Path] | str:
    """A cross build for the image's architecture (tools/compile/build.py --sysconfigdata):
    the image's own _sysconfigdata (its compiler: Debian's <triplet>-gcc, its EXT_SUFFIX),
    the cross compiler on the host (Debian gcc-<triplet>, libc6-dev-<arch>-cross), and the
    image Python's headers, from the libpython3.X-dev .deb of the image's architecture and
    exactly the image's libpython version, fetched into the .deb cache by the host's apt
    (the same private apt configuration as mkbase_foreign.py) and unpacked under out/cross/."""
    found = sorted((root / f"usr/lib/python{ver}").glob("_sysconfigdata__*.py"))
    if not found:
        return f"no _sysconfigdata in the image's /usr/lib/python{ver}"
    scd = found[0]
    cvars = _compile_tool().target_vars(scd)
    cc = ((cvars.get("CC") or "").split() or ["?"])[0]
    triplet = cvars.get("MULTIARCH", "")
    if not shutil.which(cc):
        return (f"no cross compiler {cc} for the image's {triplet} "
                f"(Debian gcc-{triplet} and libc6-dev-{DEB_ARCH.get(triplet, '?')}-cross)")
    lib = f"libpython{ver}-dev"
    version = _dpkg_version(root, f"libpython{ver}-stdlib")
    if not version:
        return f"libpython{ver}-stdlib not in the image's dpkg status"
    arch = DEB_ARCH.get(triplet)
    dest = REPO / "out" / "cross" / f"{lib}_{version}_{arch}"
    if not (dest / f"usr/include/python{ver}/Python.h").exists():
        try:
            deb = _fetch_deb(root, arch, lib, version)
        except (subprocess.CalledProcessError, OSError) as e:
            return f"cannot fetch {lib}:{arch} {version}: {e}"
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run("dpkg-deb", "-x", deb, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    include = [str(dest / f"usr/include/python{ver}"), str(dest / "usr/include")]
    return python, include, scd


DEB_ARCH = {"aarch64-linux-gnu": "arm64", "x86_64-linux-gnu": "amd64"}


def _dpkg_version(root: Path, package: str) -> str | None:
    status = root / "var/lib/dpkg/status"
    if not status.exists():
        return None
    for stanza in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        if f"\nPackage: {package}\n" in "\n" + stanza.strip("\n") + "\n":
            for line in stanza.splitlines():
                if line.startswith("Version: "):
                    return line.split(None, 1)[1]
    return None


def _fetch_deb(root: Path, arch: str, name: str, version: str) -> Path:
    """name=version for arch, from the .deb cache or downloaded into it (no dependencies:
    only its files are wanted)."""
    cache = Path(os.environ.get("SIPEDGE_DEB_CACHE", "/var/cache/sipedge-debs")) / arch
    cache.mkdir(parents=True, exist_ok=True)
    deb = cache / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
    if deb.exists():
        return deb
    sys.path.insert(0, str(HERE))
    from mkbase_foreign import Apt
    with tempfile.TemporaryDirectory(prefix="apt-", dir=REPO / "out") as work:
        apt = Apt(arch, root, Path(work), cache)
        apt("update")
        subprocess.run(["apt-get", "-q", "download", f"{name}:{arch}={version}"], cwd=cache,
                       env={**os.environ, "APT_CONFIG": str(apt.conf)}, check=True)
    if not deb.exists():
        raise OSError(f"apt-get download did not leave {deb}")
    log(f"fetched {deb.name} for the cross build")
    return deb


def install_compiled(site: Path, root: Path) -> dict:
    """The compiled build (app/setup.py) of the hot modules into the image, next to their .py
    (Python imports the extension first). SIPEDGE_IMAGE_BUILD=pure skips it; =compiled makes
    an impossible build an error. Returns what went in, for build_info."""
    mode = os.environ.get("SIPEDGE_IMAGE_BUILD", "auto")
    if mode == "pure":
        return {"build": "pure", "why": "SIPEDGE_IMAGE_BUILD=pure"}
    builder = compiled_builder(root)
    if isinstance(builder, str):
        if mode == "compiled":
            raise SystemExit(f"mkimage: compiled build impossible: {builder}")
        log(f"compiled build impossible, the app is pure Python: {builder}")
        return {"build": "pure", "why": builder}
    python, include, sysconfigdata = builder
    tree = _compile_tool().cached(python, include, jobs=os.cpu_count() or 1,
                                  root=REPO / "out" / "compiled", sysconfigdata=sysconfigdata)
    files = []
    for module in compiled_modules():
        rel = Path(*module.split(".")[1:])
        found = sorted((tree / "sipedge" / rel.parent).glob(rel.name + ".*.so"))
        if not found:
            raise SystemExit(f"mkimage: {module} missing from the compiled tree {tree}")
        shutil.copy2(found[0], site / rel.parent / found[0].name)
        files.append(str((rel.parent / found[0].name).as_posix()))
    strip = "strip"
    if sysconfigdata:  # the target's binutils (Debian binutils-<triplet>, with the compiler)
        strip = _compile_tool().cross_tool(sysconfigdata, "strip")
    run(strip, "--strip-unneeded", *(site / f for f in files))
    log(f"compiled build: {len(files)} modules from {tree}"
        + (f" (cross-built with {sysconfigdata.name})" if sysconfigdata else ""))
    return {"build": "compiled", "modules": files,
            **({"cross": sysconfigdata.stem} if sysconfigdata else {})}


def install_app(root: Path) -> dict:
    site = root / "usr/lib/python3/dist-packages/sipedge"
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(REPO / "app/sipedge", site,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.c"))
    compiled = install_compiled(site, root)
    for name, (module, func) in ENTRY_POINTS.items():
        script = root / "usr/bin" / name
        script.write_text(
            "#!/usr/bin/python3\n"
            f"# {name}: entry point of the sipedge package (written by tools/image/mkimage.py).\n"
            "import sys\n"
            f"from {module} import {func}\n"
            f"sys.exit({func}())\n")
        script.chmod(0o755)
    # The root filesystem is read-only: ship the bytecode. The host's interpreter writes the
    # same bytecode when its magic number is the target's (a foreign target's interpreter
    # would run under qemu-user: tens of seconds).
    sys.path.insert(0, str(HERE))
    from mkbase_foreign import python_magic_matches
    if python_magic_matches(root):
        run(sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
            "-s", root, "-p", "/", site)
    else:
        run("chroot", root, "python3", "-m", "compileall", "-q", "--invalidation-mode",
            "unchecked-hash", "/usr/lib/python3/dist-packages/sipedge")
    return compiled


def busybox_links(root: Path) -> None:
    """BusyBox init (like the Buildroot image) plus the applets Debian has no command for
    (ps, logread, getty, udhcpc, ...). Existing Debian commands are left alone."""
    init = root / "usr/sbin/init"
    if not init.exists() and not init.is_symlink():
        init.symlink_to("../bin/busybox")
    applets = subprocess.run(["chroot", str(root), "/usr/bin/busybox", "--list"], check=True,
                             capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet in ("busybox", "linuxrc"):
            continue
        if any((root / d / applet).exists() or (root / d / applet).is_symlink()
               for d in ("usr/bin", "usr/sbin")):
            continue
        (root / "usr/bin" / applet).symlink_to("busybox")


def extract_kernel(root: Path, dest: Path, kind: str) -> str:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise SystemExit(f"mkimage: no kernel in {root}/boot")
    data = kernels[-1].read_bytes()
    if kind == "Image" and data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)  # U-Boot's booti wants the plain arm64 Image
    dest.write_bytes(data)
    return kernels[-1].name.removeprefix("vmlinuz-")


def mke2fs(path: Path, label: str, size: int, tree: Path | None = None) -> None:
    if path.exists():
        path.unlink()
    args = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-E", "root_owner=0:0"]
    if tree is not None:
        args += ["-d", str(tree)]
    run(*args, str(path), f"{size // 1024}k")


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
        total += 4096 * (len(files) // 16 + 1)
    return total


def app_version() -> str:
    for line in (REPO / "app/sipedge/__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    return "0.0.0"


GRUB_MODULES = ("biosdisk", "part_msdos", "fat", "ext2", "normal", "linux", "echo", "test",
                "loadenv", "configfile", "serial", "terminal", "halt", "reboot", "sleep")


def kernel_args(meta: dict[str, str]) -> str:
    """The board's KERNEL_ARGS (meta) as a suffix of the kernel command line ("" without)."""
    args = meta.get("KERNEL_ARGS", "").strip()
    return " " + args if args else ""


def install_grub(disk: Path, boot_part: str, meta: dict[str, str], out: Path) -> None:
    """GRUB (i386-pc) in the MBR gap: boot.img's code into the MBR (the partition table
    stays), core.img from sector 1 (before the FAT at BOOT_OFFSET), grub.cfg and a fresh
    environment block (slot A good, B empty) on the FAT in /grub."""
    grubdir = out / "grub"
    shutil.rmtree(grubdir, ignore_errors=True)
    grubdir.mkdir()
    sig = f"{int(meta['DISK_SIGNATURE'], 16):08x}"
    cfg = (REPO / "board/qemu-x86_64/grub.cfg").read_text()
    cfg = cfg.replace("@SIG@", sig).replace("@KERNEL@", meta["KERNEL_IMAGE"]) \
        .replace("@CONSOLE@", meta["CONSOLE"]).replace(" @KERNEL_ARGS@", kernel_args(meta))
    (grubdir / "grub.cfg").write_text(cfg)
    env = grubdir / "grubenv"
    run("grub-editenv", env, "create")
    run("grub-editenv", env, "set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0")
    core = grubdir / "core.img"
    run("grub-mkimage", "-O", "i386-pc", "-o", core, "-p", "(hd0,msdos1)/grub", *GRUB_MODULES)
    lib = Path("/usr/lib/grub/i386-pc")
    boot_img = (lib / "boot.img").read_bytes()
    core_bytes = core.read_bytes()
    if 512 + len(core_bytes) > size_bytes(meta["BOOT_OFFSET"]):
        raise SystemExit("mkimage: GRUB core.img does not fit before the boot partition")
    with open(disk, "r+b") as f:
        f.write(boot_img[:440])  # code only: disk signature and partition table stay
        f.seek(512)
        f.write(core_bytes)
    mt = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    run("mmd", "-i", boot_part, "::grub", env=mt)
    run("mcopy", "-o", "-i", boot_part, grubdir / "grub.cfg", grubdir / "grubenv", "::grub/",
        env=mt)


def install_uboot_script(boot_part: str, board: str, meta: dict[str, str], out: Path) -> None:
    """boot.scr (board/BOARD/boot.cmd) and a fresh uboot.env (slot A preferred, 3 tries
    each) on the FAT; QEMU starts Debian's u-boot-qemu with -bios."""
    d = out / "uboot"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    sig = f"{int(meta['DISK_SIGNATURE'], 16):08x}"
    cmd = (REPO / "board" / board / "boot.cmd").read_text()
    (d / "boot.cmd").write_text(cmd.replace("@SIG@", sig).replace("@CONSOLE@", meta["CONSOLE"]))
    run("mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-d", d / "boot.cmd",
        d / "boot.scr", stdout=subprocess.DEVNULL)
    (d / "env.txt").write_text("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n")
    run("mkenvimage", "-s", "0x4000", "-o", d / "uboot.env", d / "env.txt")
    mt = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    run("mcopy", "-o", "-i", boot_part, d / "boot.scr", d / "uboot.env", "::", env=mt)


def assemble(arch: str, board: str, out: Path, meta: dict[str, str], key: str) -> dict:
    base = out / "base"
    rootfs = out / "rootfs"
    bindir = out / "bin"
    shutil.rmtree(rootfs, ignore_errors=True)
    shutil.rmtree(bindir, ignore_errors=True)
    bindir.mkdir(parents=True)
    run("cp", "-a", base, rootfs)
    copy_overlay(REPO / "rootfs", rootfs)
    busybox_links(rootfs)
    # RAUC keyring + index key (post-build.sh installs them): create the dev set on first use
    run(sys.executable, REPO / "tools/release/release.py", "keys", stdout=subprocess.DEVNULL)
    version = os.environ.get("SIPEDGE_VERSION") or \
        f"{app_version()}+{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    run(REPO / "board/common/post-build.sh", rootfs, REPO / "board" / board,
        env={**os.environ, "SIPEDGE_VERSION": version})
    compiled = install_app(rootfs)
    # the files the proxy's start reads, read ahead by rcS (readahead.py), for the shipped config
    probe_config = rootfs / "tmp/readahead-sipedge.toml"
    shutil.copy2(REPO / "board/common/sipedge.toml", probe_config)
    try:
        run(sys.executable, HERE / "readahead.py", rootfs, "/tmp/readahead-sipedge.toml")
    finally:
        probe_config.unlink()

    kernel_name = meta["KERNEL_IMAGE"]
    kver = extract_kernel(rootfs, bindir / kernel_name, kernel_name)
    for cfg in (rootfs / "boot").glob("config-*"):
        shutil.copy2(cfg, bindir / "kernel.config")  # checked against board/*/linux.fragment
    for p in (rootfs / "boot").iterdir():  # /boot is the FAT mount point
        p.unlink()
    for dtbs in (rootfs / "usr/lib").glob("linux-image-*"):
        shutil.rmtree(dtbs)  # device trees of real arm64 boards; QEMU virt generates its own
    run(sys.executable, HERE / "mkinitrd.py", rootfs, bindir / "initrd.img")
    bootloader = meta.get("BOOTLOADER", "")
    if bootloader in ("grub", "uboot"):  # the bootloader loads kernel+initrd from the slot
        slotboot = rootfs / "usr/lib/sipedge/boot"
        slotboot.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bindir / kernel_name, slotboot / kernel_name)
        shutil.copy2(bindir / "initrd.img", slotboot / "initrd.img")

    sig = int(meta["DISK_SIGNATURE"], 16)
    root_partuuid = f"{sig:08x}-02"
    cmdline = (f"root=PARTUUID={root_partuuid} rootfstype=ext4 ro console={meta['CONSOLE']}"
               " sipedge.slot=A rauc.slot=A" + kernel_args(meta))
    (bindir / "cmdline.txt").write_text(cmdline + "\n")
    shutil.copy2(REPO / "board/common/sipedge.toml", bindir / "sipedge.toml")
    build_info = {
        "board": board, "arch": arch, "kernel": kver, "key": key, "version": version,
        "bootloader": bootloader, "app_build": compiled,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (rootfs / "etc/sipedge-build.json").write_text(json.dumps(build_info, indent=1) + "\n")

    rootfs_size = size_bytes(meta["ROOTFS_SIZE"])
    need = int(tree_bytes(rootfs) * 1.15) + (16 << 20)
    if need > rootfs_size:
        raise SystemExit(f"mkimage: rootfs needs {need >> 20} MiB, "
                         f"board ROOTFS_SIZE is {rootfs_size >> 20} MiB")
    mke2fs(bindir / "rootfs.ext4", "sipedge-root", rootfs_size, rootfs)
    mke2fs(bindir / "data.ext4", "sipedge-data", size_bytes(meta["DATA_SIZE"]))

    tmp = out / "genimage.tmp"
    emptyroot = out / "genimage.root"
    for d in (tmp, emptyroot):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    env = dict(os.environ)
    for k in ("KERNEL_IMAGE", "BOOT_SIZE", "BOOT_OFFSET", "ROOTFS_SIZE", "DISK_SIGNATURE"):
        env[f"SIPEDGE_{k}"] = meta[k]
    run("genimage", "--config", REPO / "board" / board / "genimage.cfg", "--rootpath", emptyroot,
        "--tmppath", tmp, "--inputpath", bindir, "--outputpath", bindir, env=env,
        stdout=subprocess.DEVNULL, stderr=open(out / "genimage.log", "wb"))
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(emptyroot, ignore_errors=True)
    # The Debian kernel needs the initrd (Buildroot kernels have the drivers built in).
    disk = bindir / "sipedge.img"
    boot_part = f"{disk}@@{size_bytes(meta['BOOT_OFFSET'])}"
    run("mcopy", "-o", "-i", boot_part, bindir / "initrd.img", "::initrd.img")
    if bootloader == "grub":
        install_grub(disk, boot_part, meta, out)
    elif bootloader == "uboot":
        install_uboot_script(boot_part, board, meta, out)
    (bindir / "boot.vfat").unlink()
    (bindir / "rootfs.ext4").unlink()
    (bindir / "data.ext4").unlink()

    manifest = {
        **build_info,
        "disk": "sipedge.img",
        "kernel_image": kernel_name,
        "initrd": "initrd.img",
        "cmdline": cmdline,
        "boot_offset": size_bytes(meta["BOOT_OFFSET"]),
        "root_partuuid": root_partuuid,
        "meta": meta,
        "sizes": {
            "disk_apparent": disk.stat().st_size,
            "disk_allocated": disk.stat().st_blocks * 512,
            "rootfs_tree": tree_bytes(rootfs),
            "kernel": (bindir / kernel_name).stat().st_size,
            "initrd": (bindir / "initrd.img").stat().st_size,
        },
    }
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="amd64", choices=sorted(BOARDS))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--force", action="store_true", help="rebuild both stages")
    ap.add_argument("--check", action="store_true", help="exit 1 if a build is needed, 0 if not")
    ap.add_argument("--compress", action="store_true", help="also write sipedge.img.zst")
    args = ap.parse_args(argv)
    board = BOARDS[args.arch]
    out = (args.out or REPO / "out" / f"image-{args.arch}").resolve()
    meta = read_meta(REPO / "board" / board / "meta")
    bkey, ikey = base_key(args.arch), image_key(args.arch, board)
    base_stamp, image_stamp = out / "base.key", out / "image.key"
    manifest_path = out / "bin/manifest.json"
    base_ok = base_stamp.exists() and base_stamp.read_text() == bkey and (out / "base").is_dir()
    image_ok = base_ok and image_stamp.exists() and image_stamp.read_text() == ikey and manifest_path.exists()
    if args.check:
        return 0 if image_ok else 1
    if os.geteuid() != 0:
        raise SystemExit("mkimage: needs root (mmdebstrap root mode, chroot)")
    if args.arch != host_arch():  # the assemble stage runs the image's python3 and busybox
        sys.path.insert(0, str(HERE))
        from mkbase_foreign import foreign_exec_ready
        foreign_exec_ready(args.arch, [sys.executable, str(Path(__file__).resolve()),
                                       *(sys.argv[1:] if argv is None else argv)])
    out.mkdir(parents=True, exist_ok=True)
    # One build per output directory at a time (parallel test runs share out/).
    lock = open(out / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    base_ok = base_stamp.exists() and base_stamp.read_text() == bkey and (out / "base").is_dir()
    image_ok = base_ok and image_stamp.exists() and image_stamp.read_text() == ikey and manifest_path.exists()
    t0 = time.monotonic()
    if args.force or not base_ok:
        log(f"base stage for {args.arch}")
        base_stamp.unlink(missing_ok=True)
        image_stamp.unlink(missing_ok=True)
        if args.arch == host_arch() or os.environ.get("SIPEDGE_MMDEBSTRAP_FOREIGN"):
            run(HERE / "mkbase.sh", args.arch, out / "base",
                env={**os.environ, "PYTHON": sys.executable})
        else:  # mmdebstrap would run dpkg and every maintainer script under qemu-user
            run(sys.executable, HERE / "mkbase_foreign.py", args.arch, out / "base")
        base_stamp.write_text(bkey)
        log(f"base stage done in {time.monotonic() - t0:.0f} s")
        image_ok = False
    if args.force or not image_ok:
        t1 = time.monotonic()
        image_stamp.unlink(missing_ok=True)
        manifest = assemble(args.arch, board, out, meta, ikey)
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
        image_stamp.write_text(ikey)
        log(f"assemble stage done in {time.monotonic() - t1:.0f} s")
    manifest = json.loads(manifest_path.read_text())
    if args.compress:
        disk = out / "bin" / manifest["disk"]
        run("zstd", "-q", "-f", "-T0", "-10", disk, "-o", f"{disk}.zst")
        manifest["sizes"]["disk_zstd"] = Path(f"{disk}.zst").stat().st_size
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    s = manifest["sizes"]
    log(f"{out / 'bin' / manifest['disk']}: {s['disk_apparent'] >> 20} MiB apparent, "
        f"{s['disk_allocated'] >> 20} MiB allocated, rootfs {s['rootfs_tree'] >> 20} MiB"
        + (f", zstd {s['disk_zstd'] >> 20} MiB" if "disk_zstd" in s else "")
        + f" ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
