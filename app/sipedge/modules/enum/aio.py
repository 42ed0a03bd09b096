"""asyncio driver of `EnumResolution`, on the project's DNS resolver (`sipedge.io.dns`): the
servers come from `[enum] servers`, else from `[dns] servers` / `resolv_conf` — never only
the system resolver.

    lookup = EnumLookup(EnumParams(), dns_params)
    result = await lookup.lookup("+61355500912")   # Found | NotFound | DnsFailure
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Protocol

from ...config.sections import DnsParams
from ...io.dns import DnsResolver
from ...resolve import Answer, DnsCache, Query
from .core import EnumResolution, EnumResult


class Asker(Protocol):
    async def ask(self, q: Query) -> Answer | None: ...


def make_asker(dns_params: DnsParams, servers: list[str] | None = None,
               timeout_s: float | None = None) -> DnsResolver:
    """A `DnsResolver` (io/dns.py) for ENUM: `servers`/`timeout_s` override `[dns]`."""
    changes: dict = {}
    if servers:
        changes["servers"] = list(servers)
    if timeout_s is not None:
        changes["timeout_s"] = timeout_s
    return DnsResolver(dataclasses.replace(dns_params, **changes) if changes else dns_params)


class EnumLookup:
    """Runs lookups; one per worker. `asker` answers Query -> Answer | None (a DnsResolver)."""

    def __init__(self, asker: Asker, *, suffix: str = "e164.arpa.",
                 services: tuple[str, ...] = ("e2u+sip", "sip+e2u"), non_digits: str = "strip",
                 max_depth: int = 4, cache: DnsCache | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.asker = asker
        self.suffix = suffix
        self.services = services
        self.non_digits = non_digits
        self.max_depth = max_depth
        self.cache = cache
        self.clock = clock
        self.lookups = 0

    def resolution(self, number: str, suffix: str | None = None,
                   services: tuple[str, ...] | None = None) -> EnumResolution:
        return EnumResolution(number, suffix=suffix or self.suffix,
                              services=services or self.services, non_digits=self.non_digits,
                              max_depth=self.max_depth, cache=self.cache)

    async def lookup(self, number: str, suffix: str | None = None,
                     services: tuple[str, ...] | None = None) -> EnumResult:
        """Resolve one number. Raises EnumNumberError for input that is not a number."""
        res = self.resolution(number, suffix, services)
        self.lookups += 1
        while (q := res.next_query(self.clock())) is not None:
            res.feed(await self.asker.ask(q), self.clock())
        assert res.result is not None
        return res.result
