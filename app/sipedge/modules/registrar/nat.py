"""NAT traversal helpers (the idea of Kamailio's nathelper), sans-IO.

- `nat_reasons()` tells whether a UA sits behind NAT: its Contact is a private address, or
  its top Via does not name the address/port the message came from.
- `fix_contact()` rewrites the first Contact of a request or reply passing through to the
  source address, so that the other side can reach the UA.
- `KeepaliveSchedule` spreads keepalive pings for NATed bindings over the interval, and
  `options_ping()` builds the OPTIONS that keeps a UDP pinhole open.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from ...errors import RemoteProtocolError
from ...sip.headers.address import parse_address
from ...sip.message import Message, Request
from .core import Binding

# addresses behind NAT: RFC 1918, RFC 6598 (carrier-grade NAT), link-local, IPv6 ULA
_NATTED = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
    "fc00::/7", "fe80::/10"))


@lru_cache(maxsize=4096)
def is_private(host: str) -> bool:
    """Is `host` an address only reachable behind NAT? Host names are not. (Every REGISTER
    asks about its Contact host, mostly the same few: recent answers are kept.)"""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(addr in net for net in _NATTED if net.version == addr.version)


def nat_reasons(msg: Message, src_ip: str, src_port: int, transport: str = "udp") -> list[str]:
    """Why `msg` looks NATed (empty list: it does not). Reasons: contact_private,
    via_address, via_port, contact_address."""
    reasons = []
    src = src_ip.strip("[]").lower()
    try:
        via = msg.via
    except RemoteProtocolError:
        via = None
    if via is not None:
        if via.host.strip("[]").lower() != src:
            reasons.append("via_address")
        if transport == "udp" and (via.port or 5060) != src_port:
            reasons.append("via_port")
    contact = msg.get("contact")
    if contact:
        try:
            a = parse_address(contact)
        except RemoteProtocolError:
            a = None
        if a is not None and not a.star and a.uri.is_sip:
            if is_private(a.uri.host):
                reasons.append("contact_private")
            elif transport == "udp" and (a.uri.host_bare != src or
                                         (a.uri.port or 5060) != src_port):
                reasons.append("contact_address")
    return reasons


def fix_contact(msg: Message, src_ip: str, src_port: int) -> bool:
    """Rewrite host:port of the first Contact to the source address. True if changed."""
    values = msg.get_all("contact")
    if not values:
        return False
    a = parse_address(values[0])
    if a.star or not a.uri.is_sip:
        return False
    host = f"[{src_ip}]" if ":" in src_ip and not src_ip.startswith("[") else src_ip
    if a.uri.host == host and a.uri.port == src_port:
        return False
    values[0] = str(a.with_(uri=a.uri.with_(host=host, port=src_port)))
    msg.set("contact", ", ".join(values))
    return True


@dataclass(frozen=True, slots=True)
class PingTarget:
    received: str  # sip:ip:port[;transport=]
    transport: str
    socket: str
    contact: str


class KeepaliveSchedule:
    """Which NATed contacts to ping when. Each target is pinged once per `interval_s`, at an
    offset derived from its address so that pings do not bunch up."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next: dict[PingTarget, float] = {}

    def sync(self, bindings: Iterable[Binding], now: float) -> None:
        """Adopt the current NATed bindings (call after saves/purges or periodically)."""
        wanted = {PingTarget(b.received, b.transport, b.socket, b.contact)
                  for b in bindings if b.nat and b.received and b.expires_at > now}
        for t in list(self._next):
            if t not in wanted:
                del self._next[t]
        for t in wanted:
            if t not in self._next:
                offset = (zlib.crc32(t.received.encode()) % 1000) / 1000 * self.interval_s
                self._next[t] = now + offset
        return None

    def due(self, now: float) -> list[PingTarget]:
        out = []
        for t, at in self._next.items():
            if at <= now:
                out.append(t)
                # skip missed rounds instead of bursting after a stall
                self._next[t] = at + self.interval_s * (1 + int((now - at) // self.interval_s))
        return out

    def next_timer(self) -> float | None:
        return min(self._next.values(), default=None)

    def __len__(self) -> int:
        return len(self._next)


def options_ping(target: PingTarget, *, local_uri: str, via_sent_by: str, branch: str,
                 call_id: str, tag: str) -> Request:
    """An OPTIONS keepalive to a NATed contact (sent to `target.received`)."""
    transport = target.transport.upper()
    req = Request("OPTIONS", target.contact)
    req.add("Via", f"SIP/2.0/{transport} {via_sent_by};branch={branch};rport")
    req.add("Max-Forwards", "70")
    req.add("From", f"<{local_uri}>;tag={tag}")
    req.add("To", f"<{target.contact}>")
    req.add("Call-ID", call_id)
    req.add("CSeq", "1 OPTIONS")
    return req
