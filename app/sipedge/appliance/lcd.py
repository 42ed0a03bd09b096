"""HD44780 LCD behind a PCF8574 on `/dev/i2c-N`.

The byte protocol is `sipedge.panel.hd44780`; this adapter only sends the bytes one by one with
SMBus "send byte" (what the PCF8574 and the kernel's i2c-stub both accept) and sleeps the
delays. The bus is a seam: `smbus2.SMBus` when installed, else a small raw-ioctl bus
(`I2C_SLAVE` + one-byte `write()`), else whatever the caller passes (tests pass a recorder).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..panel import hd44780
from .ports import SmBus
from .watchdog import HardwareError

log = logging.getLogger("sipedge.appliance.lcd")

I2C_SLAVE = 0x0703


class RawI2cBus:
    """Minimal SMBus stand-in over the i2c-dev character device (no smbus2 needed)."""

    def __init__(self, bus: int, dev: str | Path = "/dev") -> None:
        self.path = Path(dev) / f"i2c-{bus}"
        self._addr: int | None = None
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise HardwareError(str(self.path), f"open: {exc.strerror}") from None

    def write_byte(self, i2c_addr: int, value: int) -> None:
        if self._addr != i2c_addr:
            fcntl.ioctl(self._fd, I2C_SLAVE, i2c_addr)
            self._addr = i2c_addr
        os.write(self._fd, bytes((value,)))

    def close(self) -> None:
        os.close(self._fd)


def open_bus(bus: int, dev: str | Path = "/dev") -> SmBus:
    path = Path(dev) / f"i2c-{bus}"
    if not path.exists():
        raise HardwareError(str(path), "no such device")
    try:
        import smbus2
    except ImportError:
        return RawI2cBus(bus, dev)
    try:
        return smbus2.SMBus(str(path))
    except OSError as exc:
        raise HardwareError(str(path), f"open: {exc.strerror}") from None


class I2cLcd:
    """`Display` port."""

    def __init__(self, bus: SmBus, address: int = 0x27, cols: int = 16, rows: int = 2, *,
                 sleep: Callable[[float], None] = time.sleep, backlight: bool = True) -> None:
        self.bus = bus
        self.address = address
        self.cols = cols
        self.rows = rows
        self.sleep = sleep
        self.backlight = backlight
        self._shown: list[str] | None = None
        self._initialised = False
        self.bytes_sent = 0

    @property
    def size(self) -> tuple[int, int]:
        return (self.cols, self.rows)

    def _send(self, ops: list[tuple[bytes, int]]) -> None:
        try:
            for data, delay_us in ops:
                for b in data:
                    self.bus.write_byte(self.address, b)
                    self.bytes_sent += 1
                if delay_us:
                    self.sleep(delay_us / 1e6)
        except OSError as exc:
            self._initialised = False
            raise HardwareError(f"i2c@0x{self.address:02x}", f"write: {exc.strerror}") from None

    def init(self) -> None:
        self._send(hd44780.init_ops(self.rows, self.backlight))
        self._initialised = True
        self._shown = None

    def show(self, lines: Sequence[str]) -> None:
        if not self._initialised:
            self.init()
        lines = [hd44780_fit(line, self.cols) for line in list(lines)[: self.rows]]
        while len(lines) < self.rows:
            lines.append(" " * self.cols)
        self._send(hd44780.screen_ops(lines, self.cols, self._shown, self.backlight))
        self._shown = lines

    def close(self) -> None:
        self.bus.close()


def hd44780_fit(text: str, cols: int) -> str:
    return text[:cols].ljust(cols)
