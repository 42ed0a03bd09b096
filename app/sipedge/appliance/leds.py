"""LEDs through the Linux LED class (`/sys/class/leds/<name>/{brightness,trigger,...}`).

`sysfs` is the /sys root, so tests use a tmp tree and the QEMU guest the real one (uinput
`inputN::capslock` LEDs there). "blink" uses the `timer` trigger (`delay_on`/`delay_off`) when
the LED offers it, so the kernel blinks without our help; otherwise the LED is simply lit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from .watchdog import HardwareError

log = logging.getLogger("sipedge.appliance.leds")


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise HardwareError(str(path), f"write {value!r}: {exc.strerror}") from None


class SysfsLed:
    def __init__(self, sysfs: Path, name: str) -> None:
        self.dir = Path(sysfs) / "class" / "leds" / name
        self.name = name
        self._triggers: list[str] | None = None

    @property
    def present(self) -> bool:
        return self.dir.is_dir()

    def max_brightness(self) -> int:
        try:
            return int((self.dir / "max_brightness").read_text().strip() or 1)
        except (OSError, ValueError):
            return 1

    def triggers(self) -> list[str]:
        """Available triggers (read once; the kernel marks the active one with [brackets])."""
        if self._triggers is None:
            try:
                text = (self.dir / "trigger").read_text()
            except OSError:
                return []
            self._triggers = [t.strip("[]") for t in text.split()]
        return self._triggers

    def set(self, mode: str, on_ms: int = 0, off_ms: int = 0) -> None:
        if mode == "blink" and "timer" in self.triggers():
            _write(self.dir / "trigger", "timer")
            # The kernel creates delay_on/delay_off when the timer trigger activates.
            _write(self.dir / "delay_on", str(on_ms))
            _write(self.dir / "delay_off", str(off_ms))
            return
        if "none" in self.triggers():
            _write(self.dir / "trigger", "none")
        level = 0 if mode == "off" else self.max_brightness()
        _write(self.dir / "brightness", str(level))


def resolve_led(sysfs: str | Path, spec: str) -> str:
    """The LED class name `spec` stands for: comma-separated candidates, each a name or a
    glob (`input*::numlock`); the first candidate with a match wins, the lowest name among its
    matches. Nothing present: the first candidate as written (reported missing by the caller,
    used if it appears later)."""
    base = Path(sysfs) / "class" / "leds"
    candidates = [c.strip() for c in spec.split(",") if c.strip()]
    for cand in candidates:
        if any(ch in cand for ch in "*?["):
            found = sorted((p.name for p in base.glob(cand)), key=_natural)
            if found:
                return found[0]
        elif (base / cand).is_dir():
            return cand
    return candidates[0] if candidates else ""


def _natural(name: str) -> tuple:
    """input2 before input10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def read_board_data(path: str | Path) -> dict[str, str]:
    """The board's facts (`board/<board>/meta`, installed as /usr/share/sipedge/board):
    KEY=VALUE lines, `#` comments, values optionally quoted. A missing file is no facts."""
    out: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip().strip('"')
    return out


def led_names(panel_status: str, panel_error: str, board: Mapping[str, str]) -> dict[str, str]:
    """LED roles -> specs: the config's `[panel]` names, else the board's STATUS_LED /
    ERROR_LED; "none" in the config turns a board LED off."""
    out = {}
    for role, configured, key in (("status", panel_status, "STATUS_LED"),
                                  ("error", panel_error, "ERROR_LED")):
        spec = configured or board.get(key, "")
        out[role] = "" if spec == "none" else spec
    return out


class SysfsLeds:
    """`StatusLeds` port: LED roles ("status", "error") mapped to LED class names or specs
    (`resolve_led`), from the config or the board data."""

    def __init__(self, names: Mapping[str, str], sysfs: str | Path = "/sys") -> None:
        self.sysfs = Path(sysfs)
        self.leds = {role: SysfsLed(self.sysfs, resolve_led(self.sysfs, spec))
                     for role, spec in names.items() if spec}
        self.names = {role: led.name for role, led in self.leds.items()}
        for role, led in self.leds.items():
            if not led.present:
                log.warning("LED missing role=%s name=%s dir=%s", role, led.name, led.dir)

    def set(self, role: str, mode: str, on_ms: int = 0, off_ms: int = 0) -> None:
        led = self.leds.get(role)
        if led is None or not led.present:
            return
        led.set(mode, on_ms, off_ms)
