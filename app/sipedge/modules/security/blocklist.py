"""Blocked sources with an end time and a reason, bounded, sans-IO."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Block:
    ip: str
    until: float
    reason: str  # flood, auth_failures, user_failures, manual


class Blocklist:
    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self._blocks: dict[str, Block] = {}

    def block(self, ip: str, until: float, reason: str) -> Block:
        old = self._blocks.get(ip)
        if old is not None and old.until > until:
            return old
        b = Block(ip, until, reason)
        self._blocks[ip] = b
        if len(self._blocks) > self.max_entries:
            soonest = min(self._blocks.values(), key=lambda x: x.until)
            del self._blocks[soonest.ip]
        return b

    def is_blocked(self, ip: str, now: float) -> bool:
        b = self._blocks.get(ip)
        if b is None:
            return False
        if b.until <= now:
            del self._blocks[ip]
            return False
        return True

    def unblock(self, ip: str) -> bool:
        return self._blocks.pop(ip, None) is not None

    def active(self, now: float) -> list[Block]:
        return sorted((b for b in self._blocks.values() if b.until > now), key=lambda b: b.ip)

    def purge(self, now: float) -> int:
        dead = [ip for ip, b in self._blocks.items() if b.until <= now]
        for ip in dead:
            del self._blocks[ip]
        return len(dead)

    def __len__(self) -> int:
        return len(self._blocks)
