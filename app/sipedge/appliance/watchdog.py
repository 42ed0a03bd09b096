"""Linux hardware watchdog (`/dev/watchdog`) adapter.

The ioctls are a small seam (`WatchdogIoctl`): the real one calls `fcntl.ioctl`, tests pass a
recording one and point the adapter at a regular file or a FIFO, where the write path (the magic
close 'V') is observable. The real ioctls run in the QEMU guest (i6300esb, softdog).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from pathlib import Path
from typing import Protocol

from ..errors import EdgeError

log = logging.getLogger("sipedge.appliance.watchdog")


class HardwareError(EdgeError):
    """A hardware device failed. `device` is the path, `reason` what went wrong."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"{device}: {reason}")
        self.device = device
        self.reason = reason


# <linux/ioctl.h> encoding (asm-generic; same on x86, arm and arm64)
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, type_: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(type_) << 8) | nr


# <linux/watchdog.h>, WATCHDOG_IOCTL_BASE 'W'
WDIOC_GETSUPPORT = _ioc(_IOC_READ, "W", 0, 40)
WDIOC_KEEPALIVE = _ioc(_IOC_READ, "W", 5, 4)
WDIOC_SETTIMEOUT = _ioc(_IOC_READ | _IOC_WRITE, "W", 6, 4)
WDIOC_GETTIMEOUT = _ioc(_IOC_READ, "W", 7, 4)

MAGIC_CLOSE = b"V"


class WatchdogIoctl(Protocol):
    def set_timeout(self, fd: int, seconds: int) -> int:
        """Ask for `seconds`; returns the timeout the driver actually set."""
        ...

    def keepalive(self, fd: int) -> None: ...


class LinuxWatchdogIoctl:
    """The real ioctls."""

    def set_timeout(self, fd: int, seconds: int) -> int:
        buf = fcntl.ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", seconds))
        return int(struct.unpack("i", buf)[0])

    def keepalive(self, fd: int) -> None:
        fcntl.ioctl(fd, WDIOC_KEEPALIVE, struct.pack("i", 0))


class HardwareWatchdog:
    """`Watchdog` port on a device node (`device` may point into a test tree)."""

    def __init__(self, device: str | Path = "/dev/watchdog", timeout_s: int = 15, *,
                 ioctl: WatchdogIoctl | None = None) -> None:
        self.device = Path(device)
        self.timeout_s = timeout_s
        self.ioctl = ioctl if ioctl is not None else LinuxWatchdogIoctl()
        self.effective_timeout_s: int | None = None
        self._fd: int | None = None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = os.open(self.device, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise HardwareError(str(self.device), f"open: {exc.strerror}") from None
        self._fd = fd
        try:
            self.effective_timeout_s = self.ioctl.set_timeout(fd, self.timeout_s)
        except OSError as exc:
            # The device is armed by the open; disarm before reporting.
            self.close(disarm=True)
            raise HardwareError(str(self.device), f"WDIOC_SETTIMEOUT: {exc.strerror}") from None
        if self.effective_timeout_s != self.timeout_s:
            log.warning("watchdog device=%s asked_timeout_s=%d driver_timeout_s=%s",
                        self.device, self.timeout_s, self.effective_timeout_s)
        log.info("watchdog armed device=%s timeout_s=%s", self.device, self.effective_timeout_s)

    def pet(self) -> None:
        if self._fd is None:
            raise HardwareError(str(self.device), "pet while closed")
        try:
            self.ioctl.keepalive(self._fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EINVAL):
                raise HardwareError(str(self.device), f"WDIOC_KEEPALIVE: {exc.strerror}") from None
            # Drivers without the ioctl accept any write as a keep-alive.
            os.write(self._fd, b"\0")

    def close(self, *, disarm: bool) -> None:
        """Close; with `disarm` write the magic 'V' first so the timer stops (clean stop).

        Without `disarm` the timer keeps running and the box resets unless someone reopens it.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if disarm:
                os.write(fd, MAGIC_CLOSE)
        except OSError as exc:
            raise HardwareError(str(self.device), f"magic close: {exc.strerror}") from None
        finally:
            os.close(fd)
        log.info("watchdog closed device=%s disarmed=%s", self.device, disarm)
