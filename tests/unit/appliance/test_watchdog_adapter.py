"""Watchdog adapter against fake device nodes: a regular file and a FIFO."""

import errno
import os
import threading

import pytest

from sipedge.appliance import watchdog as wdmod
from sipedge.appliance.watchdog import HardwareError, HardwareWatchdog


class RecordingIoctl:
    def __init__(self, granted=None, keepalive_errno=None):
        self.calls = []
        self.granted = granted
        self.keepalive_errno = keepalive_errno

    def set_timeout(self, fd, seconds):
        self.calls.append(("settimeout", seconds))
        return self.granted if self.granted is not None else seconds

    def keepalive(self, fd):
        self.calls.append(("keepalive",))
        if self.keepalive_errno:
            raise OSError(self.keepalive_errno, os.strerror(self.keepalive_errno))


def test_ioctl_numbers_match_linux_watchdog_h():
    # values from <linux/watchdog.h> on x86_64/arm/arm64 (asm-generic ioctl encoding)
    assert wdmod.WDIOC_GETSUPPORT == 0x80285700
    assert wdmod.WDIOC_KEEPALIVE == 0x80045705
    assert wdmod.WDIOC_SETTIMEOUT == 0xC0045706
    assert wdmod.WDIOC_GETTIMEOUT == 0x80045707


def test_open_pet_and_magic_close_on_a_file(tmp_path):
    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    io = RecordingIoctl()
    wd = HardwareWatchdog(dev, timeout_s=7, ioctl=io)
    wd.open()
    wd.open()  # idempotent
    wd.pet()
    wd.pet()
    wd.close(disarm=True)
    assert io.calls == [("settimeout", 7), ("keepalive",), ("keepalive",)]
    assert dev.read_bytes() == b"V"
    assert not wd.is_open
    wd.close(disarm=True)  # closing twice is harmless
    assert dev.read_bytes() == b"V"


def test_close_without_disarm_writes_nothing(tmp_path):
    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    wd = HardwareWatchdog(dev, ioctl=RecordingIoctl())
    wd.open()
    wd.close(disarm=False)
    assert dev.read_bytes() == b""


def test_magic_close_through_a_fifo(tmp_path):
    fifo = tmp_path / "watchdog"
    os.mkfifo(fifo)
    got = []

    def reader():
        with open(fifo, "rb") as f:
            got.append(f.read())  # returns at the writer's close

    t = threading.Thread(target=reader)
    t.start()
    wd = HardwareWatchdog(fifo, ioctl=RecordingIoctl(keepalive_errno=errno.ENOTTY))
    wd.open()
    wd.pet()  # no keep-alive ioctl: falls back to a write
    wd.close(disarm=True)
    t.join(timeout=5)
    assert not t.is_alive()
    assert got == [b"\0V"]


def test_driver_may_round_the_timeout(tmp_path, caplog):
    dev = tmp_path / "watchdog"
    dev.touch()
    wd = HardwareWatchdog(dev, timeout_s=15, ioctl=RecordingIoctl(granted=16))
    wd.open()
    assert wd.effective_timeout_s == 16
    assert "driver_timeout_s=16" in caplog.text
    wd.close(disarm=True)


def test_real_ioctl_on_a_regular_file_fails_and_disarms(tmp_path):
    dev = tmp_path / "watchdog"
    dev.touch()
    wd = HardwareWatchdog(dev, timeout_s=5)  # the real fcntl.ioctl seam
    with pytest.raises(HardwareError) as ei:
        wd.open()
    assert "WDIOC_SETTIMEOUT" in str(ei.value) and ei.value.device == str(dev)
    assert dev.read_bytes() == b"V"  # it was armed by the open: disarmed before reporting
    assert not wd.is_open


def test_missing_device_and_pet_while_closed(tmp_path):
    wd = HardwareWatchdog(tmp_path / "nope", ioctl=RecordingIoctl())
    with pytest.raises(HardwareError, match="open"):
        wd.open()
    with pytest.raises(HardwareError, match="pet while closed"):
        wd.pet()


def test_keepalive_error_other_than_enotty_is_reported(tmp_path):
    dev = tmp_path / "watchdog"
    dev.touch()
    wd = HardwareWatchdog(dev, ioctl=RecordingIoctl(keepalive_errno=errno.EIO))
    wd.open()
    with pytest.raises(HardwareError, match="WDIOC_KEEPALIVE"):
        wd.pet()
    wd.close(disarm=True)
