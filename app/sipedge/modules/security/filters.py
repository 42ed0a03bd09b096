"""Static filters: User-Agent deny list and per-listener allow/deny CIDR lists, sans-IO."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Scanners and attack tools that announce themselves (matched as case-insensitive substrings).
DEFAULT_UA_DENY = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sipsak-scan",
                   "sundayddr", "iwar", "sipptk", "vaxasip", "smap", "pplsip", "sip auditor",
                   "eyebeam sipscan")


class UserAgentFilter:
    def __init__(self, patterns: Iterable[str] = DEFAULT_UA_DENY) -> None:
        self.patterns = tuple(p.lower() for p in patterns if p)

    def denied(self, user_agent: str | None) -> str | None:
        """The pattern that matched, or None. A missing User-Agent is not denied."""
        if not user_agent:
            return None
        ua = user_agent.lower()
        for p in self.patterns:
            if p in ua:
                return p
        return None


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32` -> networks. Raises ValueError."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


@dataclass(frozen=True)
class Acl:
    """Deny wins; an empty allow list allows everyone not denied."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def from_strings(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> "Acl":
        return cls(parse_networks(allow), parse_networks(deny))

    def permits(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.deny if net.version == addr.version):
            return False
        if not self.allow:
            return True
        return any(addr in net for net in self.allow if net.version == addr.version)


class ListenerAcls:
    """Acl per listener name (`udp:127.0.0.1:5060`); `*` applies to listeners without one."""

    def __init__(self, acls: Mapping[str, Acl]) -> None:
        self.acls = dict(acls)

    def permits(self, listener: str, ip: str) -> bool:
        acl = self.acls.get(listener) or self.acls.get("*")
        return True if acl is None else acl.permits(ip)
