"""Boot-loop guard for deliberate watchdog resets: a small record on the data partition.

Before the supervisor withholds the keep-alive on purpose (`SupervisorPolicy.wants_reset`), it
writes `<data>/supervisor/watchdog-reset.json` atomically (temporary file, fsync, rename, fsync
of the directory, as the last-known-good config):

    {"resets": 2, "reason": "proxy hung 3 times in a row ...", "boot_id": "...", "time": ...}

`resets` counts the deliberate resets in a row, this one included. At start the supervisor
reads it back (`history()`): a record from another boot means the previous boot ended in that
reset; a record with the *current* kernel boot id means the supervisor was restarted in the
same boot and the reset never happened, so it is not counted. Once `[watchdog] max_resets`
resets happened in a row the supervisor stops letting the watchdog fire (`allow_resets(False)`
on the policy). The record is deleted after the proxy has been healthy for
`[watchdog] reset_record_clear_s`.

`history()` is pure; `ResetRecordStore` does the file I/O (root directory as a parameter).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .sdconfig import atomic_write, fsync_dir

log = logging.getLogger("sipedge.appliance.resetguard")

RECORD_PATH = Path("supervisor") / "watchdog-reset.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class ResetRecord:
    """Written right before a deliberate watchdog reset."""

    resets: int  # deliberate resets in a row, this one included
    reason: str
    boot_id: str  # kernel boot id of the boot that asked for the reset ("" if unknown)
    time: float  # wall clock (seconds since the epoch) for people; boards may lack an RTC

    def to_json(self) -> bytes:
        return json.dumps({"resets": self.resets, "reason": self.reason,
                           "boot_id": self.boot_id, "time": self.time},
                          sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> ResetRecord:
        """Raises ValueError on anything but a well-formed record."""
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        resets, reason = obj.get("resets"), obj.get("reason")
        boot_id, when = obj.get("boot_id", ""), obj.get("time", 0.0)
        if not isinstance(resets, int) or isinstance(resets, bool) or resets < 1:
            raise ValueError(f"resets: {resets!r}")
        if not isinstance(reason, str) or not isinstance(boot_id, str):
            raise ValueError("reason/boot_id: not strings")
        if not isinstance(when, (int, float)) or isinstance(when, bool):
            raise ValueError(f"time: {when!r}")
        return cls(resets, reason, boot_id, float(when))


@dataclass(frozen=True)
class ResetHistory:
    """What the record means for this boot."""

    resets: int = 0  # deliberate resets in a row that really happened
    previous_reason: str | None = None  # the previous boot ended in a reset for this reason
    previous_time: float | None = None
    present: bool = False  # a record exists on disk (to be cleared after a healthy period)

    def resets_allowed(self, max_resets: int) -> bool:
        return max_resets == 0 or self.resets < max_resets


def history(record: ResetRecord | None, boot_id: str) -> ResetHistory:
    """Interpret the record found at start-up, given the current kernel boot id."""
    if record is None:
        return ResetHistory()
    if boot_id and record.boot_id == boot_id:
        # Written in this very boot, yet we are running: the supervisor was restarted before
        # the watchdog fired, so that reset did not happen.
        return ResetHistory(resets=record.resets - 1, present=True)
    return ResetHistory(resets=record.resets, previous_reason=record.reason,
                        previous_time=record.time, present=True)


class ResetRecordStore:
    """The record file under the data directory."""

    def __init__(self, data_dir: str | Path, boot_id_path: str | Path = BOOT_ID) -> None:
        self.path = Path(data_dir) / RECORD_PATH
        self.boot_id_path = Path(boot_id_path)

    def boot_id(self) -> str:
        try:
            return self.boot_id_path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return ""

    def load(self) -> ResetRecord | None:
        """The record, or None when absent or unreadable (logged: the guard then starts at 0)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read watchdog reset record file=%s error=%s", self.path, exc)
            return None
        try:
            return ResetRecord.from_json(data)
        except ValueError as exc:
            log.error("ignoring a broken watchdog reset record file=%s error=%s", self.path, exc)
            return None

    def history(self) -> ResetHistory:
        return history(self.load(), self.boot_id())

    def save(self, record: ResetRecord) -> None:
        """Atomic replace; raises OSError (the caller logs it and lets the reset happen)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, record.to_json())

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.path.parent)
