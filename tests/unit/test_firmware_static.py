"""Static check of the Buildroot external tree (firmware/), the boards (board/) and the init
overlay (rootfs/). Buildroot cannot download sources on the CI machine, so this is what CI
can prove about the production recipe: every path a defconfig names exists, every selected
BR2_PACKAGE_* symbol exists in the pinned Buildroot (firmware/buildroot-packages.tsv), and
the kernel fragments carry the options the app needs. Standard library only; < 1 s.
"""
import csv
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from sipedge.appliance.leds import read_board_data  # what the supervisor reads on the box

REPO = Path(__file__).resolve().parents[2]
FW = REPO / "firmware"
BOARD = REPO / "board"
DEFCONFIGS = sorted((FW / "configs").glob("*_defconfig"))
EXT_VAR = "$(BR2_EXTERNAL_SIPEDGE_PATH)"

# Kernel options the app relies on (XFRM/ESP for sec-agree, watchdog, LEDs, I2C LCD, FAT boot).
REQUIRED_KERNEL = ("XFRM_USER", "INET_ESP", "INET6_ESP", "CRYPTO_AUTHENC", "WATCHDOG",
                   "LEDS_CLASS", "I2C", "I2C_CHARDEV", "VFAT_FS", "EXT4_FS", "DEVTMPFS")
WATCHDOG_DRIVERS = {"i6300esb": "I6300ESB_WDT", "bcm2835-wdt": "BCM2835_WDT", "softdog": "SOFT_WATCHDOG"}
META_KEYS = ("BOARD_ID", "DEBIAN_ARCH", "KERNEL_IMAGE", "CONSOLE", "MGMT_TTY", "DISK_SIGNATURE",
             "BOOT_OFFSET", "BOOT_SIZE", "ROOTFS_SIZE", "DATA_SIZE", "WATCHDOG_DEVICE")
REQUIRED_DEFCONFIGS = ("sipedge_raspberrypi4_64_defconfig", "sipedge_qemu_aarch64_virt_defconfig")


def parse_defconfig(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(BR2_\w+)=(.*)$", line.strip())
        if m:
            value = m.group(2)
            values[m.group(1)] = value[1:-1] if value.startswith('"') and value.endswith('"') else value
    return values


def known_symbols() -> dict[str, str]:
    """symbol -> status ('active' or 'legacy-removed-in-X'), pinned Buildroot plus our tree."""
    with open(FW / "buildroot-packages.tsv", newline="") as fh:
        rows = csv.DictReader((ln for ln in fh if not ln.startswith("#")), delimiter="\t")
        known = {r["symbol"]: r["status"] for r in rows}
    for cfg in FW.rglob("Config.in*"):
        for m in re.finditer(r"^\s*(?:menu)?config\s+(BR2_PACKAGE_\w+)", cfg.read_text(), re.M):
            known[m.group(1)] = "active"
    return known


def fragment_options(paths) -> dict[str, str]:
    opts = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            m = re.match(r"^CONFIG_(\w+)=(.*)$", line.strip())
            if m:
                opts[m.group(1)] = m.group(2)
    return opts


def expand(value: str) -> list[Path]:
    return [Path(p.replace(EXT_VAR, str(FW))).resolve() for p in value.split()]


def test_external_tree_layout():
    desc = (FW / "external.desc").read_text()
    assert re.search(r"^name: SIPEDGE$", desc, re.M)
    sourced = re.findall(r'source\s+"\$BR2_EXTERNAL_SIPEDGE_PATH/(.+)"', (FW / "Config.in").read_text())
    packages = sorted(p.parent.name for p in FW.glob("package/*/Config.in"))
    assert sorted(Path(s).parent.name for s in sourced) == packages
    assert all((FW / s).exists() for s in sourced)
    assert "package/*/*.mk" in (FW / "external.mk").read_text()
    for pkg in packages:
        for suffix in (".mk", ".hash"):
            assert (FW / "package" / pkg / f"{pkg}{suffix}").exists()
    assert {p.name for p in DEFCONFIGS} >= set(REQUIRED_DEFCONFIGS)


def test_buildroot_pinned_in_one_place():
    pin = (FW / "buildroot.mk").read_text()
    version = re.search(r"^BUILDROOT_VERSION = (\S+)$", pin, re.M).group(1)
    commit = re.search(r"^BUILDROOT_COMMIT = ([0-9a-f]{40})$", pin, re.M).group(1)
    header = "".join(ln for ln in (FW / "buildroot-packages.tsv").open() if ln.startswith("#"))
    assert version in header and commit in header, "package list recorded from another Buildroot"
    for path in [*FW.rglob("*"), *BOARD.rglob("*")]:
        if path.is_file() and path.name not in ("buildroot.mk", "buildroot-packages.tsv"):
            assert "BUILDROOT_VERSION =" not in path.read_text(errors="replace"), path


def test_sipedge_package_builds_the_local_app():
    mk = (FW / "package/sipedge/sipedge.mk").read_text()
    assert re.search(r"^SIPEDGE_SITE_METHOD = local$", mk, re.M)
    assert re.search(r"^SIPEDGE_SETUP_TYPE = setuptools$", mk, re.M)
    assert "$(eval $(python-package))" in mk
    # the compiled build: host Cython, and a module that does not compile fails the build
    assert re.search(r"^SIPEDGE_DEPENDENCIES = .*\bhost-python-cython\b", mk, re.M)
    assert re.search(r"^SIPEDGE_ENV = .*\bSIPEDGE_BUILD=compiled\b", mk, re.M)
    assert "BR2_PACKAGE_HOST_PYTHON_CYTHON" in known_symbols(), "no host-python-cython in Buildroot"
    site = re.search(r"^SIPEDGE_SITE = (.+)$", mk, re.M).group(1)
    assert (Path(site.replace("$(BR2_EXTERNAL_SIPEDGE_PATH)", str(FW))) / "pyproject.toml").exists()
    # A local package downloads nothing: its .hash must not pin a (stale) tarball.
    hashes = [ln for ln in (FW / "package/sipedge/sipedge.hash").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert hashes == []


@pytest.mark.parametrize("defconfig", DEFCONFIGS, ids=lambda p: p.name)
def test_defconfig_paths_exist(defconfig):
    values = parse_defconfig(defconfig)
    for key, value in values.items():
        if EXT_VAR in value:
            for path in expand(value):
                assert path.exists(), f"{defconfig.name}: {key} names missing {path}"
        elif key.endswith(("_FILE", "_FILES", "_OVERLAY", "_SCRIPT", "_TABLE", "_TABLES")) and value \
                and value != "y":  # a bool option named *_SCRIPT (HOST_UBOOT_TOOLS_BOOT_SCRIPT)
            pytest.fail(f"{defconfig.name}: {key}={value!r} is not below the sipedge tree; "
                        "it could not be checked offline")
    for key in ("BR2_ROOTFS_POST_BUILD_SCRIPT", "BR2_ROOTFS_POST_IMAGE_SCRIPT"):
        for script in expand(values[key]):
            assert script.stat().st_mode & 0o111, f"{script} is not executable"
    board_dir = expand(values["BR2_ROOTFS_POST_SCRIPT_ARGS"])[0]
    assert (board_dir / "meta").exists() and (board_dir / "genimage.cfg").exists()
    assert values.get("BR2_INIT_BUSYBOX") == "y", "rootfs/etc/inittab is written for BusyBox init"
    # python-pyudev (selected by the sipedge package) depends on BR2_PACKAGE_HAS_UDEV
    assert values.get("BR2_ROOTFS_DEVICE_CREATION_DYNAMIC_EUDEV") == "y", \
        "/dev management must be eudev: the sipedge package depends on udev"


@pytest.mark.parametrize("defconfig", DEFCONFIGS, ids=lambda p: p.name)
def test_defconfig_package_symbols_exist(defconfig):
    known = known_symbols()
    symbols = [k for k in parse_defconfig(defconfig) if k.startswith("BR2_PACKAGE_")]
    symbols += re.findall(r"^# (BR2_PACKAGE_\w+) is not set", defconfig.read_text(), re.M)
    problems = [f"{s}: {known.get(s, 'unknown')}" for s in symbols if known.get(s) != "active"]
    assert not problems, f"{defconfig.name}: " + ", ".join(problems)
    assert "BR2_PACKAGE_SIPEDGE" in symbols


def test_package_selects_exist_and_match_the_debian_image():
    known = known_symbols()
    text = (FW / "package/sipedge/Config.in").read_text()
    selects = re.findall(r"^\s*select\s+(BR2_PACKAGE_\w+)", text, re.M)
    depends = re.findall(r"\b(BR2_PACKAGE_\w+)", " ".join(re.findall(r"^\s*depends on (.+)$", text, re.M)))
    unknown = [s for s in selects + depends if known.get(s) != "active"]
    assert not unknown, unknown
    # The offline image must carry the same Python runtime dependencies.
    debian = (REPO / "tools/image/debian-packages.txt").read_text().split()
    for sym in selects:
        m = re.match(r"BR2_PACKAGE_PYTHON_(\w+)$", sym)
        if m:
            assert "python3-" + m.group(1).lower() in debian, f"{sym} has no Debian twin"


@pytest.mark.parametrize("defconfig", DEFCONFIGS, ids=lambda p: p.name)
def test_kernel_fragments_have_what_the_app_needs(defconfig):
    values = parse_defconfig(defconfig)
    fragments = expand(values["BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES"])
    assert fragments[0] == BOARD / "common/linux.fragment"
    opts = fragment_options(fragments)
    missing = [o for o in REQUIRED_KERNEL if opts.get(o) not in ("y", "m")]
    assert not missing, f"{defconfig.name}: fragments lack {missing}"
    meta = read_board_data(expand(values["BR2_ROOTFS_POST_SCRIPT_ARGS"])[0] / "meta")
    driver = WATCHDOG_DRIVERS[meta["WATCHDOG_DEVICE"]]
    assert opts.get(driver) in ("y", "m"), f"watchdog driver CONFIG_{driver} missing"


@pytest.mark.parametrize("board", sorted(p.parent for p in BOARD.glob("*/meta")), ids=lambda p: p.name)
def test_board_meta_and_layout(board):
    meta = read_board_data(board / "meta")
    assert not [k for k in META_KEYS if k not in meta]
    assert meta["BOARD_ID"] == board.name
    assert re.fullmatch(r"0x[0-9a-f]{8}", meta["DISK_SIGNATURE"])
    cfg = (board / "genimage.cfg").read_text()
    for var in re.findall(r"\$\{SIPEDGE_(\w+)\}", cfg):
        assert var in meta, f"genimage.cfg uses ${{SIPEDGE_{var}}} but meta has no {var}"
    partitions = re.findall(r"^\s*partition (\S+) \{", cfg, re.M)
    assert partitions == ["boot", "rootfs-a", "rootfs-b", "data"]
    assert '"sipedge.toml"' in cfg and "partition-type = 0xC" in cfg
    assert (board / "linux.fragment").exists()
    assert (BOARD / "common/sipedge.toml").exists()


def test_disk_signatures_are_unique():
    sigs = [read_board_data(m)["DISK_SIGNATURE"] for m in BOARD.glob("*/meta")]
    assert len(sigs) == len(set(sigs))


def test_inittab_runs_existing_scripts():
    overlay = REPO / "rootfs"
    for line in (overlay / "etc/inittab").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        _id, _runlevel, action, process = line.split(":", 3)
        prog = shlex.split(process)[0]
        if prog.startswith(("/etc/", "/usr/libexec/sipedge/")):
            assert (overlay / prog.lstrip("/")).stat().st_mode & 0o111, prog
    assert "::respawn:/usr/libexec/sipedge/run-supervisor" in (overlay / "etc/inittab").read_text()
    runner = (overlay / "usr/libexec/sipedge/run-supervisor").read_text()
    assert "sipedge-supervisor --boot-config" in runner and "sipedge --config" in runner


def test_shell_scripts_parse():
    scripts = [p for p in [*(REPO / "rootfs").rglob("*"), *BOARD.rglob("*.sh"),
                           *(REPO / "tools/image").glob("*.sh")]
               if p.is_file() and p.read_bytes()[:2] == b"#!" and b"sh" in p.read_bytes().split(b"\n")[0]]
    assert scripts
    for script in scripts:
        res = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert res.returncode == 0, f"{script}: {res.stderr}"
