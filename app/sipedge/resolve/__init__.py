"""Sans-IO name resolution for SIP: RFC 3263 next-hop location over dnspython rdata.

`Resolution` holds the whole workflow (NAPTR -> SRV -> A/AAAA, transport choice, RFC 2782
ordering, fail-over order) and `DnsCache` the TTL cache. Neither does I/O nor reads a clock:
the driver (`sipedge.io.dns`) asks the questions `next_query()` returns and passes `now`.
"""

from .cache import DnsCache
from .sip import Answer, Query, Resolution, Target, literal_target
from .srv import order_srv

__all__ = ["Answer", "DnsCache", "Query", "Resolution", "Target", "literal_target", "order_srv"]
