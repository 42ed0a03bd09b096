"""[registrar]: REGISTER handling and the location database."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.schema import option, section


@dataclass(frozen=True)
class SubscriberParams:
    """A subscriber declared in the config file (`[[registrar.subscriber]]`): HA1 values
    only, never a password. HA1 = hex digest of `username:realm:password`, the realm being
    the domain (`printf 'alice:example.com:secret' | md5sum`)."""

    username: str = option(doc="user name (the digest username)", required=True)
    domain: str = option(doc="domain (the digest realm)", required=True)
    ha1_md5: str = option("", "MD5 HA1, 32 hex digits", secret=True)
    ha1_sha256: str = option("", "SHA-256 HA1, 64 hex digits", secret=True)


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
    storage: str = option("db", "where bindings live: db = in the database, every REGISTER "
                          "written through (survives a power cut; one SD-card write per "
                          "REGISTER); write-back = in RAM, saved to the database every "
                          "`write_back_interval_s` and at a clean stop (a power cut loses "
                          "the changes of the last interval); memory = in RAM only, like "
                          "Kamailio usrloc db_mode=0 (no SD-card writes; a reboot or power "
                          "cut loses every binding until phones re-register). Subscribers "
                          "are always in the database", choices=("db", "write-back", "memory"),
                          reloadable=False)
    write_back_interval_s: float = option(60.0, "write-back: how often RAM bindings are "
                                          "saved", min=1, max=86400)
    ram_path: str = option("", "memory and write-back: the RAM file of the location table, "
                           "shared by the workers (empty: in /dev/shm, named after db_path)",
                           reloadable=False)
    subscriber: list[SubscriberParams] = option(
        default_factory=list, doc="subscribers declared here, synced into the database when "
        "the config is loaded: added or updated, and deleted when taken out of this list "
        "again (subscribers added by RPC are left alone)")
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
    max_aors: int = option(100000, "with require_subscriber off: AORs the location table "
                           "may hold; a REGISTER for a new AOR beyond it gets 503 (Retry-After "
                           "60)", min=1, max=100000000)
    purge_interval_s: float = option(60.0, "how often expired bindings are deleted", min=1,
                                     max=3600)
    nat_keepalive_interval_s: float = option(25.0, "interval of keepalive pings (OPTIONS over "
                                             "UDP, CRLF over TCP/TLS) to NATed contacts "
                                             "(0: off)", min=0, max=3600)
    nat_keepalive_method: str = option("options", "keepalive for NATed UDP contacts",
                                       choices=("options", "crlf"))
    nat_to_received: bool = option(True, "send requests for a NATed contact to the address "
                                   "its REGISTER came from")
