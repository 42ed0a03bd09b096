"""name-addr / addr-spec values: From, To, Contact, Route, Record-Route (RFC 3261 20.10)."""

from __future__ import annotations

from dataclasses import dataclass, replace

try:
    import cython
except ImportError:  # plain Python without Cython installed (the compiled build never is)
    from ... import _cython as cython

from ...errors import RemoteProtocolError
from ..grammar import format_params, get_param, is_token, parse_params
from ..uri import URI, parse_uri


# Shared by the parse cache and never assigned to, but not frozen: a frozen dataclass sets
# each field through object.__setattr__ (about four times the cost of building it;
# one is built per new value, several per call). Hashed and compared by value as before.
@dataclass(slots=True, unsafe_hash=True)
class Address:
    uri: URI
    display: str | None = None  # as written, quotes included
    params: tuple[tuple[str, str | None], ...] = ()
    star: bool = False  # Contact: *

    def __str__(self) -> str:
        if self.star:
            return "*"
        disp = f"{self.display} " if self.display else ""
        return f"{disp}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_(self, **changes: object) -> "Address":
        return replace(self, **changes)


_cache: dict[str, Address] = {}


def parse_address(text: str) -> Address:
    """Parse a name-addr / addr-spec. Addresses are immutable, so recently parsed ones are
    shared from a small cache: a dialog repeats its From, To and Route values."""
    addr = _cache.get(text)
    if addr is None:
        addr = _parse_address(text)
        if len(_cache) >= 4096:
            _cache.clear()
        _cache[text] = addr
    return addr


def _parse_address(text: str) -> Address:
    if cython.compiled:  # the usual name-addr by one C pass over the value
        addr = _scan_address(text)
        if addr is not None:
            return addr
    text = text.strip()
    if text == "*":
        return Address(URI("sip"), star=True)
    if text.startswith('"'):
        # a quoted display name may itself contain '<' (RFC 3261 25.1 quoted-string)
        end = _quoted_end(text)
        if end < 0:
            raise RemoteProtocolError("Unterminated quoted string")
        lt = text.find("<", end)
        if lt >= 0 and text[end:lt].strip():
            raise RemoteProtocolError("Bad display name")
    else:
        lt = text.find("<")
    if lt >= 0:
        display = text[:lt].strip() or None
        if display and display.startswith('"') and not (display.endswith('"') and len(display) > 1):
            raise RemoteProtocolError("Bad display name")
        gt = text.find(">", lt)
        if gt < 0:
            raise RemoteProtocolError("Missing '>'")
        uri = parse_uri(text[lt + 1:gt])
        rest = text[gt + 1:].strip()
        if rest and not rest.startswith(";"):
            raise RemoteProtocolError("Junk after '>'")
        return Address(uri, display, parse_params(rest))
    if text.startswith('"'):
        raise RemoteProtocolError("Missing '<'")
    # addr-spec: parameters after the URI belong to the header, not the URI (RFC 3261 20.10)
    uri_text, semi, params = text.partition(";")
    uri_text = uri_text.rstrip()  # LWS before the ';' of a header parameter is allowed
    if " " in uri_text or "\t" in uri_text:
        raise RemoteProtocolError("Bad address")
    return Address(parse_uri(uri_text), None, parse_params(params) if semi else ())


# 1 for the octets of a token (grammar.is_token's set), by code
_TOKEN_OCTETS = cython.declare(bytes, bytes(is_token(chr(c)) for c in range(128)))


@cython.cfunc
@cython.locals(text=str, n=cython.Py_ssize_t, i=cython.Py_ssize_t, lt=cython.Py_ssize_t,
               gt=cython.Py_ssize_t, a=cython.Py_ssize_t, e=cython.Py_ssize_t, c=cython.int,
               params=list)
def _scan_address(text):
    """What _parse_address returns for the usual name-addr, `<uri>` or `"display" <uri>`
    (no backslash in the quotes, spaces only between them and `<`) followed by `;token`
    or `;token=value` parameters (value: visible ASCII but `;` and `"`), by one C pass in the
    compiled build; None for any other form (the caller then parses as before)."""
    n = len(text)
    if n < 2:
        return None
    display = None
    c = ord(text[0])
    if c == 34:  # '"'
        i = 1
        while i < n:
            c = ord(text[i])
            if c == 34 or c == 92:  # '"' or a backslash
                break
            i += 1
        if i >= n or c != 34:
            return None
        display = text[:i + 1]
        i += 1
        while i < n and ord(text[i]) == 32:
            i += 1
        if i >= n or ord(text[i]) != 60:  # "<"
            return None
        lt = i
    elif c == 60:
        lt = 0
    else:
        return None
    gt = text.find(">", lt)
    if gt < 0:
        return None
    params = []
    i = gt + 1
    while i < n:
        if ord(text[i]) != 59:  # ";"
            return None
        i += 1
        a = i
        c = 0
        while i < n:
            c = ord(text[i])
            if c >= 128 or not _TOKEN_OCTETS[c]:
                break
            i += 1
        if i == a:
            return None
        e = i
        if i < n and c == 61:  # "=" and a value
            i += 1
            while i < n:
                c = ord(text[i])
                if c == 59:
                    break
                if c <= 32 or c >= 127 or c == 34:
                    return None
                i += 1
            params.append((text[a:e], text[e + 1:i]))
        elif i < n and c != 59:
            return None
        else:
            params.append((text[a:e], None))
    return Address(parse_uri(text[lt + 1:gt]), display, tuple(params))


def _quoted_end(text: str) -> int:
    """Index just after the quoted string that starts `text`, -1 if it is unterminated."""
    i, n = 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    return -1
