"""[security]: flood blocking, auth-failure blocking, scanner filter, listener ACLs."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.schema import option, section
from .filters import DEFAULT_UA_DENY


@dataclass(frozen=True)
class ListenerAclParams:
    """Allow/deny CIDR lists for one listener (`[[security.acl]]`)."""

    listener: str = option(doc="listener as proto:address:port (e.g. udp:0.0.0.0:5060), or "
                           "`*` for every listener without its own entry", required=True)
    allow: list[str] = option(default_factory=list,
                              doc="sources allowed (CIDR or address); empty: all not denied")
    deny: list[str] = option(default_factory=list, doc="sources refused (deny wins)")


@section("security")
@dataclass(frozen=True)
class SecurityParams:
    """Edge security: per-source flood limits (like pike), blocking after failed logins
    (like fail2ban), a User-Agent deny list and per-listener ACLs."""

    flood_window_s: float = option(2.0, "length of the window requests are counted in",
                                   min=0.1, max=3600)
    flood_max_requests: int = option(60, "more requests than this from one source within the "
                                     "window block it (0: flood detection off)", min=0,
                                     max=1000000)
    flood_block_s: float = option(300.0, "how long a flooding source stays blocked", min=1,
                                  max=86400)
    flood_action: str = option("drop", "what a blocked source gets: silence or 503",
                               choices=("drop", "503"))
    trusted: list[str] = option(default_factory=list,
                                doc="sources never flood-blocked (CIDR or address), e.g. "
                                "your PBX or SBC")
    auth_max_failures: int = option(5, "failed logins from one source within the window "
                                    "that block it (0: off)", min=0, max=10000)
    auth_max_user_failures: int = option(20, "failed logins for one user name (any sources) "
                                         "after which each further failing source is "
                                         "blocked (0: off)", min=0, max=100000)
    auth_window_s: float = option(600.0, "window of the failed-login counts", min=1,
                                  max=86400)
    auth_block_s: float = option(900.0, "how long a source blocked for failed logins stays "
                                 "blocked", min=1, max=604800)
    user_agent_deny: list[str] = option(default_factory=lambda: list(DEFAULT_UA_DENY),
                                        doc="requests whose User-Agent contains one of these "
                                        "(case-insensitive) are dropped")
    max_tracked: int = option(65536, "sources counted per worker (memory bound)", min=16,
                              max=10000000)
    acl: list[ListenerAclParams] = option(default_factory=list,
                                          doc="per-listener allow/deny lists")
