"""A bounded TTL cache of DNS answers, keyed by (name, rdtype). `now` is passed in."""

from __future__ import annotations

from typing import Any


class DnsCache:
    """Positive and negative answers with their expiry time (monotonic seconds).

    `max_ttl_s` bounds how long any answer is kept, `negative_ttl_s` how long "no such
    name / no such record" is kept. When `max_entries` is reached, expired entries are
    dropped, then the oldest. `max_entries=0` disables caching.
    """

    def __init__(self, max_entries: int = 4096, max_ttl_s: float = 3600.0,
                 negative_ttl_s: float = 60.0) -> None:
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._entries: dict[tuple[str, int], tuple[float, tuple[Any, ...]]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, rdtype: int, now: float) -> tuple[Any, ...] | None:
        """The cached rdata tuple (empty for a cached negative answer), or None."""
        key = (name, int(rdtype))
        hit = self._entries.get(key)
        if hit is None:
            self.misses += 1
            return None
        if hit[0] <= now:
            del self._entries[key]
            self.misses += 1
            return None
        self.hits += 1
        return hit[1]

    def put(self, name: str, rdtype: int, rdatas: tuple[Any, ...], ttl: float, now: float) -> None:
        limit = self.max_ttl_s if rdatas else min(self.max_ttl_s, self.negative_ttl_s)
        ttl = min(ttl, limit)
        if ttl <= 0 or self.max_entries <= 0:
            return
        key = (name, int(rdtype))
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self._evict(now)
        self._entries[key] = (now + ttl, rdatas)

    def _evict(self, now: float) -> None:
        for key in [k for k, (exp, _) in self._entries.items() if exp <= now]:
            del self._entries[key]
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        self._entries.clear()
