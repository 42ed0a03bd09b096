"""Via (RFC 3261 20.42, RFC 3581 rport)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

try:
    import cython
except ImportError:  # plain Python without Cython installed (the compiled build never is)
    from ... import _cython as cython

from ...errors import RemoteProtocolError
from ..grammar import (
    format_params,
    get_param,
    is_digits,
    is_token,
    parse_params,
    set_param,
)
from ..uri import DEFAULT_PORTS, HOSTNAME_PATTERN, is_host

MAGIC_COOKIE = "z9hG4bK"


# Shared by the parse cache and never assigned to, but not frozen: a frozen dataclass sets
# each field through object.__setattr__ (about four times the cost of building it;
# one is built per new value, several per call). Hashed and compared by value as before.
@dataclass(slots=True, unsafe_hash=True)
class Via:
    transport: str  # upper case as on the wire: UDP, TCP, TLS
    host: str  # IPv6 keeps brackets
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    protocol: str = "SIP/2.0"
    # the branch parameter once read (a transaction layer reads it several times per
    # message); derived from `params`, so not part of the value (init, compare, hash)
    # (False: not read yet; a branch is a string or None)
    _branch: str | None | bool = field(default=False, init=False, repr=False, compare=False)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        b = self._branch
        if b is False:
            b = self._branch = get_param(self.params, "branch")
        return b  # type: ignore[return-value]

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def rport(self) -> str | None:
        """'' when the rport flag is present without a value, None when absent."""
        return get_param(self.params, "rport")

    @property
    def maddr(self) -> str | None:
        return get_param(self.params, "maddr")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None) -> "Via":
        return replace(self, params=set_param(self.params, name, value))

    def response_target(self) -> tuple[str, int]:
        """Where a response to this Via goes (RFC 3261 18.2.2, RFC 3581 4)."""
        # one pass over the parameters (maddr, received and rport were three)
        maddr = received = rport = None
        for k, v in self.params:
            k = k.lower()
            if k == "rport":
                if rport is None:
                    rport = v or ""
            elif k == "received":
                if received is None:
                    received = v or ""
            elif k == "maddr" and maddr is None:
                maddr = v or ""
        host = maddr or received or self.host
        if host.startswith("["):
            host = host[1:-1]
        if rport:
            return host, int(rport)
        return host, self.port or DEFAULT_PORTS.get(self.transport.lower(), 5060)


_FAST = re.compile(
    r"(SIP/2\.0)/([A-Za-z]+) (" + HOSTNAME_PATTERN + r"|\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\])"
    r"(?::(\d{1,5}))?((?:;[^;]*)*)",
    re.ASCII)


_cache: dict[str, Via] = {}


def parse_via(text: str) -> Via:
    """Parse one Via value. Vias are immutable, so recently parsed ones are shared from a
    small cache: a transaction's replies repeat its request's Vias (errors are not cached)."""
    via = _cache.get(text)
    if via is None:
        via = _parse_via_uncached(text)
        if len(_cache) >= 4096:
            _cache.clear()
        _cache[text] = via
    return via


def remember_via(text: str, via: Via) -> None:
    """Put a Via we built ourselves (`via` is what parse_via(text) returns) into the cache:
    the replies to a request we forwarded carry it on top, and the stateless reply path
    then finds it parsed."""
    if len(_cache) >= 4096:
        _cache.clear()
    _cache[text] = via


# the usual Via of a new transaction: `;branch=` and maybe a bare `;rport`, nothing else
# (no blank, no quote, no other parameter): what _parse_via_general gives for it, without
# the parameter loop
_SIMPLE = re.compile(
    r"SIP/2\.0/([A-Za-z]+) (" + HOSTNAME_PATTERN + r"|\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\])"
    r"(?::(\d{1,5}))?;branch=([!#-:<-~]+)(;rport)?",  # printable ASCII but ; and "
    re.ASCII)


def _parse_via_uncached(text: str) -> Via:
    if cython.compiled:  # the same as _SIMPLE's branch below, by one C pass over the value
        via = _scan_via(text)
        if via is not None:
            return via
    m = _SIMPLE.fullmatch(text)
    if m is not None:
        port = m.group(3)
        if port is None or 0 < int(port) < 65536:
            params = (("branch", m.group(4)), ("rport", None)) if m.group(5) else \
                (("branch", m.group(4)),)
            return Via(m.group(1).upper(), m.group(2), int(port) if port else None, params)
    return _parse_via_general(text)


_BRANCH_RPORT = ("rport", None)


@cython.cfunc
@cython.locals(text=str, n=cython.Py_ssize_t, i=cython.Py_ssize_t, h=cython.Py_ssize_t,
               t=cython.Py_ssize_t, b=cython.Py_ssize_t, c=cython.int, prev=cython.int,
               port=cython.long, lower=cython.bint, colon=cython.bint)
def _scan_via(text):
    """What the _SIMPLE branch of _parse_via_uncached returns for `text` (one C pass in the
    compiled build), or None where that branch does not return: the caller then takes the
    regular expressions, which decide (and raise) as before."""
    n = len(text)
    if n < 18 or not text.startswith("SIP/2.0/"):
        return None
    # transport: [A-Za-z]+ then one space
    i = 8
    c = 0
    lower = False
    while i < n:
        c = ord(text[i])
        if 97 <= c <= 122:
            lower = True
        elif not 65 <= c <= 90:
            break
        i += 1
    if i == 8 or i >= n or c != 32:
        return None
    t = i
    i += 1
    if i >= n:
        return None
    h = i
    c = ord(text[i])
    if c == 91:  # "[" IPv6 reference: [0-9A-Fa-f.:]* with a ":", then "]"
        colon = False
        i += 1
        while i < n:
            c = ord(text[i])
            if c == 58:
                colon = True
            elif not (48 <= c <= 57 or 97 <= (c | 0x20) <= 102 or c == 46):
                break
            i += 1
        if not colon or i >= n or c != 93:
            return None
        i += 1
    else:  # HOSTNAME_PATTERN: labels of letters and digits, inner "-"s, "."s, a final "."
        prev = 0  # 0 nothing yet, 1 letter or digit, 2 "-", 3 "."
        while i < n:
            c = ord(text[i])
            if 48 <= c <= 57 or 97 <= (c | 0x20) <= 122:
                prev = 1
            elif c == 45:
                if prev != 1 and prev != 2:
                    return None
                prev = 2
            elif c == 46:
                if prev != 1:
                    return None
                prev = 3
            else:
                break
            i += 1
        if prev != 1 and prev != 3:
            return None
    host = text[h:i]
    port = 0
    if i < n and ord(text[i]) == 58:  # ":" 1 to 5 digits, 1 to 65535
        i += 1
        b = i
        while i < n and i - b <= 5:  # a sixth digit is enough to refuse (no C overflow)
            c = ord(text[i])
            if not 48 <= c <= 57:
                break
            port = port * 10 + (c - 48)
            i += 1
        if i == b or i - b > 5 or port == 0 or port > 65535:
            return None
    if not text.startswith(";branch=", i):
        return None
    i += 8
    b = i
    while i < n:  # [!#-:<-~]+: printable ASCII but ; and "
        c = ord(text[i])
        if c == 59 or c == 34 or c <= 32 or c >= 127:
            break
        i += 1
    if i == b:
        return None
    branch = ("branch", text[b:i])
    if i == n:
        params = (branch,)
    elif n - i == 6 and text.endswith(";rport"):
        params = (branch, _BRANCH_RPORT)
    else:
        return None
    transport = text[8:t]
    return Via(transport.upper() if lower else transport, host, port if port else None, params)


def _parse_via_general(text: str) -> Via:
    m = _FAST.fullmatch(text)
    if m is not None:
        port = m.group(4)
        if port is None or 0 < int(port) < 65536:
            params = parse_params(m.group(5)) if m.group(5) else ()
            rport = get_param(params, "rport")
            if rport and not (is_digits(rport, 5) and 0 < int(rport) < 65536):
                raise RemoteProtocolError("Bad Via rport")
            return Via(m.group(2).upper(), m.group(3), int(port) if port else None, params,
                       m.group(1))
    return _parse_via(text)


# sent-protocol with SWS around each "/" (RFC 3261 25.1 SLASH = SWS "/" SWS; folded
# whitespace was already turned into a space by the message parser), then LWS, then the rest
_SENT_PROTOCOL = re.compile(r"\s*([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/;]+)\s+(.*)", re.S)


def _parse_via(text: str) -> Via:
    m = _SENT_PROTOCOL.fullmatch(text)
    if m is None:
        raise RemoteProtocolError("Bad Via")
    parts = [m.group(1), m.group(2), m.group(3)]
    rest = m.group(4)
    if not all(is_token(p) for p in parts):
        raise RemoteProtocolError("Bad Via")
    rest = rest.strip()
    sent_by, semi, params = rest.partition(";")
    sent_by = sent_by.strip()
    if sent_by.startswith("["):
        end = sent_by.find("]")
        if end < 0:
            raise RemoteProtocolError("Bad Via host")
        host = sent_by[: end + 1]
        port_text = sent_by[end + 1:]
        if port_text and not port_text.startswith(":"):
            raise RemoteProtocolError("Bad Via host")
        port_text = port_text[1:] if port_text else None
    else:
        host, c, port_text = sent_by.partition(":")
        host = host.strip()
        if not c:
            port_text = None
    if not is_host(host):
        raise RemoteProtocolError("Bad Via host")
    port = None
    if port_text is not None:
        port_text = port_text.strip()
        if not is_digits(port_text, 5) or not 0 < int(port_text) < 65536:
            raise RemoteProtocolError("Bad Via port")
        port = int(port_text)
    parsed = parse_params(params) if semi else ()
    rport = get_param(parsed, "rport")
    if rport and not (is_digits(rport, 5) and 0 < int(rport) < 65536):
        raise RemoteProtocolError("Bad Via rport")
    return Via(parts[2].upper(), host, port, parsed, f"{parts[0]}/{parts[1]}")
