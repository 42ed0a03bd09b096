"""Small RFC 3261 grammar helpers shared by the header parsers (sans-IO, no state)."""

from __future__ import annotations

import re

from ..errors import RemoteProtocolError

# Full name (lower case) of every header that has a compact form (RFC 3261 7.3.3, RFC 3515,
# RFC 3841, RFC 4028, RFC 3903, RFC 3892, RFC 6086).
COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via",
    "r": "refer-to", "b": "referred-by", "j": "reject-contact", "a": "accept-contact",
    "d": "request-disposition", "x": "session-expires", "o": "event", "u": "allow-events",
    "y": "identity", "n": "identity-info",
}

# Canonical spelling used when we generate a header.
CANONICAL = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq", "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match", "p-asserted-identity": "P-Asserted-Identity",
}

# Headers whose value is a comma-separated list (RFC 3261 7.3.1). Others (Date, auth headers,
# WWW-Authenticate, anything unknown) are never split.
MULTI_VALUE = frozenset({
    "via", "route", "record-route", "contact", "allow", "supported", "require",
    "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
    "content-encoding", "in-reply-to", "alert-info", "call-info", "error-info", "path",
    "allow-events", "service-route", "security-client", "security-server", "security-verify",
    "p-associated-uri", "reject-contact", "accept-contact",
})


# Methods counted by name in statistics; any other name a peer sends counts as `other`, so
# a stream of random method names cannot grow the counters (RFC 3261, 3262, 3265, 3311,
# 3428, 3515, 3903, 6086).
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})


def stat_method(method: str) -> str:
    """The method's name for a statistics key: itself when known, else `other`."""
    return method if method in KNOWN_METHODS else "other"


def canonical_name(key: str) -> str:
    """`record-route` -> `Record-Route`, `call-id` -> `Call-ID`."""
    name = _canonical_cache.get(key)
    if name is None:
        name = CANONICAL.get(key)
        if name is None:
            name = "-".join([part.capitalize() for part in key.split("-")])
        if len(_canonical_cache) < 1024:  # names come from code and scripts: few
            _canonical_cache[key] = name
    return name


_canonical_cache: dict[str, str] = {}


_LIST_ITEM = re.compile(r'(?:[^,"<]+|"(?:\\.|[^"\\])*"|<[^>]*>)+')


def split_commas(value: str) -> list[str]:
    """Split a header value on commas that are outside quotes and angle brackets."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        out = [part.strip() for part in value.split(",")]
    else:
        raw = _LIST_ITEM.findall(value)
        if ",".join(raw) != value:  # something matched no item: an open quote or bracket
            raise RemoteProtocolError("Unterminated quoted string")
        out = [part.strip() for part in raw]
    if any(not part for part in out):
        raise RemoteProtocolError("Empty list element")
    return out


def parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """Parse `;a=1;b;c="x;y"` (leading `;` optional) into ((name, value), ...).

    Names keep their case; compare with `.lower()`.
    """
    if not text:
        return ()
    params = []
    for part in _split_semicolons(text):
        part = part.strip()
        if not part:
            continue
        name, eq, val = part.partition("=")
        name = name.strip()
        if not _TOKEN_RE.fullmatch(name):
            raise RemoteProtocolError("Bad parameter")
        params.append((name, val.strip() if eq else None))
    return tuple(params)


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    out, start, quoted, i = [], 0, False, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ";":
            out.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise RemoteProtocolError("Unterminated quoted string")
    out.append(text[start:])
    return out


def format_params(params: tuple[tuple[str, str | None], ...]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def get_param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    """Value of a parameter ('' for a flag parameter), None when absent."""
    name = name.lower()
    for k, v in params:
        if k.lower() == name:
            return "" if v is None else v
    return None


def has_param(params: tuple[tuple[str, str | None], ...], name: str) -> bool:
    name = name.lower()
    return any(k.lower() == name for k, _ in params)


def set_param(params: tuple[tuple[str, str | None], ...], name: str,
              value: str | None) -> tuple[tuple[str, str | None], ...]:
    lname = name.lower()
    out = [(k, v) for k, v in params if k.lower() != lname]
    out.append((name, value))
    return tuple(out)



_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def is_token(s: str) -> bool:
    return _TOKEN_RE.fullmatch(s) is not None


def is_digits(s: str, max_len: int = 10) -> bool:
    """1..max_len ASCII digits. `str.isdigit()` alone also accepts '²' and other scripts'
    digits, which `int()` rejects or reads differently, and `int()` refuses very long strings."""
    return 0 < len(s) <= max_len and s.isascii() and s.isdigit()
