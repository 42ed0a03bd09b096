"""Config section `[http_client]` (importing this module registers it with the loader)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.schema import option, section


@section("http_client")
@dataclass(frozen=True)
class HttpClientParams:
    """HTTP(S) requests from routing scripts (the seed's http_client)."""

    timeout_s: float = option(5.0, "default bound of one whole request (connect, TLS, send, "
                              "response)", min=0.05, max=300)
    connect_timeout_s: float = option(2.0, "bound of connecting (TCP and TLS handshake)",
                                      min=0.05, max=300)
    max_response_bytes: int = option(1048576, "largest response body accepted", min=1024,
                                     max=67108864)
    max_connections_per_host: int = option(8, "concurrent connections per host and port "
                                           "(more requests wait)", min=1, max=1024)
    idle_timeout_s: float = option(30.0, "keep-alive connections unused this long are "
                                   "closed", min=0, max=3600)
    verify_tls: bool = option(True, "verify server certificates and host names (https)")
    ca_file: str = option("", "PEM file of trusted CAs for https; empty: the system CAs")
    user_agent: str = option("sipedge", "User-Agent header of requests")

    def client_kwargs(self) -> dict:
        """Keyword arguments of `HttpClient`."""
        return {"timeout_s": self.timeout_s, "connect_timeout_s": self.connect_timeout_s,
                "max_response_bytes": self.max_response_bytes,
                "max_connections_per_host": self.max_connections_per_host,
                "idle_timeout_s": self.idle_timeout_s, "verify_tls": self.verify_tls,
                "ca_file": self.ca_file or None, "user_agent": self.user_agent}
