"""The record of the boot config the box last rolled back, `<data>/config/rejected.json`
({"sha256", "file", "reason"}): the same file is not tried again until it changes.

Standard library only, so the supervisor can read it before its heavy imports at boot
(supervisor_main.launch_early); sdconfig.BootConfigManager writes and reads it the same way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def rejected_path(data_dir: Path) -> Path:
    return Path(data_dir) / "config" / "rejected.json"


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_record(path: Path) -> dict[str, Any] | None:
    """The record, or None when there is none (or it cannot be read)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def rejects(record: dict[str, Any] | None, text: str) -> bool:
    """Whether `record` is about this config text."""
    return record is not None and record.get("sha256") == text_sha(text)
