"""Field updates in the arm64 guest booted by Debian's QEMU U-Boot (u-boot-qemu, -bios):
boot.scr picks the slot with RAUC's U-Boot variables (BOOT_ORDER, BOOT_x_LEFT in uboot.env on
the FAT), RAUC's U-Boot backend (fw_setenv) switches it. Runs in `make test-arm64`
(SIPEDGE_TEST_ARM64=1):

- test_arm64_install_reboot_mark_good: one install A->B from the channel, reboot into B,
  B marked good.
- test_arm64_power_cut_and_rollbacks: one disk, the scenarios chained so that the boot that
  checks one outcome starts the next install (arm64 TCG boots are slow): QEMU killed while
  RAUC writes B -> A boots, B not marked good, no rollback reported; a bundle whose proxy
  never gets healthy -> B, B, B, then U-Boot is back on A by itself and A reports the
  rollback; a bundle whose kernel panics (garbage initrd) -> the same.

Each guest reset ends QEMU (-no-reboot) and the test boots the same disk again, so U-Boot's
counting in uboot.env is what chooses the slot."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from guest_helpers import REPO, TIMEOUT_MULTIPLIER, record
from test_ota_guest import (TOML_EXTRA, Channel, Disk, ctl, guestfwd, load_release,
                            variant_rootfs, wait_ctl, wait_install, wait_rauc_writing)

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
    toml_bytes = toml.read_bytes()
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
            # a file of the operator's on /data: the update must leave it alone
            g.shell("echo 'kept across the update' > /data/keep-me; sync", check=True)
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
            _rc, out = g.shell("cat /data/keep-me", check=True)
            assert out.strip() == "kept across the update", out
            g.shell("sync; poweroff", timeout=30)
            g.wait_exit(180)
        finally:
            g.stop()
        env = uboot_env(disk, tmp_path)
        assert env["BOOT_B_LEFT"] == "3" and env["BOOT_ORDER"] == "B A", env
        # the config file on the FAT is the operator's: byte for byte the same
        assert disk.get("sipedge.toml", tmp_path / "after.toml").read_bytes() == toml_bytes
    finally:
        server.close()


def boots_until_a(image, workdir, disk, prefix, on_b, port=None, tries=5):
    """Boot the disk again and again until U-Boot picks slot A by itself; each boot of B
    is left to end on its own (`on_b(guest)` waits for that: the supervisor's reboot, a
    kernel panic's). Returns (slots seen, the started guest on A, seconds from the first
    boot to U-Boot's choice of A)."""
    t0 = time.monotonic()
    slots = []
    for i in range(tries):
        g = boot(image, workdir, disk, f"{prefix}-{i}", port)
        try:
            m = g.console.expect(rb"sipedge-boot: slot ([AB])", timeout=180 * TIMEOUT_MULTIPLIER)
            slots.append(m.group(1).decode())
            if slots[-1] == "A":
                return slots, g, time.monotonic() - t0
            on_b(g)
        except BaseException:
            g.stop()
            raise
        g.stop()
    raise AssertionError(f"U-Boot never went back to A: slots {slots}")


def kernel_panic_rootfs(image, out: Path, version: str) -> Path:
    """A small slot file system with the image's own kernel and a garbage initrd: U-Boot
    loads and starts the kernel, which cannot unpack its initrd, has no disk driver and no
    root, and panics (panic=10 resets). Small, so the install takes seconds."""
    tree = out.parent / "nokernel-tree"
    boot_dir = tree / "usr/lib/sipedge/boot"
    boot_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image.path("kernel_image"), boot_dir / "Image")
    (boot_dir / "initrd.img").write_bytes(b"not an initramfs\n" * 4096)
    (tree / "etc").mkdir(exist_ok=True)
    (tree / "etc/sipedge-release").write_text(f"VERSION={version}\nBOARD=qemu-aarch64\n")
    size_mib = (boot_dir / "Image").stat().st_size // 2**20 + 16
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d",
                    str(tree), str(out), f"{size_mib}M"], check=True)
    shutil.rmtree(tree)
    return out


@pytest.mark.timeout(9000)
def test_arm64_power_cut_and_rollbacks(sipedge_image_arm64, tmp_path):
    image = sipedge_image_arm64
    if image.manifest.get("bootloader") != "uboot":
        pytest.skip("arm64 image without the U-Boot A/B boot")
    rel = load_release()
    disk = Disk(image, tmp_path / "disk.img")
    toml = disk.get("sipedge.toml", tmp_path / "sipedge.toml")
    # a bad trial usually ends earlier: the broken proxy makes the supervisor FAILED
    toml.write_text(toml.read_text() + TOML_EXTRA.format(trial=300))
    disk.put(toml, "sipedge.toml")
    uboot_env(disk, tmp_path, "sipedge_extra=quiet sipedge.autologin")
    v1 = image.manifest["version"]
    base = v1.split("+")[0]
    v3, v4 = f"{base}+99990202000000", f"{base}+99990404000000"
    chan = tmp_path / "ch"
    (chan / "b").mkdir(parents=True)
    t0 = time.monotonic()
    rootfs = variant_rootfs(disk, tmp_path / "rootfs3.ext4", v3, broken=True)
    bad = rel.make_bundle(rootfs, "qemu-aarch64", v3, chan / "b/unhealthy.raucb")
    rootfs.unlink()
    # the same bundle under another URL for the install that is cut (a new URL is a new
    # download, not a resume of the cut one)
    os.link(bad, chan / "b/cut.raucb")
    rootfs = kernel_panic_rootfs(image, tmp_path / "rootfs4.ext4", v4)
    nok = rel.make_bundle(rootfs, "qemu-aarch64", v4, chan / "b/nokernel.raucb")
    rootfs.unlink()
    record("rollback bundles arm64 (unhealthy proxy, kernel panic)",
           f"{time.monotonic() - t0:.0f} s, {bad.stat().st_size / 2**20:.1f} MiB and "
           f"{nok.stat().st_size / 2**20:.1f} MiB")
    url = "http://10.0.2.100:8080/b/"
    server = Channel(chan)
    try:
        # 1. power cut while RAUC writes slot B
        g = boot(image, tmp_path, disk, "cut", server.port)
        try:
            g.console.expect(b"sipedge-boot: slot A", timeout=180 * TIMEOUT_MULTIPLIER)
            wait_userspace(g)
            st = wait_ctl(g, timeout=600)
            assert st["booted"] == "A" and st["version"] == v1, st
            ctl(g, "update.install", source=url + "cut.raucb")
            p = wait_rauc_writing(g, timeout=1800)
            assert not p["done"], p
        finally:
            g.proc.kill()  # the power cut
            g.stop()
        env = uboot_env(disk, tmp_path)
        record("U-Boot env after the cut arm64",
               " ".join(f"{k}={env.get(k)}" for k in ("BOOT_ORDER", "BOOT_A_LEFT",
                                                       "BOOT_B_LEFT")))
        g = boot(image, tmp_path, disk, "after-cut", server.port)
        try:
            m = g.console.expect(rb"sipedge-boot: slot ([AB])", timeout=180 * TIMEOUT_MULTIPLIER)
            assert m.group(1) == b"A", g.console.tail()
            wait_userspace(g)
            st = wait_ctl(g, timeout=600)
            assert st["booted"] == "A" and st["version"] == v1, st
            assert st["slots"]["B"]["boot_status"] != "good", st
            assert st["rollback"] is None and st["pending"] is None, st
            assert "was interrupted" in st["last_install"]["error"], st
            # 2. a bundle whose proxy never becomes healthy
            ctl(g, "update.install", source=url + "unhealthy.raucb")
            assert wait_install(g, timeout=1800)["ok"]
            g.shell("sync; reboot", timeout=30)
            g.wait_exit(180)
        finally:
            g.stop()
        env = uboot_env(disk, tmp_path)
        assert env["BOOT_ORDER"] == "B A" and env["BOOT_B_LEFT"] == "3", env
        slots, g, back = boots_until_a(image, tmp_path, disk, "unhealthy",
                                       lambda g: g.wait_exit(900 * TIMEOUT_MULTIPLIER),
                                       server.port)
        try:
            wait_userspace(g)
            st = wait_ctl(g, timeout=600)
            record("unhealthy proxy back to the old slot arm64 (3 tries, TCG)",
                   f"{back:.0f} s to U-Boot choosing A, {back + g.elapsed():.0f} s to the "
                   f"rollback report, slots {' '.join(slots)}")
            assert slots == ["B", "B", "B", "A"], slots
            assert st["booted"] == "A" and st["version"] == v1, st
            assert st["rollback"].startswith(f"rolled back from {v3} to {v1}: "), st
            assert "proxy" in st["rollback"], st
            # 3. a bundle whose kernel panics
            ctl(g, "update.install", source=url + "nokernel.raucb")
            assert wait_install(g, timeout=1800)["ok"]
            g.shell("sync; reboot", timeout=30)
            g.wait_exit(180)
        finally:
            g.stop()
    finally:
        server.close()

    def panics(g):
        g.console.expect(rb"Kernel panic", timeout=600 * TIMEOUT_MULTIPLIER)
        g.wait_exit(120 * TIMEOUT_MULTIPLIER)  # panic=10: the kernel resets
    slots, g, back = boots_until_a(image, tmp_path, disk, "nokernel", panics)
    try:
        wait_userspace(g)
        st = wait_ctl(g, timeout=600)
        record("kernel panic back to the old slot arm64 (3 tries, TCG)",
               f"{back:.0f} s to U-Boot choosing A, {back + g.elapsed():.0f} s to the "
               f"rollback report, slots {' '.join(slots)}")
        assert slots == ["B", "B", "B", "A"], slots
        assert st["booted"] == "A" and st["version"] == v1, st
        assert st["rollback"] == (f"rolled back from {v4} to {v1}: slot B did not come up "
                                  "(no healthy boot within its tries)"), st
        g.shell("sync; poweroff", timeout=30)
        g.wait_exit(180)
    finally:
        g.stop()
    env = uboot_env(disk, tmp_path)
    assert env["BOOT_B_LEFT"] == "0", env  # B is left for good
