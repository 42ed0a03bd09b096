"""REGISTER processing (RFC 3261 10.3, RFC 3327 Path) and location lookup, sans-IO.

Two steps, so that storage can run the second inside one database transaction:

1. `parse_register(req, params, source)` reads and checks the request: AOR, contacts with
   their expires and q, `*`, Call-ID/CSeq, Path. It returns a `RegisterRequest`, or a
   `ReplySpec` for requests that fail on their own (400, 420, 423).
2. `apply_register(reg, existing, params, now)` computes the new binding set of the AOR from
   the bindings stored now: the rows to write and delete and the reply (200 listing every
   binding with its remaining expires, or 500 for an out-of-order request, step 7).

`now` is wall-clock seconds: bindings are persisted and must stay meaningful after a
restart, which a per-boot monotonic clock cannot promise.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass, replace
from functools import lru_cache

from ...errors import RemoteProtocolError
from ...sip.grammar import format_params, is_digits
from ...sip.headers.address import Address, parse_address
from ...sip.message import Request
from ...sip.uri import URI, parse_uri
from .. import ReplySpec
from .params import RegistrarParams


@dataclass(frozen=True, slots=True)
class Source:
    """Where a REGISTER came from (for NAT traversal and sending back on the same socket)."""

    ip: str
    port: int
    transport: str = "udp"  # udp, tcp, tls
    socket: str = ""  # listener that received it, e.g. "udp:127.0.0.1:5060"

    @property
    def received_uri(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        t = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{host}:{self.port}{t}"


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an AOR (a row of the location table)."""

    aor: str
    contact: str  # the Contact URI as the UA sent it
    expires_at: float  # wall clock
    q: int = 1000  # q-value x 1000 (0..1000)
    call_id: str = ""
    cseq: int = 0
    path: tuple[str, ...] = ()
    received: str = ""  # sip:ip:port[;transport=] the REGISTER came from
    transport: str = "udp"
    socket: str = ""
    nat: bool = False
    user_agent: str = ""
    instance: str = ""  # +sip.instance (RFC 5626)
    reg_id: int = 0
    params: str = ""  # other Contact header parameters, echoed in the 200
    updated: float = 0.0

    @property
    def key(self) -> str:
        return contact_key(self.contact)

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))

    def contact_value(self, now: float) -> str:
        """The Contact value of the 200 OK: `<uri>;expires=N;q=0.5` plus echoed params."""
        q = "" if self.q == 1000 else f";q={format_q(self.q)}"
        return f"<{self.contact}>;expires={self.remaining(now)}{q}{self.params}"


def format_q(q: int) -> str:
    return f"{q / 1000:.3f}".rstrip("0").rstrip(".") if q not in (0, 1000) else str(q // 1000)


_Q = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?", re.ASCII)


def parse_q(text: str) -> int:
    """RFC 3261 qvalue (0, 1, 0.x with up to three decimals) -> 0..1000."""
    t = text.strip()
    if not _Q.fullmatch(t):
        raise RemoteProtocolError("Bad q value")
    whole, _, frac = t.partition(".")
    return int(whole) * 1000 + int(frac.ljust(3, "0") or "0")


_URI_PARAMS_COMPARED = ("transport", "user", "method", "maddr", "ttl")


@lru_cache(maxsize=4096)
def contact_key(uri_text: str) -> str:
    """A comparison key for Contact URIs (RFC 3261 19.1.4, simplified): scheme, user and
    password case-sensitive, host case-insensitive, port, and the parameters that must match.

    A REGISTER computes the key of its contact and of every stored binding of the AOR, the
    same few texts again and again: recent keys are kept (a pure function of the text)."""
    try:
        u = parse_uri(uri_text)
    except RemoteProtocolError:
        return uri_text
    if not u.is_sip:
        return str(u)
    params = sorted((k.lower(), (v or "").lower()) for k, v in u.params
                    if k.lower() in _URI_PARAMS_COMPARED)
    user = u.user or ""
    if u.password is not None:
        user += ":" + u.password
    return f"{u.scheme}:{user}@{u.host.lower()}:{u.port or ''}" + \
        "".join(f";{k}={v}" for k, v in params)


def aor_of(uri: URI) -> str:
    """The location key of a To / Request-URI: `user@domain` (domain lower case)."""
    if not uri.is_sip and uri.scheme != "tel":
        raise RemoteProtocolError("Unsupported URI scheme in To", 416)
    host = uri.host_bare
    return f"{uri.user}@{host}" if uri.user else host


@dataclass(frozen=True)
class ContactRequest:
    address: Address
    expires: int
    q: int
    instance: str = ""
    reg_id: int = 0
    params: str = ""


@dataclass(frozen=True)
class RegisterRequest:
    aor: str
    call_id: str
    cseq: int
    contacts: tuple[ContactRequest, ...] = ()
    star: bool = False
    path: tuple[str, ...] = ()
    path_in_reply: bool = False
    source: Source | None = None
    user_agent: str = ""
    nat: bool = False


def _expires_value(text: str | None) -> int | None:
    """A delta-seconds value; None when absent or malformed (RFC 3261 10.3 step 6: a
    malformed value is treated as absent). Huge values are capped at 2**32-1."""
    if text is None:
        return None
    t = text.strip()
    if not t.isascii() or not t.isdigit():
        return None
    return min(int(t[:11]), 2**32 - 1)


def parse_register(req: Request, params: RegistrarParams, source: Source | None = None,
                   *, nat: bool = False) -> RegisterRequest | ReplySpec:
    """Check a REGISTER on its own. A ReplySpec is the answer for a request that fails."""
    try:
        return _parse_register(req, params, source, nat)
    except RemoteProtocolError as exc:
        return ReplySpec(exc.status_hint, exc.reason)


def _parse_register(req: Request, params: RegistrarParams, source: Source | None,
                    nat: bool) -> RegisterRequest | ReplySpec:
    if req.method != "REGISTER":
        raise RemoteProtocolError("Not a REGISTER")
    aor = aor_of(req.to.uri)
    cseq = req.cseq.seq
    call_id = req.call_id
    if not call_id:
        raise RemoteProtocolError("Missing Call-ID")
    header_expires = _expires_value(req.get("expires"))
    values = req.get_all("contact")
    if len(values) > params.max_contacts_per_request:
        raise RemoteProtocolError("Too many contacts", 403)
    addresses = [parse_address(v) for v in values]

    path = tuple(req.get_all("path"))
    path_in_reply = False
    if path:  # Supported matters only for Path (RFC 3327 5.5)
        supported = {s.strip().lower() for s in req.get_all("supported")}
        if params.path_mode == "strict" and "path" not in supported:
            return ReplySpec(420, "Bad Extension", (("Unsupported", "path"),))
        path_in_reply = "path" in supported
        if params.path_mode == "off":
            path = ()
            path_in_reply = False

    common = dict(aor=aor, call_id=call_id, cseq=cseq, path=path, path_in_reply=path_in_reply,
                  source=source, user_agent=(req.get("user-agent") or "")[:256], nat=nat)
    if any(a.star for a in addresses):
        if len(addresses) != 1 or header_expires != 0:
            raise RemoteProtocolError("Contact * needs Expires: 0 and no other contact")
        return RegisterRequest(star=True, **common)

    contacts = []
    too_brief = False
    for a in addresses:
        if not a.uri.is_sip and a.uri.scheme != "tel":
            # other schemes (mailto:, http:) cannot be forked to by a SIP proxy
            raise RemoteProtocolError("Unsupported Contact URI scheme")
        exp = _expires_value(a.param("expires"))
        if exp is None:
            exp = header_expires if header_expires is not None else params.default_expires_s
        if exp != 0 and exp < params.min_expires_s:
            too_brief = True
        exp = min(exp, params.max_expires_s)
        qtext = a.param("q")
        q = parse_q(qtext) if qtext not in (None, "") else 1000
        instance = a.param("+sip.instance") or ""
        reg_id_text = a.param("reg-id") or ""
        reg_id = int(reg_id_text) if is_digits(reg_id_text, 9) else 0
        keep = tuple((k, v) for k, v in a.params if k.lower() not in ("expires", "q"))
        contacts.append(ContactRequest(a, exp, q, instance, reg_id, format_params(keep)))
    if too_brief:
        return ReplySpec(423, "Interval Too Brief",
                         (("Min-Expires", str(params.min_expires_s)),))
    return RegisterRequest(contacts=tuple(contacts), **common)


@dataclass(frozen=True)
class RegisterOutcome:
    reply: ReplySpec
    upserts: tuple[Binding, ...] = ()
    deletes: tuple[str, ...] = ()  # contact keys
    bindings: tuple[Binding, ...] = ()  # the AOR's bindings after the request

    @property
    def ok(self) -> bool:
        return self.reply.status == 200


def _out_of_order() -> RegisterOutcome:
    return RegisterOutcome(ReplySpec(500, "Server Internal Error (out of order CSeq)",
                                     (("Retry-After", "1"),)))


def apply_register(reg: RegisterRequest, existing: list[Binding] | tuple[Binding, ...],
                   params: RegistrarParams, now: float) -> RegisterOutcome:
    """RFC 3261 10.3 steps 6-8 against the stored bindings of `reg.aor` (all or nothing)."""
    deletes: list[str] = []
    current: dict[str, Binding] = {}
    for b in existing:
        if b.expires_at <= now:
            deletes.append(b.key)  # expired: gone, whatever happens next
        else:
            current[b.key] = b

    upserts: dict[str, Binding] = {}
    if reg.star:
        for key, b in list(current.items()):
            if b.call_id == reg.call_id and reg.cseq <= b.cseq:
                return _out_of_order()
            deletes.append(key)
            del current[key]
    else:
        src = reg.source
        for c in reg.contacts:
            uri_text = str(c.address.uri)
            key = contact_key(uri_text)
            old = current.get(key)
            if old is None and c.instance:
                # RFC 5626: same instance and reg-id replace the old flow's binding
                for k, b in current.items():
                    if b.instance == c.instance and b.reg_id == c.reg_id:
                        old = b
                        break
            if old is not None:
                if old.call_id == reg.call_id and reg.cseq <= old.cseq:
                    return _out_of_order()
                if old.key != key:
                    deletes.append(old.key)
                    del current[old.key]
            if c.expires == 0:
                if key in current:
                    deletes.append(key)
                    del current[key]
                upserts.pop(key, None)
                continue
            b = Binding(aor=reg.aor, contact=uri_text, expires_at=now + c.expires, q=c.q,
                        call_id=reg.call_id, cseq=reg.cseq, path=reg.path,
                        received=src.received_uri if src else "",
                        transport=src.transport if src else "udp",
                        socket=src.socket if src else "", nat=reg.nat,
                        user_agent=reg.user_agent, instance=c.instance, reg_id=c.reg_id,
                        params=c.params, updated=now)
            current[key] = b
            upserts[key] = b
        if len(current) > params.max_contacts:
            return RegisterOutcome(ReplySpec(403, "Too Many Registered Contacts"))

    final = sorted(current.values(), key=lambda b: (-b.q, -b.updated, b.contact))
    headers: list[tuple[str, str]] = [("Contact", b.contact_value(now)) for b in final]
    if reg.path_in_reply:
        headers += [("Path", p) for p in reg.path]
    headers.append(("Date", http_date(now)))
    deletes = [k for k in dict.fromkeys(deletes) if k not in upserts]
    return RegisterOutcome(ReplySpec(200, "OK", tuple(headers)), tuple(upserts.values()),
                           tuple(deletes), tuple(final))


_date: list = [None, ""]  # (second, its Date text): one formatting per second


def http_date(now: float) -> str:
    """The Date header value for `now` (RFC 3261 20.17: RFC 1123 format, GMT)."""
    second = int(now)
    if _date[0] != second:
        _date[1] = email.utils.formatdate(second, usegmt=True)
        _date[0] = second
    return _date[1]


# ------------------------------------------------------------------ lookup


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send a request for a registered AOR."""

    uri: str  # the new Request-URI: the registered contact
    dst_uri: str = ""  # next hop when the contact is behind NAT: the received address
    path: tuple[str, ...] = ()  # Route set to push (RFC 3327)
    socket: str = ""  # listener to send from
    q: int = 1000
    instance: str = ""


def lookup(bindings: list[Binding] | tuple[Binding, ...], now: float, *,
           nat_to_received: bool = True) -> list[Target]:
    """Live bindings as targets, highest q first, most recently refreshed first among
    equals. Fork in parallel to all of them, or serially by `q_groups()`."""
    live = [b for b in bindings if b.expires_at > now]
    live.sort(key=lambda b: (-b.q, -b.updated, b.contact))
    out = []
    for b in live:
        dst = b.received if (b.nat and nat_to_received and not b.path) else ""
        out.append(Target(b.contact, dst, b.path, b.socket, b.q, b.instance))
    return out


def q_groups(targets: list[Target]) -> list[list[Target]]:
    """Targets grouped by equal q, highest first (RFC 3261 16.6: serial forking by q)."""
    groups: list[list[Target]] = []
    for t in targets:
        if groups and groups[-1][0].q == t.q:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def lookup_reply(user_known: bool, targets: list[Target]) -> ReplySpec | None:
    """404 for a user we do not know, 480 for one with no live binding, None to relay."""
    if targets:
        return None
    if not user_known:
        return ReplySpec(404, "Not Found")
    return ReplySpec(480, "Temporarily Unavailable")


def with_expiry(b: Binding, expires_at: float) -> Binding:
    return replace(b, expires_at=expires_at)
