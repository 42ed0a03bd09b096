"""Hotplug (pyudev): new network interfaces, and USB sticks / SD cards carrying a `sipedge.toml`.

`classify(action, properties)` is pure: a udev event's properties in, a hotplug event out.
`MediaScanner` mounts a new file system read-only (nosuid, nodev, noexec) in a temporary
directory, reads `sipedge.toml` (size-limited) and unmounts. `MediaConfigOffer` validates what
it found; a valid file is only *offered* (console `config import`), an invalid one is reported
and never applied. `UdevMonitor` feeds pyudev events into asyncio.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("sipedge.appliance.hotplug")

CONFIG_NAME = "sipedge.toml"
MAX_CONFIG_BYTES = 256 * 1024
MEDIA_FS = ("vfat", "exfat", "ext2", "ext3", "ext4")


@dataclass(frozen=True)
class NetDeviceAdded:
    ifname: str


@dataclass(frozen=True)
class NetDeviceRemoved:
    ifname: str


@dataclass(frozen=True)
class MediaInserted:
    devnode: str
    fstype: str
    label: str = ""


@dataclass(frozen=True)
class MediaRemoved:
    devnode: str


HotplugEvent = NetDeviceAdded | NetDeviceRemoved | MediaInserted | MediaRemoved


def classify(action: str, props: Mapping[str, str]) -> HotplugEvent | None:
    """Map one udev event (action + properties) to what the appliance cares about."""
    subsystem = props.get("SUBSYSTEM", "")
    if subsystem == "net":
        name = props.get("INTERFACE", "")
        if not name or name == "lo":
            return None
        if action == "add":
            return NetDeviceAdded(name)
        if action == "remove":
            return NetDeviceRemoved(name)
        return None
    if subsystem != "block":
        return None
    devnode = props.get("DEVNAME", "")
    if not devnode:
        return None
    if action == "remove":
        return MediaRemoved(devnode)
    if action not in ("add", "change"):
        return None
    fstype = props.get("ID_FS_TYPE", "")
    removable = props.get("ID_BUS") == "usb" or Path(devnode).name.startswith("mmcblk")
    if fstype in MEDIA_FS and removable and props.get("ID_FS_USAGE", "filesystem") == "filesystem":
        return MediaInserted(devnode, fstype, props.get("ID_FS_LABEL", ""))
    return None


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


class MediaScanner:
    """Reads `sipedge.toml` from a file system without leaving it mounted."""

    def __init__(self, runner: Runner = _run, tmp_root: str | Path | None = None) -> None:
        self.runner = runner
        self.tmp_root = tmp_root

    def read_config(self, devnode: str, fstype: str) -> str | None:
        with tempfile.TemporaryDirectory(prefix="sipedge-media-", dir=self.tmp_root) as mnt:
            res = self.runner(["mount", "-t", fstype, "-o", "ro,nosuid,nodev,noexec", devnode,
                               mnt])
            if res.returncode != 0:
                log.warning("cannot mount media dev=%s error=%s", devnode, res.stderr.strip())
                return None
            try:
                path = Path(mnt) / CONFIG_NAME
                if not path.is_file():
                    return None
                if path.stat().st_size > MAX_CONFIG_BYTES:
                    log.warning("media config too large dev=%s", devnode)
                    return None
                return path.read_text(encoding="utf-8", errors="replace")
            finally:
                self.runner(["umount", mnt])


@dataclass(frozen=True)
class MediaConfig:
    """A config found on removable media; `issues` empty means it may be imported."""

    devnode: str
    text: str
    issues: tuple[str, ...] = field(default=())

    @property
    def valid(self) -> bool:
        return not self.issues


def boot_disk(mounts: str | Path = "/proc/mounts", sysfs: str | Path = "/sys",
              mountpoints: Sequence[str] = ("/boot", "/")) -> str | None:
    """Kernel name of the disk the box runs from ("mmcblk0", "vda"): the disk holding the
    partition mounted at /boot (else /). Its partitions are not removable media, even on an
    SD card. None when it cannot be told (e.g. root on /dev/root)."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    devices = {f[1]: f[0] for f in (ln.split() for ln in lines) if len(f) > 2}
    for mp in mountpoints:
        dev = devices.get(mp, "")
        if not dev.startswith("/dev/"):
            continue
        entry = Path(sysfs) / "class" / "block" / Path(dev).name
        try:
            real = entry.resolve(strict=True)
        except OSError:
            continue
        return real.parent.name if (real / "partition").exists() else real.name
    return None


def on_disk(devnode: str, disk: str | None) -> bool:
    """Whether `devnode` is `disk` or one of its partitions (sda1, mmcblk0p2, nvme0n1p1)."""
    if not disk:
        return False
    name = Path(devnode).name
    if name == disk or not name.startswith(disk):
        return False
    rest = name[len(disk):]
    return rest.isdigit() if not disk[-1].isdigit() else (rest[:1] == "p" and rest[1:].isdigit())


class MediaConfigOffer:
    """Keeps the current offer from removable media; never writes anything itself. The disk
    the box runs from (`ignore_disk`, see `boot_disk`) is never looked at."""

    def __init__(self, check_text: Callable[[str, str], list[Any]],
                 scanner: MediaScanner | None = None, ignore_disk: str | None = None) -> None:
        self.check_text = check_text
        self.scanner = scanner or MediaScanner()
        self.ignore_disk = ignore_disk
        self.offer: MediaConfig | None = None

    def handle(self, event: HotplugEvent) -> MediaConfig | None:
        if isinstance(event, MediaRemoved):
            if self.offer is not None and self.offer.devnode == event.devnode:
                self.offer = None
            return None
        if not isinstance(event, MediaInserted):
            return None
        if Path(event.devnode).name == self.ignore_disk or on_disk(event.devnode,
                                                                    self.ignore_disk):
            return None
        text = self.scanner.read_config(event.devnode, event.fstype)
        if text is None:
            return None
        issues = tuple(str(i) for i in self.check_text(text, f"{event.devnode}:{CONFIG_NAME}"))
        self.offer = MediaConfig(event.devnode, text, issues)
        if issues:
            log.error("config on %s is invalid, not offered: %s", event.devnode, issues[0])
        else:
            log.warning("valid config on %s: import it with the console's `config import`",
                        event.devnode)
        return self.offer


def default_source(udevd_control: str | Path = "/run/udev/control") -> str:
    """The monitor source: "udev" where udevd runs (events as it passes them on, with
    file-system properties), else "kernel": raw uevents, enough for network devices but not
    for media (both images run udevd from S10udev; without it a "udev" monitor would hear
    nothing)."""
    return "udev" if Path(udevd_control).exists() else "kernel"


class UdevMonitor:
    """pyudev netlink monitor for `net` and `block`, as an async event source."""

    def __init__(self, source: str | None = None) -> None:
        import pyudev

        source = source or default_source()
        log.info("hotplug source=%s", source)
        self.context = pyudev.Context()
        self.monitor = pyudev.Monitor.from_netlink(self.context, source=source)
        self.monitor.filter_by("net")
        self.monitor.filter_by("block")
        self.monitor.start()  # bound from here on: no event between now and events() is lost

    async def events(self) -> Any:
        """Yields classified events until cancelled."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(self.monitor.fileno(), ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                while True:
                    device = self.monitor.poll(timeout=0)
                    if device is None:
                        break
                    ev = classify(device.action or "", dict(device.properties))
                    if ev is not None:
                        yield ev
        finally:
            loop.remove_reader(self.monitor.fileno())
