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


@section("listen", array=True)
@dataclass(frozen=True)
class ListenParams:
    """A SIP listener. Repeat `[[listen]]` for several."""

    proto: str = option("udp", "transport", choices=("udp", "tcp"), reloadable=False)
    address: str = option("127.0.0.1", "IPv4 or IPv6 address to bind", reloadable=False)
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


# Modules whose import registers further sections.
SECTION_MODULES = ("sipedge.appliance.params",)
