"""Base-protocol messages (RFC 6733 5): our identity, CER/CEA, DWR/DWA, DPR/DPA and answers.

Pure functions over `Message`; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import dictionary as d
from .codec import (
    AVP_M,
    FLAG_E,
    FLAG_P,
    FLAG_R,
    SUCCESS,
    Avp,
    DiameterDecodeError,
    Message,
)
from .dictionary import RELAY_APPLICATION, avp

CER, DWR, DPR = 257, 280, 282

# Disconnect-Cause (RFC 6733 5.4.3)
REBOOTING, BUSY, DO_NOT_WANT_TO_TALK_TO_YOU = 0, 1, 2


@dataclass(frozen=True)
class VendorApp:
    vendor: int
    auth: int = 0  # Auth-Application-Id, 0: none
    acct: int = 0  # Acct-Application-Id, 0: none


@dataclass(frozen=True)
class Identity:
    """What we announce in CER/CEA, and what every message we originate carries."""

    origin_host: str
    origin_realm: str
    host_ips: tuple[str, ...] = ()
    vendor_id: int = 0
    product_name: str = "sipedge"
    firmware_revision: int = 1
    origin_state_id: int = 1
    auth_apps: tuple[int, ...] = ()
    acct_apps: tuple[int, ...] = ()
    vendor_apps: tuple[VendorApp, ...] = ()
    supported_vendors: tuple[int, ...] = ()

    def base_avps(self) -> list[Avp]:
        return [avp("Origin-Host", self.origin_host), avp("Origin-Realm", self.origin_realm)]


@dataclass
class Capabilities:
    """What a peer announced in its CER or CEA."""

    origin_host: str = ""
    origin_realm: str = ""
    host_ips: list[str] = field(default_factory=list)
    vendor_id: int = 0
    product_name: str = ""
    origin_state_id: int | None = None
    auth_apps: set[int] = field(default_factory=set)
    acct_apps: set[int] = field(default_factory=set)
    vendor_apps: list[VendorApp] = field(default_factory=list)

    @property
    def applications(self) -> set[int]:
        return (self.auth_apps | self.acct_apps | {v.auth for v in self.vendor_apps if v.auth}
                | {v.acct for v in self.vendor_apps if v.acct})

    @property
    def is_relay(self) -> bool:
        return RELAY_APPLICATION in self.applications


def capabilities_avps(me: Identity, local_ip: str | None) -> list[Avp]:
    out = me.base_avps()
    for ip in me.host_ips or ((local_ip,) if local_ip else ("127.0.0.1",)):
        out.append(avp("Host-IP-Address", ip))
    out += [avp("Vendor-Id", me.vendor_id), avp("Product-Name", me.product_name, mandatory=False),
            avp("Origin-State-Id", me.origin_state_id)]
    vendors = list(dict.fromkeys(list(me.supported_vendors) + [v.vendor for v in me.vendor_apps]))
    out += [avp("Supported-Vendor-Id", v) for v in vendors]
    out += [avp("Auth-Application-Id", a) for a in me.auth_apps]
    out += [avp("Acct-Application-Id", a) for a in me.acct_apps]
    for v in me.vendor_apps:
        inner = [avp("Vendor-Id", v.vendor)]
        if v.auth:
            inner.append(avp("Auth-Application-Id", v.auth))
        if v.acct:
            inner.append(avp("Acct-Application-Id", v.acct))
        out.append(avp("Vendor-Specific-Application-Id", inner))
    out.append(avp("Firmware-Revision", me.firmware_revision, mandatory=False))
    return out


def parse_capabilities(msg: Message) -> Capabilities:
    """Raises DiameterDecodeError on a malformed value."""
    c = Capabilities()
    a = msg.avps
    c.origin_host = d.get(a, "Origin-Host", "")
    c.origin_realm = d.get(a, "Origin-Realm", "")
    c.host_ips = d.get_all(a, "Host-IP-Address")
    c.vendor_id = d.get(a, "Vendor-Id", 0)
    c.product_name = d.get(a, "Product-Name", "")
    c.origin_state_id = d.get(a, "Origin-State-Id")
    c.auth_apps = set(d.get_all(a, "Auth-Application-Id"))
    c.acct_apps = set(d.get_all(a, "Acct-Application-Id"))
    for g in d.get_all(a, "Vendor-Specific-Application-Id"):
        c.vendor_apps.append(VendorApp(d.get(g, "Vendor-Id", 0),
                                       d.get(g, "Auth-Application-Id", 0),
                                       d.get(g, "Acct-Application-Id", 0)))
    return c


def common_applications(me: Identity, peer: Capabilities) -> set[int]:
    """Applications both sides support (RFC 6733 5.3.1); the relay id matches everything."""
    ours_auth = set(me.auth_apps) | {v.auth for v in me.vendor_apps if v.auth}
    ours_acct = set(me.acct_apps) | {v.acct for v in me.vendor_apps if v.acct}
    theirs_auth = peer.auth_apps | {v.auth for v in peer.vendor_apps if v.auth}
    theirs_acct = peer.acct_apps | {v.acct for v in peer.vendor_apps if v.acct}
    ours = ours_auth | ours_acct
    theirs = theirs_auth | theirs_acct
    if RELAY_APPLICATION in ours:
        return set(theirs)
    if RELAY_APPLICATION in theirs:
        return set(ours)
    return (ours_auth & theirs_auth) | (ours_acct & theirs_acct)


def request(code: int, app: int, me: Identity, avps: list[Avp], hbh: int, e2e: int,
            proxiable: bool = False) -> Message:
    return Message(code, FLAG_R | (FLAG_P if proxiable else 0), app, hbh, e2e,
                   me.base_avps() + avps)


def answer(req: Message, me: Identity, result_code: int, avps: list[Avp] | None = None,
           error_message: str = "", failed_avp: list[Avp] | None = None) -> Message:
    """An answer to `req`: same command, application and ids; Session-Id first; E bit for the
    protocol errors (3xxx) and on request; Result-Code, Origin-Host/Realm."""
    flags = req.flags & FLAG_P
    if 3000 <= result_code < 4000:
        flags |= FLAG_E
    out: list[Avp] = []
    sid = req.find(263)
    if sid is not None:
        out.append(Avp(263, sid.data, AVP_M))
    out += [avp("Result-Code", result_code)] + me.base_avps()
    if error_message:
        out.append(avp("Error-Message", error_message, mandatory=False))
    if failed_avp:
        out.append(avp("Failed-AVP", failed_avp))
    # Proxy-Info comes back unchanged (RFC 6733 6.7.3)
    out += [Avp(p.code, p.data, p.flags, p.vendor) for p in req.find_all(284)]
    out += avps or []
    return Message(req.code, flags, req.application, req.hop_by_hop, req.end_to_end, out)


def error_answer_raw(header: tuple, me: Identity, result_code: int, failed_avp: bytes,
                     reason: str) -> Message:
    """An answer to a request whose AVPs could not be decoded (only the header is known)."""
    _version, _length, flags, code, app, hbh, e2e = header
    req = Message(code, flags, app, hbh, e2e, [])
    msg = answer(req, me, result_code, error_message=reason)
    if failed_avp:
        # the offending AVP as received, inside Failed-AVP (RFC 6733 7.5)
        msg.avps.append(Avp(279, failed_avp + b"\0" * (-len(failed_avp) % 4), AVP_M))
    return msg


def result_code(msg: Message) -> int | None:
    """Result-Code, or the Experimental-Result-Code inside Experimental-Result."""
    rc = msg.find(268)
    if rc is not None and len(rc.data) == 4:
        return int.from_bytes(rc.data, "big")
    er = msg.find(297)
    if er is not None:
        try:
            inner = er.find(298)
        except DiameterDecodeError:  # a malformed grouped AVP just has no code
            return None
        if inner is not None and len(inner.data) == 4:
            return int.from_bytes(inner.data, "big")
    return None


def is_success(msg: Message) -> bool:
    rc = result_code(msg)
    return rc is not None and 2000 <= rc < 3000


SUCCESS_CODE = SUCCESS
