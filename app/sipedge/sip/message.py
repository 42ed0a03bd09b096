"""SIP messages: parsing, the mutable message model and serialisation (RFC 3261 7, 25).

Parsing splits the head into header lines and names, nothing more: values stay raw strings
and are parsed on first use (Via, CSeq, addresses, the Request-URI). A proxy touches few
headers, so most are never parsed at all.
"""

from __future__ import annotations

import re
import sys
from itertools import repeat
from typing import Iterator

from ..errors import RemoteProtocolError
from .grammar import COMPACT, MULTI_VALUE, canonical_name, split_commas
from .headers.address import Address, parse_address
from .headers.cseq import CSeq, parse_cseq
from .headers.via import Via, parse_via
from .uri import URI, parse_uri

MAX_HEADERS = 256
MAX_LINE = 8192
MAX_HEAD_BYTES = 65536

_METHOD = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_FOLD = re.compile(r"\r?\n[ \t]+")
# control characters other than HTAB, and CR not followed by LF, are not allowed in a head
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
# the same test in two cheap C-level parts on the raw head (the regex tried both of its
# branches at every position): control octets are what bytes.translate deletes, and a CR
# not followed by LF makes the CR and CRLF counts differ
_CONTROL_OCTETS = bytes(range(0x00, 0x09)) + b"\x0b\x0c" + bytes(range(0x0e, 0x20)) + b"\x7f"
# a bare CR, and a folded line: one regex pass each (`"\n " in s` is a slow substring
# search when the needle's last character is as common as a blank, and two counts of "\r"
# and "\r\n" were two passes)
_BARE_CR = re.compile(r"\r(?!\n)")
_FOLDED = re.compile(r"\n[ \t]")
_DIGITS = re.compile(r"[0-9]{1,9}")
_STATUS = re.compile(r"[1-9][0-9][0-9]")
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_CRLF = "\r\n"
# headers a message carries at most once (RFC 3261 20; 8.2.2 / 16.3: a duplicate is a 400)
_SINGLE = ("call-id", "from", "to", "cseq", "max-forwards")


class Message:
    """A SIP request or response. Headers are a list of [key, name, value] entries.

    `key` is the lower-case full header name (compact forms expanded), `name` is the
    spelling to write, `value` is the raw value text.
    """

    __slots__ = ("headers", "body", "_via", "_cseq", "_to", "_from")

    is_request = False

    def __init__(self, headers: list[list[str]] | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else []
        self.body = body
        self._via: Via | None = None
        self._cseq: CSeq | None = None
        self._to: Address | None = None
        self._from: Address | None = None

    # -- header access ---------------------------------------------------------------

    def get(self, name: str) -> str | None:
        """The first value of a header (for list headers, the first list element)."""
        key = _key_cache.get(name) or _key(name)
        for h in self.headers:
            if h[0] == key:
                v = h[2]
                if "," in v and key in MULTI_VALUE:
                    return split_commas(v)[0]
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, list headers split on commas, in order."""
        key = _key_cache.get(name) or _key(name)
        out: list[str] = []
        multi = key in MULTI_VALUE
        for h in self.headers:
            if h[0] == key:
                if multi and "," in h[2]:
                    out.extend(split_commas(h[2]))
                else:
                    out.append(h[2])
        return out

    def has(self, name: str) -> bool:
        key = _key_cache.get(name) or _key(name)
        for h in self.headers:
            if h[0] == key:
                return True
        return False

    def count(self, name: str) -> int:
        return len(self.get_all(name))

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a header line (or insert it before the first header with `first`)."""
        key = _key(name)
        entry = [key, name if name.lower() == key else canonical_name(key), value]
        if first:
            self.headers.insert(0, entry)
        else:
            self.headers.append(entry)
        self._invalidate(key)

    def add_top(self, name: str, value: str) -> None:
        """Insert a value above all existing values of this header (Via, Record-Route)."""
        key = _key(name)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                self.headers.insert(i, [key, h[1], value])
                break
        else:
            self.headers.insert(0, [key, canonical_name(key), value])
        self._invalidate(key)

    def set(self, name: str, value: str) -> None:
        """Replace every line of a header by one line with `value` (in the first one's place)."""
        key = _key(name)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                h[2] = value
                self.headers[i + 1:] = [x for x in self.headers[i + 1:] if x[0] != key]
                break
        else:
            self.headers.append([key, canonical_name(key), value])
        self._invalidate(key)

    def remove(self, name: str) -> int:
        """Remove every line of a header; returns how many lines were removed."""
        key = _key(name)
        before = len(self.headers)
        self.headers = [h for h in self.headers if h[0] != key]
        self._invalidate(key)
        return before - len(self.headers)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a (list) header."""
        key = _key(name)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                if key in MULTI_VALUE and "," in h[2]:
                    values = split_commas(h[2])
                    h[2] = ", ".join(values[1:])
                    first = values[0]
                else:
                    del self.headers[i]
                    first = h[2]
                self._invalidate(key)
                return first
        return None

    def pop_last(self, name: str) -> str | None:
        """Remove and return the last value of a (list) header."""
        key = _key(name)
        for i in range(len(self.headers) - 1, -1, -1):
            h = self.headers[i]
            if h[0] == key:
                if key in MULTI_VALUE and "," in h[2]:
                    values = split_commas(h[2])
                    h[2] = ", ".join(values[:-1])
                    last = values[-1]
                else:
                    del self.headers[i]
                    last = h[2]
                self._invalidate(key)
                return last
        return None

    def _invalidate(self, key: str) -> None:
        if key == "via":
            self._via = None
        elif key == "cseq":
            self._cseq = None
        elif key == "to":
            self._to = None
        elif key == "from":
            self._from = None

    # -- parsed values (cached) -----------------------------------------------------

    @property
    def via(self) -> Via:
        """The top Via, parsed."""
        if self._via is None:
            v = self.get("via")
            if v is None:
                raise RemoteProtocolError("Missing Via")
            self._via = parse_via(v)
        return self._via

    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.get_all("via")]

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            v = self.get("cseq")
            if v is None:
                raise RemoteProtocolError("Missing CSeq")
            self._cseq = parse_cseq(v)
        return self._cseq

    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    def address(self, name: str) -> Address:
        v = self.get(name)
        if v is None:
            raise RemoteProtocolError(f"Missing {canonical_name(_key(name))}")
        return parse_address(v)

    @property
    def from_(self) -> Address:
        if self._from is None:
            v = self.get("from")  # address("from") without its call
            if v is None:
                raise RemoteProtocolError("Missing From")
            self._from = parse_address(v)
        return self._from

    @property
    def to(self) -> Address:
        if self._to is None:
            v = self.get("to")
            if v is None:
                raise RemoteProtocolError("Missing To")
            self._to = parse_address(v)
        return self._to

    def header_items(self) -> Iterator[tuple[str, str]]:
        for h in self.headers:
            yield h[1], h[2]

    # -- serialisation --------------------------------------------------------------

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise. Content-Length is always written, from the body."""
        lines = [f"{h[1]}: {h[2]}" for h in self.headers if h[0] != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return (f"{self.start_line()}\r\n{_CRLF.join(lines)}"
                ).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class Request(Message):
    __slots__ = ("method", "_uri_text", "_uri", "version", "loose_routed", "send_socket",
                 "record_route")

    is_request = True

    def __init__(self, method: str, uri: str | URI, headers: list[list[str]] | None = None,
                 body: bytes = b"", version: str = "SIP/2.0") -> None:
        # Message.__init__ inline (one call less per message: parsed, copied or built)
        self.headers = headers if headers is not None else []
        self.body = body
        self._via = self._cseq = self._to = self._from = None
        self.method = method
        self.version = version
        self.loose_routed = False  # set when the proxy removed its own Route entry
        self.send_socket: str | None = None  # listener to send from ("udp:192.0.2.1:5060")
        self.record_route: bool | None = None  # the script's record_route(); None: [proxy]
        if isinstance(uri, URI):
            self._uri = uri
            self._uri_text = str(uri)
        else:
            self._uri = None
            self._uri_text = uri

    @property
    def uri(self) -> URI:
        """The Request-URI, parsed on first use."""
        if self._uri is None:
            self._uri = parse_uri(self._uri_text)
        return self._uri

    @uri.setter
    def uri(self, value: URI | str) -> None:
        if isinstance(value, URI):
            self._uri = value
            self._uri_text = str(value)
        else:
            self._uri = None
            self._uri_text = value

    @property
    def uri_text(self) -> str:
        return self._uri_text

    def start_line(self) -> str:
        return f"{self.method} {self._uri_text} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri_text}>"


class Response(Message):
    __slots__ = ("status", "reason", "version")

    def __init__(self, status: int, reason: str, headers: list[list[str]] | None = None,
                 body: bytes = b"", version: str = "SIP/2.0") -> None:
        self.headers = headers if headers is not None else []  # as in Request
        self.body = body
        self._via = self._cseq = self._to = self._from = None
        self.status = status
        self.reason = reason
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


_key_cache: dict[str, str] = {}


def _key(name: str) -> str:
    key = _key_cache.get(name)
    if key is None:
        low = name.strip().lower()
        # interned: list.index / count / `in` over keys then compare identities
        key = sys.intern(COMPACT.get(low, low))
        # only valid names are remembered: the parser trusts a cache hit
        if len(_key_cache) < 4096 and _TOKEN.fullmatch(key) and name == name.strip():
            _key_cache[name] = key
    return key


def find_head_end(data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """Return (end of head, start of body), or (-1, -1) if the head is not complete.

    The head ends at the first empty line, CRLF CRLF or (tolerated) LF LF."""
    i = data.find(b"\r\n\r\n", start)
    j = data.find(b"\n\n", start, i + 2 if i >= 0 else len(data))
    if j >= 0 and (i < 0 or j < i):
        return j, j + 2
    if i >= 0:
        return i, i + 4
    return -1, -1


def parse_message(data: bytes, *, datagram: bool = True) -> Request | Response:
    """Parse one complete message.

    With `datagram=True` (UDP), a body longer than Content-Length is truncated to it and a
    missing Content-Length means "the rest of the datagram" (RFC 3261 18.3). With
    `datagram=False` (stream framing already done by the caller) the body must be exactly
    Content-Length bytes. Raises RemoteProtocolError on anything malformed.
    """
    if len(data) > 1048576:
        raise RemoteProtocolError("Message Too Large", 513)
    start = 0
    while data[start:start + 1] in (b"\r", b"\n") and start < 64:  # RFC 3261 7.5 leading CRLFs
        start += 1
    head_end, body_start = find_head_end(data, start)
    if head_end < 0:
        if len(data) > MAX_HEAD_BYTES:
            raise RemoteProtocolError("Message Too Large", 513)
        raise RemoteProtocolError("Incomplete message")
    if head_end > MAX_HEAD_BYTES:
        raise RemoteProtocolError("Message Too Large", 513)
    raw = data[start:head_end]
    head = raw.decode("utf-8", "surrogateescape").rstrip("\r")
    if (len(raw.translate(None, _CONTROL_OCTETS)) != len(raw)
            or _BARE_CR.search(head) is not None) and not _controls_quoted(head):
        raise RemoteProtocolError("Control character in header")
    first, nl, rest = head.partition("\n")
    first = first.rstrip("\r")
    if not first:
        raise RemoteProtocolError("Empty message")
    if len(first) > MAX_LINE:
        raise RemoteProtocolError("Start line too long")
    if _FOLDED.search(rest) is not None:  # folded continuation lines (RFC 3261 7.3.1)
        if rest[:1] in (" ", "\t"):
            raise RemoteProtocolError("Continuation before first header")
        rest = _FOLD.sub(" ", rest)
    headers: list[list[str]] = []
    keys: list[str | None] = []
    if nl:
        # one (name, ":", value) per line, split in C: a CR can only end a line here (a bare
        # CR was refused above) and str.strip() below removes it with the blanks
        found = list(map(str.partition, rest.split("\n"), repeat(":")))
        names, colons, values = zip(*found)
        if "" in colons or "" in names:
            raise RemoteProtocolError("Header without colon")
        if len(found) > MAX_HEADERS:
            raise RemoteProtocolError("Too many headers")
        if len(rest) > MAX_LINE and max(map(len, rest.split("\n"))) > MAX_LINE:
            raise RemoteProtocolError("Header line too long")
        # the common case in C-level loops: every name known to the key cache
        keys = list(map(_key_cache.get, names))
        headers = list(map(list, zip(keys, names, map(str.strip, values))))
        if None in keys:
            for i, h in enumerate(headers):
                if h[0] is None:
                    name = h[1].strip()
                    key = _key(name)
                    if not _TOKEN.fullmatch(key):
                        raise RemoteProtocolError("Bad header name")
                    h[0] = keys[i] = key
                    h[1] = name

    msg: Request | Response
    if first[:4].upper() == "SIP/":
        parts = first.split(" ", 2)
        if len(parts) < 2 or parts[0].upper() != "SIP/2.0" or not _STATUS.fullmatch(parts[1]):
            raise RemoteProtocolError("Bad status line")
        status = int(parts[1])
        if status < 100:
            raise RemoteProtocolError("Bad status code")
        msg = Response(status, parts[2] if len(parts) > 2 else "", headers)
    else:
        parts = first.split(" ")
        if len(parts) != 3 or not parts[1]:
            raise RemoteProtocolError("Bad request line")
        method, uri, version = parts
        if version.upper() != "SIP/2.0":
            raise RemoteProtocolError("Version Not Supported", 505)
        if not _METHOD.match(method):
            raise RemoteProtocolError("Bad method")
        msg = Request(method, uri, headers)

    present = set(keys)
    if not present.issuperset(_REQUIRED):
        for req in _REQUIRED:
            if req not in present:
                raise RemoteProtocolError(f"Missing {canonical_name(req)}")
    if len(present) < len(keys):  # some header repeats: one that must not? (C-speed counts)
        for single in _SINGLE:
            if keys.count(single) > 1:
                raise RemoteProtocolError(f"Duplicate {canonical_name(single)} header")

    body = data[body_start:]
    clen: int | None = None
    # the Content-Length lines: usually one, found in C; several must agree
    if "content-length" not in present:
        cl_lines: list = []
    elif keys.count("content-length") == 1:
        cl_lines = [headers[keys.index("content-length")]]
    else:
        cl_lines = [h for h in headers if h[0] == "content-length"]
    for h in cl_lines:
        v = h[2]
        if not _DIGITS.fullmatch(v):
            raise RemoteProtocolError("Bad Content-Length")
        n = int(v)
        if clen is not None and n != clen:
            raise RemoteProtocolError("Conflicting Content-Length")
        clen = n
    if clen is None:
        if not datagram:
            raise RemoteProtocolError("Missing Content-Length")
    elif len(body) > clen:
        if not datagram:
            raise RemoteProtocolError("Body longer than Content-Length")
        body = body[:clen]
    elif len(body) < clen:
        raise RemoteProtocolError("Body shorter than Content-Length")
    msg.body = body
    return msg


def _controls_quoted(head: str) -> bool:
    """True when every control octet of `head` is the second half of a quoted-pair inside a
    quoted string (RFC 3261 25.1: `quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F)`), as in
    a display name `"Al\\<NUL>ice"`. Only reached when the cheap search found a control octet."""
    for line in head.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if not _CONTROL.search(line):
            continue
        quoted = False
        i, n = 0, len(line)
        while i < n:
            ch = line[i]
            if quoted and ch == "\\":
                if i + 1 < n and line[i + 1] in "\r\n":
                    return False
                i += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif _CONTROL.match(line, i):
                return False
            i += 1
    return True


def content_length_of_head(head: bytes) -> int | None:
    """Content-Length from a raw head (for stream framing). None if absent, -1 if invalid."""
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation line, never a header of its own
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        n = name.strip().lower()
        if n == b"content-length" or n == b"l":
            v = value.strip()
            if not v.isdigit() or not v.isascii() or len(v) > 9:
                return -1
            return int(v)
    return None
