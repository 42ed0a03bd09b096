"""SIP, SIPS and TEL URIs (RFC 3261 19.1, RFC 3966). Immutable values."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import RemoteProtocolError
from .grammar import format_params, get_param, has_param, is_digits, parse_params

# hostname (RFC 3261 25.1): labels of alphanumerics with inner hyphens, written without
# backtracking; a pattern text so that the fast paths (here and in Via) can embed it
HOSTNAME_PATTERN = r"[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*(?:\.[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*)*\.?"
# fullmatch only: `$` would also match before a trailing newline ("host\n")
_HOSTNAME = re.compile(HOSTNAME_PATTERN)
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", re.ASCII)
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")
_USER_BAD = re.compile(r"[\s<>\"]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "sctp": 5060, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class URI:
    scheme: str  # lower case: sip, sips, tel (others are kept as opaque 'other' URIs)
    user: str | None = None
    password: str | None = None
    host: str = ""  # IPv6 hosts keep their brackets
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: str = ""  # raw text after '?'
    opaque: str = ""  # whole text after 'scheme:' for non-SIP schemes

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out.append("?" + self.headers)
        return "".join(out)

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        return has_param(self.params, name)

    @property
    def transport(self) -> str:
        """Transport named by the URI (`transport=` or sips -> tls), default udp."""
        t = self.param("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def host_bare(self) -> str:
        """Host without IPv6 brackets, lower case."""
        h = self.host
        return (h[1:-1] if h.startswith("[") else h).lower()

    def with_(self, **changes: object) -> "URI":
        return replace(self, **changes)


# The common shape, `sip:user@host:port;params`, matched in one go; anything else takes the
# general path below.
_FAST = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,%]+)@)?"
    r"(" + HOSTNAME_PATTERN + r")(?::(\d{1,5}))?((?:;[A-Za-z0-9\-_.!~*'()%=\[\]/:&+$]*)*)",
    re.ASCII)
_cache: dict[str, URI] = {}


def parse_uri(text: str) -> URI:
    """Parse a URI. Raises RemoteProtocolError (status_hint 400, or 416 for other schemes).

    URIs are immutable, so recently parsed ones are shared from a small cache."""
    uri = _cache.get(text)
    if uri is None:
        m = _FAST.fullmatch(text)
        if m is not None and (m.group(4) is None or 0 < int(m.group(4)) < 65536):
            port = m.group(4)
            uri = URI(m.group(1), m.group(2), None, m.group(3), int(port) if port else None,
                      parse_params(m.group(5)))
        else:
            uri = _parse_uri(text)
        if len(_cache) >= 4096:
            _cache.clear()
        _cache[text] = uri
    return uri


def _parse_uri(text: str) -> URI:
    scheme, colon, rest = text.strip().partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise RemoteProtocolError("Bad URI")
    scheme = scheme.lower()
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number or not re.fullmatch(r"[0-9A-Fa-f*#+().\-]+", number):
            raise RemoteProtocolError("Bad tel URI")
        return URI("tel", user=number, params=parse_params(params))
    if scheme not in ("sip", "sips"):
        if not rest or any(c.isspace() for c in rest):
            raise RemoteProtocolError("Bad URI")
        return URI(scheme, opaque=rest)
    user = password = None
    at = rest.rfind("@")  # '@' only occurs after userinfo, which may itself contain '?'
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1:]
        user, c, pw = userinfo.partition(":")
        if c:
            password = pw
        if not user or _USER_BAD.search(userinfo):
            raise RemoteProtocolError("Bad URI user")
    rest, q, headers = rest.partition("?")
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise RemoteProtocolError("Bad IPv6 reference")
        host = rest[: end + 1]
        if not _IPV6.fullmatch(host[1:-1]) or ":" not in host:
            raise RemoteProtocolError("Bad IPv6 reference")
        rest = rest[end + 1:]
        hostport_end = rest.find(";")
        portpart, params = (rest, "") if hostport_end < 0 else (rest[:hostport_end], rest[hostport_end:])
        if portpart and not portpart.startswith(":"):
            raise RemoteProtocolError("Bad URI host")
        port_text = portpart[1:] if portpart else None
    else:
        hostport, _, params = rest.partition(";")
        params = ";" + params if _ else ""
        host, c, port_text = hostport.partition(":")
        if not c:
            port_text = None
        if not is_host(host):
            raise RemoteProtocolError("Bad URI host")
    port = None
    if port_text is not None:
        if not is_digits(port_text, 5) or not 0 < int(port_text) < 65536:
            raise RemoteProtocolError("Bad URI port")
        port = int(port_text)
    return URI(scheme, user, password, host, port, parse_params(params), headers if q else "")


def is_host(host: str) -> bool:
    """A hostname, an IPv4 address or a bracketed IPv6 reference."""
    if host.startswith("["):
        return host.endswith("]") and ":" in host and _IPV6.fullmatch(host[1:-1]) is not None
    return _HOSTNAME.fullmatch(host) is not None or _IPV4.fullmatch(host) is not None


def format_host(host: str) -> str:
    """Bracket an IPv6 literal for use in a URI or Via."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
