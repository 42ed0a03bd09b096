"""The supervisor's RAM log (`logs` on the management console), never written to the SD card.

A module of its own so the supervisor can install it before its heavy imports (boot time).
"""

from __future__ import annotations

import logging
from collections import deque


class RingLogHandler(logging.Handler):
    """Keeps the last `capacity` formatted log lines in RAM for `logs` (never the SD card)."""

    def __init__(self, capacity: int = 500) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # logging must never raise into the caller
            self.handleError(record)

    def tail(self, n: int) -> list[str]:
        return list(self.lines)[-n:] if n > 0 else []
