"""Stateless proxy logic (RFC 3261 16, RFC 3581), sans-IO.

The I/O layer calls these functions in order for a request::

    reply = core.check_request(msg, src)          # 483 / 416 / 420 / 482, Via received/rport,
                                                  # Route pre-processing (16.4)
    if core.is_options_to_self(msg): core.make_reply(msg, 200, ...)
    ... routing script or table decides ...
    hop = core.next_hop(msg, dst_uri)             # URI to resolve (16.6 steps 6-7)
    data = core.finalize_request(msg, src, out)   # Max-Forwards, Record-Route, Via

and for a response, `core.route_response(msg)`.
"""

from __future__ import annotations

import hashlib
import re
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat

try:
    import cython
except ImportError:  # plain Python without Cython installed (the compiled build never is)
    from .. import _cython as cython

from ..errors import RemoteProtocolError
from ..resolve.sip import literal_target
from .grammar import KNOWN_METHODS, is_digits, is_token
from .headers.address import parse_address
from .headers.cseq import parse_cseq
from .headers.via import MAGIC_COOKIE, Via, parse_via, remember_via
from .message import _CONTROL_OCTETS, MAX_HEADERS, Request, Response, _key, _key_cache
from .uri import DEFAULT_PORTS, URI, format_host, parse_uri

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, NOTIFY, SUBSCRIBE, REFER, PRACK, UPDATE, PUBLISH"
SUPPORTED_SCHEMES = ("sip", "sips", "tel")
# a Via header line (full or compact name) at the start of a line, value without the CRLF
# (the match starts at the LF before the line: a literal first character is searched fast)
_VIA_LINE = re.compile(rb"\n(?:via|v)[ \t]*:[ \t]*([^\r\n]*)\r?\n", re.I)
_LOOP_KEYS = frozenset({"from", "to", "proxy-require", "proxy-authorization", "route"})

# header keys as the parser makes them (interned, message._key): compared by identity
_CALL_ID, _CONTENT_LENGTH, _MAX_FORWARDS, _RECORD_ROUTE, _PROXY_REQUIRE, _PROXY_AUTHORIZATION = (
    sys.intern(k) for k in ("call-id", "content-length", "max-forwards", "record-route",
                            "proxy-require", "proxy-authorization"))
# longer heads take the full path (which bounds lines at MAX_LINE = 8192 octets)
BYTE_PATH_MAX_HEAD = 8192
# headers a message carries at most once, and Content-Length (the byte path takes one)
_ONCE = (_CALL_ID, "from", "to", "cseq", _MAX_FORWARDS, _CONTENT_LENGTH)
# methods the byte path forwards (CANCEL goes round the transactions, OPTIONS may be ours)
_BYTE_PATH_METHODS = KNOWN_METHODS - {"CANCEL", "OPTIONS"}
_REQUIRED = ("via", "from", "to", _CALL_ID, "cseq")


# -- the byte path's head: its lines and header keys ----------------------------------
# (hl, keys, values, present, cl, method, uri_text) from the head of a request (the octets
# before the blank line), or None when the full path would not write it back unchanged or
# the byte path does not take it. hl: its lines (str, no CRLF); keys[i]: the header key of
# hl[i] (message._key), "" for the request line (and, compiled, for a header the byte path
# never reads); values[i]: the value of hl[i] (None where keys[i] is "" but for the request
# line); present: set(keys); cl: the stripped Content-Length value or None when absent.
# Checked: ASCII, no control octets, every line ends in CRLF (no bare CR or LF), every
# header line is `token: value`, one space after the colon, no blank at either end of the
# value (which also rules out folding: a continuation line has no token name) except for
# Content-Length, which is written anew (SIPp pads it: "Content-Length:   137"); the request
# line is `method SP uri SP SIP/2.0` of a method the byte path forwards; the headers it needs
# are there, Proxy-Require is not, none of _ONCE twice; at most MAX_HEADERS header lines.

def _split_head(raw: bytes) -> tuple | None:
    """The head's lines by str methods (what plain Python does fastest)."""
    if not raw.isascii() or len(raw.translate(None, _CONTROL_OCTETS)) != len(raw):
        return None
    hl = raw.decode("ascii").split("\r\n")
    joined = "".join(hl)  # a CR or LF left is a bare one (found by memchr, not counted)
    if "\r" in joined or "\n" in joined:
        return None
    first = hl[0].split(" ")
    if len(first) != 3 or first[2] != "SIP/2.0" or not first[1]:
        return None
    method = first[0]
    if method not in _BYTE_PATH_METHODS:
        return None  # CANCEL (the transaction round), OPTIONS (maybe to ourselves), ...
    if len(hl) > MAX_HEADERS + 1:
        return None
    names, seps, values = zip(*map(str.partition, hl, repeat(": ")))
    # only the request line has no ": "; no value is empty or has a blank at an end
    # (str.strip returns the same object when there is nothing to strip)
    if seps[0] or seps.count("") != 1 or values.count("") != 1:
        return None
    stripped = tuple(map(str.strip, values))
    keys = list(map(_key_cache.get, names))
    keys[0] = ""  # the request line: keys[i] names hl[i]
    if None in keys:  # a name not seen yet: a token, or the full path decides
        for i, k in enumerate(keys):
            if k is None:
                name = names[i]
                if not is_token(name):
                    return None
                keys[i] = _key(name)
    present = set(keys)
    if not present.issuperset(_REQUIRED) or _PROXY_REQUIRE in present:
        return None
    cl = None
    if _CONTENT_LENGTH in present:
        i = keys.index(_CONTENT_LENGTH)
        cl = stripped[i]
        if stripped != values and (stripped[:i] != values[:i]
                                   or stripped[i + 1:] != values[i + 1:]):
            return None
    elif stripped != values:
        return None
    if len(present) < len(keys):
        for once in _ONCE:
            if keys.count(once) > 1:
                return None
    return hl, keys, values, present, cl, method, first[1]


# the header keys _scan_head tells by name (compact forms and case folded), by code
_SCAN_KEYS = tuple(sys.intern(k) for k in (
    "via", "from", "to", "call-id", "cseq", "max-forwards", "content-length", "route",
    "record-route", "proxy-require", "proxy-authorization"))
_K_CONTENT_LENGTH = cython.declare(cython.int, 6)
_K_PROXY_REQUIRE = cython.declare(cython.int, 9)
# bits (1 << code) of _ONCE: from, to, call-id, cseq, max-forwards, content-length
_K_ONCE = cython.declare(cython.uint, 0b1111110)
_K_REQUIRED = cython.declare(cython.uint, 0b11111)  # of _REQUIRED: via, from, to, call-id, cseq


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
@cython.returns(cython.bint)
@cython.locals(p=cython.p_uchar, at=cython.Py_ssize_t, lit=cython.p_char, n=cython.Py_ssize_t,
               i=cython.Py_ssize_t)
def _name_is(p, at, lit, n):
    """The n octets at p[at] are the lower-case name `lit`, in any case (p: token
    characters, so `| 0x20` folds letters only)."""
    for i in range(n):
        if (p[at + i] | 0x20) != lit[i]:
            return False
    return True


@cython.cfunc
@cython.exceptval(check=False)
@cython.returns(cython.int)
@cython.locals(p=cython.p_uchar, at=cython.Py_ssize_t, n=cython.Py_ssize_t, c=cython.int)
def _name_code(p, at, n):
    """The index in _SCAN_KEYS of the header name of n token octets at p[at], or -1."""
    if n == 1:
        c = p[at] | 0x20
        if c == ord("v"):
            return 0
        if c == ord("f"):
            return 1
        if c == ord("t"):
            return 2
        if c == ord("i"):
            return 3
        if c == ord("l"):
            return 6
    elif n == 2:
        return 2 if _name_is(p, at, b"to", 2) else -1
    elif n == 3:
        return 0 if _name_is(p, at, b"via", 3) else -1
    elif n == 4:
        if _name_is(p, at, b"from", 4):
            return 1
        if _name_is(p, at, b"cseq", 4):
            return 4
    elif n == 5:
        return 7 if _name_is(p, at, b"route", 5) else -1
    elif n == 7:
        return 3 if _name_is(p, at, b"call-id", 7) else -1
    elif n == 12:
        if _name_is(p, at, b"max-forwards", 12):
            return 5
        if _name_is(p, at, b"record-route", 12):
            return 8
    elif n == 13:
        return 9 if _name_is(p, at, b"proxy-require", 13) else -1
    elif n == 14:
        return 6 if _name_is(p, at, b"content-length", 14) else -1
    elif n == 19:
        return 10 if _name_is(p, at, b"proxy-authorization", 19) else -1
    return -1


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
@cython.returns(cython.bint)
@cython.locals(c=cython.int)
def _is_tchar(c):
    """RFC 3261 token character (grammar.is_token's set)."""
    return (ord("a") <= (c | 0x20) <= ord("z") or ord("0") <= c <= ord("9")
            or c == ord("-") or c == ord(".") or c == ord("!") or c == ord("%")
            or c == ord("*") or c == ord("_") or c == ord("+") or c == ord("`")
            or c == ord("'") or c == ord("~"))


@cython.ccall
@cython.locals(data=bytes, end=cython.Py_ssize_t, p=cython.p_uchar, ls=cython.Py_ssize_t,
               j=cython.Py_ssize_t, a=cython.Py_ssize_t, b=cython.Py_ssize_t,
               sep=cython.Py_ssize_t, s1=cython.Py_ssize_t, s2=cython.Py_ssize_t,
               spaces=cython.int, c=cython.uchar, code=cython.int, seen=cython.uint,
               bit=cython.uint, line=str)
def _scan_head(data, end):
    """What _split_head returns for data[:end], by one pass over the octets (compiled
    only: as Python this loop is much slower than _split_head's str methods). No str per
    header name, value strs only for the headers the byte path reads."""
    p = data
    hl = []
    keys = []
    values = []
    cl = None
    method = uri_text = None
    seen = 0
    ls = 0
    while True:
        sep = s1 = s2 = -1
        spaces = 0
        j = ls
        while j < end:
            c = p[j]
            if c == 13:  # CR: the line's end when LF follows (below)
                break
            if c < 32:
                if c != 9:
                    return None  # LF without CR or a control octet
            elif c >= 127:
                return None  # DEL or not ASCII
            elif c == 32:
                if spaces == 0:
                    s1 = j
                elif spaces == 1:
                    s2 = j
                spaces += 1
            elif c == 58 and sep < 0 and j + 1 < end and p[j + 1] == 32:
                sep = j  # the first ": "
            j += 1
        if j < end and (j + 1 >= end or p[j + 1] != 10):
            return None  # a bare CR
        line = data[ls:j].decode("ascii")
        if ls == 0:  # the request line
            if spaces != 2 or sep >= 0 or s2 == s1 + 1 or line[s2 + 1:] != "SIP/2.0":
                return None
            method = line[:s1]
            if method not in _BYTE_PATH_METHODS:
                return None
            uri_text = line[s1 + 1:s2]
            keys.append("")
            values.append("")
        else:
            if sep <= ls or sep + 2 >= j:
                return None  # no ": ", no name or no value
            for a in range(ls, sep):
                if not _is_tchar(p[a]):
                    return None
            code = _name_code(p, ls, sep - ls)
            a = sep + 2
            b = j
            if code == _K_CONTENT_LENGTH:
                while a < b and (p[a] == 32 or p[a] == 9):
                    a += 1
                while b > a and (p[b - 1] == 32 or p[b - 1] == 9):
                    b -= 1
                cl = data[a:b].decode("ascii")
            elif p[a] == 32 or p[a] == 9 or p[b - 1] == 32 or p[b - 1] == 9:
                return None
            if code >= 0:
                bit = 1 << code
                if (seen & bit and bit & _K_ONCE) or code == _K_PROXY_REQUIRE:
                    return None
                seen |= bit
                keys.append(_SCAN_KEYS[code])
                values.append(line[sep + 2 - ls:])
            else:
                keys.append("")
                values.append(None)
        hl.append(line)
        if j >= end:
            break
        ls = j + 2
    if seen & _K_REQUIRED != _K_REQUIRED or len(hl) > MAX_HEADERS + 1:
        return None
    return hl, keys, values, set(keys), cl, method, uri_text


@cython.cfunc
@cython.locals(data=bytes, p=cython.p_uchar, n=cython.Py_ssize_t, i=cython.Py_ssize_t,
               end=cython.Py_ssize_t, b=cython.Py_ssize_t, x=cython.Py_ssize_t,
               lf=cython.Py_ssize_t, ls=cython.Py_ssize_t, le=cython.Py_ssize_t,
               ne=cython.Py_ssize_t, v_before=cython.bint, v_last=cython.bint)
def _splice_lines(data):
    """ProxyCore.splice_response's search for the usual reply, compiled only: None when
    the head is incomplete or the reply is a transaction's (the caller returns None),
    else (head_end, ls, le, ne): ls > 0 when the first branch parameter is in a line
    `Via: ...` (starting at ls, its CRLF at le) that is the first line starting with v or
    V, followed by a line `Via: ...` (its CRLF at ne) that is not folded."""
    p = data
    n = len(data)
    end = b = lf = -1
    v_before = v_last = False
    i = 0
    while i + 3 < n:  # the first CRLF CRLF; before it, the first ";branch=z9hG4bK"
        if p[i] == 13:
            if p[i + 1] == 10 and p[i + 2] == 13 and p[i + 3] == 10:
                end = i
                break
        elif p[i] == 10:
            if b < 0:  # the last LF before b, and whether a line before that one is a v
                v_before = v_before or v_last
                v_last = p[i + 1] == ord("v") or p[i + 1] == ord("V")
                lf = i
        elif p[i] == ord(";") and b < 0 and i + 15 <= n and p[i + 1] == ord("b") \
                and data[i:i + 15] == b";branch=z9hG4bK":
            b = i
        i += 1
    if end < 0:
        return None
    if b <= 0:
        return end + 2, 0, 0, 0
    # our branch `z9hG4bK<digits>xt...`: a transaction's
    x = b + 15
    while x < b + 21 and x < n and p[x] != ord("x"):
        x += 1
    if b + 15 < x < b + 21 and x < n and x + 1 < n and p[x + 1] == ord("t"):
        i = b + 15
        while i < x and ord("0") <= p[i] <= ord("9"):
            i += 1
        if i == x:
            return None
    ls = lf + 1
    le = b
    while not (p[le] == 13 and p[le + 1] == 10):  # stops at `end` at the latest
        le += 1
    if ls == 0 or v_before or data[ls:ls + 5] != b"Via: " or data[le + 2:le + 7] != b"Via: ":
        return end + 2, 0, 0, 0
    ne = le + 7
    while ne < end and not (p[ne] == 13 and p[ne + 1] == 10):
        ne += 1
    if ne + 2 > end + 2 or p[ne] != 13 or (ne + 2 < n and (p[ne + 2] == 32 or p[ne + 2] == 9)):
        return end + 2, 0, 0, 0
    return end + 2, ls, le, ne


# Made per message: not frozen (a frozen dataclass sets each field through
# object.__setattr__, about four times the cost); hashed and compared by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Source:
    """Where a message came from: transport, peer address, the listener it arrived on.
    Treated as immutable (never assigned to)."""

    proto: str  # udp | tcp | tls
    ip: str
    port: int
    listener: int  # index into ProxyCore.locals
    conn_id: int | None = None  # stream connection, for replies over the same connection


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """A listener as the outside sees it (advertised address when configured)."""

    index: int
    proto: str
    ip: str  # bound address
    port: int  # bound port
    host: str  # advertised host (or the bound ip)
    adv_port: int  # advertised port (or the bound port)

    def sent_by(self) -> str:
        return f"{format_host(self.host)}:{self.adv_port}"

    def uri(self, lr: bool = True) -> str:
        t = "" if self.proto == "udp" else f";transport={self.proto}"
        return f"sip:{format_host(self.host)}:{self.adv_port}{t}{';lr' if lr else ''}"


# per message: not frozen (see sip/proxy.py Source), never assigned to
@dataclass(slots=True, unsafe_hash=True)
class NextHop:
    """Where to send a request: resolve `host`, then send over `transport` to `port`."""

    uri: URI
    host: str
    port: int
    transport: str


@dataclass(slots=True)  # per reply: not frozen, see Source
class ResponseRoute:
    """Where a response goes after our Via was removed."""

    data: bytes
    transport: str
    ip: str
    port: int
    via: Via


WILDCARDS = ("0.0.0.0", "::")

# the route table's decision for the byte path (script/api.py RouteTable.destination):
# (Request-URI, in dialog, loose-routed, Route left, is-myself) -> URI | None | False
RouteChoice = Callable[[URI, bool, bool, bool, Callable[[URI], bool]], "URI | None | bool"]


class ProxyCore:
    """Stateless forwarding rules. Holds only configuration, no per-message state."""

    def __init__(self, locals_: list[LocalAddress], *, domains: tuple[str, ...] = (),
                 record_route: bool = True, max_forwards: int = 70, worker: int = 0,
                 secret: bytes = b"", server: str = "sipedge") -> None:
        self.locals = locals_
        self.record_route = record_route
        self.max_forwards = max_forwards
        self.worker = worker
        self.secret = secret or b"sipedge"
        self.server = server
        # Proxy-Require option tags a loaded module handles (ims_pcscf: sec-agree)
        self.proxy_require_ok: set[str] = set()
        self.domains = {d.lower() for d in domains}
        # (wildcard listener, peer ip) -> the listener with the address the peer reaches us
        # on; injected by the I/O layer (the kernel's source address choice)
        self.concretize: Callable[[LocalAddress, str], LocalAddress] | None = None
        self._hosts = set()
        self._hostports: set[tuple[str, int]] = set()
        self._sockets: set[tuple[str, int, str]] = set()  # (host, port, transport)
        self._sent_by = set()
        for la in locals_:
            for h in {la.host, la.ip}:
                h = h.lower().strip("[]")
                self._hosts.add(h)
            self._hostports.add((la.host.lower().strip("[]"), la.adv_port))
            self._hostports.add((la.ip.lower().strip("[]"), la.port))
            self._sockets.add((la.host.lower().strip("[]"), la.adv_port, la.proto))
            self._sockets.add((la.ip.lower().strip("[]"), la.port, la.proto))
            self._sent_by.add(la.sent_by().lower())
        self._protos = {la.proto for la in locals_}
        # the incoming branch's checksum is seeded by the secret (16.11 branch, below)
        self._branch_seed = zlib.crc32(self.secret)
        # per outgoing listener: the start of our Via and our Record-Route value
        # (keyed by index and host: a listener's other fields are fixed, only a wildcard's
        # host is made concrete; a tuple of two hashes in C, a LocalAddress in Python)
        self._via_head: dict[tuple[int, str], tuple[str, bool]] = {}
        # the reply splice (splice_response): the Vias we put on UDP requests, as bytes (a
        # reply that starts with one of them is ours without parsing it), and per next Via
        # line's bytes where the reply goes (ip, port, Via) or None (the general splice)
        self._own_vias: set[bytes] = set()
        self._reply_hops: dict[bytes, tuple[str, int, Via] | None] = {}
        self._rr_value: dict[tuple[int, str], str] = {}
        # the loop hash's keyed BLAKE2s state, copied per request (no key block per hash)
        self._loop_blake = hashlib.blake2s(key=self.secret, digest_size=6)
        # byte path: id(URI) -> (URI, (ip, port) or None), see _udp_hop
        self._hops: dict[int, tuple[URI, tuple[str, int] | None]] = {}

    def add_local(self, ip: str, port: int) -> None:
        """Learn another address of ours (wildcard listeners, source address selection)."""
        h = ip.lower().strip("[]")
        self._hosts.add(h)
        self._hostports.add((h, port))
        for proto in self._protos:
            if (h, port, proto) not in self._sockets and any(
                    la.proto == proto and la.adv_port == port for la in self.locals):
                self._sockets.add((h, port, proto))
        self._sent_by.add(f"{format_host(h)}:{port}")

    # -- identity ----------------------------------------------------------------------

    def is_local_hostport(self, host: str, port: int | None, transport: str = "udp") -> bool:
        h = host.lower().strip("[]")
        if port is None:
            port = DEFAULT_PORTS.get(transport, 5060)
        return (h, port) in self._hostports

    def is_myself(self, uri: URI) -> bool:
        """Is the URI one of our addresses (host and port), like Kamailio's myself."""
        if not uri.is_sip:
            return False
        return self.is_local_hostport(uri.host, uri.port, uri.transport)

    def is_self(self, uri: URI) -> bool:
        """Kamailio's `uri == myself`: one of our listening sockets (host, port and, when
        the URI names one, transport; no port means the scheme's default) or a configured
        domain (an alias, any port)."""
        if not uri.is_sip:
            return False
        host = uri.host_bare
        if host in self.domains:
            return True
        named = uri.param("transport")
        proto = named.lower() if named else ("tls" if uri.scheme == "sips" else None)
        port = uri.port or DEFAULT_PORTS.get(proto or "udp", 5060)
        if proto is None:
            return (host, port) in self._hostports
        return (host, port, proto) in self._sockets

    def is_myself_or_domain(self, uri: URI) -> bool:
        """One of our listeners (host and port) or a configured domain: the script's
        `msg.is_myself()`."""
        return self.is_myself(uri) or self.is_domain(uri)

    def is_domain(self, uri: URI) -> bool:
        """Host is one of the configured domains."""
        return uri.is_sip and uri.host_bare in self.domains

    def is_our_domain(self, uri: URI) -> bool:
        """Host is one of our addresses or configured domains (port not considered)."""
        if not uri.is_sip:
            return False
        h = uri.host_bare
        return h in self._hosts or h in self.domains

    # -- requests ------------------------------------------------------------------------

    def check_request(self, msg: Request, src: Source) -> Response | None:
        """Validation and pre-processing (16.3, 16.4, RFC 3581). Returns a reply to send
        instead of forwarding, or None. Mutates `msg` (top Via, Route, Request-URI)."""
        via = msg.via
        if via.branch is None and via.host == "":
            raise RemoteProtocolError("Bad Via")
        self.stamp_via(msg, src)

        uri = msg.uri  # raises for a malformed Request-URI
        if uri.scheme not in SUPPORTED_SCHEMES:
            return self.make_reply(msg, 416, "Unsupported URI Scheme")
        cseq = msg.cseq
        msg.from_  # noqa: B018 - a broken From/To is a 400 here, before any script reads it
        msg.to  # noqa: B018
        if cseq.method != msg.method and msg.method != "ACK" or (
                msg.method == "ACK" and cseq.method not in ("ACK", "INVITE")):
            raise RemoteProtocolError("CSeq method does not match")

        mf = msg.get("max-forwards")
        if mf is not None:
            if not is_digits(mf, 9):
                raise RemoteProtocolError("Bad Max-Forwards")
            if int(mf) == 0 and msg.method != "ACK":
                if msg.method == "OPTIONS" and uri.user is None and self.is_self(uri):
                    return self.options_reply(msg)
                return self.make_reply(msg, 483, "Too Many Hops")

        if msg.method not in ("ACK", "CANCEL"):
            preq = [t for t in msg.get_all("proxy-require")
                    if t.strip().lower() not in self.proxy_require_ok]
            if preq:
                return self.make_reply(msg, 420, "Bad Extension",
                                       [("Unsupported", ", ".join(preq))])

        self._preprocess_route(msg)

        if msg.method != "ACK" and self._is_loop(msg):
            return self.make_reply(msg, 482, "Loop Detected")
        return None

    def stamp_via(self, msg: Request, src: Source) -> None:
        """Add received / fill rport on the top Via (RFC 3261 18.2.1, RFC 3581 4)."""
        changed = self._stamped(msg.via, src)
        if changed is not None:
            msg.pop_first("via")
            msg.add_top("Via", str(changed))
            msg._via = changed

    @staticmethod
    def _stamped(via: Via, src: Source) -> Via | None:
        """The top Via with received / rport filled in, or None when it needs neither."""
        if via.rport == "":
            return via.with_param("rport", str(src.port)).with_param("received", src.ip)
        if via.host.strip("[]") != src.ip:
            return via.with_param("received", src.ip)
        return None

    def _preprocess_route(self, msg: Request) -> None:
        uri = msg.uri
        # 16.4: a strict router put our Record-Route URI into the Request-URI
        if uri.is_sip and uri.user is None and uri.has_param("lr") and self.is_myself(uri):
            last = msg.pop_last("route")
            if last is not None:
                msg.uri = parse_address(last).uri
                msg.loose_routed = True
        # 16.4: remove our own Route entries (two when we double record-routed)
        for _ in range(2):
            top = msg.get("route")
            if top is None:
                break
            if not self.is_myself(parse_address(top).uri):
                break
            msg.pop_first("route")
            msg.loose_routed = True

    def _loop_hash(self, msg: Request) -> str:
        # fields a downstream element does not change (16.6 step 8); raw text is enough
        parts = [msg.uri_text, msg.call_id, str(msg.cseq.seq)]
        for h in msg.headers:
            if h[0] in _LOOP_KEYS:
                parts.append(h[2])
        return self._loop_digest(parts)

    def _loop_digest(self, parts: list[str]) -> str:
        h = self._loop_blake.copy()
        h.update("|".join(parts).encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def _is_loop(self, msg: Request) -> bool:
        mine = []
        for v in msg.get_all("via"):  # plain loops: no generator frame per Via
            low = v.lower()
            for s in self._sent_by:
                if s in low:
                    mine.append(v)
                    break
        if not mine:
            return False
        loop = self._loop_hash(msg)
        for v in mine:
            b = parse_via(v).branch or ""
            if b.startswith(MAGIC_COOKIE) and b.endswith(loop):
                return True
        return False

    def branch(self, msg: Request) -> str:
        """RFC 3261 16.11 stateless branch: the same for a retransmission (and for the
        CANCEL and non-2xx ACK of an INVITE), different per transaction. The last part is
        the loop-detection hash (16.6 step 8), which already tells requests of different
        dialogs and CSeqs apart; the part before it tells apart transactions that share all
        of those (a new branch from the client), so a seeded CRC-32 of the incoming branch
        is enough there (one keyed hash per request, not two)."""
        via = msg.via
        incoming = via.branch or ""
        if not incoming.startswith(MAGIC_COOKIE):
            incoming = f"{msg.call_id}|{msg.cseq.seq}|{msg.from_.tag}|{via}"
        return self._stateless_branch(incoming, self._loop_hash(msg))

    def _stateless_branch(self, incoming: str, loop: str) -> str:
        h = zlib.crc32(incoming.encode("utf-8", "surrogateescape"), self._branch_seed)
        return f"{MAGIC_COOKIE}{self.worker}x{h:08x}{loop}"

    def is_options_to_self(self, msg: Request) -> bool:
        if msg.method != "OPTIONS" or msg.has("route"):
            return False
        uri = msg.uri
        return uri.user is None and self.is_self(uri)

    def options_reply(self, msg: Request) -> Response:
        return self.make_reply(msg, 200, "OK", [
            ("Allow", ALLOW), ("Supported", "path, outbound"),
            ("Accept", "application/sdp"), ("Accept-Language", "en")])

    def next_hop(self, msg: Request, dst_uri: URI | None = None) -> NextHop:
        """The URI to send to (16.6 steps 6-7). A strict-routing next hop (top Route without
        `lr`) gets the Request-URI appended to Route and becomes the Request-URI."""
        target: URI
        if dst_uri is not None:
            target = dst_uri
        else:
            top = msg.get("route")
            if top is not None:
                route_uri = parse_address(top).uri
                if not route_uri.has_param("lr"):
                    msg.pop_first("route")
                    msg.add("Route", f"<{msg.uri_text}>")
                    msg.uri = route_uri
                target = route_uri
            else:
                target = msg.uri
        if not target.is_sip:
            raise RemoteProtocolError("Cannot route this URI", 416)
        transport = target.transport
        host = target.param("maddr") or target.host
        port = target.port or DEFAULT_PORTS.get(transport, 5060)
        return NextHop(target, host.strip("[]"), port, transport)

    def finalize_request(self, msg: Request, src: Source | None, out: LocalAddress,
                         branch: str | None = None) -> bytes:
        """Max-Forwards, Record-Route and our Via (16.6 steps 3-8); serialise."""
        headers = msg.headers
        for i, h in enumerate(headers):
            if h[0] == "max-forwards":
                mf = h[2]
                if mf != "0":
                    mf = str(int(mf) - 1)
                    for x in headers[i + 1:]:  # a plain loop: no generator frame
                        if x[0] == "max-forwards":
                            msg.set("Max-Forwards", mf)
                            break
                    else:
                        h[2] = mf  # the usual case: one line, edited in place
                break
        else:
            msg.add("Max-Forwards", str(self.max_forwards), first=True)
        rr = msg.record_route
        if rr is None:  # the [proxy] setting: initial requests that can start a dialog
            rr = self.record_route and msg.method not in ("REGISTER", "ACK", "CANCEL") \
                and msg.to.tag is None
        if rr and src is not None:
            inbound = self.locals[src.listener]
            if inbound.index != out.index:  # in on one socket, out on another: double RR
                if inbound.host in WILDCARDS and self.concretize is not None:
                    # never a wildcard in a header: the address the sender reaches us on
                    inbound = self.concretize(inbound, src.ip)
                if (inbound.proto, inbound.host, inbound.adv_port) != (out.proto, out.host,
                                                                       out.adv_port):
                    msg.add_top("Record-Route", f"<{inbound.uri()}>")
            rr_value = self._rr_value.get((out.index, out.host))
            if rr_value is None:
                rr_value = self._rr_value[(out.index, out.host)] = f"<{out.uri()}>"
            msg.add_top("Record-Route", rr_value)
        msg.add_top("Via", self._our_via(out, branch or self.branch(msg)))
        return msg.to_bytes()

    def _our_via(self, out: LocalAddress, branch: str, parsed: bool = True) -> str:
        """The Via we put on top of a request we send from `out`. `parsed`: also put the
        `Via` it parses to into the Via parse cache (the byte path does not: its replies are
        spliced by the Via's bytes, splice_response)."""
        entry = self._via_head.get((out.index, out.host))
        if entry is None:
            entry = self._via_head[(out.index, out.host)] = (
                f"SIP/2.0/{out.proto.upper()} {out.sent_by()};branch=",
                out.proto == "udp" and self.is_local_hostport(out.host, out.adv_port))
        via = entry[0] + branch
        if out.proto == "udp":
            via += ";rport"
            if entry[1]:  # the replies' splice knows it as ours by its bytes
                own = self._own_vias
                if len(own) >= 4096:
                    own.clear()
                own.add(via.encode("utf-8", "surrogateescape"))
            if not parsed:
                return via
            params: tuple = (("branch", branch), ("rport", None))
        else:
            params = (("branch", branch),)
        # the replies come back with this Via on top: parsed already (what parse_via gives)
        remember_via(via, Via(out.proto.upper(), format_host(out.host), out.adv_port, params))
        return via

    # -- the byte path: stateless UDP requests without the message model ---------------

    @cython.locals(end=cython.Py_ssize_t, hl=list, keys=list, present=set, i=cython.Py_ssize_t,
                   vi=cython.Py_ssize_t, fi=cython.Py_ssize_t, ti=cython.Py_ssize_t,
                   ri=cython.Py_ssize_t, mf=cython.long, n=cython.Py_ssize_t)
    def forward_datagram(self, data: bytes, src: Source, route: RouteChoice
                         ) -> tuple[bytes, str, int, int, str] | None:
        """Forward a UDP request statelessly without building a Request: what
        check_request, the route decision, next_hop and finalize_request do, on the lines
        of the head, with the same bytes out as that path.

        `route(uri, in_dialog, loose_routed, has_route, is_myself)` is the route table's
        decision (script/api.py `RouteTable.destination`): a destination URI, None (by
        Route or Request-URI), or False (not a forward: the full path answers).

        Returns (bytes, ip, port, listener index, method), or None when the request is not
        the plain case: a head the full path would rewrite (see the checks below), CANCEL,
        OPTIONS, Proxy-Require, a Via or Route list in one line, strict routing, one of our
        addresses in a Via, Max-Forwards 0, a next hop that is a name or not UDP, or
        anything malformed. The caller then takes the full path, which validates and
        answers as always; nothing was changed here.
        """
        end = data.find(b"\r\n\r\n")
        if end < 0 or end > BYTE_PATH_MAX_HEAD:
            return None
        # the head's lines, checked as the full path writes them back unchanged: `_scan_head`
        # compiled (one C loop over the octets of a bytes), `_split_head` as Python
        head = _scan_head(data, end) if cython.compiled and type(data) is bytes \
            else _split_head(data[:end])
        if head is None:
            return None
        hl, keys, values, present, cl, method, uri_text = head
        body = data[end + 4:]
        if cl is not None:  # to_bytes() writes it last, from the body
            v = cl
            if not v or len(v) > 9 or not v.isdigit():
                return None
            n = int(v)
            if len(body) < n:
                return None
            if len(body) > n:
                body = body[:n]  # UDP: octets past Content-Length are dropped (18.3)
        vi = keys.index("via")
        fi = keys.index("from")
        ti = keys.index("to")
        via_text = values[vi]
        if "," in via_text:
            return None
        try:
            via = parse_via(via_text)
            uri = parse_uri(uri_text)
            cseq = parse_cseq(values[keys.index("cseq")])
            parse_address(values[fi])
            to_tag = parse_address(values[ti]).tag
        except RemoteProtocolError:
            return None
        incoming = via.branch
        if incoming is None or not incoming.startswith(MAGIC_COOKIE):
            return None
        if uri.scheme not in SUPPORTED_SCHEMES:
            return None
        if cseq.method != method and method != "ACK" or (
                method == "ACK" and cseq.method not in ("ACK", "INVITE")):
            return None
        mf = -1
        if _MAX_FORWARDS in present:
            v = values[keys.index(_MAX_FORWARDS)]
            if len(v) > 9 or not v.isdigit():
                return None
            mf = int(v)
            if mf == 0:
                return None  # 483, or an ACK forwarded with 0: the full path
        stamped = self._stamped(via, src)
        # one of our addresses in a Via: maybe a loop (16.3 step 4); the full path decides
        vias = [values[i] for i, k in enumerate(keys) if k == "via"] \
            if keys.count("via") > 1 else [via_text]
        if stamped is not None:
            vias.append(str(stamped))
        for v in vias:
            low = v.lower()
            for s in self._sent_by:
                if s in low:
                    return None
        # 16.4: a strict router's Request-URI: the full path
        if uri.is_sip and uri.user is None and uri.has_param("lr") and self.is_myself(uri):
            return None
        # 16.4: our own Route entries (at most two) go; the next one is the next hop's
        routes = []
        target: URI | None = None
        if "route" in present:
            ri = 0
            for _ in range(min(3, keys.count("route"))):
                ri = keys.index("route", ri + 1)
                v = values[ri]
                if "," in v:
                    return None
                try:
                    target = parse_address(v).uri
                except RemoteProtocolError:
                    return None
                if len(routes) == 2 or not self.is_myself(target):
                    break
                routes.append(ri)
                target = None
        has_route = keys.count("route") > len(routes)
        dest = route(uri, to_tag is not None, bool(routes), has_route,
                     self.is_myself_or_domain)
        if dest is False:
            return None
        if dest is None:
            if has_route:
                if target is None or not target.has_param("lr"):
                    return None  # strict routing next (16.6 step 6): the full path
            else:
                target = uri
        else:
            target = dest
        hop = self._udp_hop(target)
        out = self.locals[src.listener]
        if hop is None or out.proto != "udp" or out.host in WILDCARDS \
                or (":" in hop[0]) != (":" in out.ip):
            return None  # DNS, another transport or family, a wildcard listener: full path
        # the branch (16.11) over the 16.6 step 8 fields, our own Route entries left out
        parts = [uri_text, values[keys.index(_CALL_ID)], str(cseq.seq)]
        if has_route or _PROXY_AUTHORIZATION in present:
            for i, k in enumerate(keys):
                if k in _LOOP_KEYS and i not in routes:
                    parts.append(values[i])
        elif fi < ti:
            parts.append(values[fi])
            parts.append(values[ti])
        else:
            parts.append(values[ti])
            parts.append(values[fi])
        branch = self._stateless_branch(incoming, self._loop_digest(parts))
        # the edits, in the order the full path makes them on its header list
        if _CONTENT_LENGTH in present:
            i = keys.index(_CONTENT_LENGTH)
            del hl[i]
            del keys[i]
        if stamped is not None:  # stamp_via: out, then back above the next Via line
            i = keys.index("via")
            del hl[i]
            del keys[i]
            if "via" in keys:
                i = keys.index("via")
                v = hl[i]
                hl.insert(i, f"{v[:v.find(':')]}: {stamped}")
            else:
                i = 1
                hl.insert(1, f"Via: {stamped}")
            keys.insert(i, "via")
        for _ in routes:  # ours: the first Route lines
            i = keys.index("route")
            del hl[i]
            del keys[i]
        if mf > 0:
            i = keys.index(_MAX_FORWARDS)
            v = hl[i]
            hl[i] = f"{v[:v.find(':')]}: {mf - 1}"
        else:
            hl.insert(1, f"Max-Forwards: {self.max_forwards}")
            keys.insert(1, _MAX_FORWARDS)
        if self.record_route and to_tag is None and method != "REGISTER" and method != "ACK":
            rr_value = self._rr_value.get((out.index, out.host))
            if rr_value is None:
                rr_value = self._rr_value[(out.index, out.host)] = f"<{out.uri()}>"
            if _RECORD_ROUTE in keys:
                i = keys.index(_RECORD_ROUTE)
                v = hl[i]
                hl.insert(i, f"{v[:v.find(':')]}: {rr_value}")
            else:
                i = 1
                hl.insert(1, f"Record-Route: {rr_value}")
            keys.insert(i, _RECORD_ROUTE)
        i = keys.index("via")
        v = hl[i]
        hl.insert(i, f"{v[:v.find(':')]}: {self._our_via(out, branch, False)}")
        hl.append(f"Content-Length: {len(body)}\r\n\r\n")
        return ("\r\n".join(hl).encode("utf-8", "surrogateescape") + body, hop[0], hop[1],
                out.index, method)

    def _udp_hop(self, target: URI) -> tuple[str, int] | None:
        """(ip, port) when `target` is sent to over UDP without DNS (next_hop, then
        literal_target), else None. Remembered per URI object (parsed URIs are shared)."""
        entry = self._hops.get(id(target))
        if entry is not None and entry[0] is target:
            return entry[1]
        hop = None
        if target.is_sip:
            host = target.param("maddr") or target.host
            t = literal_target(target, host.strip("[]"))
            if t is not None and t.transport == "udp":
                hop = (t.ip, t.port)
        if len(self._hops) >= 256:
            self._hops.clear()
        self._hops[id(target)] = (target, hop)  # the URI is held: its id is not reused
        return hop

    # -- responses -------------------------------------------------------------------

    def is_own_via(self, via: Via) -> bool:
        return self.is_local_hostport(via.host, via.port, via.transport.lower())

    def route_response(self, msg: Response) -> ResponseRoute | None:
        """Remove our Via and say where the response goes (16.7, 18.2.2).
        None: not ours (discard) or it ended at us."""
        if not self.is_own_via(msg.via):
            return None
        msg.pop_first("via")
        if not msg.has("via"):
            return None
        nxt = msg.via
        ip, port = nxt.response_target()
        return ResponseRoute(msg.to_bytes(), nxt.transport.lower(), ip, port, nxt)

    @cython.locals(head_end=cython.Py_ssize_t, ls=cython.Py_ssize_t, le=cython.Py_ssize_t,
                   ne=cython.Py_ssize_t)
    def splice_response(self, data: bytes) -> ResponseRoute | None:
        """Fast path for forwarding a reply statelessly: cut our Via out of the bytes
        without building a Message (most of a stateless proxy's traffic is replies).

        None when the reply is not the simple case (our Via not first, folded or quoted Via
        values, a transaction branch, no Via after ours, a stream transport next): the
        caller then takes the full path, which also validates the whole message.
        """
        if cython.compiled and type(data) is bytes:  # the same, by one C pass over the head
            found = _splice_lines(data)
            if found is None:
                return None
            head_end, ls, le, ne = found
            if ls > 0 and data[ls + 5:le] in self._own_vias:
                nv = data[le + 7:ne]
                hop = self._reply_hops.get(nv, False)
                if hop is False:
                    hop = self._reply_hop(nv)  # raises for a Via that does not parse
                if hop is not None:
                    return ResponseRoute(data[:ls] + data[le + 2:], "udp", *hop)
        else:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return None
            head_end = end + 2
            # a transaction's reply (our branch `z9hG4bK<worker>xt...` in the first branch
            # parameter of the head) goes to the transaction layer: found before any parsing
            # (should the first branch= be in another header, the full path decides instead)
            b = data.find(b";branch=z9hG4bK", 0, head_end)
            if b > 0:
                x = data.find(b"x", b + 15, b + 21)
                if x > b + 15 and data[b + 15:x].isdigit() and data[x + 1:x + 2] == b"t":
                    return None
                # the usual reply to a request we forwarded over UDP: "Via: <ours>" is the first
                # Via line (no line before it starts with v or V), "Via: <next>" the line after
                ls = data.rfind(b"\n", 0, b) + 1
                le = data.find(b"\r\n", b, head_end)
                if ls > 0 and le > 0 and data[ls:ls + 5] == b"Via: " \
                        and data[ls + 5:le] in self._own_vias \
                        and data[le + 2:le + 7] == b"Via: " and data.find(b"\nv", 0, ls) < 0 \
                        and data.find(b"\nV", 0, ls) < 0:
                    ne = data.find(b"\r\n", le + 7, head_end)
                    if ne > 0 and data[ne + 2:ne + 3] not in (b" ", b"\t"):  # not folded
                        nv = data[le + 7:ne]
                        hop = self._reply_hops.get(nv, False)
                        if hop is False:
                            hop = self._reply_hop(nv)  # raises for a Via that does not parse
                        if hop is not None:
                            return ResponseRoute(data[:ls] + data[le + 2:], "udp", *hop)
        m1 = _VIA_LINE.search(data, 0, head_end)
        if m1 is None or data[m1.end():m1.end() + 1] in (b" ", b"\t") or b'"' in m1.group(1):
            return None
        value = m1.group(1)
        first, comma, rest = value.partition(b",")
        via = parse_via(first.decode("utf-8", "surrogateescape").strip())
        if not self.is_own_via(via):
            return None
        branch = via.branch or ""
        if branch[7:].partition("x")[2][:1] == "t":
            return None  # a transaction's reply: the transaction layer handles it
        if comma:
            rest = rest.strip()
            nxt = rest.partition(b",")[0]
            out = data[:m1.start(1)] + rest + data[m1.end(1):]
        else:
            m2 = _VIA_LINE.search(data, m1.end() - 1, head_end)  # from the LF ending m1
            if m2 is None or data[m2.end():m2.end() + 1] in (b" ", b"\t") \
                    or b'"' in m2.group(1):
                return None
            nxt = m2.group(1).partition(b",")[0]
            out = data[:m1.start() + 1] + data[m1.end():]
        nxt_via = parse_via(nxt.decode("utf-8", "surrogateescape").strip())
        if nxt_via.transport != "UDP":
            return None
        ip, port = nxt_via.response_target()
        return ResponseRoute(out, "udp", ip, port, nxt_via)

    def _reply_hop(self, value: bytes) -> tuple[str, int, Via] | None:
        """Where a reply goes whose next Via line holds `value` (what splice_response's
        general case finds for that line), or None when that line is not the simple case
        (the general case decides). Remembered per value."""
        hop = None
        if b"\r" not in value and b"\n" not in value and b'"' not in value:
            nxt_via = parse_via(value.partition(b",")[0].decode("utf-8", "surrogateescape")
                                .strip())
            if nxt_via.transport == "UDP":
                hop = (*nxt_via.response_target(), nxt_via)
        hops = self._reply_hops
        if len(hops) >= 4096:
            hops.clear()
        hops[value] = hop
        return hop

    @staticmethod
    def worker_of_branch(branch: str | None) -> int | None:
        """Worker index encoded in a branch we generated (`z9hG4bK<w>x...`)."""
        if not branch or not branch.startswith(MAGIC_COOKIE):
            return None
        head, x, _ = branch[7:].partition("x")
        return int(head) if x and is_digits(head, 4) else None

    # -- replies we generate ---------------------------------------------------------

    def make_reply(self, req: Request, status: int, reason: str,
                   headers: list[tuple[str, str]] | tuple = (), body: bytes = b"",
                   content_type: str | None = None) -> Response:
        """A stateless reply (RFC 3261 8.2.6): Via, From, To (+tag), Call-ID, CSeq copied."""
        resp = Response(status, reason)
        for h in req.headers:
            if h[0] in ("via", "from", "call-id", "cseq"):
                resp.headers.append([h[0], h[1], h[2]])
            elif h[0] == "to":
                value = h[2]
                if status > 100 and "tag=" not in value.lower():
                    try:
                        has_tag = parse_address(value).tag is not None
                    except RemoteProtocolError:
                        has_tag = True
                    if not has_tag:
                        value = f"{value};tag={self.to_tag(req)}"
                resp.headers.append([h[0], h[1], value])
        resp.add("Server", self.server)
        for name, value in headers:
            resp.add(name, value)
        if body:
            resp.body = body
            if content_type:
                resp.add("Content-Type", content_type)
        return resp

    def to_tag(self, req: Request) -> str:
        """Deterministic To tag so that a retransmitted request gets the same reply."""
        # the raw top Via line: it may hold list elements that do not parse (a 400's reply)
        via = next((h[2] for h in req.headers if h[0] == "via"), "")
        return hashlib.blake2s(f"{req.call_id}|{via}".encode("utf-8", "surrogateescape"),
                               key=self.secret, digest_size=8).hexdigest()


def salvage_request(data: bytes) -> Request | None:
    """Best effort for answering a malformed request with 400 (or 505 for another SIP
    version): the request line and the headers a reply needs, parsed leniently (the first of
    a duplicated header, Via list elements that are empty left out). None when no reply can
    be built."""
    text = data[:65536].decode("utf-8", "replace")
    lines = text.replace("\r\n", "\n").split("\n")
    first = lines[0].split(" ")
    if len(first) != 3 or not _SIP_VERSION.fullmatch(first[2]) or first[0] == "ACK" \
            or not first[0].isalpha():
        return None
    req = Request(first[0], first[1])
    wanted = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
              "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}
    for line in lines[1:]:
        if not line:
            break
        name, colon, value = line.partition(":")
        canon = wanted.get(name.strip().lower())
        if colon and canon:
            value = value.strip()
            if canon == "Via":
                value = ", ".join(v for v in (p.strip() for p in value.split(",")) if v)
                if value:
                    req.add(canon, value)
            elif not req.has(canon):
                req.add(canon, value)
    for need in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not req.has(need):
            return None
    try:
        req.via  # noqa: B018 - the reply goes to the top Via; it must parse
    except RemoteProtocolError:
        return None
    return req


_SIP_VERSION = re.compile(r"SIP/[0-9]{1,3}\.[0-9]{1,3}", re.I)
