"""The Buildroot tree checked by the pinned Buildroot's own tools, offline (issue 13).

tests/unit/test_firmware_static.py reads our files; this module runs the real tools on them:
Buildroot 2026.02.3's Kconfig (`make <defconfig>`), `printvars`, `sipedge-show-info` and
`utils/check-package`; the kernel's `merge_config.sh` + `olddefconfig` with our fragments on
Debian's linux-source-6.12; genimage + mtools on the Raspberry Pi card layout.

Version gaps (a kernel tree for each board cannot be downloaded here):
- Raspberry Pi 4: the board builds raspberrypi/linux 21b410140c47 (6.12.61) from
  bcm2711_defconfig; the check uses mainline 6.12 (Debian 6.12.118) with arm64 `defconfig`,
  which also enables the BCM2711 drivers. RPi-only symbols would show up as lost here.
- QEMU aarch64: the board builds 6.18.7 with arm64 `defconfig`; the check runs 6.12 plus
  brtools.REMOVED_AFTER_6_12, the symbols known to be gone in between.
Where Buildroot (no ../shared tarball, no clone possible) or a Debian tool is missing, the
tests skip and say what to install. Times: first run about 90 s (unpacking), then about 50 s.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import brtools
from brtools import BOARD, DEFCONFIGS, FW, REPO, Unavailable

DEFCONFIG_IDS = [d.name for d in DEFCONFIGS]


@pytest.fixture(scope="session")
def br() -> Path:
    try:
        return brtools.buildroot_tree()
    except Unavailable as exc:
        pytest.skip(f"pinned Buildroot not available: {exc}")


_CONFIGURED: dict[str, brtools.Configured] = {}


@pytest.fixture(params=DEFCONFIGS, ids=DEFCONFIG_IDS)
def cfg(request, br) -> brtools.Configured:
    name = request.param.name
    if name not in _CONFIGURED:
        _CONFIGURED[name] = brtools.configure(br, request.param)
    return _CONFIGURED[name]


@pytest.fixture(scope="session")
def ksrc() -> Path:
    try:
        return brtools.kernel_tree()
    except Unavailable as exc:
        pytest.skip(str(exc))


def board_dir(cfg) -> Path:
    args = brtools.unquote(cfg.config["BR2_ROOTFS_POST_SCRIPT_ARGS"])
    return Path(args.split()[0].replace(brtools.EXT_VAR, str(FW))).resolve()


def meta(board: Path) -> dict[str, str]:
    from sipedge.appliance.leds import read_board_data  # what the supervisor reads on the box
    return read_board_data(board / "meta")


def size_bytes(value: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", value)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


# --- Buildroot Kconfig -----------------------------------------------------------------------

def test_every_symbol_we_set_survives_kconfig(cfg):
    problems = brtools.symbol_report(cfg)
    assert not problems, f"{cfg.name}: Buildroot's Kconfig changed what we set:\n  " + "\n  ".join(problems)
    assert cfg.config.get("BR2_LEGACY") != "y", f"{cfg.name} sets a legacy (removed) option"


def test_a_dropped_symbol_is_reported_with_its_unmet_dependency(br, tmp_path):
    """The check itself: KMOD_TOOLS without BUSYBOX_SHOW_OTHERS (defect 3 of issue 13)."""
    ext = tmp_path / "firmware"
    shutil.copytree(FW, ext, ignore=shutil.ignore_patterns("configs"))
    (ext / "configs").mkdir()
    src = FW / "configs" / "sipedge_qemu_aarch64_virt_defconfig"
    text = src.read_text().replace("BR2_PACKAGE_BUSYBOX_SHOW_OTHERS=y\n", "")
    text = text.replace(brtools.EXT_VAR + "/..", str(REPO))
    bad = ext / "configs" / "sipedge_broken_defconfig"
    bad.write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    brtools.run_make(br, out, f"BR2_EXTERNAL={ext}", bad.name)
    cfg = brtools.Configured(bad, out, brtools.read_dotconfig(out / ".config", "BR2_"), br)
    report = "\n".join(brtools.symbol_report(cfg))
    assert "BR2_PACKAGE_KMOD_TOOLS: wanted y, got (unset)" in report
    assert "BR2_PACKAGE_BUSYBOX_SHOW_OTHERS=n" in report


def test_printvars_resolve_into_our_tree(cfg):
    v = cfg.printvars("SIPEDGE_SITE", "SIPEDGE_SITE_METHOD", "SIPEDGE_OVERRIDE_SRCDIR",
                      "SIPEDGE_VERSION", "SIPEDGE_SETUP_TYPE", "SIPEDGE_DEPENDENCIES",
                      "BR2_EXTERNAL_SIPEDGE_PATH", "LINUX_KCONFIG_DEFCONFIG",
                      "LINUX_KCONFIG_FRAGMENT_FILES", "BUSYBOX_KCONFIG_FRAGMENT_FILES",
                      "BR2_ROOTFS_OVERLAY", "BR2_ROOTFS_POST_BUILD_SCRIPT",
                      "BR2_ROOTFS_POST_IMAGE_SCRIPT", "BR2_GLOBAL_PATCH_DIR")
    assert Path(v["BR2_EXTERNAL_SIPEDGE_PATH"]) == FW
    assert Path(v["SIPEDGE_SITE"]).resolve() == REPO / "app"
    assert Path(v["SIPEDGE_OVERRIDE_SRCDIR"]).resolve() == REPO / "app"
    assert v["SIPEDGE_SITE_METHOD"] == "local" and v["SIPEDGE_SETUP_TYPE"] == "setuptools"
    version = re.search(r'^__version__ = "(.+)"', (REPO / "app/sipedge/__init__.py").read_text(), re.M)
    assert v["SIPEDGE_VERSION"] == version.group(1)
    assert {"python3", "host-python-setuptools"} <= set(v["SIPEDGE_DEPENDENCIES"].split())
    # the compiled build (app/setup.py) needs host Cython; pure Python would ship without it
    assert "host-python-cython" in v["SIPEDGE_DEPENDENCIES"].split()
    # Buildroot appends _defconfig itself: "defconfig" there gave "defconfig_defconfig" (defect 1)
    assert v["LINUX_KCONFIG_DEFCONFIG"].count("defconfig") == 1, v["LINUX_KCONFIG_DEFCONFIG"]
    for key in ("LINUX_KCONFIG_FRAGMENT_FILES", "BUSYBOX_KCONFIG_FRAGMENT_FILES", "BR2_ROOTFS_OVERLAY",
                "BR2_ROOTFS_POST_BUILD_SCRIPT", "BR2_ROOTFS_POST_IMAGE_SCRIPT", "BR2_GLOBAL_PATCH_DIR"):
        paths = brtools.unquote(v[key]).split()
        assert paths, f"{cfg.name}: {key} is empty"
        for path in paths:
            assert Path(path).exists(), f"{cfg.name}: {key} -> {path} does not exist"
            assert Path(path).resolve().is_relative_to(REPO), f"{key} -> {path} outside the tree"


def test_sipedge_show_info(cfg):
    info = cfg.show_info("sipedge")
    assert info["type"] == "target" and info["name"] == "sipedge"
    assert info["install_target"] is True
    assert info["package_dir"] == str(FW / "package/sipedge")
    assert info["downloads"][0]["uris"][0].startswith("local+")
    assert "python3" in info["dependencies"]
    # every runtime module the package selects is in the configuration
    selects = re.findall(r"^\s*select\s+(BR2_PACKAGE_\w+)", (FW / "package/sipedge/Config.in").read_text(), re.M)
    assert [s for s in selects if cfg.config.get(s) != "y"] == []


def test_downloads_are_hash_checked(cfg):
    """Defect 6: kernel tarballs get a hash from our BR2_GLOBAL_PATCH_DIR, and Buildroot refuses
    any download without one."""
    assert cfg.config.get("BR2_DOWNLOAD_FORCE_CHECK_HASHES") == "y"
    v = cfg.printvars("LINUX_HASH_FILES", "LINUX_SOURCE")
    ours = [Path(p) for p in v["LINUX_HASH_FILES"].split() if Path(p).is_relative_to(REPO)]
    assert ours, f"{cfg.name}: no linux.hash from our tree in {v['LINUX_HASH_FILES']}"
    lines = "\n".join(p.read_text() for p in ours if p.exists())
    assert re.search(rf"^sha256\s+[0-9a-f]{{64}}\s+{re.escape(v['LINUX_SOURCE'])}$", lines, re.M), \
        f"{cfg.name}: no sha256 for {v['LINUX_SOURCE']} in {ours}"


def test_kmod_reads_the_module_compression_the_kernel_uses(cfg):
    """Defect 2: compressed modules need kmod built with that decompressor, target and host."""
    frags = {}
    for frag in brtools.fragment_files(cfg):
        frags.update(brtools.parse_defconfig(frag, "CONFIG_"))
    for algo, pkg in (("XZ", "XZ"), ("ZSTD", "ZSTD"), ("GZIP", "ZLIB")):
        if frags.get(f"CONFIG_MODULE_COMPRESS_{algo}") == "y":
            host = {"GZIP": "GZ"}.get(algo, algo)
            assert cfg.config.get(f"BR2_PACKAGE_{pkg}") == "y", f"{cfg.name}: modprobe cannot read .ko.{algo.lower()}"
            assert cfg.config.get(f"BR2_PACKAGE_HOST_KMOD_{host}") == "y", f"{cfg.name}: depmod cannot index .ko.{algo.lower()}"
    assert cfg.config.get("BR2_PACKAGE_KMOD_TOOLS") == "y", "BusyBox modprobe instead of kmod"


def test_raspberry_pi_boot_files_match_the_firmware_package(cfg):
    """Defects 4 and 5, and the Pi firmware rules: start_file/fixup_file are a matched pair and
    must be installed by rpi-firmware; gpu_mem=16 is the cut-down firmware's setting; the kernel
    and DTB names are what the kernel build installs; dtoverlay=uart2 is ttyAMA2 on >= 6.1."""
    if cfg.config.get("BR2_PACKAGE_RPI_FIRMWARE") != "y":
        pytest.skip("not a Raspberry Pi defconfig")
    board = board_dir(cfg)
    txt = brtools.rpi_config_txt(board / "config.txt")
    v = cfg.printvars("RPI_FIRMWARE_FILES", "LINUX_IMAGE_NAME", "LINUX_DTS_NAME")
    installed = set(v["RPI_FIRMWARE_FILES"].split())
    start, fixup = txt["start_file"][-1], txt["fixup_file"][-1]
    assert start in installed and fixup in installed, f"{start}/{fixup} not installed: {installed}"
    assert re.sub(r"^start", "", start).removesuffix(".elf") == re.sub(r"^fixup", "", fixup).removesuffix(".dat")
    if txt.get("gpu_mem", [""])[-1] == "16":
        assert start.endswith("cd.elf"), "gpu_mem=16 makes the firmware use the cut-down start*cd.elf"
    assert v["LINUX_IMAGE_NAME"] == meta(board)["KERNEL_IMAGE"]
    assert txt.get("arm_64bit") == ["1"]
    cfg_text = (board / "genimage.cfg").read_text()
    files = re.findall(r'"([^"]+)"', re.search(r"files = \{(.*?)\}", cfg_text, re.S).group(1))
    if cfg.config.get("BR2_TARGET_UBOOT") == "y":
        # A/B boot (issue 12): the firmware starts U-Boot, whose boot.scr loads the slot's kernel
        assert txt["kernel"][-1] == "u-boot.bin" and meta(board).get("BOOTLOADER") == "uboot"
        assert {"u-boot.bin", "boot.scr", "uboot.env"} <= set(files), files
    else:
        assert txt["kernel"][-1] == v["LINUX_IMAGE_NAME"]
    dtbs = {Path(n).name + ".dtb" for n in v["LINUX_DTS_NAME"].split()}
    for f in files:
        if f.startswith("rpi-firmware/"):
            name = f.removeprefix("rpi-firmware/")
            assert name in installed or (name == "overlays" and
                                         cfg.config.get("BR2_PACKAGE_RPI_FIRMWARE_INSTALL_DTB_OVERLAYS") == "y"), f
        elif f.endswith(".dtb"):
            assert f in dtbs, f"{f} is not built by the kernel ({sorted(dtbs)})"
    assert {"bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4.dtb"} <= dtbs
    if "uart2" in txt.get("dtoverlay", []):
        assert meta(board)["MGMT_TTY"] == "ttyAMA2"


# --- utils/check-package ---------------------------------------------------------------------

def test_check_package_on_the_external_tree(br):
    try:
        rc, out = brtools.check_package(br)
    except Unavailable as exc:
        pytest.skip(str(exc))
    assert rc == 0, out
    assert "lines processed" in out


def test_busybox_fragment_symbols_exist_in_the_pinned_busybox_config(br):
    """board/common/busybox.fragment is merged onto Buildroot's package/busybox/busybox.config
    (a full .config of the pinned BusyBox: every symbol is listed, set or "is not set"); a
    symbol it does not know would be dropped without a word."""
    known = set(re.findall(r"^(?:# )?(CONFIG_[A-Z0-9_]+)[= ]",
                           (br / "package/busybox/busybox.config").read_text(), re.M))
    fragment = (REPO / "board/common/busybox.fragment").read_text()
    ours = set(re.findall(r"^(?:# )?(CONFIG_[A-Z0-9_]+)[= ]", fragment, re.M))
    assert ours and not ours - known, f"unknown BusyBox symbols: {sorted(ours - known)}"


# --- kernel fragments ------------------------------------------------------------------------

@pytest.mark.timeout(900)
def test_kernel_fragments_survive_olddefconfig(cfg, ksrc):
    problems = brtools.kernel_report(ksrc, cfg)
    assert not problems, (f"{cfg.name}: fragment symbols lost on Linux 6.12 ("
                          f"{brtools.kernel_base(cfg)} + fragments + olddefconfig):\n  " + "\n  ".join(problems))


def test_removed_kernel_symbols_are_caught_for_newer_kernels():
    """The 6.12 run cannot see symbols removed later; the table covers the 6.18 board."""
    assert brtools.REMOVED_AFTER_6_12["CRYPTO_SHA2_ARM64_CE"][0] <= (6, 18)
    assert brtools.kernel_version({"BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE": '"6.18.7"'}) == (6, 18, 7)


# --- genimage on the Raspberry Pi layout -----------------------------------------------------

@pytest.mark.timeout(300)
def test_genimage_raspberry_pi_card(br, tmp_path):
    """board/common/post-image.sh + genimage (Debian's v16; Buildroot builds v19) with stand-ins
    for what Buildroot installs into images/: partition table and FAT contents."""
    for tool in ("genimage", "mkdosfs", "mcopy", "mke2fs"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing (tests/apt-packages.txt: genimage dosfstools mtools e2fsprogs)")
    defconfig = FW / "configs" / "sipedge_raspberrypi4_64_defconfig"
    cfg = _CONFIGURED.get(defconfig.name) or brtools.configure(br, defconfig)
    board = board_dir(cfg)
    m = meta(board)
    txt = brtools.rpi_config_txt(board / "config.txt")
    v = cfg.printvars("RPI_FIRMWARE_FILES", "LINUX_IMAGE_NAME", "LINUX_DTS_NAME")
    images = tmp_path / "images"
    (images / "rpi-firmware" / "overlays").mkdir(parents=True)
    for name in v["RPI_FIRMWARE_FILES"].split():
        (images / "rpi-firmware" / name).write_bytes(b"stand-in " + name.encode())
    for overlay in txt.get("dtoverlay", []):
        (images / "rpi-firmware/overlays" / f"{overlay.split(',')[0]}.dtbo").write_bytes(b"dtbo")
    (images / "rpi-firmware/overlays/overlay_map.dtb").write_bytes(b"map")
    (images / "rpi-firmware/overlays/README").write_text("")
    for dts in v["LINUX_DTS_NAME"].split():
        (images / (Path(dts).name + ".dtb")).write_bytes(b"dtb")
    (images / v["LINUX_IMAGE_NAME"]).write_bytes(b"kernel" * 1000)
    # Files the layout names that no stand-in above covers (another boot path's files) get one.
    cfg_text = (board / "genimage.cfg").read_text()
    for f in re.findall(r'"([^"]+)"', re.search(r"files = \{(.*?)\}", cfg_text, re.S).group(1)):
        if not (images / f).exists() and f not in ("config.txt", "cmdline.txt", "sipedge.toml"):
            (images / f).write_bytes(b"stand-in")
    rootdir = tmp_path / "rootfs"
    (rootdir / "etc").mkdir(parents=True)
    (rootdir / "etc/os-release").write_text("NAME=sipedge\n")
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(rootdir), str(images / "rootfs.ext4"), "8M"],
                   check=True)
    build = tmp_path / "build"
    build.mkdir()
    res = subprocess.run(["sh", str(BOARD / "common/post-image.sh"), str(images), str(board)],
                         capture_output=True, text=True, env={**brtools.clean_env(), "BUILD_DIR": str(build)},
                         timeout=240)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    card = images / "sdcard.img"
    signature, parts = brtools.mbr(card)
    assert signature == int(m["DISK_SIGNATURE"], 16)
    assert [(p.type, p.bootable) for p in parts] == [(0x0C, True), (0x83, False), (0x83, False), (0x83, False)]
    boot, root_a, root_b, data = parts
    assert boot.start == size_bytes(m["BOOT_OFFSET"]) and boot.size == size_bytes(m["BOOT_SIZE"])
    assert root_a.size == root_b.size == size_bytes(m["ROOTFS_SIZE"])
    assert data.size == size_bytes(m["DATA_SIZE"])
    assert boot.start + boot.size <= root_a.start < root_b.start < data.start
    fat = brtools.fat_files(card, boot.start)
    must = {"config.txt", "cmdline.txt", "sipedge.toml", txt["kernel"][-1], txt["start_file"][-1],
            txt["fixup_file"][-1], "bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4.dtb"}
    must |= {f"overlays/{o.split(',')[0]}.dtbo" for o in txt.get("dtoverlay", [])}
    assert must <= set(fat), f"missing on the FAT: {sorted(must - set(fat))} (has {sorted(fat)})"
    assert brtools.fat_read(card, boot.start, "config.txt") == (board / "config.txt").read_text()
    cmdline = brtools.fat_read(card, boot.start, "cmdline.txt")
    assert len(cmdline.strip().splitlines()) == 1, "the firmware reads cmdline.txt as one line"
    assert "console=serial0,115200" in cmdline
    # the FAT label the docs tell users to look for
    label = subprocess.run(["mlabel", "-s", "-i", f"{card}@@{boot.start}", "::"], capture_output=True,
                           text=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout
    assert "SIPEDGE" in label
