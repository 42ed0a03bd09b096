"""Flood detection per source address (the idea of Kamailio's pike), sans-IO.

Each source has a sliding-window estimate of its request rate: the count of the current
window plus the previous window's count weighted by how much of it still overlaps. More than
`max_requests` within `window_s` blocks the source for `block_s`. Memory is bounded: at most
`max_tracked` sources are counted (least recently seen ones are forgotten first) and at most
`max_blocked` are blocked (the block that ends soonest is dropped first).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Iterable

from .blocklist import Blocklist

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FloodDetector:
    def __init__(self, *, window_s: float, max_requests: int, block_s: float,
                 max_tracked: int = 65536, max_blocked: int = 65536,
                 trusted: Iterable[str] = ()) -> None:
        if window_s <= 0 or max_requests < 1:
            raise ValueError("window_s must be > 0 and max_requests >= 1")
        self.window_s = window_s
        self.max_requests = max_requests
        self.block_s = block_s
        self.max_tracked = max_tracked
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in trusted)
        # ip -> [window_start, count_in_window, count_in_previous_window]
        self._counters: OrderedDict[str, list[float]] = OrderedDict()
        self.blocked = Blocklist(max_blocked)

    def is_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    def hit(self, ip: str, now: float) -> bool:
        """Count one request from `ip`. True if it may be served, False if the source is
        (now) blocked."""
        if self.blocked.is_blocked(ip, now):
            return False
        if self.trusted and self.is_trusted(ip):
            return True
        c = self._counters.get(ip)
        w = self.window_s
        if c is None:
            c = [now - (now % w), 0.0, 0.0]
            self._counters[ip] = c
            if len(self._counters) > self.max_tracked:
                self._counters.popitem(last=False)
        else:
            self._counters.move_to_end(ip)
            start = c[0]
            if now >= start + w:
                windows = int((now - start) // w)
                c[2] = c[1] if windows == 1 else 0.0
                c[1] = 0.0
                c[0] = start + windows * w
        c[1] += 1
        overlap = 1.0 - (now - c[0]) / w
        rate = c[1] + c[2] * max(0.0, overlap)
        if rate > self.max_requests:
            self.blocked.block(ip, now + self.block_s, "flood", now)
            del self._counters[ip]
            return False
        return True

    def tracked(self) -> int:
        return len(self._counters)

    def purge(self, now: float) -> int:
        """Forget sources idle for two windows and ended blocks. Returns how many went."""
        stale = [ip for ip, c in self._counters.items() if now >= c[0] + 2 * self.window_s]
        for ip in stale:
            del self._counters[ip]
        return len(stale) + self.blocked.purge(now)
