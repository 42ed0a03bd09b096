"""The security module instance for one worker: one call per incoming request."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .blocklist import Block, Blocklist
from .failures import AuthFailures
from .filters import Acl, ListenerAcls, UserAgentFilter
from .flood import FloodDetector
from .params import SecurityParams


class Action(Enum):
    ACCEPT = "accept"
    DROP = "drop"  # say nothing
    REJECT_503 = "503"  # reply 503 (flood_action = "503")


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""  # acl, blocked, flood, user_agent

    @property
    def accepted(self) -> bool:
        return self.action is Action.ACCEPT


ACCEPT = Decision(Action.ACCEPT)


class Security:
    def __init__(self, params: SecurityParams) -> None:
        self.params = params
        self.blocklist = Blocklist(params.max_tracked)
        self.flood = FloodDetector(window_s=params.flood_window_s,
                                   max_requests=max(1, params.flood_max_requests),
                                   block_s=params.flood_block_s,
                                   max_tracked=params.max_tracked,
                                   max_blocked=params.max_tracked, trusted=params.trusted)
        self.flood.blocked = self.blocklist  # one block table for flood and failures
        self.failures = AuthFailures(self.blocklist,
                                     max_failures=params.auth_max_failures or 1 << 30,
                                     max_user_failures=params.auth_max_user_failures or 1 << 30,
                                     window_s=params.auth_window_s, block_s=params.auth_block_s,
                                     max_tracked=params.max_tracked)
        self.user_agents = UserAgentFilter(params.user_agent_deny)
        self.acls = ListenerAcls({a.listener: Acl.from_strings(a.allow, a.deny)
                                  for a in params.acl})

    def _blocked_action(self) -> Action:
        return Action.REJECT_503 if self.params.flood_action == "503" else Action.DROP

    def check_request(self, src_ip: str, listener: str, user_agent: str | None,
                      now: float) -> Decision:
        """Run for every request before routing, cheapest test first."""
        if not self.acls.permits(listener, src_ip):
            return Decision(Action.DROP, "acl")
        if self.user_agents.denied(user_agent):
            return Decision(Action.DROP, "user_agent")
        if self.params.flood_max_requests == 0:
            return (Decision(self._blocked_action(), "blocked")
                    if self.blocklist.is_blocked(src_ip, now) else ACCEPT)
        if self.blocklist.is_blocked(src_ip, now):
            return Decision(self._blocked_action(), "blocked")
        if not self.flood.hit(src_ip, now):
            return Decision(self._blocked_action(), "flood")
        return ACCEPT

    def auth_failed(self, src_ip: str, user: str, now: float) -> Block | None:
        if self.flood.is_trusted(src_ip):
            return None
        return self.failures.failed(src_ip, user, now)

    def auth_succeeded(self, src_ip: str) -> None:
        self.failures.succeeded(src_ip)

    def purge(self, now: float) -> int:
        """Run from a timer (every few seconds)."""
        return self.flood.purge(now) + self.failures.purge(now)
