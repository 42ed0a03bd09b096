"""Run the pinned Buildroot's own tools, and a kernel tree's Kconfig, on the sipedge tree offline.

Used by tests/firmware/test_buildroot_tools.py and by `make check-buildroot`
(`python3 tests/firmware/brtools.py [defconfig ...]` prints the same findings as a report).
Standard library only; the external programs are Buildroot's make/Kconfig, GNU make, gcc,
flex/bison (kernel Kconfig), genimage and mtools.

Where things come from (first hit wins):
  Buildroot  out/buildroot-<version>/ (a clone from `make buildroot-source`, checked against the
             pinned commit), else the tarball ../shared/buildroot/src/buildroot-<version>.tar.xz
             (sha256 checked) unpacked into out/firmware-check/, else a shallow clone of the tag.
  Kernel     Debian's linux-source-6.12 (/usr/src/linux-source-6.12.tar.xz): only the Kconfig,
             Makefile, scripts/ and arch/*/configs files are unpacked (about 20 s once, cached).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FW = REPO / "firmware"
BOARD = REPO / "board"
CACHE = REPO / "out" / "firmware-check"
DEFCONFIGS = sorted((FW / "configs").glob("*_defconfig"))
EXT_VAR = "$(BR2_EXTERNAL_SIPEDGE_PATH)"
KERNEL_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
KERNEL_SERIES = (6, 12)

# Kernel symbols that a newer kernel than Debian's 6.12 no longer has (the fragment check runs
# on 6.12, so a board on a newer kernel is also checked against this list). Version = first
# release without the symbol.
REMOVED_AFTER_6_12 = {
    # arm64 SHA-256 (plain, NEON and ARMv8-CE) became library code (lib/crypto, always built in)
    "CRYPTO_SHA2_ARM64_CE": ((6, 16), "arm64 SHA-256 moved to lib/crypto"),
    "CRYPTO_SHA256_ARM64": ((6, 16), "arm64 SHA-256 moved to lib/crypto"),
}
# Kernel trees that are not a kernel.org version string in the defconfig: the version their
# Makefile states (raspberrypi/linux 21b410140c47 is the tree of Buildroot 2026.02.3's Pi boards).
KNOWN_TARBALL_VERSIONS = {"21b410140c47ffab5668399f6f143c7d7b935c8b": (6, 12, 61)}
# Base configs that exist only in a vendor tree: the nearest mainline one (the vendor defconfig
# is mainline's arm64 defconfig trimmed to the board plus vendor drivers).
MAINLINE_BASE = {"bcm2711_defconfig": "defconfig"}


def pin() -> dict[str, str]:
    text = (FW / "buildroot.mk").read_text()
    return dict(re.findall(r"^(BUILDROOT_\w+) = (\S+)$", text, re.M))


def shared_dirs() -> list[Path]:
    """../shared next to this checkout, and next to the main checkout of a git worktree."""
    dirs = []
    env = os.environ.get("SIPEDGE_SHARED_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(REPO.parent / "shared")
    try:
        common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute",
                                 "--git-common-dir"], capture_output=True, text=True, timeout=10)
        if common.returncode == 0:
            dirs.append(Path(common.stdout.strip()).parent.parent / "shared")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return dirs


class Unavailable(Exception):
    """A tool or source tree is missing here; the message says how to get it."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def buildroot_tree() -> Path:
    p = pin()
    version, commit = p["BUILDROOT_VERSION"], p["BUILDROOT_COMMIT"]
    clone = REPO / "out" / f"buildroot-{version}"
    if (clone / "Makefile").exists() and (clone / ".git").exists():
        head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        if head == commit:
            return clone
    unpacked = CACHE / f"buildroot-{version}"
    if (unpacked / ".sipedge-sha256").exists():
        return unpacked
    for shared in shared_dirs():
        tarball = shared / "buildroot" / "src" / f"buildroot-{version}.tar.xz"
        if not tarball.exists():
            continue
        sums = (tarball.parent / "SHA256SUMS").read_text()
        digest = sha256(tarball)
        if f"{digest}  {tarball.name}" not in sums:
            raise AssertionError(f"{tarball}: sha256 {digest} is not the one in SHA256SUMS")
        tmp = CACHE / f"buildroot-{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run(["tar", "-xJf", str(tarball), "-C", str(tmp)], check=True)
        (tmp / f"buildroot-{version}" / ".sipedge-sha256").write_text(digest + "\n")
        shutil.rmtree(unpacked, ignore_errors=True)
        (tmp / f"buildroot-{version}").rename(unpacked)
        shutil.rmtree(tmp, ignore_errors=True)
        return unpacked
    # A user's clone without ../shared: fetch the pinned tag as `make buildroot-source` does.
    tmp = clone.with_name(clone.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        res = subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", version,
                              p["BUILDROOT_GIT_URL"], str(tmp)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"no ../shared/buildroot/src tarball and git clone failed: {exc}")
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Unavailable("no ../shared/buildroot/src tarball and `git clone "
                          f"{p['BUILDROOT_GIT_URL']}` failed: {res.stderr.strip()[-300:]}")
    head = subprocess.run(["git", "-C", str(tmp), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    if head != commit:
        raise AssertionError(f"Buildroot tag {version} is {head}, pinned {commit}")
    tmp.rename(clone)
    return clone


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CDPATH", "PERL_MM_OPT", "O")}
    env["LC_ALL"] = "C"
    return env


def run_make(br: Path, outdir: Path, *args: str, timeout: float = 300) -> str:
    res = subprocess.run(["make", "-s", "-C", str(br), f"O={outdir}", *args],
                         capture_output=True, text=True, timeout=timeout, env=clean_env())
    if res.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed ({res.returncode}):\n"
                             f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return res.stdout


# --- Kconfig files ------------------------------------------------------------------------

def parse_defconfig(path: Path, prefix: str = "BR2_") -> dict[str, str]:
    """Every symbol a defconfig or fragment sets: value as written ('n' for 'is not set')."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        m = re.match(rf"^({prefix}\w+)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2)
            continue
        m = re.match(rf"^# ({prefix}\w+) is not set$", line)
        if m:
            values[m.group(1)] = "n"
    return values


def unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


@dataclass
class KconfigIndex:
    """Where each symbol is defined and what its definitions depend on (enclosing `if` blocks
    and `depends on` lines; enough to name why Kconfig dropped a symbol)."""
    deps: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def scan(cls, roots: list[Path], names=("Config.in*", "Kconfig*")) -> "KconfigIndex":
        index = cls()
        for root in roots:
            for pattern in names:
                for path in root.rglob(pattern):
                    if path.is_file():
                        index._scan_file(path)
        return index

    def _scan_file(self, path: Path) -> None:
        ifs: list[str] = []
        current = None
        for raw in path.read_text(errors="replace").splitlines():
            line = raw.split("#", 1)[0].strip() if not raw.strip().startswith("help") else ""
            if not line:
                continue
            m = re.match(r"^(?:menu)?config\s+(\w+)$", line)
            if m:
                current = m.group(1)
                self.deps.setdefault(current, []).extend(ifs)
                continue
            m = re.match(r"^if\s+(.+)$", line)
            if m:
                ifs.append(m.group(1))
                current = None
                continue
            if line == "endif":
                if ifs:
                    ifs.pop()
                current = None
                continue
            if re.match(r"^(choice|endchoice|menu|endmenu|comment|source|mainmenu)\b", line):
                current = None
                continue
            m = re.match(r"^depends\s+on\s+(.+)$", line)
            if m and current:
                self.deps[current].append(m.group(1))

    def explain(self, symbol: str, config: dict[str, str], prefix: str = "") -> str:
        """'depends on X (X=n)' for the dependencies of symbol that the config does not meet."""
        name = symbol[len(prefix):] if prefix and symbol.startswith(prefix) else symbol
        if name not in self.deps:
            return "no such symbol in this tree (removed or misspelt)"
        unmet = []
        for expr in dict.fromkeys(self.deps[name]):
            tokens = re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", expr)
            states = {t: config.get(prefix + t, "n") for t in tokens if t.upper() == t and t not in ("y", "m", "n")}
            if any(v in ("n", "") for v in states.values()) or "!" in expr:
                unmet.append(f"depends on {expr} (" + ", ".join(f"{t}={v}" for t, v in states.items()) + ")")
        return "; ".join(unmet) or "dependencies met (a choice or select overrides it)"


def read_dotconfig(path: Path, prefix: str) -> dict[str, str]:
    return parse_defconfig(path, prefix)


def lost_symbols(wanted: dict[str, str], got: dict[str, str]) -> dict[str, tuple[str, str]]:
    """symbol -> (wanted, got) for every symbol whose value did not survive."""
    lost = {}
    for sym, value in wanted.items():
        have = got.get(sym, "n")
        if value == "n" and have == "n":
            continue
        if have != value:
            lost[sym] = (value, have if sym in got else "(unset)")
    return lost


# --- Buildroot ------------------------------------------------------------------------------

@dataclass
class Configured:
    defconfig: Path
    outdir: Path
    config: dict[str, str]
    br: Path
    _cache: tuple | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.defconfig.name

    def printvars(self, *names: str) -> dict[str, str]:
        missing = [n for n in names if n not in PRINTVARS]
        if missing:
            raise KeyError(f"add {missing} to brtools.PRINTVARS")
        return {n: self._query()[0].get(n, "") for n in names}

    def show_info(self, package: str = "sipedge") -> dict:
        assert package == "sipedge", "only sipedge-show-info is queried"
        return self._query()[1]["sipedge"]

    def _query(self) -> tuple[dict[str, str], dict]:
        """One make run for printvars and sipedge-show-info: each parses all of Buildroot's
        package .mk files (seconds of CPU), so do it once per configuration."""
        if self._cache is None:
            out = run_make(self.br, self.outdir, "printvars", "sipedge-show-info",
                           "VARS=" + " ".join(PRINTVARS))
            values, info = {}, {}
            for line in out.splitlines():
                if line.startswith("{"):
                    info = json.loads(line)
                    continue
                key, sep, value = line.partition("=")
                if sep:
                    values[key] = value.strip()
            self._cache = (values, info)
        return self._cache


# Variables the checks read through `make printvars` (one call per defconfig).
PRINTVARS = (
    "SIPEDGE_SITE", "SIPEDGE_SITE_METHOD", "SIPEDGE_OVERRIDE_SRCDIR", "SIPEDGE_VERSION",
    "SIPEDGE_SETUP_TYPE", "SIPEDGE_DEPENDENCIES", "BR2_EXTERNAL_SIPEDGE_PATH",
    "LINUX_KCONFIG_DEFCONFIG", "LINUX_KCONFIG_FRAGMENT_FILES", "BUSYBOX_KCONFIG_FRAGMENT_FILES",
    "BR2_ROOTFS_OVERLAY", "BR2_ROOTFS_POST_BUILD_SCRIPT", "BR2_ROOTFS_POST_IMAGE_SCRIPT",
    "BR2_GLOBAL_PATCH_DIR", "LINUX_HASH_FILES", "LINUX_SOURCE", "RPI_FIRMWARE_FILES",
    "LINUX_IMAGE_NAME", "LINUX_DTS_NAME",
)


def configure(br: Path, defconfig: Path) -> Configured:
    outdir = CACHE / "br" / defconfig.name.removesuffix("_defconfig")
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    run_make(br, outdir, f"BR2_EXTERNAL={FW}", defconfig.name)
    return Configured(defconfig, outdir, read_dotconfig(outdir / ".config", "BR2_"), br)


_BR_INDEX: dict[Path, KconfigIndex] = {}


def buildroot_index(br: Path) -> KconfigIndex:
    if br not in _BR_INDEX:
        _BR_INDEX[br] = KconfigIndex.scan([br / d for d in ("arch", "boot", "fs", "linux", "package",
                                                         "system", "toolchain")] + [FW],
                                          names=("Config.in*",))
    return _BR_INDEX[br]


def symbol_report(cfg: Configured) -> list[str]:
    wanted = parse_defconfig(cfg.defconfig)
    index = buildroot_index(cfg.br)
    return [f"{sym}: wanted {want}, got {got}; {index.explain(sym, cfg.config)}"
            for sym, (want, got) in lost_symbols(wanted, cfg.config).items()]


def check_package_python() -> str:
    for py in ("/usr/bin/python3", sys.executable):
        res = subprocess.run([py, "-c", "import magic, flake8"], capture_output=True)
        if res.returncode == 0:
            return py
    raise Unavailable("utils/check-package needs python3-magic and python3-flake8 "
                      "(Debian packages, tests/apt-packages.txt)")


def check_package(br: Path) -> tuple[int, str]:
    """utils/check-package over the external tree and the board files, as Buildroot's
    `make check-package-external` runs it (with firmware/.checkpackageignore)."""
    py = check_package_python()
    if not shutil.which("shellcheck"):
        raise Unavailable("utils/check-package runs shellcheck (Debian package shellcheck)")
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others",
                            "--exclude-standard", "firmware", "board"],
                           capture_output=True, text=True, check=True).stdout.split()
    files = [str(REPO / f) for f in files if (REPO / f).exists()]
    ignore = FW / ".checkpackageignore"
    args = [py, str(br / "utils" / "check-package"), "--br2-external"]
    if ignore.exists():
        args.append(f"--ignore-list={ignore}")
    # cwd = Buildroot: its .flake8 (max-line-length) applies, as in `make check-package-external`
    res = subprocess.run(args + files, capture_output=True, text=True, cwd=br, timeout=300)
    return res.returncode, res.stdout + res.stderr


# --- Kernel ---------------------------------------------------------------------------------

def kernel_tree() -> Path:
    if not KERNEL_TARBALL.exists():
        raise Unavailable(f"{KERNEL_TARBALL} missing: apt-get install linux-source-6.12")
    for tool in ("flex", "bison", "gcc", "make"):
        if not shutil.which(tool):
            raise Unavailable(f"kernel Kconfig needs {tool} (apt-get install {tool})")
    stat = KERNEL_TARBALL.stat()
    key = f"{stat.st_size}-{int(stat.st_mtime)}"
    root = CACHE / "linux-kconfig"
    src = root / "linux-source-6.12"
    stamp = root / ".key"
    if stamp.exists() and stamp.read_text() == key and (src / "Makefile").exists():
        return src
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # Only what `make defconfig/olddefconfig` and merge_config.sh read: every Kconfig and
    # Makefile, scripts/, and the arch defconfigs (44 MB instead of 1.5 GB).
    subprocess.run(["tar", "-xJf", str(KERNEL_TARBALL), "-C", str(root), "--wildcards",
                    "*Kconfig*", "*Makefile*", "*.include", "linux-source-6.12/scripts/*",
                    "linux-source-6.12/arch/*/configs/*", "linux-source-6.12/arch/*/tools/*"],
                   check=True, timeout=600)
    stamp.write_text(key)
    return src


def kernel_version(config: dict[str, str]) -> tuple[int, ...] | None:
    value = unquote(config.get("BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE", ""))
    if value:
        return tuple(int(x) for x in re.findall(r"\d+", value)[:3])
    location = unquote(config.get("BR2_LINUX_KERNEL_CUSTOM_TARBALL_LOCATION", ""))
    for commit, version in KNOWN_TARBALL_VERSIONS.items():
        if commit in location:
            return version
    return None


def kernel_base(cfg: Configured) -> str:
    """The defconfig target of the board's kernel config, mapped onto mainline."""
    if cfg.config.get("BR2_LINUX_KERNEL_USE_ARCH_DEFAULT_CONFIG") == "y":
        return "defconfig"
    if cfg.config.get("BR2_LINUX_KERNEL_USE_DEFCONFIG") == "y":
        name = unquote(cfg.config["BR2_LINUX_KERNEL_DEFCONFIG"]) + "_defconfig"
        return MAINLINE_BASE.get(name, name)
    raise AssertionError(f"{cfg.name}: no kernel defconfig (custom config files are not handled)")


def kernel_arch(cfg: Configured) -> str:
    if cfg.config.get("BR2_aarch64") == "y":
        return "arm64"
    if cfg.config.get("BR2_x86_64") == "y":
        return "x86"
    if cfg.config.get("BR2_arm") == "y":
        return "arm"
    raise AssertionError(f"{cfg.name}: architecture not handled")


def fragment_files(cfg: Configured) -> list[Path]:
    value = unquote(cfg.config.get("BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES", ""))
    return [Path(p.replace(EXT_VAR, str(FW))).resolve() for p in value.split()]


def merge_kernel_fragments(ksrc: Path, cfg: Configured) -> tuple[dict[str, str], dict[str, str], Path]:
    """Base defconfig + our fragments (merge_config.sh) + olddefconfig. Returns
    (wanted symbols, resulting .config, build dir)."""
    arch, base = kernel_arch(cfg), kernel_base(cfg)
    kout = CACHE / "kernel" / cfg.defconfig.name.removesuffix("_defconfig")
    kout.mkdir(parents=True, exist_ok=True)
    env = {**clean_env(), "ARCH": arch}

    def kmake(*args):
        res = subprocess.run(["make", "-s", "-C", str(ksrc), f"O={kout}", f"ARCH={arch}", *args],
                             capture_output=True, text=True, env=env, timeout=600)
        assert res.returncode == 0, f"kernel make {args}: {res.stdout[-1500:]}{res.stderr[-2500:]}"

    kmake(base)
    frags = fragment_files(cfg)
    res = subprocess.run(["sh", str(ksrc / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(kout),
                          str(kout / ".config"), *map(str, frags)],
                         capture_output=True, text=True, env=env, timeout=120, cwd=ksrc)
    assert res.returncode == 0, f"merge_config.sh: {res.stdout[-1500:]}{res.stderr[-1500:]}"
    kmake("olddefconfig")
    wanted: dict[str, str] = {}
    for frag in frags:
        wanted.update(parse_defconfig(frag, "CONFIG_"))
    return wanted, read_dotconfig(kout / ".config", "CONFIG_"), kout


_K_INDEX: dict[Path, KconfigIndex] = {}


def kernel_report(ksrc: Path, cfg: Configured) -> list[str]:
    wanted, got, _ = merge_kernel_fragments(ksrc, cfg)
    if ksrc not in _K_INDEX:
        _K_INDEX[ksrc] = KconfigIndex.scan([ksrc], names=("Kconfig*",))
    index = _K_INDEX[ksrc]
    problems = [f"{sym}={want} -> {got_}; {index.explain(sym, got, 'CONFIG_')}"
                for sym, (want, got_) in lost_symbols(wanted, got).items()]
    version = kernel_version(cfg.config)
    for sym in wanted:
        gone = REMOVED_AFTER_6_12.get(sym.removeprefix("CONFIG_"))
        if gone and version and version >= gone[0]:
            problems.append(f"{sym}: does not exist in Linux {'.'.join(map(str, gone[0]))}+ "
                            f"({gone[1]}); the board's kernel is {'.'.join(map(str, version))}")
    return problems


# --- Disk images ------------------------------------------------------------------------------

@dataclass
class Partition:
    index: int
    bootable: bool
    type: int
    start: int  # bytes
    size: int   # bytes


def mbr(image: Path) -> tuple[int, list[Partition]]:
    with open(image, "rb") as fh:
        data = fh.read(512)
    assert data[510:512] == b"\x55\xaa", "no MBR boot signature"
    signature = int.from_bytes(data[440:444], "little")
    parts = []
    for i in range(4):
        e = data[446 + 16 * i: 462 + 16 * i]
        ptype = e[4]
        if ptype:
            parts.append(Partition(i + 1, e[0] == 0x80, ptype, int.from_bytes(e[8:12], "little") * 512,
                                   int.from_bytes(e[12:16], "little") * 512))
    return signature, parts


def fat_files(image: Path, offset: int) -> dict[str, int]:
    """Every file on the FAT file system at offset: path -> size (mtools, no mount)."""
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    res = subprocess.run(["mdir", "-i", f"{image}@@{offset}", "-/", "-a", "::"],
                         capture_output=True, text=True, env=env, check=True)
    files, cwd = {}, ""
    for line in res.stdout.splitlines():
        m = re.match(r"^Directory for ::/?(.*)$", line.strip())
        if m:
            cwd = m.group(1).strip("/")
            continue
        # long-name listing: NAME EXT SIZE DATE TIME LONGNAME
        m = re.match(r"^(\S+)\s+(\S*)\s+(<DIR>|\d+)\s+\S+\s+\S+\s*(.*)$", line)
        if not m or m.group(1) in (".", ".."):
            continue
        name = m.group(4).strip() or (m.group(1) + ("." + m.group(2) if m.group(2) else ""))
        if m.group(3) != "<DIR>":
            files[f"{cwd}/{name}".lstrip("/")] = int(m.group(3))
    return files


def fat_read(image: Path, offset: int, path: str) -> str:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    return subprocess.run(["mtype", "-i", f"{image}@@{offset}", f"::{path}"],
                          capture_output=True, text=True, env=env, check=True).stdout


def rpi_config_txt(path: Path) -> dict[str, list[str]]:
    """config.txt as key -> values (dtoverlay/dtparam repeat); conditional sections ignored."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key.strip(), []).append(value.strip())
    return values


def main(argv: list[str]) -> int:
    """Report for `make check-buildroot`: symbols, kernel fragments, check-package."""
    br = buildroot_tree()
    names = argv or [d.name for d in DEFCONFIGS]
    failed = 0
    for name in names:
        cfg = configure(br, FW / "configs" / name)
        problems = symbol_report(cfg)
        try:
            problems += kernel_report(kernel_tree(), cfg)
        except Unavailable as exc:
            print(f"{name}: kernel check skipped: {exc}")
        print(f"{name}: " + ("OK" if not problems else "\n  " + "\n  ".join(problems)))
        failed += bool(problems)
    rc, out = check_package(br)
    print("check-package:", "OK" if rc == 0 else out)
    return 1 if failed or rc else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
