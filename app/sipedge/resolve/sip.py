"""Locating SIP servers (RFC 3263 section 4), sans-IO.

A `Resolution` turns a next-hop URI into an ordered list of `Target`s (address, port,
transport). It never does I/O: the driver loops ::

    while (q := res.next_query(now)) is not None:
        res.feed(ask_dns(q), now)         # Answer, or None when the query failed
    target = res.next_target()            # None: nothing (more) to try

and calls the same loop again after a target timed out or answered 503 (fail-over): the
next SRV target, the next address, the next NAPTR service. Answers go into the shared
`DnsCache`, and questions the cache can answer are never returned by `next_query`.

Rules (RFC 3263 4.1, 4.2):
- numeric host: no DNS; transport from `transport=` or sip -> udp, sips -> tls;
- explicit port: A/AAAA only; transport from `transport=` or sip -> udp, sips -> tls;
- explicit transport, no port: SRV for that transport, then A/AAAA with its default port;
- neither: NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T, in order/preference, only transports we have),
  else SRV in our preference order, else A/AAAA with udp (sip) or tls (sips);
- sips: only TLS records are used.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from dns.rdatatype import RdataType

from ..errors import LocalProtocolError
from ..sip.uri import DEFAULT_PORTS, URI
from .cache import DnsCache
from .srv import order_srv

NAPTR_SERVICES = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
FAMILY_RDTYPE = {"ipv4": RdataType.A, "ipv6": RdataType.AAAA}


@dataclass(frozen=True, slots=True)
class Query:
    """A question for the driver: `name` is absolute, lower case, without the final dot."""

    name: str
    rdtype: RdataType


@dataclass(frozen=True, slots=True)
class Answer:
    """What the driver learnt for a Query: the answer RRset's rdata (empty: the name or the
    record type does not exist) and the TTL to cache it for (the SOA minimum for an empty
    answer)."""

    rdatas: tuple = ()
    ttl: float = 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send a request to.

    `server_name` is the name a TLS server certificate must match: the URI's host (RFC 5922
    4.1), never an SRV target; for a numeric host it is that address."""

    ip: str
    port: int
    transport: str
    server_name: str


_literal_cache: dict[str, bool] = {}


def is_ip_literal(host: str) -> bool:
    """Cheap syntactic test (the URI parser already validated the host). The answers for
    recent hosts are kept: a proxy sends to few next hops."""
    known = _literal_cache.get(host)
    if known is not None:
        return known
    if ":" in host:
        known = True
    else:
        parts = host.split(".")
        known = len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3
                                        for p in parts)
    if len(_literal_cache) >= 4096:  # hosts are peer input: bounded
        _literal_cache.clear()
    _literal_cache[host] = known
    return known


def _uri_transport(uri: URI) -> str | None:
    """The transport the URI names explicitly, mapped for sips; '' when it names an
    impossible one (sips over udp)."""
    t = uri.param("transport")
    if not t:
        return None
    t = t.lower()
    if uri.scheme == "sips":
        return {"tcp": "tls", "tls": "tls"}.get(t, "")
    return t


def literal_target(uri: URI, host: str) -> Target | None:
    """The target for a numeric host (no DNS), or None when `host` is a name."""
    if not is_ip_literal(host):
        return None
    host = host.strip("[]")
    transport = _uri_transport(uri) or ("tls" if uri.scheme == "sips" else "udp")
    port = uri.port or DEFAULT_PORTS.get(transport, 5060)
    return Target(host, port, transport, host)


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


class Resolution:
    """RFC 3263 resolution of one next hop. See the module doc for the driver loop.

    `transports` is what we can send over, in our preference order (used for SRV lookups
    when there is no NAPTR); `families` is "ipv4"/"ipv6" in preference order (A/AAAA).
    `rand` feeds the RFC 2782 weighted choice. `max_queries` bounds the work a hostile
    zone can cause; after `max_failures` failed queries (DNS unreachable) no more are asked.
    """

    def __init__(self, uri: URI, host: str, cache: DnsCache, *,
                 transports: Iterable[str] = ("udp", "tcp", "tls"),
                 families: Iterable[str] = ("ipv4", "ipv6"), naptr: bool = True,
                 rand: Callable[[], float] = random.random, max_queries: int = 24,
                 max_failures: int = 2) -> None:
        self.uri = uri
        self.secure = uri.scheme == "sips"
        self.host = _norm(host.strip("[]"))
        self.cache = cache
        allowed = [t for t in transports if t in SRV_PREFIX]
        if self.secure:
            allowed = [t for t in allowed if t == "tls"]
        self.transports = tuple(allowed)
        self.families = tuple(f for f in families if f in FAMILY_RDTYPE)
        self.rand = rand
        self.max_queries = max_queries
        self.max_failures = max_failures
        self.queries = 0  # questions handed to the driver (cache misses)
        self.failures = 0  # questions that failed (timeout, SERVFAIL, ...)
        self.tried: list[Target] = []
        self._pending: Query | None = None
        self._ready: deque[Target] = deque()
        self._seen: set[tuple[str, int, str]] = set()
        # the plan: SRV names to try, hosts (name, port, transport) of the current service,
        # address families of the current host
        self._step = "naptr"
        self._services: deque[tuple[str, str]] = deque()
        self._srv_found = False
        self._fallback: str | None = None  # transport for the host's own A/AAAA, if allowed
        self._hosts: deque[tuple[str, int, str]] = deque()
        self._host: tuple[str, int, str] | None = None
        self._families: deque[str] = deque()

        literal = literal_target(uri, host)
        explicit = _uri_transport(uri)
        if literal is not None:
            self._step = "done"
            if literal.transport in self.transports:
                self._add(literal.ip, literal.port, literal.transport, literal.server_name)
        elif explicit == "" or (explicit is not None and explicit not in self.transports):
            self._step = "done"  # a transport we cannot use
        elif uri.port is not None:  # 4.2: explicit port, no SRV
            t = explicit or self._default_transport()
            self._step = "addr" if t else "done"
            if t:
                self._hosts.append((self.host, uri.port, t))
        elif explicit is not None:  # 4.2: explicit transport, SRV for it
            self._services.append((SRV_PREFIX[explicit] + self.host, explicit))
            self._fallback = explicit
            self._step = "srv"
        else:
            self._fallback = self._default_transport()
            if not naptr:
                self._step = "srv"
                self._fallback_services()

    # -- driver API ----------------------------------------------------------------------

    def next_query(self, now: float) -> Query | None:
        """The DNS question to ask before `next_target()` can answer, or None."""
        if self._pending is not None:
            return self._pending
        while not self._ready and self._step != "done":
            q = self._question()
            if q is None:
                continue
            cached = self.cache.get(q.name, q.rdtype, now)
            if cached is not None:
                self._consume(q, cached)
                continue
            if self.queries >= self.max_queries:
                self._step = "done"
                break
            self.queries += 1
            self._pending = q
            return q
        return None

    def feed(self, answer: Answer | None, now: float) -> None:
        """The answer to the question `next_query` returned (None: the query failed)."""
        q = self._pending
        if q is None:
            raise LocalProtocolError("feed() without a pending query")
        self._pending = None
        if answer is None:
            self.failures += 1
            self._consume(q, ())
            if self.failures >= self.max_failures:
                self._step = "done"
            return
        self.cache.put(q.name, q.rdtype, tuple(answer.rdatas), answer.ttl, now)
        self._consume(q, tuple(answer.rdatas))

    def next_target(self) -> Target | None:
        """The next destination to try, best first; None when everything was tried."""
        if self._pending is not None:
            raise LocalProtocolError("next_target() while a query is pending")
        if not self._ready:
            return None
        t = self._ready.popleft()
        self.tried.append(t)
        return t

    @property
    def exhausted(self) -> bool:
        return self._step == "done" and not self._ready and self._pending is None

    # -- the plan -----------------------------------------------------------------------

    def _default_transport(self) -> str | None:
        """Transport for A/AAAA-only resolution: udp for sip, tls for sips (4.1), or the
        first one we have when we have no such listener."""
        want = "tls" if self.secure else "udp"
        if want in self.transports:
            return want
        return self.transports[0] if self.transports else None

    def _fallback_services(self) -> None:
        for t in self.transports:
            self._services.append((SRV_PREFIX[t] + self.host, t))

    def _question(self) -> Query | None:
        """The next question of the plan; None when the plan moved on without one."""
        if self._step == "naptr":
            return Query(self.host, RdataType.NAPTR)
        if self._step == "srv":
            if self._services:
                return Query(self._services[0][0], RdataType.SRV)
            if not self._srv_found and self._fallback is not None:
                # 4.2: no SRV records at all: the host itself with the default port
                self._hosts.append((self.host, DEFAULT_PORTS[self._fallback], self._fallback))
                self._fallback = None
                self._step = "addr"
            else:
                self._step = "done"
            return None
        if self._step == "addr":
            if self._host is None or not self._families:
                if not self._hosts:
                    self._host = None
                    self._step = "srv"  # the next service, if any
                    return None
                self._host = self._hosts.popleft()
                self._families = deque(self.families)
                if is_ip_literal(self._host[0]):  # not legal in SRV, but seen in the wild
                    self._families.clear()
                    self._add(*self._host, self.host)
                return None
            return Query(self._host[0], FAMILY_RDTYPE[self._families[0]])
        return None

    def _consume(self, q: Query, rdatas: tuple) -> None:
        if q.rdtype == RdataType.NAPTR:
            self._on_naptr(rdatas)
        elif q.rdtype == RdataType.SRV:
            _, transport = self._services.popleft()
            self._on_srv(rdatas, transport)
        else:
            self._families.popleft()
            assert self._host is not None
            for rd in rdatas:
                if rd.rdtype == q.rdtype:
                    self._add(rd.address, self._host[1], self._host[2], self.host)

    def _on_naptr(self, rdatas: tuple) -> None:
        self._step = "srv"
        usable = []
        for rd in rdatas:
            if rd.rdtype != RdataType.NAPTR or rd.flags.lower() != b"s":
                continue
            t = NAPTR_SERVICES.get(rd.service.decode("ascii", "replace").lower())
            if t is None or t not in self.transports:
                continue
            usable.append((rd.order, rd.preference, _norm(rd.replacement.to_text()), t))
        for _, _, name, t in sorted(usable, key=lambda u: (u[0], u[1])):
            if name:
                self._services.append((name, t))
        if not self._services:
            self._fallback_services()

    def _on_srv(self, rdatas: tuple, transport: str) -> None:
        srvs = [rd for rd in rdatas if rd.rdtype == RdataType.SRV]
        if not srvs:
            return
        self._srv_found = True  # even "." (service not offered) stops the A/AAAA fallback
        for rd in order_srv(srvs, self.rand):
            self._hosts.append((_norm(rd.target.to_text()), rd.port, transport))
        if self._hosts:
            self._step = "addr"

    def _add(self, ip: str, port: int, transport: str, server_name: str) -> None:
        key = (ip, port, transport)
        if key not in self._seen:
            self._seen.add(key)
            self._ready.append(Target(ip, port, transport, server_name))
