"""Script-facing security calls (`ksr.security.*` once wired).

`msg` is the script's RequestMsg (anything with `.raw`, `.src_ip`); `now` is monotonic
seconds (the block table is per worker and not persisted).
"""

from __future__ import annotations

from .. import ReplySpec
from .core import Action, Decision, Security


def check(sec: Security, msg, listener: str, now: float) -> Decision:
    """Screen a request: ACL, User-Agent, blocklist, flood counting."""
    return sec.check_request(msg.src_ip, listener, msg.raw.get("user-agent"), now)


def reply_for(decision: Decision) -> ReplySpec | None:
    """The reply a refused request gets (None: drop silently or accept)."""
    if decision.action is Action.REJECT_503:
        return ReplySpec(503, "Service Unavailable", (("Retry-After", "300"),))
    return None


def is_blocked(sec: Security, ip: str, now: float) -> bool:
    return sec.blocklist.is_blocked(ip, now)
