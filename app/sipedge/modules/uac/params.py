"""Config section `[uac]` with `[[uac.trunk]]` and `[[uac.registration]]` (importing this
module registers it with the loader)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.schema import option, section


@dataclass(frozen=True)
class TrunkParams:
    """Credentials of one upstream (carrier trunk, IMS core, PBX), by realm. Used by
    `ksr.uac.auth()` in failure routes, by `ksr.uac.send_request()` and by registrations."""

    name: str = option(doc="name the registrations and `send_request(auth=)` refer to",
                       required=True)
    realm: str = option(doc="realm of the upstream's challenges (exact match)", required=True)
    username: str = option(doc="digest username", required=True)
    password: str = option("", "digest password (or give ha1)", secret=True)
    ha1: str = option("", "HA1 = H(username:realm:password) instead of the password: 32 hex "
                      "digits for MD5, 64 for SHA-256", secret=True)
    outbound_proxy: str = option("", "SIP URI requests of this trunk are sent to "
                                 "(registrations, send_request) instead of the R-URI's host")


@dataclass(frozen=True)
class RegistrationParams:
    """One outbound registration (like a row of Kamailio's uacreg table)."""

    id: str = option(doc="local id: the user part of our Contact, and what "
                     "`ksr.uac.reg_lookup(msg)` returns for a request to it", required=True)
    username: str = option(doc="user part of the registered AOR (To/From)", required=True)
    domain: str = option(doc="domain of the AOR and of the REGISTER's Request-URI",
                         required=True)
    trunk: str = option("", "take auth username/password/ha1/outbound proxy from this trunk")
    auth_username: str = option("", "digest username (default: the trunk's, else username)")
    password: str = option("", "digest password (default: the trunk's)", secret=True)
    ha1: str = option("", "digest HA1 instead of the password", secret=True)
    proxy: str = option("", "SIP URI the REGISTER is sent to (default: the trunk's outbound "
                        "proxy, else the domain through RFC 3263)")
    expires: int = option(3600, "requested registration lifetime (s)", min=10, max=604800)
    flags: int = option(0, "1: disabled at start (uac.reg_enable starts it)", min=0, max=1)


@section("uac")
@dataclass(frozen=True)
class UacParams:
    """UAC functions: answer upstream 401/407 (uac_auth), outbound registrations (uac_reg),
    requests originated by the routing script (uac_req_send)."""

    trunk: list[TrunkParams] = option(default_factory=list, doc="credentials per realm")
    registration: list[RegistrationParams] = option(default_factory=list,
                                                    doc="outbound registrations")
    reg_list_file: str = option("", "uacreg-like list file (one registration per line: "
                                "`id username domain auth_username password proxy expires "
                                "flags`, `-` for an empty column, `#` comments), read at "
                                "start and on uac.reg_reload; relative to the config file")
    from_uri: str = option("", "From URI of registrations' and send_request()'s requests "
                           "when none is given (default: sip:sipedge@<first listener>)")
    refresh_ratio: float = option(0.8, "refresh a registration after this share of the "
                                  "lifetime the registrar granted", min=0.3, max=0.95)
    retry_min_s: float = option(5.0, "first retry delay after a failed registration "
                                "(doubles each time)", min=0.5, max=3600)
    retry_max_s: float = option(300.0, "longest retry delay after failures", min=1,
                                max=86400)
    forbidden_retry_s: float = option(1800.0, "retry delay after 403/404 or a challenge "
                                      "left unanswered (wrong account or password: do not "
                                      "hammer)", min=10, max=86400)
    cseq_map_size: int = option(65536, "dialogs whose CSeq shift (after uac_auth) is "
                                "remembered per worker", min=16, max=10000000)
    cseq_map_idle_s: float = option(7200.0, "a CSeq shift unused this long is forgotten",
                                    min=60, max=604800)


def check(p: UacParams) -> list[tuple[str, str]]:
    """Cross-field rules of [uac] as (dotted path, reason) pairs; no I/O (the list file is
    read at start and on uac.reg_reload)."""
    import re

    from ...errors import RemoteProtocolError
    from ...sip.uri import parse_uri

    out: list[tuple[str, str]] = []

    def uri(path: str, value: str) -> None:
        if value:
            try:
                parse_uri(value)
            except RemoteProtocolError as exc:
                out.append((path, f"not a SIP URI: {exc.reason}"))

    names: dict[str, int] = {}
    for i, t in enumerate(p.trunk):
        where = f"uac.trunk[{i}]"
        if t.name in names:
            out.append((f"{where}.name", f"duplicate of trunk[{names[t.name]}]"))
        names.setdefault(t.name, i)
        if bool(t.password) == bool(t.ha1):
            out.append((f"{where}.password", "give a password or an ha1 (one of them)"))
        if t.ha1 and not re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{64}", t.ha1):
            out.append((f"{where}.ha1", "expected 32 (MD5) or 64 (SHA-256) hex digits"))
        uri(f"{where}.outbound_proxy", t.outbound_proxy)
    ids: dict[str, int] = {}
    for i, r in enumerate(p.registration):
        where = f"uac.registration[{i}]"
        if r.id in ids:
            out.append((f"{where}.id", f"duplicate of registration[{ids[r.id]}]"))
        ids.setdefault(r.id, i)
        if not re.fullmatch(r"[A-Za-z0-9\-_.!~*'()]+", r.id):
            out.append((f"{where}.id", "must be usable as a SIP user part (letters, digits, "
                        "-_.!~*'())"))
        if r.trunk and r.trunk not in names:
            out.append((f"{where}.trunk", f"no [[uac.trunk]] named {r.trunk!r}"))
        if r.password and r.ha1:
            out.append((f"{where}.password", "give a password or an ha1, not both"))
        if r.ha1 and not re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{64}", r.ha1):
            out.append((f"{where}.ha1", "expected 32 (MD5) or 64 (SHA-256) hex digits"))
        uri(f"{where}.proxy", r.proxy)
        uri(f"{where}.domain", f"sip:{r.username}@{r.domain}")
    uri("uac.from_uri", p.from_uri)
    if p.retry_max_s < p.retry_min_s:
        out.append(("uac.retry_max_s", "must be at least retry_min_s"))
    return out
