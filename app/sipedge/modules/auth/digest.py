"""HTTP Digest for SIP (RFC 3261 22.4, RFC 7616, RFC 8760): parsing, hashing, nonces.

Sans-IO: nothing here reads a clock, a socket or a database. `now` is passed in, the server
secret is passed in, subscribers are looked up through a callable.

Nonces are self-contained so that any worker, and the proxy after a restart, can check them
without shared state::

    nonce = base64url( issued_ms (8 bytes) | salt (8 bytes) | HMAC-SHA256(secret, realm|issued|salt)[:16] )

A nonce whose MAC does not verify was not issued by us (or for another realm); a nonce older
than `nonce_expires_s` is stale. Replays are caught by `NonceCounts`, a bounded table of the
highest `nc` seen per nonce: a nonce-count that does not grow is a replay, and a nonce that the
table has forgotten (evicted, or another process) is accepted only with nc=1, otherwise the
client is told `stale=true` and simply retries with a fresh nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from ...errors import RemoteProtocolError
from ...sip.uri import parse_uri

# algorithm token (as written on the wire, upper case) -> (hash constructor, is -sess)
_HASHES: dict[str, Callable[..., "hashlib._Hash"]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
ALGORITHMS = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess")


_CANONICAL = {alg.lower(): alg for alg in ALGORITHMS}
_BASE = {alg: alg[:-5] if alg.endswith("-sess") else alg for alg in ALGORITHMS}


def base_algorithm(algorithm: str) -> str:
    """`SHA-256-sess` -> `SHA-256` (the hash, which is also the HA1 column to use)."""
    return _BASE[canonical_algorithm(algorithm)]


def canonical_algorithm(algorithm: str) -> str:
    """Case-insensitive match against ALGORITHMS; raises RemoteProtocolError if unknown."""
    alg = _CANONICAL.get(algorithm.lower())
    if alg is None:
        raise RemoteProtocolError(f"Unsupported digest algorithm {algorithm[:32]!r}")
    return alg


def hash_hex(algorithm: str, text: str) -> str:
    """H(text) for the digest algorithm (lower-case hex)."""
    return _HASHES[base_algorithm(algorithm)](text.encode("utf-8")).hexdigest()


def make_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username:realm:password), the value a subscriber table stores."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def compute_response(*, algorithm: str, ha1: str, nonce: str, method: str, uri: str,
                     qop: str | None, nc: str = "", cnonce: str = "") -> str:
    """The request-digest (RFC 7616 3.4.1; RFC 2069 form when qop is None)."""
    alg = canonical_algorithm(algorithm)
    if alg.endswith("-sess"):
        ha1 = hash_hex(alg, f"{ha1}:{nonce}:{cnonce}")
    ha2 = hash_hex(alg, f"{method}:{uri}")
    if qop is None:
        return hash_hex(alg, f"{ha1}:{nonce}:{ha2}")
    return hash_hex(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ------------------------------------------------------------------ header values

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_PARAM_NAME = re.compile(r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*=\s*")
_NC = re.compile(r"[0-9A-Fa-f]{8}")
_HEX = re.compile(r"[0-9a-f]+")
MAX_VALUE = 4096


def parse_digest(value: str) -> tuple[str, dict[str, str]]:
    """Parse `Digest a=b, c="d, e"` into ("Digest", {"a": "b", "c": "d, e"}).

    Parameter names are lower-cased; quoted strings are unescaped. Raises RemoteProtocolError
    on anything malformed: no scheme, a parameter without `=`, an unterminated quote, junk
    between parameters, a repeated parameter, an over-long value.
    """
    if len(value) > MAX_VALUE:
        raise RemoteProtocolError("Authorization header too long")
    text = value.strip()
    m = _TOKEN.match(text)
    if not m:
        raise RemoteProtocolError("Bad auth scheme")
    scheme = m.group(0)
    pos = m.end()
    n = len(text)
    if pos < n and text[pos] not in " \t":
        raise RemoteProtocolError("Bad auth scheme")
    if _ALL_PARAMS.fullmatch(text, pos):
        # well formed (the common case): every parameter at once, in order;
        # _parse_params reads the same ones and tells what is wrong with the others
        return scheme, _find_params(text, pos)
    return scheme, _parse_params(text, pos)


def _find_params(text: str, pos: int) -> dict[str, str]:
    """The parameters from `pos` of a list `_ALL_PARAMS` accepted."""
    params: dict[str, str] = {}
    for name, quoted, token in _FIND_PARAM.findall(text, pos):
        name = name.lower()
        if token:
            val = token
        elif "\\" in quoted:
            val = _ESCAPED.sub(r"\1", quoted)
        else:
            val = quoted
        if name in params:
            raise RemoteProtocolError(f"Repeated auth parameter {name}")
        params[name] = val
    return params


def _parse_params(text: str, pos: int) -> dict[str, str]:
    """The parameters from `pos`, one match at a time (raises on the first fault)."""
    params: dict[str, str] = {}
    while True:
        # one parameter per match: the separator before it (none before the first, else a
        # comma, empty list elements tolerated), its name and its token or quoted value
        pm = (_FIRST_PARAM if not params else _NEXT_PARAM).match(text, pos)
        if pm is None:
            _param_error(text, pos, bool(params))
            break  # only blanks (and commas) left
        name = pm.group(1).lower()
        val = pm.group(2)
        if val is None:
            val = pm.group(3)
        elif "\\" in val:
            val = _ESCAPED.sub(r"\1", val)
        if name in params:
            raise RemoteProtocolError(f"Repeated auth parameter {name}")
        params[name] = val
        pos = pm.end()
    if not params:
        raise RemoteProtocolError("Auth header without parameters")
    return params


_PARAM = (r"([A-Za-z0-9\-.!%*_+`'~]+)\s*=\s*"
          r"(?:\"([^\"\\]*(?:\\.[^\"\\]*)*)\"|([A-Za-z0-9\-.!%*_+`'~]+))")
_FIRST_PARAM = re.compile(r"[ \t]*\s*" + _PARAM, re.S)
_NEXT_PARAM = re.compile(r"[ \t]*,[ \t,]*\s*" + _PARAM, re.S)
_ESCAPED = re.compile(r"\\(.)", re.S)
# the whole parameter list as the loop accepts it: one or more parameters, separators as
# _FIRST_PARAM/_NEXT_PARAM allow, then only blanks and commas
# (fullmatch only: the groups of _PARAM capture nothing anyone reads)
_ALL_PARAMS = re.compile(r"[ \t]*\s*" + _PARAM + r"(?:[ \t]*,[ \t,]*\s*" + _PARAM +
                         r")*[ \t]*(?:,[ \t,]*)?", re.S)
_FIND_PARAM = re.compile(_PARAM, re.S)


def _param_error(text: str, pos: int, after_first: bool) -> None:
    """Why no parameter starts at `pos` (returns when only blanks and commas are left)."""
    n = len(text)
    while pos < n and text[pos] in " \t":
        pos += 1
    if pos >= n:
        return
    if after_first:
        if text[pos] != ",":
            raise RemoteProtocolError("Expected ',' between auth parameters")
        while pos < n and text[pos] in " \t,":
            pos += 1
        if pos >= n:
            return
    pm = _PARAM_NAME.match(text, pos)
    if not pm:
        raise RemoteProtocolError("Bad auth parameter")
    if pm.end() < n and text[pm.end()] == '"':
        raise RemoteProtocolError("Unterminated quoted string")
    raise RemoteProtocolError("Bad auth parameter value")


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Credentials:
    """A parsed Authorization / Proxy-Authorization value (scheme Digest)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"  # canonical spelling
    qop: str | None = None
    nc: str = ""
    cnonce: str = ""
    opaque: str | None = None

    def __repr__(self) -> str:  # never show the response
        return (f"Credentials(username={self.username!r}, realm={self.realm!r}, "
                f"algorithm={self.algorithm}, qop={self.qop}, nc={self.nc})")


_credentials: dict[str, Credentials] = {}


def parse_credentials(value: str) -> Credentials:
    """Parse and check a Digest credentials value. Raises RemoteProtocolError.

    One request's value is read several times (the HA1 to fetch, the check, the removal
    before relaying): the last few results are kept (Credentials are immutable; errors are
    not kept)."""
    creds = _credentials.get(value)
    if creds is None:
        creds = _parse_credentials(value)
        if len(_credentials) >= 64:
            _credentials.clear()
        _credentials[value] = creds
    return creds


def _parse_credentials(value: str) -> Credentials:
    scheme, p = parse_digest(value)
    if scheme.lower() != "digest":
        raise RemoteProtocolError(f"Unsupported auth scheme {scheme[:32]!r}")
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in p:
            raise RemoteProtocolError(f"Digest credentials without {name}")
    algorithm = canonical_algorithm(p.get("algorithm", "MD5"))
    qop = p.get("qop")
    nc = p.get("nc", "")
    cnonce = p.get("cnonce", "")
    if qop is not None:
        qop = qop.lower()
        if qop != "auth":
            raise RemoteProtocolError(f"Unsupported qop {qop[:32]!r}")
        if not _NC.fullmatch(nc) or not cnonce:
            raise RemoteProtocolError("qop=auth needs nc (8 hex digits) and cnonce")
    elif algorithm.endswith("-sess") and not cnonce:
        raise RemoteProtocolError("-sess algorithm needs cnonce")
    response = p["response"].lower()
    if not _HEX.fullmatch(response):
        raise RemoteProtocolError("Digest response is not hex")
    return Credentials(username=p["username"], realm=p["realm"], nonce=p["nonce"], uri=p["uri"],
                       response=response, algorithm=algorithm, qop=qop, nc=nc.lower(),
                       cnonce=cnonce, opaque=p.get("opaque"))


def format_challenge(realm: str, nonce: str, algorithm: str, *, qop: str | None = "auth",
                     stale: bool = False, opaque: str | None = None) -> str:
    """A `Digest ...` challenge value for WWW-Authenticate / Proxy-Authenticate."""
    parts = [f"Digest realm={quote(realm)}", f"nonce={quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={quote(opaque)}")
    if stale:
        parts.append("stale=true")
    parts.append(f"algorithm={algorithm}")
    if qop:
        parts.append(f"qop={quote(qop)}")
    return ", ".join(parts)


# ------------------------------------------------------------------ nonces


class NonceState(Enum):
    VALID = "valid"
    STALE = "stale"  # ours, but expired (or issued in the future: a clock step or reboot)
    INVALID = "invalid"  # not ours, malformed, or for another realm


class NonceCodec:
    """Issues and checks self-contained nonces (see the module doc)."""

    _LEN = 8 + 8 + 16

    def __init__(self, secret: bytes, expires_s: float,
                 rand: Callable[[int], bytes] = secrets.token_bytes,
                 future_skew_s: float = 5.0) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must have at least 16 bytes")
        self.expires_s = expires_s
        self._rand = rand
        self._skew = future_skew_s
        # HMAC-SHA256 (RFC 2104) with the key's two pads hashed once: each MAC copies the
        # two contexts. The same value as hmac.digest(secret, data, "sha256"), whose
        # one-shot OpenSSL call sets up the digest and the key each time (3x the cost)
        key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
        key = key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def _mac(self, realm: str, head: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(realm.encode("utf-8") + b"\x00" + head)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:16]

    def issue(self, realm: str, now: float) -> str:
        head = int(now * 1000).to_bytes(8, "big", signed=False) + self._rand(8)
        return base64.urlsafe_b64encode(head + self._mac(realm, head)).decode("ascii")

    def check(self, nonce: str, realm: str, now: float) -> NonceState:
        return self.check_issued(nonce, realm, now)[0]

    def check_issued(self, nonce: str, realm: str, now: float) -> tuple[NonceState, float]:
        """`check`, and when the nonce is ours, when it was issued (else 0.0)."""
        if len(nonce) != 44:
            return NonceState.INVALID, 0.0
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return NonceState.INVALID, 0.0
        if len(raw) != self._LEN:
            return NonceState.INVALID, 0.0
        head, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(realm, head)):
            return NonceState.INVALID, 0.0
        issued = int.from_bytes(head[:8], "big") / 1000.0
        if now - issued > self.expires_s or issued - now > self._skew:
            return NonceState.STALE, issued
        return NonceState.VALID, issued


class NonceCounts:
    """Highest nonce-count seen per nonce, bounded (least recently used entries go first)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._table: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def accept(self, nonce: str, nc: int, expires_at: float, now: float) -> bool | None:
        """True if `nc` is higher than any seen for this nonce (and remember it), False for a
        replay, None when the nonce is unknown and nc > 1 (cannot tell: treat as stale)."""
        entry = self._table.get(nonce)
        if entry is None:
            if nc != 1:
                return None
        elif nc <= entry[0]:
            return False
        self._table[nonce] = (nc, expires_at)
        self._table.move_to_end(nonce)
        self._evict(now)
        return True

    def _evict(self, now: float) -> None:
        table = self._table
        while len(table) > self.max_entries:
            table.popitem(last=False)
        # drop a few expired entries from the old end on every insert (amortised purge)
        for _ in range(4):
            if not table:
                break
            key = next(iter(table))
            if table[key][1] < now:
                del table[key]
            else:
                break

    def purge(self, now: float) -> int:
        dead = [k for k, (_, exp) in self._table.items() if exp < now]
        for k in dead:
            del self._table[k]
        return len(dead)


# ------------------------------------------------------------------ verification


class AuthResult(Enum):
    """Outcome of checking credentials. Only OK authenticates."""

    OK = "ok"
    NO_CREDENTIALS = "no_credentials"  # nothing for our realm: challenge
    MALFORMED = "malformed"  # 400
    UNKNOWN_USER = "unknown_user"  # treat like a wrong password (no user enumeration)
    WRONG_PASSWORD = "wrong_password"  # response does not match
    INVALID_NONCE = "invalid_nonce"  # not ours / tampered: challenge
    STALE_NONCE = "stale_nonce"  # right password, expired nonce: challenge with stale=true
    REPLAYED = "replayed"  # nc did not grow: challenge with stale=true
    URI_MISMATCH = "uri_mismatch"  # 400 (RFC 2617 3.2.2.5)
    ALGORITHM_REFUSED = "algorithm_refused"  # an algorithm we do not offer: challenge

    @property
    def is_failure(self) -> bool:
        """Counts as a failed login (for fail2ban-like blocking)."""
        return self in (AuthResult.UNKNOWN_USER, AuthResult.WRONG_PASSWORD)


@dataclass(frozen=True, slots=True)
class Verdict:
    result: AuthResult
    username: str = ""
    realm: str = ""
    algorithm: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.result is AuthResult.OK

    @property
    def stale(self) -> bool:
        return self.result in (AuthResult.STALE_NONCE, AuthResult.REPLAYED)


# (username, realm, base algorithm "MD5"/"SHA-256") -> HA1 hex, or None for an unknown user
Ha1Lookup = Callable[[str, str, str], "str | None"]


class DigestAuth:
    """Challenge and verify. One instance per worker; the nc table is per instance."""

    def __init__(self, secret: bytes, *, algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
                 nonce_expires_s: float = 300.0, nc_table_size: int = 65536,
                 qop_required: bool = True, check_uri: bool = True,
                 rand: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.algorithms = tuple(canonical_algorithm(a) for a in algorithms)
        if not self.algorithms:
            raise ValueError("at least one digest algorithm is needed")
        self.nonces = NonceCodec(secret, nonce_expires_s, rand)
        self.counts = NonceCounts(nc_table_size)
        self.qop_required = qop_required
        self.check_uri = check_uri

    def challenge(self, realm: str, now: float, *, stale: bool = False) -> list[str]:
        """Challenge values, preferred algorithm first (RFC 7616 3.7: one per algorithm).
        The same nonce serves every algorithm offered."""
        nonce = self.nonces.issue(realm, now)
        return [format_challenge(realm, nonce, alg, stale=stale) for alg in self.algorithms]

    def verify(self, values: list[str], *, method: str, request_uri: str, realm: str,
               lookup: Ha1Lookup, now: float,
               same_server: Callable[[Any], bool] | None = None) -> Verdict:
        """Check the Authorization (or Proxy-Authorization) values of a request.

        `values` are all the header values; the one for `realm` is used. The order of checks
        follows RFC 7616: stale is only reported when the digest itself is right.
        """
        creds: Credentials | None = None
        for value in values:
            try:
                c = parse_credentials(value)
            except RemoteProtocolError as exc:
                try:
                    scheme, p = parse_digest(value)
                except RemoteProtocolError:
                    return Verdict(AuthResult.MALFORMED, reason=exc.reason)
                if scheme.lower() == "digest" and p.get("realm") == realm:
                    return Verdict(AuthResult.MALFORMED, reason=exc.reason)
                continue  # another scheme or another realm's broken header: not ours
            if c.realm == realm:
                creds = c
                break
        if creds is None:
            return Verdict(AuthResult.NO_CREDENTIALS, realm=realm)
        v = dict(username=creds.username, realm=realm, algorithm=creds.algorithm)
        if creds.algorithm not in self.algorithms:
            return Verdict(AuthResult.ALGORITHM_REFUSED, reason="algorithm not offered", **v)
        if creds.qop is None and self.qop_required:
            return Verdict(AuthResult.MALFORMED, reason="qop required", **v)
        if self.check_uri and not uri_matches(creds.uri, request_uri, same_server):
            return Verdict(AuthResult.URI_MISMATCH, reason="digest uri differs from R-URI", **v)
        state, issued = self.nonces.check_issued(creds.nonce, realm, now)
        if state is NonceState.INVALID:
            return Verdict(AuthResult.INVALID_NONCE, reason="nonce not issued by us", **v)
        ha1 = lookup(creds.username, realm, base_algorithm(creds.algorithm))
        if ha1 is None:
            return Verdict(AuthResult.UNKNOWN_USER, reason="unknown user", **v)
        expected = compute_response(algorithm=creds.algorithm, ha1=ha1.lower(),
                                     nonce=creds.nonce, method=method, uri=creds.uri,
                                     qop=creds.qop, nc=creds.nc, cnonce=creds.cnonce)
        if not hmac.compare_digest(expected, creds.response):
            return Verdict(AuthResult.WRONG_PASSWORD, reason="response mismatch", **v)
        if state is NonceState.STALE:
            return Verdict(AuthResult.STALE_NONCE, reason="nonce expired", **v)
        nc = int(creds.nc, 16) if creds.qop else 1
        expires_at = issued + self.nonces.expires_s
        seen = self.counts.accept(creds.nonce, nc, expires_at, now)
        if seen is None:
            return Verdict(AuthResult.REPLAYED, reason="nonce count unknown", **v)
        if not seen:
            return Verdict(AuthResult.REPLAYED, reason="nonce count did not increase", **v)
        return Verdict(AuthResult.OK, **v)


DEFAULT_PORTS = {"sip": 5060, "sips": 5061}


def uri_matches(digest_uri: str, request_uri: str,
                same_server: Callable[[Any], bool] | None = None) -> bool:
    """Does the digest-uri name the Request-URI? Compared as URIs (RFC 3261 19.1.4, 22.4),
    not as strings: scheme, user and host (case-insensitive) must agree, and an absent port
    is the scheme's default (SIPp sends `uri="sip:host:5060"` for `REGISTER sip:host`).
    With `same_server` (is this URI served by this box: one of its domains or addresses), two
    URIs that both name this server also match: clients compute the digest over the registrar
    address they were configured with (`sip:192.0.2.1:5060`) while the R-URI names the domain
    (`sip:example.com`), as Kamailio accepts."""
    if digest_uri == request_uri:
        return True
    try:
        a, b = parse_uri(digest_uri), parse_uri(request_uri)
    except RemoteProtocolError:
        return False
    if not (a.is_sip and b.is_sip):
        return str(a) == str(b)
    if a.scheme != b.scheme or a.user != b.user:
        return False
    default = DEFAULT_PORTS.get(a.scheme, 5060)
    if a.host_bare.lower() == b.host_bare.lower() and (a.port or default) == (b.port or default):
        return True
    return same_server is not None and same_server(a) and same_server(b)
