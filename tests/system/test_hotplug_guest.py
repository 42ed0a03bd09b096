"""Hotplug of removable media in the QEMU guest: a USB stick carrying sipedge.toml.

The guest has an xHCI controller; the test plugs sticks in and out through QEMU's QMP socket,
like a technician at the box. udev (started by S10udev) loads usb-storage and tags the file
system; the supervisor validates the config on the stick and offers it for the console's
`config import`, never applies it, and withdraws the offer when the stick is pulled. A stick
with a broken config is reported with file:line. The disk the box runs from is never offered.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
from guest_helpers import REPO, TIMEOUT_MULTIPLIER, cmdlines, record, status

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(900)]

# the shipped file without its [management] table (console tests add their own)
BASE = ((REPO / "board/common/sipedge.toml").read_text().split("[management]")[0]
        + "\n[supervisor]\nstart_timeout_s = 300\n")
GOOD = '[[listen]]\nproto = "udp"\naddress = "0.0.0.0"\nport = 5080\n'
BAD = '[watchdog]\ntimeout_s = 0\n'  # line 2 is out of range


def make_stick(path, text: str) -> None:
    """A 16 MiB FAT stick (no partition table, as mkfs.vfat on a whole stick) holding text."""
    subprocess.run(["truncate", "-s", "16M", str(path)], check=True)
    subprocess.run(["mkfs.vfat", "-n", "SIPEDGE", str(path)], check=True, capture_output=True)
    src = path.with_suffix(".toml")
    src.write_text(text)
    subprocess.run(["mcopy", "-i", str(path), str(src), "::sipedge.toml"], check=True,
                   env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})


def boot_digest(g) -> str:
    _rc, out = g.shell("md5sum /boot/sipedge.toml", check=True)
    return re.search(r"\b[0-9a-f]{32}\b", out).group(0)


def plug(g, name: str, image) -> None:
    g.qmp("blockdev-add", **{"node-name": name, "driver": "raw",
                             "file": {"driver": "file", "filename": str(image)}})
    g.qmp("device_add", driver="usb-storage", id=f"dev-{name}", drive=name, bus="xhci.0")


def unplug(g, name: str) -> None:
    g.qmp("device_del", id=f"dev-{name}")
    deadline = time.monotonic() + 60
    while True:  # the node can only go once the guest has released the device
        try:
            g.qmp("blockdev-del", **{"node-name": name})
            return
        except Exception:  # noqa: BLE001 - GuestError while still in use
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_usb_stick_with_config_is_offered_never_applied(sipedge_image, boot_guest, tmp_path):
    good, bad = tmp_path / "good.img", tmp_path / "bad.img"
    make_stick(good, GOOD)
    make_stick(bad, BAD)
    g = boot_guest(sipedge_image, boot_files={"sipedge.toml": BASE},
                   extra_args=["-device", "qemu-xhci,id=xhci"], name="media")
    g.wait_shell(timeout=240 * TIMEOUT_MULTIPLIER)
    st = status(g, lambda st: st["state"] == "RUNNING", timeout=300)
    assert any("udevd" in c for c in cmdlines(g, "udevd")), "udevd is not running"
    assert st["media_config"] is None  # the boot disk (vda) is never offered
    before = boot_digest(g)

    t0 = time.monotonic()
    plug(g, "good", good)
    st = status(g, lambda st: st["media_config"] is not None, timeout=120)
    record("USB stick plugged to config offered amd64", f"{time.monotonic() - t0:.1f} s")
    assert st["media_config"]["valid"] is True, st
    assert st["media_config"]["device"].startswith("/dev/sd"), st
    assert st["config"]["source"] == "boot"
    assert boot_digest(g) == before  # never applied automatically
    # read and unmounted; the update agent's look for a .raucb (after the config's) mounts
    # the stick for a moment too, so the mount may still be there just after the offer
    deadline = time.monotonic() + 20 * TIMEOUT_MULTIPLIER
    while True:
        _rc, mounts = g.shell("grep -c /dev/sd /proc/mounts")
        if mounts.strip().splitlines()[-1] == "0":
            break
        assert time.monotonic() < deadline, g.shell("grep /dev/sd /proc/mounts")[1]
        time.sleep(0.5)

    unplug(g, "good")
    status(g, lambda st: st["media_config"] is None, timeout=60)

    plug(g, "bad", bad)
    st = status(g, lambda st: st["media_config"] is not None, timeout=120)
    offer = st["media_config"]
    assert offer["valid"] is False, offer
    assert any("sipedge.toml:2: watchdog.timeout_s" in e for e in offer["errors"]), offer
    unplug(g, "bad")
    status(g, lambda st: st["media_config"] is None, timeout=60)
