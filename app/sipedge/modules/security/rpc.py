"""RPC methods `sec.blocked` and `sec.unblock` as plain functions over one worker's state.

The worker owns the tables; the main process fans a call out to every worker and merges
(blocked: the union; unblock: true if any worker had the source)."""

from __future__ import annotations

import ipaddress

from .core import Security


def sec_blocked(sec: Security, now: float) -> list[dict]:
    """Currently blocked sources: ip, reason, seconds left."""
    return [{"ip": b.ip, "reason": b.reason, "expires_in_s": round(b.until - now, 1)}
            for b in sec.blocklist.active(now)]


def sec_unblock(sec: Security, ip: str) -> bool:
    """Unblock one source (also forgets its failed-login count)."""
    ipaddress.ip_address(ip)  # ValueError for garbage: the RPC layer answers invalid params
    sec.failures.succeeded(ip)
    return sec.blocklist.unblock(ip)


RPC = {"sec.blocked": sec_blocked, "sec.unblock": sec_unblock}
