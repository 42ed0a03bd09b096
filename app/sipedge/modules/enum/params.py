"""Config section `[enum]` (importing this module registers it with the loader)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.schema import option, section


@section("enum")
@dataclass(frozen=True)
class EnumParams:
    """ENUM lookups (RFC 6116): E.164 numbers to SIP URIs through NAPTR records."""

    suffix: str = option("e164.arpa.", "domain the reversed digits go under (e.g. a private "
                         "tree such as e164.example.net.)")
    services: list[str] = option(default_factory=lambda: ["e2u+sip", "sip+e2u"],
                                 doc="NAPTR services accepted (E2U+sip and the old SIP+E2U)")
    non_digits: str = option("strip", "characters other than digits after an optional '+': "
                             "strip them (visual separators) or reject the number",
                             choices=("strip", "reject"))
    max_depth: int = option(4, "non-terminal NAPTR records followed at most this deep",
                            min=0, max=16)
    servers: list[str] = option(default_factory=list,
                                doc="DNS servers for ENUM as `ip` or `ip:port`; empty: those "
                                "of [dns]")
    timeout_s: float = option(0.0, "per-server timeout for ENUM queries; 0: [dns] timeout_s",
                              min=0, max=30)
