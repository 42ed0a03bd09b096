"""Drives `sipedge.resolve.Resolution` with dnspython's async resolver.

The servers come from `[dns] servers` (our own list, unlike Kamailio which can only use the
system resolver), else from the nameservers of `[dns] resolv_conf`. One `DnsResolver` per
worker: its cache is shared by every resolution of that worker, and concurrent identical
questions are asked once.

Use from the proxy (stateless or stateful)::

    res = resolver.resolution(hop)                # NextHop from ProxyCore.next_hop()
    target = resolver.next_target_nowait(res)     # Target, None (nothing) or PENDING
    if target is PENDING:
        target = await resolver.next_target(res)  # asks DNS as needed
    ...                                           # the target timed out or answered 503:
    target = await resolver.next_target(res)      # the next one (None: all were tried)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Iterable

from ..config.loader import split_server
from ..config.sections import DnsParams
from ..resolve import Answer, DnsCache, Query, Resolution, Target
from ..sip.proxy import NextHop

if TYPE_CHECKING:
    import dns.asyncresolver
    import dns.resolver

# dnspython's resolver (some 60 modules) is imported on the first question, not at start:
# a box whose next hops are addresses never needs it (issue 13, boot to first answer)

log = logging.getLogger("sipedge.dns")

PENDING = object()  # next_target_nowait(): DNS must be asked first
DEFAULT_NEGATIVE_TTL_S = 30.0


class DnsResolver:
    def __init__(self, params: DnsParams, *, transports: Iterable[str] = ("udp", "tcp", "tls"),
                 families: Iterable[str] = ("ipv4", "ipv6"), rand=random.random) -> None:
        self.params = params
        wanted = set(transports)
        self.transports = tuple(t for t in params.srv_transports if t in wanted)
        self.families = tuple(families)
        self.rand = rand
        self.cache = DnsCache(params.cache_entries, params.max_ttl_s, params.negative_ttl_s)
        self._resolver: Any = None  # make_resolver(params) on the first question
        self._inflight: dict[Query, asyncio.Future] = {}
        self.queries = 0
        self.failures = 0

    @property
    def resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            self._resolver = make_resolver(self.params)
        return self._resolver

    def resolution(self, hop: NextHop) -> Resolution:
        return Resolution(hop.uri, hop.host, self.cache, transports=self.transports,
                          families=self.families, naptr=self.params.naptr, rand=self.rand)

    def next_target_nowait(self, res: Resolution):
        """The next target when no DNS question is needed (cache hits, numeric hosts);
        PENDING when `next_target()` must be awaited; None when nothing is left."""
        if res.next_query(time.monotonic()) is not None:
            return PENDING
        return res.next_target()

    async def next_target(self, res: Resolution) -> Target | None:
        """The next target, asking DNS as needed. None: every target was tried or nothing
        resolved (the caller answers 503)."""
        while (q := res.next_query(time.monotonic())) is not None:
            res.feed(await self.ask(q), time.monotonic())
        return res.next_target()

    async def ask(self, q: Query) -> Answer | None:
        """One question, shared with identical questions in flight. None on failure."""
        fut = self._inflight.get(q)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[q] = fut
        try:
            answer = await self._query(q)
            fut.set_result(answer)
            return answer
        except BaseException:  # cancelled: the waiters see a failed query, not a hang
            if not fut.done():
                fut.set_result(None)
            raise
        finally:
            del self._inflight[q]

    async def _query(self, q: Query) -> Answer | None:
        import dns.exception
        import dns.name
        import dns.resolver

        self.queries += 1
        name = dns.name.from_text(q.name)
        try:
            ans = await self.resolver.resolve(name, q.rdtype, raise_on_no_answer=False,
                                              search=False)
        except dns.resolver.NXDOMAIN as exc:
            return Answer((), _negative_ttl(exc.responses().get(name)))
        except (dns.exception.DNSException, OSError) as exc:
            self.failures += 1
            log.info("dns query failed name=%s type=%s: %s", q.name, q.rdtype.name,
                     type(exc).__name__)
            return None
        if ans.rrset is None:
            return Answer((), _negative_ttl(ans.response))
        return Answer(tuple(ans.rrset), float(ans.rrset.ttl))


def _negative_ttl(response) -> float:
    """RFC 2308: the SOA in the authority section gives how long 'nothing' may be cached."""
    import dns.rdatatype

    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return float(min(rrset.ttl, rrset[0].minimum))
    return DEFAULT_NEGATIVE_TTL_S


def make_resolver(params: DnsParams) -> dns.asyncresolver.Resolver:
    """A resolver for the configured servers, else those of `resolv_conf`. No caching in
    dnspython (ours is in front), no search list."""
    import dns.asyncresolver
    import dns.resolver

    if params.servers:
        res = dns.asyncresolver.Resolver(configure=False)
        servers = [split_server(s) for s in params.servers]
        _set_nameservers(res, [s for s in servers if s is not None])
    else:
        try:
            res = dns.asyncresolver.Resolver(filename=params.resolv_conf)
        except dns.resolver.NoResolverConfiguration as exc:
            # numeric next hops still work; names get 503 until the config names servers
            log.warning("no DNS servers: [dns] servers is empty and %s: %s", params.resolv_conf, exc)
            res = dns.asyncresolver.Resolver(configure=False)
            res.nameservers = []
    res.timeout = params.timeout_s
    res.lifetime = params.timeout_s * params.attempts * max(1, len(res.nameservers))
    res.cache = None
    return res


def _set_nameservers(res: dns.resolver.Resolver, servers: list[tuple[str, int]]) -> None:
    try:  # dnspython >= 2.4: a nameserver object per address and port
        import dns.nameserver

        res.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
    except ImportError:  # Debian 12's 2.3: one port per address
        res.nameservers = [ip for ip, _ in servers]
        res.nameserver_ports = {ip: port for ip, port in servers}
