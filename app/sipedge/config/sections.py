"""The core config sections: [core], [[listen]], [proxy], [routing]."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import option, section


@section("core")
@dataclass(frozen=True)
class CoreParams:
    """Process-wide settings."""

    workers: int = option(2, "number of worker processes (like Kamailio's children)", min=1, max=64,
                          reloadable=False)
    ctl_socket: str = option("/run/sipedge/ctl.sock", "path of the JSON-RPC control socket",
                             reloadable=False)
    log_level: str = option("info", "log level",
                            choices=("debug", "info", "warning", "error"))
    server_header: str = option("sipedge", "value of Server / User-Agent headers we generate")
    max_message_bytes: int = option(65535, "largest SIP message accepted", min=1024, max=1048576)
    udp_buffer_bytes: int = option(4194304, "kernel receive and send buffer of each UDP socket "
                                   "(SO_RCVBUF/SO_SNDBUF; as root it may exceed "
                                   "net.core.rmem_max)", min=65536, max=67108864,
                                   reloadable=False)
    tcp_max_connections: int = option(2048, "TCP/TLS connections per worker, in and out; "
                                      "past it the least recently active one is closed "
                                      "(each costs a socket and up to max_message_bytes of "
                                      "buffer)", min=16, max=1000000)
    tcp_max_connections_per_source: int = option(32, "TCP/TLS connections from one address "
                                                 "per worker; past it that source's least "
                                                 "recently active one is closed", min=1,
                                                 max=1000000)
    tcp_read_timeout_s: float = option(10.0, "a message started on a TCP/TLS connection "
                                       "must arrive whole within this time, or the "
                                       "connection is closed (slow senders)", min=0.5,
                                       max=600)
    tcp_max_send_buffer_bytes: int = option(1048576, "data queued for a TCP/TLS peer that "
                                            "does not read; past it the connection is "
                                            "closed", min=65536, max=67108864)
    overload_backlog_bytes: int = option(1048576, "overload shedding: when more than this "
                                         "is queued unread on a worker's UDP sockets (kernel "
                                         "accounting, about 1.3 KB per small datagram: 1 MiB "
                                         "is some 800 messages, 40-100 ms of work), new "
                                         "initial requests get 503 + Retry-After until the "
                                         "backlog is under a quarter of it; replies, ACK, "
                                         "CANCEL and in-dialog requests always go on "
                                         "(0: off)", min=0, max=67108864)
    overload_retry_after_s: int = option(5, "Retry-After of the overload 503", min=1,
                                         max=3600)
    modules: list[str] = option(default_factory=list,
                                doc="feature modules to load, like Kamailio's loadmodule: "
                                "`security`, `registrar`, `auth` (auth needs registrar), "
                                "`dispatcher`, `enum`, `http_client`, `uac`, `diameter`, `ims_pcscf`; each "
                                "is configured in its own section", reloadable=False)


@section("listen", array=True)
@dataclass(frozen=True)
class ListenParams:
    """A SIP listener. Repeat `[[listen]]` for several."""

    proto: str = option("udp", "transport (tls: see [tls] and docs/tls.md)",
                       choices=("udp", "tcp", "tls"), reloadable=False)
    address: str = option("127.0.0.1", "IPv4 or IPv6 address to bind; `0.0.0.0` / `::` "
                         "bind every address of that family (an IPv6 listener never takes "
                         "IPv4: add an IPv4 listener too); an address the box does not have "
                         "yet (DHCP, a VLAN) is bound as soon as it appears", reloadable=False)
    port: int = option(5060, "port to bind", min=1, max=65535, reloadable=False)
    advertise: str = option("", "address[:port] written into Via / Record-Route instead of the "
                            "bound one (NAT), like Kamailio's `listen ... advertise`")


@section("proxy")
@dataclass(frozen=True)
class ProxyParams:
    """Proxy behaviour."""

    record_route: bool = option(True, "insert Record-Route on initial requests (stateless mode)")
    domains: list[str] = option(default_factory=lambda: ["localhost"],
                                doc="domains this proxy is responsible for (besides its own addresses)")
    tcp_idle_timeout_s: float = option(300.0, "close TCP connections idle this long", min=1)
    max_forwards: int = option(70, "Max-Forwards set on requests that have none", min=1, max=255)


@dataclass(frozen=True)
class RouteRule:
    """One row of the declarative route table."""

    destination: str = option(doc="SIP URI of the next hop", required=True)
    domain: str = option("", "match the R-URI host (empty: any)")
    user_prefix: str = option("", "match the start of the R-URI user (empty: any)")


@section("routing")
@dataclass(frozen=True)
class RoutingParams:
    """How requests are routed: a Python script, or the declarative table."""

    script: str = option("", "path of a routing script (request_route/reply_route); "
                         "relative paths are relative to the config file")
    reload_check_s: float = option(2.0, "how often the script file is checked for changes", min=0.1)
    default_destination: str = option("", "next hop for requests no rule matches "
                                      "(empty: the R-URI itself)")
    rule: list[RouteRule] = option(default_factory=list, doc="route table, first match wins")


# --- [dns] and [tls] (next-hop resolution, SIP over TLS) -------------------------------------


@section("dns")
@dataclass(frozen=True)
class DnsParams:
    """Next-hop resolution (RFC 3263: NAPTR, SRV, A/AAAA) with our own resolvers."""

    servers: list[str] = option(default_factory=list,
                                doc="DNS servers as `ip` or `ip:port` (IPv6: `[ip]:port`); "
                                "empty: the nameservers of `resolv_conf`")
    resolv_conf: str = option("/etc/resolv.conf", "file read for nameservers when `servers` "
                              "is empty", reloadable=False)
    timeout_s: float = option(2.0, "how long to wait for one server's answer", min=0.05, max=30)
    attempts: int = option(2, "rounds over the server list before a query counts as failed",
                           min=1, max=10)
    naptr: bool = option(True, "look up NAPTR records first (RFC 3263 4.1); off: start with "
                         "SRV in `srv_transports` order")
    srv_transports: list[str] = option(default_factory=lambda: ["udp", "tcp", "tls"],
                                       doc="order of SRV lookups (_sip._udp, _sip._tcp, "
                                       "_sips._tcp) when a domain has no NAPTR records")
    cache_entries: int = option(4096, "DNS answers kept per worker (0: no cache)", min=0,
                                max=1000000)
    max_ttl_s: float = option(3600.0, "upper bound of how long an answer is cached", min=0)
    negative_ttl_s: float = option(60.0, "upper bound of how long 'no such name/record' is "
                                   "cached", min=0)


@section("tls")
@dataclass(frozen=True)
class TlsParams:
    """Certificates and policy for `proto = "tls"` listeners and outbound TLS."""

    certificate: str = option("", "our certificate chain (leaf first): a PEM file path or the "
                              "PEM text itself; required with a tls listener")
    private_key: str = option("", "the certificate's private key: a PEM file path or the PEM "
                              "text itself", secret=True)
    ca_bundle: str = option("", "trusted CA certificates (PEM file path or PEM text) for client "
                            "certificates and outbound servers; empty: the system CAs for "
                            "outbound connections")
    verify_peer: bool = option(False, "ask TLS clients for a certificate and verify it if "
                               "they send one")
    require_certificate: bool = option(False, "refuse TLS clients without a certificate that "
                                       "`ca_bundle` verifies")
    min_version: str = option("1.2", "lowest TLS version accepted and offered",
                              choices=("1.2", "1.3"))
    verify_server: bool = option(True, "verify the certificate of servers we connect to "
                                 "against `ca_bundle` and the URI host (RFC 5922)")
    handshake_timeout_s: float = option(10.0, "a TLS handshake must finish within this time",
                                        min=0.5, max=120)


# --- end [dns] and [tls] ---------------------------------------------------------------------


# --- [tm] (transaction-stateful relaying: t_relay) -----------------------------------------


@section("tm")
@dataclass(frozen=True)
class TmParams:
    """Transactions (RFC 3261 17, RFC 6026) and final-response timers for `t_relay()`."""

    t1_ms: int = option(500, "T1, round-trip estimate: first retransmission interval over UDP",
                        min=10, max=10000)
    t2_ms: int = option(4000, "T2, longest retransmission interval of non-INVITE requests and "
                        "INVITE responses", min=10, max=60000)
    t4_ms: int = option(5000, "T4, how long a message may stay in the network (timers I, K)",
                        min=10, max=60000)
    timer_d_s: float = option(32.0, "Timer D: how long an INVITE client transaction absorbs "
                              "retransmitted non-2xx replies over UDP (RFC: at least 32 s)",
                              min=0, max=300)
    wait_timer_s: float = option(5.0, "how long an INVITE client transaction stays after its "
                                 "2xx to match retransmitted 2xx replies (Kamailio's wt_timer; "
                                 "RFC 6026 Timer M is 64*T1; a later 2xx is forwarded "
                                 "statelessly along the same Via path)", min=0, max=300)
    fr_timeout_s: float = option(30.0, "a branch without any reply ends with 408 after this "
                                 "long (Kamailio's fr_timer)", min=0.1, max=3600)
    fr_inv_timeout_s: float = option(120.0, "an INVITE branch with a provisional reply but no "
                                     "final one is CANCELled and ends with 408 after this long "
                                     "(Kamailio's fr_inv_timer)", min=0.1, max=3600)


# --- end [tm] ------------------------------------------------------------------------------


# Modules whose import registers further sections.
SECTION_MODULES = ("sipedge.appliance.params", "sipedge.modules.auth.params",
                   "sipedge.modules.registrar.params", "sipedge.modules.security.params",
                   "sipedge.modules.dispatcher.params", "sipedge.modules.enum.params",
                   "sipedge.modules.http_client.params", "sipedge.modules.uac.params",
                   "sipedge.modules.diameter.params", "sipedge.modules.ims_pcscf.params")
