#!/usr/bin/env python3
"""Build the Debian base root filesystem for a foreign architecture (arm64 on an amd64 host).

usage: mkbase_foreign.py ARCH DEST        (root; called by mkimage.py)

The same tree as mkbase.sh's mmdebstrap run (minbase: Essential + Priority required + apt,
plus debian-packages.txt, no recommends, perl purged, slimmed), built so that little runs
under qemu-user emulation. mmdebstrap runs dpkg itself inside the chroot, so under qemu-user
every .deb is decompressed and unpacked by an emulated dpkg, and the Python byte-compiles of
the maintainer scripts run in an emulated interpreter: 4-6 min. Here:

  - the host's apt resolves and downloads (APT::Architecture=ARCH, cache in
    ${SIPEDGE_DEB_CACHE:-/var/cache/sipedge-debs}/ARCH, shared with mkbase.sh);
  - the host's dpkg unpacks and registers the packages with --root (native decompression and
    file handling; the dpkg database in DEST is a normal one for ARCH);
  - maintainer scripts still run, chrooted into DEST under qemu-user (users, groups,
    alternatives, ldconfig, ...), except the Python byte-compiles: those are queued and done
    by the host's interpreter when it has the same bytecode magic (same Python minor version,
    byte-identical output), else left to the emulated one;
  - depmod and slim.py run natively.

Standard library only. Prints the time of each step.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
# Pulled in by linux-image's helper scripts, not needed on a read-only appliance (about 55 MB);
# the same list as mkbase.sh.
PURGE = ("perl", "perl-modules-5.36", "libperl5.36", "libfile-find-rule-perl",
         "libnumber-compare-perl", "libtext-glob-perl")
DEFAULT_SOURCES = (f"deb http://deb.debian.org/debian {SUITE} main\n"
                   f"deb http://deb.debian.org/debian {SUITE}-updates main\n"
                   f"deb http://deb.debian.org/debian-security {SUITE}-security main\n")
# The queue the stand-in py3compile and the patched python3.X postinsts write (inside DEST).
PYQUEUE = "var/lib/sipedge-pycompile.queue"
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"mkbase-foreign: {time.monotonic() - T0:6.1f} s  {msg}", flush=True)


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


class Apt:
    """The host's apt-get on a private configuration for the target architecture."""

    def __init__(self, arch: str, root: Path, work: Path, cache: Path):
        self.dir = work / "apt"
        etc = self.dir / "etc"
        for d in (etc / "apt.conf.d", etc / "sources.list.d", etc / "preferences.d",
                  self.dir / "state/lists/partial", self.dir / "cache", cache / "partial",
                  self.dir / "log"):
            d.mkdir(parents=True, exist_ok=True)
        self.sources = self._write_sources(etc)
        self.conf = self.dir / "apt.conf"
        self.conf.write_text(
            f'Dir::Etc "{etc}/";\n'
            'Dir::Etc::TrustedParts "/etc/apt/trusted.gpg.d/";\n'
            f'Dir::State "{self.dir}/state/";\n'
            f'Dir::State::status "{root}/var/lib/dpkg/status";\n'
            f'Dir::Cache "{self.dir}/cache/";\n'
            f'Dir::Cache::archives "{cache}/";\n'
            f'Dir::Log "{self.dir}/log/";\n'
            f'APT::Architecture "{arch}";\n'
            f'APT::Architectures {{ "{arch}"; }};\n'
            'APT::Install-Recommends "false";\n'
            'Acquire::Languages "none";\n'
            'APT::Sandbox::User "root";\n'
            'Debug::NoLocking "true";\n')

    @staticmethod
    def _write_sources(etc: Path) -> Path:
        spec = os.environ.get("SIPEDGE_APT_SOURCES", "")
        host = Path("/etc/apt/sources.list.d/debian.sources")
        if spec and Path(spec).is_file():
            src = Path(spec)
            dst = etc / "sources.list.d" / ("0000debian" + (".sources" if spec.endswith(".sources")
                                                            else ".list"))
            shutil.copyfile(src, dst)
        elif spec:
            dst = etc / "sources.list.d/0000debian.list"
            dst.write_text(spec.rstrip("\n") + "\n")
        elif host.is_file():
            dst = etc / "sources.list.d/0000debian.sources"
            shutil.copyfile(host, dst)
        else:
            dst = etc / "sources.list.d/0000debian.list"
            dst.write_text(DEFAULT_SOURCES)
        return dst

    def __call__(self, *args, capture: bool = False) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.conf), "DEBIAN_FRONTEND": "noninteractive"}
        p = run("apt-get", "-q", *args, env=env, capture_output=capture, text=True)
        return p.stdout if capture else ""

    def essential_and_required(self) -> tuple[set[str], set[str]]:
        """Names of the Essential: yes and the Priority: required packages in the indexes."""
        essential: set[str] = set()
        required: set[str] = set()
        for f in (self.dir / "state/lists").glob("*_Packages"):
            for stanza in f.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                ess = "\nEssential: yes" in stanza
                req = "\nPriority: required" in stanza
                if ess or req:
                    name = stanza.lstrip("\n").split("\n", 1)[0].removeprefix("Package: ")
                    (essential if ess else required).add(name)
                    if ess and req:
                        required.add(name)
        return essential, required

    def resolve(self, names: list[str]) -> list[tuple[str, str]]:
        """(package, version) of everything apt would install for names, in apt's order."""
        out = self("-s", "install", *names, capture=True)
        return re.findall(r"^Inst (\S+) \((\S+)", out, re.M)


def deb_path(cache: Path, name: str, version: str, arch: str) -> Path:
    """The cached .deb apt downloaded for name (pkg:arch names, epoch as %3a)."""
    name = name.split(":")[0]
    ver = version.replace(":", "%3a")
    for a in (arch, "all"):
        p = cache / f"{name}_{ver}_{a}.deb"
        if p.exists():
            return p
    raise SystemExit(f"mkbase-foreign: {name} {version} not in {cache}")


def noinitramfs_deb(work: Path) -> Path:
    pkg = work / "noinitramfs"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: sipedge-no-initramfs\nVersion: 1.0\nArchitecture: all\n"
        "Provides: linux-initramfs-tool\n"
        "Maintainer: sipedge firmware <firmware@sipedge.invalid>\n"
        "Description: placeholder; the sipedge image builds its initrd on the host\n")
    deb = work / "sipedge-no-initramfs.deb"
    run("dpkg-deb", "--root-owner-group", "-b", pkg, deb, stdout=subprocess.DEVNULL)
    return deb


def python_magic_matches(root: Path) -> bool:
    """True when the host interpreter writes the same bytecode as the target's."""
    libs = sorted(root.glob("usr/lib/python3.*/importlib/_bootstrap_external.py"))
    if not libs:
        return False
    target_ver = libs[-1].parts[-3].removeprefix("python")
    host_ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    m = re.search(r"MAGIC_NUMBER = \((\d+)\)\.to_bytes", libs[-1].read_text())
    host_magic = int.from_bytes(importlib.util.MAGIC_NUMBER[:2], "little")
    return target_ver == host_ver and m is not None and int(m.group(1)) == host_magic


def compile_tree(root: Path, dirs: list[str]) -> int:
    """Byte-compile the .py files below root/dirs with the host interpreter, as the target's
    py_compile / py3compile would (timestamp pyc in __pycache__, source path as in the target)."""
    import py_compile
    n = 0
    for d in dirs:
        top = root / d.lstrip("/")
        for dirpath, dirnames, files in os.walk(top):
            dirnames[:] = [x for x in dirnames if x != "__pycache__"]
            for name in files:
                if not name.endswith(".py"):
                    continue
                src = Path(dirpath) / name
                try:
                    py_compile.compile(str(src), dfile="/" + src.relative_to(root).as_posix(),
                                       doraise=True,
                                       invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
                    n += 1
                except (py_compile.PyCompileError, SyntaxError, ValueError, OSError):
                    pass  # as py3compile: files that do not compile (test data) stay source-only
    return n


PY3COMPILE_STUB = f"""#!/bin/sh
# sipedge image build (tools/image/mkbase_foreign.py): byte-compiling is done by the host
# after dpkg has configured everything; this stand-in only queues the request.
echo "py3compile $*" >>/{PYQUEUE}
exit 0
"""


def patch_python_postinsts(root: Path) -> dict[Path, str]:
    """Make the python3.X postinsts queue their stdlib compile instead of running it; returns
    the original scripts to restore."""
    saved = {}
    for f in root.glob("var/lib/dpkg/info/python3.*.postinst"):
        text = f.read_text()
        new = re.sub(r"^(\s*)/usr/bin/python3\.\d+ -E -S(?: -O)? /usr/lib/python3\.\d+/py_compile\.py \$files$",
                     rf"\1echo stdlib >>/{PYQUEUE}", text, flags=re.M)
        if new != text:
            saved[f] = text
            f.write_text(new)
    return saved


def foreign_exec_ready(arch: str, argv: list[str]) -> None:
    """Make the target's programs runnable in a chroot (qemu-user through binfmt_misc), in a
    private mount namespace: re-executes `argv` under `unshare` the first time (the /proc and
    binfmt_misc mounted here go away with the process, however it ends), then mounts
    binfmt_misc if it is not and enables the target's qemu entry. The entries live as long
    as a binfmt_misc mount does (since Linux 6.7 they are dropped with the last one), so a
    host without a mount of its own (no systemd) loses them when an earlier namespace ends:
    every step that runs the target's programs must call this."""
    if os.environ.get("SIPEDGE_FOREIGN_NS") != "1":
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", *argv],
                   {**os.environ, "SIPEDGE_FOREIGN_NS": "1"})
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        run("mount", "-t", "binfmt_misc", "binfmt_misc", binfmt)
    qemu = {"arm64": "qemu-aarch64", "armhf": "qemu-arm", "amd64": "qemu-x86_64"}.get(arch, arch)
    if not (binfmt / qemu).exists():
        run("update-binfmts", "--enable", qemu)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    arch, dest = argv[1], Path(argv[2]).resolve()
    if os.geteuid() != 0:
        raise SystemExit("mkbase-foreign: needs root")
    # Maintainer scripts run under qemu-user
    foreign_exec_ready(arch, [sys.executable, *argv])
    cache = Path(os.environ.get("SIPEDGE_DEB_CACHE", "/var/cache/sipedge-debs")) / arch
    root = Path(f"{dest}.tmp")
    shutil.rmtree(root, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="sipedge-mkbase-"))
    try:
        build(arch, root, work, cache)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    root.rename(dest)
    log(f"done: {dest}")
    return 0


def build(arch: str, root: Path, work: Path, cache: Path) -> None:
    # Skeleton: merged /usr (as mmdebstrap sets up bookworm), an empty dpkg database that
    # knows the target architecture, the few device nodes maintainer scripts use.
    for d in ("usr/bin", "usr/sbin", "usr/lib", "etc/apt/apt.conf.d",
              "etc/apt/sources.list.d", "etc/dpkg/dpkg.cfg.d", "var/lib/dpkg/info",
              "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/cache/apt/archives/partial",
              "var/lib/apt/lists/partial", "var/log", "proc", "sys", "dev/pts", "dev/shm",
              "tmp", "etc/apt/trusted.gpg.d"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    for link in ("bin", "sbin", "lib"):
        (root / link).symlink_to(f"usr/{link}")
    for f in ("var/lib/dpkg/status", "var/lib/dpkg/available"):
        (root / f).touch()
    (root / "var/lib/dpkg/arch").write_text(f"{arch}\n")
    for name, major, minor, mode in (("null", 1, 3, 0o666), ("zero", 1, 5, 0o666),
                                     ("full", 1, 7, 0o666), ("random", 1, 8, 0o666),
                                     ("urandom", 1, 9, 0o666), ("tty", 5, 0, 0o666),
                                     ("console", 5, 1, 0o600), ("ptmx", 5, 2, 0o666)):
        os.mknod(root / "dev" / name, mode | 0o020000, os.makedev(major, minor))
        (root / "dev" / name).chmod(mode)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        (root / "dev" / name).symlink_to(target)
    # Paths in the dpkg options are those of mkbase.sh's mmdebstrap call.
    (root / "etc/dpkg/dpkg.cfg.d/99mmdebstrap").write_text(
        "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"
        "path-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n"
        "path-exclude=/usr/share/locale/*\npath-exclude=/usr/share/lintian/*\n")
    (root / "etc/apt/apt.conf.d/99mmdebstrap").write_text('APT::Install-Recommends "false";\n')
    for f in ("hostname", "resolv.conf"):
        if Path("/etc", f).is_file():
            shutil.copyfile(Path("/etc", f), root / "etc" / f)

    apt = Apt(arch, root, work, cache)
    apt("update")
    log("apt-get update")
    essential, required = apt.essential_and_required()
    wanted = [ln.split("#")[0].strip().replace("@ARCH@", arch)
              for ln in (HERE / "debian-packages.txt").read_text().splitlines()]
    wanted = [w for w in wanted if w]
    # Satisfies linux-image's "initramfs-tools | linux-initramfs-tool" (as in mkbase.sh): the
    # host builds the initrd (mkinitrd.py), no initramfs-tools in the image.
    noinitramfs = noinitramfs_deb(work)
    ess = apt.resolve(sorted(essential))
    full = apt.resolve([str(noinitramfs), *sorted(essential | required | {"apt"} | set(wanted))])
    ess_names = {n for n, _ in ess}
    rest = [(n, v) for n, v in full if n not in ess_names]
    log(f"resolved {len(ess)} essential + {len(rest)} more packages")
    # The finished tree is cached beside the .debs, keyed by everything it is made of: this
    # script and its inputs, the exact package versions apt resolved, the host's Python (it
    # writes the bytecode). A new Debian point release or a changed input builds anew.
    tarball = None
    if os.environ.get("SIPEDGE_BASE_CACHE", "1") != "0":
        h = hashlib.sha256(f"{arch} {sys.version}\n".encode())
        for name in ("mkbase_foreign.py", "slim.py", "modules.keep", "debian-packages.txt"):
            h.update((HERE / name).read_bytes())
        h.update("".join(f"{n}={v}\n" for n, v in full).encode())
        tarball = cache.parent / f"base-{arch}-{h.hexdigest()[:20]}.tar.zst"
        if tarball.exists():
            shutil.rmtree(root)
            root.mkdir()
            run("tar", "--zstd", "--xattrs", "--numeric-owner", "-C", root, "-xpf", tarball)
            log(f"restored from the base cache {tarball}")
            return
    apt("install", "-y", "--download-only",
        *[f"{n}={v}" for n, v in full if n != "sipedge-no-initramfs"])
    log("downloaded (cache " + str(cache) + ")")
    ess_debs = [deb_path(cache, n, v, arch) for n, v in ess]
    rest_debs = [noinitramfs if n == "sipedge-no-initramfs" else deb_path(cache, n, v, arch)
                 for n, v in rest]

    # The essential set unpacked as plain files first, so that the chrooted maintainer
    # scripts find /bin/sh and friends (as mmdebstrap does), natively.
    for deb in ess_debs:
        p = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        run("tar", "-C", root, "--keep-directory-symlink", "-x", "-f", "-", stdin=p.stdout)
        p.stdout.close()
        if p.wait() != 0:
            raise SystemExit(f"mkbase-foreign: dpkg-deb failed on {deb}")
    # dpkg's path filters (below) applied to the plain extraction too: a man page present at
    # configure time would get alternatives and diversions the mmdebstrap tree does not have
    for d in ("usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian"):
        shutil.rmtree(root / d, ignore_errors=True)
    for dirpath, _dirs, files in os.walk(root / "usr/share/doc"):
        for name in files:
            if name != "copyright":
                os.unlink(os.path.join(dirpath, name))
    log("essential packages extracted")
    # No daemon starts in the chroot.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)

    dpkg = ["dpkg", f"--root={root}", f"--log={root}/var/log/dpkg.log", "--force-depends",
            "--force-unsafe-io"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true",
           "LC_ALL": "C.UTF-8", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    with mounted_proc(root):
        # dpkg reads its path filters from the host's configuration only: pass them here.
        filters = [f"--{ln}" for ln in (root / "etc/dpkg/dpkg.cfg.d/99mmdebstrap").read_text().split()]
        run(*dpkg, *filters, "--install", *ess_debs, env=env)
        log("essential packages installed (host dpkg, scripts under qemu-user)")
        run(*dpkg, *filters, "--unpack", *rest_debs, env=env)
        log("other packages unpacked (host dpkg)")
        native_pyc = python_magic_matches(root)
        saved: dict[Path, str] = {}
        stub = root / "usr/bin/py3compile"
        real_py3compile = None
        if native_pyc:
            saved = patch_python_postinsts(root)
            if stub.exists():
                real_py3compile = stub.read_bytes()
                stub.write_text(PY3COMPILE_STUB)
        run(*dpkg, "--configure", "--pending", env=env)
        log("configured (maintainer scripts under qemu-user"
            + (", Python byte-compiles queued)" if native_pyc else ")"))
        for f, text in saved.items():
            f.write_text(text)
        if real_py3compile is not None:
            stub.write_bytes(real_py3compile)
        info = root / "var/lib/dpkg/info"
        run(*dpkg, "--purge", *[p for p in PURGE
                                if (info / f"{p}.list").exists() or any(info.glob(f"{p}:*.list"))],
            env=env)
        log("perl purged")
    queue = root / PYQUEUE
    if queue.exists():
        dirs = sorted({str(p.relative_to(root)) for p in root.glob("usr/lib/python3.*")
                       if p.is_dir()} | {"usr/lib/python3/dist-packages", "usr/share/python3"})
        n = compile_tree(root, dirs)
        queue.unlink()
        log(f"byte-compiled {n} files with the host's Python {sys.version.split()[0]}")
    policy.unlink()
    # As mmdebstrap leaves a tree: no machine id, none for D-Bus either (each box makes its
    # own), an unconfigured fstab, an empty /run (a tmpfs at run time).
    (root / "etc/machine-id").write_text("")
    for f in ("var/lib/dbus/machine-id", "var/cache/ldconfig/aux-cache", "var/lib/dpkg/available"):
        (root / f).unlink(missing_ok=True)
    (root / "etc/fstab").write_text("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n")
    for p in (root / "run").iterdir():
        if p.name == "lock":
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    # as mmdebstrap leaves it: apt sources of the build, empty lists and archives
    shutil.copyfile(apt.sources, root / "etc/apt/sources.list.d" / apt.sources.name)
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (root / d).iterdir():
            if p.is_file():
                p.unlink()
    (root / "var/lib/apt/lists/lock").touch()
    (root / "var/cache/apt/archives/lock").touch()
    run(sys.executable, HERE / "slim.py", root)
    for k in sorted((root / "usr/lib/modules").glob("*")):
        run("depmod", "-b", root, k.name)
    log("slimmed, depmod")
    if tarball is not None:
        for old in tarball.parent.glob(f"base-{arch}-*.tar.zst*"):
            old.unlink()
        tmp = tarball.with_name(tarball.name + ".tmp")
        run("tar", "--zstd", "--xattrs", "--numeric-owner", "-C", root, "-cf", tmp, ".")
        tmp.rename(tarball)
        log(f"saved to the base cache {tarball} ({tarball.stat().st_size >> 20} MiB)")


class mounted_proc:
    """/proc inside the tree while dpkg runs (some maintainer scripts read it)."""

    def __init__(self, root: Path):
        self.target = root / "proc"

    def __enter__(self):
        run("mount", "-t", "proc", "proc", self.target)

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", str(self.target)])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
