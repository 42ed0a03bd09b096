"""Ports: what the supervisor needs from the hardware and the OS, as `typing.Protocol`s.

The supervisor and the console see only these. Real adapters live next to this module
(`watchdog.py`, `leds.py`, `lcd.py`, `sdconfig.py`, `network.py`); recording fakes live in
`fakes.py` and back both the tests and `sipedge-supervisor --simulate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def monotonic(self) -> float: ...


@runtime_checkable
class Watchdog(Protocol):
    """A hardware watchdog. `open()` arms it; after that it must be petted or the box resets."""

    def open(self) -> None: ...

    def pet(self) -> None: ...

    def close(self, *, disarm: bool) -> None:
        """Close the device; `disarm=True` sends the magic 'V' first (clean stop)."""
        ...


@runtime_checkable
class StatusLeds(Protocol):
    """Status LEDs by role ("status", "error"). `mode` is "on", "off" or "blink"."""

    def set(self, role: str, mode: str, on_ms: int = 0, off_ms: int = 0) -> None: ...


@runtime_checkable
class Display(Protocol):
    """A character display. `show(lines)` replaces the whole screen."""

    @property
    def size(self) -> tuple[int, int]:
        """(cols, rows)"""
        ...

    def show(self, lines: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class HealthReport:
    """One heartbeat answer from the proxy (`core.health`), or a failed probe."""

    ok: bool
    detail: str = ""
    workers_alive: int = 0
    workers_expected: int = 0
    loop_lag_ms: float = 0.0


@runtime_checkable
class HealthProbe(Protocol):
    """Asks the proxy whether it is alive; never raises, returns `HealthReport(ok=False)`."""

    async def probe(self) -> HealthReport: ...


@runtime_checkable
class ConfigSource(Protocol):
    """Where the configuration comes from (the SD card, with last-known-good)."""

    def select(self) -> Any:
        """Validate the boot file and return the `ConfigChoice` to run."""
        ...

    def write_boot(self, text: str) -> None:
        """Replace the boot file atomically (explicit console command only)."""
        ...


@runtime_checkable
class UpdateAgent(Protocol):
    """The OTA agent (RAUC)."""

    def mark_good(self) -> None: ...

    def status(self) -> Mapping[str, Any]: ...


@runtime_checkable
class SmBus(Protocol):
    """The part of `smbus2.SMBus` the LCD needs (i2c-stub accepts exactly this)."""

    def write_byte(self, i2c_addr: int, value: int) -> None: ...

    def close(self) -> None: ...
