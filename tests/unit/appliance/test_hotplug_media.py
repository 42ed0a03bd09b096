"""Hotplug: udev event classification, media scanning (mount stubbed), config offers."""

import shutil
import subprocess

from sipedge.appliance.hotplug import (MediaConfigOffer, MediaInserted, MediaRemoved,
                                       MediaScanner, NetDeviceAdded, NetDeviceRemoved, boot_disk,
                                       classify, default_source, on_disk)
from sipedge.appliance.sdconfig import BootConfigManager


def test_classify():
    assert classify("add", {"SUBSYSTEM": "net", "INTERFACE": "eth1"}) == NetDeviceAdded("eth1")
    assert classify("remove", {"SUBSYSTEM": "net", "INTERFACE": "eth1"}) == \
        NetDeviceRemoved("eth1")
    assert classify("move", {"SUBSYSTEM": "net", "INTERFACE": "eth1"}) is None
    assert classify("add", {"SUBSYSTEM": "net", "INTERFACE": "lo"}) is None
    usb = {"SUBSYSTEM": "block", "DEVNAME": "/dev/sda1", "ID_FS_TYPE": "vfat", "ID_BUS": "usb",
           "ID_FS_USAGE": "filesystem", "ID_FS_LABEL": "CFG"}
    assert classify("add", usb) == MediaInserted("/dev/sda1", "vfat", "CFG")
    assert classify("change", usb) == MediaInserted("/dev/sda1", "vfat", "CFG")
    assert classify("remove", usb) == MediaRemoved("/dev/sda1")
    sd = {"SUBSYSTEM": "block", "DEVNAME": "/dev/mmcblk1p1", "ID_FS_TYPE": "ext4"}
    assert classify("add", sd) == MediaInserted("/dev/mmcblk1p1", "ext4", "")
    assert classify("add", dict(usb, ID_BUS="ata")) is None  # internal disk
    assert classify("add", dict(usb, ID_FS_TYPE="crypto_LUKS")) is None
    assert classify("add", dict(usb, ID_FS_USAGE="raid")) is None
    assert classify("add", {"SUBSYSTEM": "tty", "DEVNAME": "/dev/ttyUSB0"}) is None
    assert classify("add", {"SUBSYSTEM": "block"}) is None


class FakeMount:
    """Stands in for mount/umount: 'mounting' copies a directory into the mount point."""

    def __init__(self, media_dir, fail=False):
        self.media_dir = media_dir
        self.fail = fail
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv[0] == "mount":
            if self.fail:
                return subprocess.CompletedProcess(argv, 32, "", "mount: wrong fs type")
            shutil.copytree(self.media_dir, argv[-1], dirs_exist_ok=True)
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_scanner_mounts_read_only_and_unmounts(tmp_path):
    media = tmp_path / "stick"
    media.mkdir()
    (media / "sipedge.toml").write_text("[core]\nworkers = 1\n")
    runner = FakeMount(media)
    text = MediaScanner(runner, tmp_path).read_config("/dev/sda1", "vfat")
    assert text == "[core]\nworkers = 1\n"
    mount, umount = runner.calls
    assert mount[:5] == ["mount", "-t", "vfat", "-o", "ro,nosuid,nodev,noexec"]
    assert umount == ["umount", mount[-1]]
    assert not any(p.name.startswith("sipedge-media-") for p in tmp_path.iterdir())


def test_scanner_without_config_or_mount_failure(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert MediaScanner(FakeMount(empty), tmp_path).read_config("/dev/sda1", "vfat") is None
    failing = FakeMount(empty, fail=True)
    assert MediaScanner(failing, tmp_path).read_config("/dev/sda1", "vfat") is None
    assert [c[0] for c in failing.calls] == ["mount"]
    big = tmp_path / "big"
    big.mkdir()
    (big / "sipedge.toml").write_text("#" * 300_000)
    assert MediaScanner(FakeMount(big), tmp_path).read_config("/dev/sda1", "vfat") is None


def test_offer_valid_invalid_removed(tmp_path):
    (tmp_path / "boot").mkdir()
    src = BootConfigManager(tmp_path / "boot" / "sipedge.toml", tmp_path / "data")
    media = tmp_path / "stick"
    media.mkdir()
    (media / "sipedge.toml").write_text("[watchdog]\ntimeout_s = 30\n")
    offer = MediaConfigOffer(src.check_text, MediaScanner(FakeMount(media), tmp_path))
    got = offer.handle(MediaInserted("/dev/sda1", "vfat"))
    assert got.valid and offer.offer is got
    assert offer.handle(MediaRemoved("/dev/sdb1")) is None and offer.offer is got
    offer.handle(MediaRemoved("/dev/sda1"))
    assert offer.offer is None
    (media / "sipedge.toml").write_text("[watchdog]\ntimeout_s = 0\n")
    got = offer.handle(MediaInserted("/dev/sda1", "vfat"))
    assert not got.valid
    assert got.issues[0].startswith("/dev/sda1:sipedge.toml:2: watchdog.timeout_s")
    assert not src.boot_path.exists()  # an offer never writes anything
    assert offer.handle(NetDeviceAdded("eth1")) is None


def test_kernel_uevents_without_udevd(tmp_path):
    assert default_source(tmp_path / "control") == "kernel"  # no udevd: nothing on "udev"
    (tmp_path / "control").touch()
    assert default_source(tmp_path / "control") == "udev"


def test_the_disk_the_box_runs_from_is_not_media(tmp_path):
    # fake sysfs: /sys/class/block/<name> links into /sys/devices/.../<disk>[/<part>]
    devices = tmp_path / "sys/devices/platform/mmc/block/mmcblk0"
    (devices / "mmcblk0p1").mkdir(parents=True)
    (devices / "mmcblk0p1/partition").write_text("1\n")
    blk = tmp_path / "sys/class/block"
    blk.mkdir(parents=True)
    (blk / "mmcblk0").symlink_to(devices)
    (blk / "mmcblk0p1").symlink_to(devices / "mmcblk0p1")
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/root / ext4 ro 0 0\n/dev/mmcblk0p1 /boot vfat ro 0 0\n")
    assert boot_disk(mounts, tmp_path / "sys") == "mmcblk0"
    mounts.write_text("/dev/mmcblk0 /boot vfat ro 0 0\n")  # a whole-disk file system
    assert boot_disk(mounts, tmp_path / "sys") == "mmcblk0"
    mounts.write_text("/dev/root / ext4 ro 0 0\n")
    assert boot_disk(mounts, tmp_path / "sys") is None
    assert boot_disk(tmp_path / "missing", tmp_path / "sys") is None

    assert on_disk("/dev/mmcblk0p1", "mmcblk0") and on_disk("/dev/sda2", "sda")
    assert on_disk("/dev/nvme0n1p3", "nvme0n1")
    assert not on_disk("/dev/mmcblk1p1", "mmcblk0") and not on_disk("/dev/sdab1", "sda")
    assert not on_disk("/dev/sda1", None)

    (tmp_path / "boot").mkdir()
    src = BootConfigManager(tmp_path / "boot" / "sipedge.toml", tmp_path / "data")
    card = tmp_path / "card"
    card.mkdir()
    (card / "sipedge.toml").write_text("[watchdog]\ntimeout_s = 30\n")
    mount = FakeMount(card)
    offer = MediaConfigOffer(src.check_text, MediaScanner(mount, tmp_path), ignore_disk="mmcblk0")
    assert offer.handle(MediaInserted("/dev/mmcblk0p1", "vfat")) is None
    assert mount.calls == []  # not even mounted
    assert offer.handle(MediaInserted("/dev/mmcblk1p1", "vfat")).valid  # a second SD slot
