"""Field updates in the arm64 guest booted by Debian's QEMU U-Boot (u-boot-qemu, -bios):
boot.scr picks the slot with RAUC's U-Boot variables (BOOT_ORDER, BOOT_x_LEFT in uboot.env on
the FAT), RAUC's U-Boot backend (fw_setenv) switches it. One install A->B from the channel,
reboot into B, marked good. Runs in `make test-arm64` (SIPEDGE_TEST_ARM64=1)."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from guest_helpers import REPO, TIMEOUT_MULTIPLIER, record
from test_ota_guest import (TOML_EXTRA, Channel, Disk, ctl, guestfwd, load_release,
                            variant_rootfs, wait_ctl, wait_install)

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(2400),
              pytest.mark.skipif(os.environ.get("SIPEDGE_TEST_ARM64") != "1",
                                 reason="arm64 A/B updates run in `make test-arm64` "
                                        "(SIPEDGE_TEST_ARM64=1)")]


def uboot_env(disk: Disk, tmp, *sets: str) -> dict[str, str]:
    env = disk.get("uboot.env", tmp / "uboot.env")
    cfg = tmp / "fw_env.config"
    cfg.write_text(f"{env} 0x0 0x4000\n")
    for kv in sets:
        k, _, v = kv.partition("=")
        subprocess.run(["fw_setenv", "-c", str(cfg), k, v], check=True)
    if sets:
        disk.put(env, "uboot.env")
    out = subprocess.run(["fw_printenv", "-c", str(cfg)], check=True, capture_output=True,
                         text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_userspace(g) -> None:
    """Type nothing on the console before init has run rcS. Seen on the first run: lines the
    harness typed on the PL011 console while the kernel booted (after U-Boot) were never
    echoed, and no later line got through either; typed after rcS, the shell answers. The
    amd64 guest's 16550 keeps early input."""
    g.console.expect(rb"sipedge-init: rauc service ready", timeout=600 * TIMEOUT_MULTIPLIER)
    g.wait_shell(timeout=600 * TIMEOUT_MULTIPLIER)


def boot(image, workdir, disk, name, port=None):
    from sipedge_vm import UBOOT_ARM64, Guest
    if not os.path.exists(UBOOT_ARM64):
        pytest.skip("needs u-boot-qemu (tests/apt-packages.txt)")
    g = Guest(image, workdir, name=name, firmware_boot=True, disk=disk.path,
              timeout_s=1200 * TIMEOUT_MULTIPLIER,
              guestfwd=(guestfwd(port),) if port else ())
    g.start()
    return g


def test_arm64_install_reboot_mark_good(sipedge_image_arm64, tmp_path):
    image = sipedge_image_arm64
    if image.manifest.get("bootloader") != "uboot":
        pytest.skip("arm64 image without the U-Boot A/B boot")
    rel = load_release()
    disk = Disk(image, tmp_path / "disk.img")
    toml = disk.get("sipedge.toml", tmp_path / "sipedge.toml")
    toml.write_text(toml.read_text() + TOML_EXTRA.format(trial=900))
    disk.put(toml, "sipedge.toml")
    uboot_env(disk, tmp_path, "sipedge_extra=quiet sipedge.autologin")
    v1 = image.manifest["version"]
    v2 = v1.split("+")[0] + "+99990101000000"
    t0 = time.monotonic()
    good = rel.make_bundle(variant_rootfs(disk, tmp_path / "rootfs2.ext4", v2), "qemu-aarch64",
                           v2, tmp_path / "good.raucb")
    record("bundle build arm64", f"{time.monotonic() - t0:.0f} s, "
           f"{good.stat().st_size / 2**20:.1f} MiB")
    chan = tmp_path / "channels"
    rel.publish(chan, "nightly", good)
    server = Channel(chan)
    try:
        g = boot(image, tmp_path, disk, "arm-a", server.port)
        try:
            g.console.expect(b"sipedge-boot: slot A", timeout=180)
            wait_userspace(g)
            st = wait_ctl(g, timeout=600)
            assert st["booted"] == "A" and st["version"] == v1, st
            t1 = time.monotonic()
            ctl(g, "update.install",
                source=f"http://10.0.2.100:8080/bundles/sipedge-qemu-aarch64-"
                       f"{v2.replace('+', '_')}.raucb")
            p = wait_install(g, timeout=1200)
            assert p["ok"], p
            record("install arm64 (download + check + rauc install, TCG)",
                   f"{time.monotonic() - t1:.0f} s")
            g.shell("sync; reboot", timeout=30)
            g.wait_exit(180)
        finally:
            g.stop()
        env = uboot_env(disk, tmp_path)
        assert env["BOOT_ORDER"] == "B A", env
        t2 = time.monotonic()
        g = boot(image, tmp_path, disk, "arm-b")
        try:
            g.console.expect(b"sipedge-boot: slot B", timeout=180)
            wait_userspace(g)
            deadline = time.monotonic() + 600 * TIMEOUT_MULTIPLIER
            while True:
                st = wait_ctl(g, timeout=600)
                if st["marked_good"] or time.monotonic() > deadline:
                    break
                time.sleep(3)
            record("reboot-to-marked-good arm64 (TCG, mark_good_after_s=10)",
                   f"{time.monotonic() - t2:.0f} s")
            assert st["booted"] == "B" and st["version"] == v2 and st["marked_good"], st
            g.shell("sync; poweroff", timeout=30)
            g.wait_exit(180)
        finally:
            g.stop()
        env = uboot_env(disk, tmp_path)
        assert env["BOOT_B_LEFT"] == "3" and env["BOOT_ORDER"] == "B A", env
    finally:
        server.close()
