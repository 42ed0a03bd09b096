"""The dispatcher's runtime knobs and the reply-code patterns of its probes.

Apart from the core (it imports nothing but dataclasses): loading any config validates
`[dispatcher]` through `params.DispatcherParams.settings()`, and that must not import the
core, its algorithms and its table in every process that never dispatches (issue 13).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """The runtime knobs (a subset of `DispatcherParams`, without I/O settings)."""

    probe_interval_s: float = 10.0
    probe_timeout_s: float = 2.0
    inactive_after: int = 3  # N: failed probes or relays in a row -> inactive
    active_after: int = 2  # M: successful probes in a row -> active
    probe_mode: str = "all"  # "all" active destinations, or only "flagged" (flag 8)
    ok_codes: tuple[str, ...] = ("2xx",)  # probe replies that count as alive
    rtt_alpha: float = 0.3  # weight of a new sample in the RTT moving average

    def __post_init__(self) -> None:
        if self.probe_mode not in ("all", "flagged"):
            raise ValueError("probe_mode must be 'all' or 'flagged'")
        if self.probe_timeout_s > self.probe_interval_s:
            raise ValueError("probe_timeout_s must not exceed probe_interval_s")
        if self.inactive_after < 1 or self.active_after < 1:
            raise ValueError("thresholds must be >= 1")
        for c in self.ok_codes:
            parse_code_pattern(c)


def parse_code_pattern(text: str) -> tuple[int, int]:
    """`"2xx"` -> (200, 299), `"404"` -> (404, 404). Raises ValueError."""
    t = text.strip().lower()
    if len(t) == 3 and t[0] in "123456" and t[1:] == "xx":
        return int(t[0]) * 100, int(t[0]) * 100 + 99
    if len(t) == 3 and t.isdigit() and 100 <= int(t) <= 699:
        return int(t), int(t)
    raise ValueError(f"reply code pattern {text!r}: expected e.g. 2xx or 404")
