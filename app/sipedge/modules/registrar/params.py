"""[registrar]: REGISTER handling and the location database."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.schema import option, section


@section("registrar")
@dataclass(frozen=True)
class RegistrarParams:
    """Registrar and location service (RFC 3261 10, RFC 3327 Path) on SQLite."""

    db_path: str = option("/data/sipedge/location.sqlite", "SQLite database of bindings and "
                          "subscribers (on the data partition; created when missing); a "
                          "relative path is relative to the config file (to the working "
                          "directory for the embedded default)",
                          reloadable=False)
    db_synchronous: str = option("full", "SQLite synchronous mode in WAL: full (a commit "
                                 "survives a power cut) or normal (faster; a power cut may lose "
                                 "the last commits, never consistency)",
                                 choices=("full", "normal"), reloadable=False)
    default_expires_s: int = option(3600, "expires of a contact without an expires parameter "
                                    "or Expires header", min=1, max=2**31 - 1)
    min_expires_s: int = option(60, "shorter non-zero expires are refused with 423 and "
                                "Min-Expires", min=0, max=86400)
    max_expires_s: int = option(7200, "longer expires are shortened to this", min=1,
                                max=2**31 - 1)
    max_contacts: int = option(10, "bindings one AOR may have (403 beyond)", min=1, max=1000)
    max_contacts_per_request: int = option(20, "Contact values one REGISTER may carry",
                                           min=1, max=1000)
    path_mode: str = option("strict", "Path (RFC 3327): strict = store it, reject 420 when "
                            "the UA does not send Supported: path; lazy = store it and echo "
                            "it only to UAs that support it; off = ignore Path",
                            choices=("strict", "lazy", "off"))
    require_subscriber: bool = option(True, "only users in the subscriber table may register "
                                      "(404 for others); lookups of unknown users give 404")
    purge_interval_s: float = option(60.0, "how often expired bindings are deleted", min=1,
                                     max=3600)
    nat_keepalive_interval_s: float = option(25.0, "interval of keepalive pings (OPTIONS over "
                                             "UDP, CRLF over TCP/TLS) to NATed contacts "
                                             "(0: off)", min=0, max=3600)
    nat_keepalive_method: str = option("options", "keepalive for NATed UDP contacts",
                                       choices=("options", "crlf"))
    nat_to_received: bool = option(True, "send requests for a NATed contact to the address "
                                   "its REGISTER came from")
