"""Authentication failure counting per source and per user (fail2ban in the box), sans-IO.

A source that fails `max_failures` times within `window_s` is blocked for `block_s`. A user
name that collects `max_user_failures` failures within `window_s` (from any sources, e.g. a
distributed password guess) makes every further source that fails for it blocked at once;
the user itself is never locked out, so an attacker cannot deny service to the real phone.
A success clears the source's count.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from .blocklist import Block, Blocklist


class _Window:
    """Timestamps of recent failures per key, bounded in keys and per key."""

    def __init__(self, window_s: float, limit: int, max_keys: int) -> None:
        self.window_s = window_s
        self.limit = limit
        self.max_keys = max_keys
        self._t: OrderedDict[str, deque[float]] = OrderedDict()

    def add(self, key: str, now: float) -> int:
        q = self._t.get(key)
        if q is None:
            q = deque(maxlen=max(1, self.limit))
            self._t[key] = q
            if len(self._t) > self.max_keys:
                self._t.popitem(last=False)
        else:
            self._t.move_to_end(key)
        q.append(now)
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return len(q)

    def count(self, key: str, now: float) -> int:
        q = self._t.get(key)
        return 0 if q is None else sum(1 for t in q if t > now - self.window_s)

    def clear(self, key: str) -> None:
        self._t.pop(key, None)

    def purge(self, now: float) -> int:
        dead = [k for k, q in self._t.items() if not q or q[-1] <= now - self.window_s]
        for k in dead:
            del self._t[k]
        return len(dead)


class AuthFailures:
    def __init__(self, blocklist: Blocklist, *, max_failures: int, max_user_failures: int,
                 window_s: float, block_s: float, max_tracked: int = 65536) -> None:
        self.blocklist = blocklist
        self.block_s = block_s
        self._by_source = _Window(window_s, max_failures, max_tracked)
        self._by_user = _Window(window_s, max_user_failures, max_tracked)

    def failed(self, ip: str, user: str, now: float) -> Block | None:
        """Record a failed authentication. Returns the Block if the source is now blocked."""
        n_src = self._by_source.add(ip, now)
        n_user = self._by_user.add(user, now) if user else 0
        if n_src >= self._by_source.limit:
            self._by_source.clear(ip)
            return self.blocklist.block(ip, now + self.block_s, "auth_failures", now)
        if user and n_user >= self._by_user.limit:
            return self.blocklist.block(ip, now + self.block_s, "user_failures", now)
        return None

    def succeeded(self, ip: str) -> None:
        self._by_source.clear(ip)

    def failures(self, ip: str, now: float) -> int:
        return self._by_source.count(ip, now)

    def user_failures(self, user: str, now: float) -> int:
        return self._by_user.count(user, now)

    def purge(self, now: float) -> int:
        return self._by_source.purge(now) + self._by_user.purge(now)
