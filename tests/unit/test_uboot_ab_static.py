"""The U-Boot A/B boot of the boards that use it, checked without the hardware (issue 12).

The arm64 QEMU image's boot.cmd is booted by tests/system/test_ota_arm64.py (make
test-arm64). The Raspberry Pi 4's cannot be: there is no Pi here and Buildroot cannot
download. What can be proved about it is proved here: its boot script compiles with U-Boot's
mkimage and counts tries with RAUC's variables like the booted QEMU one; the environment
U-Boot keeps (uboot.fragment: file, partition, size) is the one Linux's fw_setenv rewrites
(/etc/fw_env.config from board/common/post-build.sh) and the one the card starts with
(uboot-env.txt, the defconfig's environment image); the kernel the script loads from the
slot is installed there; RAUC and its U-Boot backend are in the image. Standard library
and mkimage (u-boot-tools); well under a second.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sipedge.appliance.leds import read_board_data
from test_firmware_static import BOARD, FW, fragment_options, parse_defconfig

UBOOT_BOARDS = sorted(m.parent for m in BOARD.glob("*/meta")
                      if read_board_data(m).get("BOOTLOADER") == "uboot")
PI = BOARD / "raspberrypi4_64"
REPO_ROOT = BOARD.parent
PI_DEFCONFIG = FW / "configs/sipedge_raspberrypi4_64_defconfig"


def script_lines(board: Path) -> list[str]:
    return [ln.strip() for ln in (board / "boot.cmd").read_text().splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def test_both_arm64_boards_boot_through_uboot():
    assert {b.name for b in UBOOT_BOARDS} == {"raspberrypi4_64", "qemu-aarch64"}


@pytest.mark.parametrize("board", UBOOT_BOARDS, ids=lambda p: p.name)
def test_boot_script_counts_tries_with_raucs_variables(board, tmp_path):
    lines = script_lines(board)
    body = "\n".join(lines)
    # RAUC's U-Boot backend names: the order and a try counter per slot, 3 tries
    assert 'test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"' in lines
    for slot, part in (("A", 2), ("B", 3)):
        assert f"test -n \"${{BOOT_{slot}_LEFT}}\" || setenv BOOT_{slot}_LEFT 3" in lines
        i = lines.index(f"if test ${{BOOT_{slot}_LEFT}} -gt 0; then")
        assert lines[i + 1:i + 4] == [f"setexpr BOOT_{slot}_LEFT ${{BOOT_{slot}_LEFT}} - 1",
                                      f"setenv bootpart {part}", f"setenv raucslot {slot}"]
    assert "for BOOT_SLOT in ${BOOT_ORDER}; do" in lines
    # the spent try is written back before the kernel starts (a hang still costs it)
    boot = next(i for i, ln in enumerate(lines) if ln.startswith("booti "))
    writes = [i for i, ln in enumerate(lines) if ln == "saveenv" or ln.startswith("fatwrite ")]
    assert writes and min(writes) < boot
    # the kernel comes from the booted slot's partition, and Linux learns the slot
    load = re.search(r"^load \w+ 0:\$\{bootpart\} \$\{kernel_addr_r\} (\S+)$", body, re.M)
    assert load, body
    bootargs = next(ln for ln in lines if ln.startswith("setenv bootargs "))
    assert "rauc.slot=${raucslot}" in bootargs and "panic=10" in bootargs
    # booti returns only when the slot's kernel cannot start: reset, never a prompt
    assert "reset" in lines[boot + 1:]
    if shutil.which("mkimage") is None:
        pytest.skip("mkimage missing (u-boot-tools, tests/apt-packages.txt)")
    res = subprocess.run(["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-d",
                          str(board / "boot.cmd"), str(tmp_path / "boot.scr")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_raspberry_pi_environment_is_the_one_linux_rewrites():
    frag = fragment_options([PI / "uboot.fragment"])
    assert frag["ENV_IS_IN_FAT"] == "y"
    assert frag.get("SYS_REDUNDAND_ENVIRONMENT", "n") == "n"  # one copy, as fw_env.config
    assert frag["ENV_FAT_INTERFACE"] == '"mmc"'
    assert frag["ENV_FAT_DEVICE_AND_PART"] == '"0:1"'  # the FAT is partition 1
    genimage = (PI / "genimage.cfg").read_text()
    assert re.findall(r"^\s*partition (\S+) \{", genimage, re.M)[0] == "boot"
    env_file = frag["ENV_FAT_FILE"].strip('"')
    size = int(frag["ENV_SIZE"], 16)
    assert frag["CMD_SETEXPR"] == "y"  # the script's counting
    # Linux: S00mount mounts partition 1 at /boot; fw_setenv (RAUC's backend) uses this
    post = (BOARD / "common/post-build.sh").read_text()
    m = re.search(r'echo "(\S+) 0x0 (0x[0-9a-fA-F]+)" >"\$target/etc/fw_env.config"', post)
    assert m and m.group(1) == f"/boot/{env_file}" and int(m.group(2), 16) == size
    assert "mount_once /boot -t vfat" in (REPO_ROOT / "rootfs/etc/init.d/S00mount").read_text()
    # the card starts with that environment: same size, the script's defaults
    d = parse_defconfig(PI_DEFCONFIG)
    assert int(d["BR2_PACKAGE_HOST_UBOOT_TOOLS_ENVIMAGE_SIZE"], 16) == size
    assert d["BR2_PACKAGE_HOST_UBOOT_TOOLS_ENVIMAGE_SOURCE"].endswith(
        "board/raspberrypi4_64/uboot-env.txt")
    env = dict(ln.split("=", 1) for ln in (PI / "uboot-env.txt").read_text().splitlines()
               if "=" in ln and not ln.startswith("#"))
    assert env == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}
    assert d["BR2_PACKAGE_HOST_UBOOT_TOOLS_BOOT_SCRIPT_SOURCE"].endswith(
        "board/raspberrypi4_64/boot.cmd")
    for f in ('"u-boot.bin"', '"boot.scr"', f'"{env_file}"'):
        assert f in genimage, f
    assert re.search(r"^kernel=u-boot\.bin$", (PI / "config.txt").read_text(), re.M)


def test_raspberry_pi_slot_kernel_and_rauc_are_in_the_image():
    d = parse_defconfig(PI_DEFCONFIG)
    meta = read_board_data(PI / "meta")
    # boot.cmd loads the kernel from the slot's /boot: Buildroot installs it there
    load = next(ln for ln in script_lines(PI) if ln.startswith("load mmc 0:${bootpart}"))
    assert load.endswith(f"/boot/{meta['KERNEL_IMAGE']}")
    assert d["BR2_LINUX_KERNEL_INSTALL_TARGET"] == "y"
    assert d["BR2_TARGET_UBOOT"] == "y" and d["BR2_TARGET_UBOOT_BOARD_DEFCONFIG"] == "rpi_arm64"
    for sym in ("BR2_PACKAGE_RAUC", "BR2_PACKAGE_RAUC_DBUS", "BR2_PACKAGE_LIBUBOOTENV",
                "BR2_PACKAGE_SQUASHFS", "BR2_PACKAGE_HOST_RAUC"):
        assert d.get(sym) == "y", sym
    # system.conf from post-build: the board's bootloader, slots = partitions 2 and 3,
    # the partitions the script boots (root=/dev/mmcblk0p${bootpart})
    assert meta["BOOTLOADER"] == "uboot"
    post = (BOARD / "common/post-build.sh").read_text()
    assert 'echo "bootloader=${bootloader:-uboot}"' in post
    assert 'device=/dev/disk/by-partuuid/$sig-02' in post and "bootname=A" in post
    assert 'device=/dev/disk/by-partuuid/$sig-03' in post and "bootname=B" in post
    bootargs = next(ln for ln in script_lines(PI) if ln.startswith("setenv bootargs "))
    assert "root=/dev/mmcblk0p${bootpart}" in bootargs

