"""Config section `[diameter]` (importing this module registers it with the loader)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...config.schema import option, section

if TYPE_CHECKING:
    import random

    from ...diameter.base import Identity
    from ...diameter.peer import PeerSettings
    from .core import Node

# The codec, the dictionary and the node are imported by the functions that use them: every
# config load imports this module (to know the section), in the supervisor and in proxies
# without the diameter module too (issue 13: memory and boot time).


def application_id(name: str | int) -> int:
    from ...diameter.dictionary import application_id as lookup

    return lookup(name)

_IDENT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ListenParams:
    """A Diameter listener."""

    address: str = option("127.0.0.1", "IP address to bind (`0.0.0.0` / `::`: all)",
                          reloadable=False)
    port: int = option(3868, "port (0: any free port)", min=0, max=65535, reloadable=False)
    transport: str = option("tcp", "tcp, or sctp where the kernel has it",
                            choices=("tcp", "sctp"), reloadable=False)


@dataclass(frozen=True)
class PeerParams:
    """A configured peer (freeDiameter's ConnectPeer, cdp's <Peer>)."""

    host: str = option(doc="the peer's Diameter identity (its Origin-Host)", required=True)
    address: str = option("", "IP address to connect to; empty: we only accept this peer's "
                          "connections")
    port: int = option(3868, "port to connect to", min=1, max=65535)
    transport: str = option("tcp", "tcp or sctp", choices=("tcp", "sctp"))
    connect: bool = option(True, "open the connection ourselves (with `address`); both sides "
                           "may: the RFC 6733 election keeps one")


@dataclass(frozen=True)
class RouteParams:
    """A realm route (freeDiameter rt_default, cdp <Realm>): requests for `realm` go to `peer`."""

    realm: str = option(doc="Destination-Realm this route serves; `*` is a default route, "
                        "used only when the realm has no usable route", required=True)
    peer: str = option(doc="Diameter identity of a configured peer", required=True)
    metric: int = option(10, "lower wins; equal metrics share the load in turn", min=0,
                         max=65535)
    applications: list[str] = option(default_factory=list,
                                     doc="application ids or names (cx, sh, rx, gx, s6a) this "
                                     "route serves; empty: any")


@dataclass(frozen=True)
class VendorAppParams:
    """A Vendor-Specific-Application-Id we announce."""

    vendor: int = option(10415, "Vendor-Id (10415: 3GPP)", min=0, max=4294967295)
    auth: str = option("", "Auth-Application-Id (number or name), empty: none")
    acct: str = option("", "Acct-Application-Id (number or name), empty: none")


@section("diameter")
@dataclass(frozen=True)
class DiameterParams:
    """Diameter peers (RFC 6733), realm routing and the relay agent (DRA)."""

    identity: str = option("", "our Diameter identity (Origin-Host), required when the "
                           "module is loaded", reloadable=False)
    realm: str = option("", "our realm (Origin-Realm), required when the module is loaded",
                        reloadable=False)
    host_ip_addresses: list[str] = option(default_factory=list,
                                          doc="Host-IP-Address values of our CER/CEA; empty: "
                                          "the local address of each connection")
    product_name: str = option("sipedge", "Product-Name of our CER/CEA")
    vendor_id: int = option(0, "Vendor-Id of our CER/CEA", min=0, max=4294967295)
    auth_applications: list[str] = option(default_factory=list,
                                          doc="Auth-Application-Id values we announce "
                                          "(numbers or cx, sh, rx, gx, s6a, ...)")
    acct_applications: list[str] = option(default_factory=list,
                                          doc="Acct-Application-Id values we announce")
    vendor_application: list[VendorAppParams] = option(
        default_factory=list, doc="Vendor-Specific-Application-Id entries we announce")
    relay: bool = option(False, "act as a Diameter relay agent (DRA): announce the relay "
                         "application and forward requests for other realms/hosts")
    accept_unknown_peers: bool = option(False, "accept a CER from a host that is not a "
                                        "configured peer (else CEA 3010 and close)")
    listen: list[ListenParams] = option(default_factory=list, doc="listeners",
                                        reloadable=False)
    peer: list[PeerParams] = option(default_factory=list, doc="configured peers")
    route: list[RouteParams] = option(default_factory=list, doc="realm routes")
    peer_realm_routes: bool = option(True, "a usable peer also routes its own Origin-Realm "
                                     "(after the configured routes of that realm)")
    tc_s: float = option(30.0, "Tc: reconnect interval of a closed peer", min=0.1, max=3600)
    tw_s: float = option(30.0, "Tw: watchdog interval (jitter of up to +-2 s is added; RFC "
                         "3539 asks for at least 6 s)", min=0.5, max=3600)
    cea_timeout_s: float = option(10.0, "connecting plus CER/CEA must finish within this",
                                  min=0.1, max=600)
    dpr_timeout_s: float = option(5.0, "how long our DPR waits for the DPA before closing",
                                  min=0.1, max=600)
    reopen_dwa: int = option(3, "DWAs in a row before a reconnected peer is used again "
                             "(RFC 3539 REOPEN)", min=1, max=10)
    request_timeout_s: float = option(10.0, "a relayed or own request without an answer "
                                      "after this long gets 3002", min=0.1, max=3600)
    max_pending: int = option(100000, "pending requests at most (more: 3004 TOO_BUSY)",
                              min=1, max=10000000)
    max_message_bytes: int = option(1048576, "largest message accepted (larger: the "
                                    "connection is closed)", min=4096, max=16777215)

    # -------------------------------------------------------------- derived

    def problems(self) -> list[tuple[str, str]]:
        """Cross-field checks, as (key under diameter., reason)."""
        out: list[tuple[str, str]] = []
        if self.identity and not _IDENT.match(self.identity):
            out.append(("identity", "expected a host name (FQDN)"))
        if self.realm and not _IDENT.match(self.realm):
            out.append(("realm", "expected a realm (domain name)"))
        for i, ip in enumerate(self.host_ip_addresses):
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                out.append((f"host_ip_addresses[{i}]", "expected an IP address"))
        for key, names in (("auth_applications", self.auth_applications),
                           ("acct_applications", self.acct_applications)):
            for i, n in enumerate(names):
                try:
                    application_id(n)
                except KeyError as exc:
                    out.append((f"{key}[{i}]", str(exc.args[0])))
        for i, v in enumerate(self.vendor_application):
            for k in ("auth", "acct"):
                val = getattr(v, k)
                if val:
                    try:
                        application_id(val)
                    except KeyError as exc:
                        out.append((f"vendor_application[{i}].{k}", str(exc.args[0])))
        hosts: dict[str, int] = {}
        for i, p in enumerate(self.peer):
            if not _IDENT.match(p.host):
                out.append((f"peer[{i}].host", "expected a host name (FQDN)"))
            if p.host.lower() in hosts:
                out.append((f"peer[{i}].host", f"duplicate of peer[{hosts[p.host.lower()]}]"))
            hosts.setdefault(p.host.lower(), i)
            if p.address:
                try:
                    ipaddress.ip_address(p.address)
                except ValueError:
                    out.append((f"peer[{i}].address", "expected an IP address"))
            if self.identity and p.host.lower() == self.identity.lower():
                out.append((f"peer[{i}].host", "is our own identity"))
        for i, r in enumerate(self.route):
            if r.peer.lower() not in hosts:
                out.append((f"route[{i}].peer", f"no [[diameter.peer]] with host {r.peer!r}"))
            for j, a in enumerate(r.applications):
                try:
                    application_id(a)
                except KeyError as exc:
                    out.append((f"route[{i}].applications[{j}]", str(exc.args[0])))
        return out

    def loaded_problems(self) -> list[tuple[str, str]]:
        """Extra checks when the module is loaded."""
        out = []
        if not self.identity:
            out.append(("identity", "required when the diameter module is loaded"))
        if not self.realm:
            out.append(("realm", "required when the diameter module is loaded"))
        return out

    def identity_obj(self, origin_state_id: int = 1) -> Identity:
        from ...diameter.base import Identity, VendorApp
        from ...diameter.dictionary import RELAY_APPLICATION

        auth = tuple(application_id(a) for a in self.auth_applications)
        if self.relay and RELAY_APPLICATION not in auth:
            auth = auth + (RELAY_APPLICATION,)
        return Identity(
            self.identity, self.realm, tuple(self.host_ip_addresses), self.vendor_id,
            self.product_name, 1, origin_state_id, auth,
            tuple(application_id(a) for a in self.acct_applications),
            tuple(VendorApp(v.vendor, application_id(v.auth) if v.auth else 0,
                            application_id(v.acct) if v.acct else 0)
                  for v in self.vendor_application))

    def peer_settings(self, connect: bool) -> PeerSettings:
        from ...diameter.peer import PeerSettings

        return PeerSettings(connect=connect, tc_s=self.tc_s, tw_s=self.tw_s,
                            cea_timeout_s=self.cea_timeout_s, dpr_timeout_s=self.dpr_timeout_s,
                            reopen_dwa=self.reopen_dwa)

    def build_node(self, origin_state_id: int = 1, rng: random.Random | None = None) -> Node:
        from .core import Node, NodeSettings, PeerConfig
        from .routing import Route, RoutingTable

        peers = [PeerConfig(p.host, p.address if p.connect else "", p.port, p.transport,
                            self.peer_settings(p.connect and bool(p.address)))
                 for p in self.peer]
        routes = [Route(r.realm, r.peer, r.metric,
                        frozenset(application_id(a) for a in r.applications))
                  for r in self.route]
        settings = NodeSettings(relay=self.relay, accept_unknown_peers=self.accept_unknown_peers,
                                unknown_peer_settings=self.peer_settings(False),
                                max_pending=self.max_pending,
                                request_timeout_s=self.request_timeout_s,
                                max_message_bytes=self.max_message_bytes)
        return Node(self.identity_obj(origin_state_id), peers,
                    RoutingTable(routes, self.peer_realm_routes), settings, rng)

    def listeners(self) -> list[tuple[str, int, str]]:
        return [(lp.address, lp.port, lp.transport) for lp in self.listen]
