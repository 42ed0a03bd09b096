"""Blocked sources with an end time and a reason, bounded, sans-IO.

Every block that starts and every block that ends (expired, lifted by RPC, or evicted when
the table is full) is queued once in `events` (bounded) with running totals, for the
runtime to log and count: an operator must see why requests from a source vanish.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MAX_EVENTS = 1024  # queued block/unblock events not yet reported; the oldest are lost first


@dataclass(frozen=True, slots=True)
class Block:
    ip: str
    until: float
    reason: str  # flood, auth_failures, user_failures, manual
    since: float | None = None  # when it started (None: not known to the caller)


@dataclass(frozen=True, slots=True)
class BlockEvent:
    kind: str  # blocked | unblocked
    block: Block
    cause: str = ""  # unblocked: expired | manual | evicted


class Blocklist:
    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self._blocks: dict[str, Block] = {}
        self.events: deque[BlockEvent] = deque(maxlen=MAX_EVENTS)
        self.blocks_total = 0
        self.unblocks_total = 0

    def block(self, ip: str, until: float, reason: str, now: float | None = None) -> Block:
        old = self._blocks.get(ip)
        if old is not None:
            if now is not None and old.until <= now:  # ended, not yet noticed
                self._ended(old, "expired")
                old = None
            elif old.until > until:
                return old
        b = Block(ip, until, reason, now if old is None else old.since)
        self._blocks[ip] = b
        if old is None:  # a new block; a longer one for a blocked source is no news
            self.blocks_total += 1
            self.events.append(BlockEvent("blocked", b))
        if len(self._blocks) > self.max_entries:
            soonest = min(self._blocks.values(), key=lambda x: x.until)
            del self._blocks[soonest.ip]
            self._ended(soonest, "evicted")
        return b

    def _ended(self, b: Block, cause: str) -> None:
        self.unblocks_total += 1
        self.events.append(BlockEvent("unblocked", b, cause))

    def is_blocked(self, ip: str, now: float) -> bool:
        b = self._blocks.get(ip)
        if b is None:
            return False
        if b.until <= now:
            del self._blocks[ip]
            self._ended(b, "expired")
            return False
        return True

    def unblock(self, ip: str) -> bool:
        b = self._blocks.pop(ip, None)
        if b is None:
            return False
        self._ended(b, "manual")
        return True

    def active(self, now: float) -> list[Block]:
        return sorted((b for b in self._blocks.values() if b.until > now), key=lambda b: b.ip)

    def purge(self, now: float) -> int:
        dead = [b for b in self._blocks.values() if b.until <= now]
        for b in dead:
            del self._blocks[b.ip]
            self._ended(b, "expired")
        return len(dead)

    def drain(self) -> list[BlockEvent]:
        """The events since the last call, oldest first."""
        out = list(self.events)
        self.events.clear()
        return out

    def __len__(self) -> int:
        return len(self._blocks)
