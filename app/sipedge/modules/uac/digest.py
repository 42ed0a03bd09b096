"""Client side of HTTP Digest for SIP (RFC 3261 22.2/22.3, RFC 7616, RFC 8760): read a
401/407 challenge, answer it with an Authorization / Proxy-Authorization value.

Sans-IO: the cnonce is passed in (the caller draws it), nothing reads a clock. Hashing and
header parsing are the server side's (modules/auth/digest.py); only what a client adds
lives here: choosing among several challenges, qop=auth-int, nonce-count bookkeeping and the
"one retry per challenge" rule (`ChallengeMemory`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import RemoteProtocolError
from ..auth.digest import (
    ALGORITHMS,
    canonical_algorithm,
    compute_response,
    hash_hex,
    make_ha1,
    parse_digest,
    quote,
)

# preference when one reply carries several challenges for the same realm (RFC 8760 2.4:
# the strongest algorithm the client supports)
_PREFERENCE = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")


class ChallengeError(RemoteProtocolError):
    """A malformed WWW-Authenticate / Proxy-Authenticate value."""


class UnsupportedChallenge(Exception):
    """A well-formed challenge we cannot answer: another scheme or an unknown algorithm or
    qop. The reply goes upstream unchanged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed Digest challenge (RFC 7616 3.3)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"  # canonical spelling
    qop: tuple[str, ...] = ()  # offered qop values, lower case; () = RFC 2069 style
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False  # Proxy-Authenticate (407) rather than WWW-Authenticate (401)

    @property
    def header_name(self) -> str:
        """The credentials header that answers this challenge."""
        return "Proxy-Authorization" if self.proxy else "Authorization"


def parse_challenge(value: str, *, proxy: bool = False) -> Challenge:
    """Parse one challenge value. Raises ChallengeError (malformed) or UnsupportedChallenge
    (another scheme, unknown algorithm, no usable qop)."""
    try:
        scheme, p = parse_digest(value)
    except RemoteProtocolError as exc:
        raise ChallengeError(f"bad challenge: {exc.reason}") from None
    if scheme.lower() != "digest":
        raise UnsupportedChallenge(f"scheme {scheme[:32]}")
    if "realm" not in p or "nonce" not in p:
        raise ChallengeError("challenge without realm or nonce")
    try:
        algorithm = canonical_algorithm(p.get("algorithm", "MD5"))
    except RemoteProtocolError:
        raise UnsupportedChallenge(f"algorithm {p.get('algorithm', '')[:32]}") from None
    qop: tuple[str, ...] = ()
    if "qop" in p:
        qop = tuple(q.strip().lower() for q in p["qop"].split(",") if q.strip())
        if not any(q in ("auth", "auth-int") for q in qop):
            raise UnsupportedChallenge(f"qop {p['qop'][:32]}")
    stale = p.get("stale", "").lower() == "true"
    return Challenge(p["realm"], p["nonce"], algorithm, qop, p.get("opaque"), stale, proxy)


def challenges_of(headers: list[tuple[str, str]]) -> tuple[list[Challenge], list[str]]:
    """Every challenge of a reply from its (name, value) header pairs (lower-case names
    `www-authenticate` / `proxy-authenticate`): the ones we can answer, and why the others
    cannot be (one line each). Raises ChallengeError when a Digest challenge is malformed."""
    ok: list[Challenge] = []
    skipped: list[str] = []
    for name, value in headers:
        if name not in ("www-authenticate", "proxy-authenticate"):
            continue
        try:
            ok.append(parse_challenge(value, proxy=name == "proxy-authenticate"))
        except UnsupportedChallenge as exc:
            skipped.append(exc.reason)
    return ok, skipped


def pick(challenges: list[Challenge]) -> list[Challenge]:
    """One challenge per (header kind, realm): the strongest algorithm offered."""
    best: dict[tuple[bool, str], Challenge] = {}
    for c in challenges:
        key = (c.proxy, c.realm)
        old = best.get(key)
        if old is None or _PREFERENCE.index(c.algorithm) < _PREFERENCE.index(old.algorithm):
            best[key] = c
    return list(best.values())


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential: the password, or the HA1 precomputed for the realm (`ha1` is for the
    base hash of the challenge's algorithm, i.e. MD5 or SHA-256)."""

    username: str
    password: str | None = None
    ha1: str | None = None

    def __repr__(self) -> str:  # never show the secret
        return f"Secret(username={self.username!r})"

    def ha1_for(self, realm: str, algorithm: str) -> str:
        if self.password is not None:
            return make_ha1(self.username, realm, self.password, algorithm)
        if self.ha1 is None:
            raise ValueError("a credential needs a password or an HA1")
        want = 32 if algorithm.startswith("MD5") else 64
        if len(self.ha1) != want:
            raise UnsupportedChallenge(f"HA1 given does not fit algorithm {algorithm}")
        return self.ha1.lower()


def digest_response(*, algorithm: str, ha1: str, nonce: str, method: str, uri: str,
                    qop: str | None, nc: str = "", cnonce: str = "", body: bytes = b"") -> str:
    """The request-digest (RFC 7616 3.4.1), qop auth-int included (H(entity-body) in A2)."""
    if qop != "auth-int":
        return compute_response(algorithm=algorithm, ha1=ha1, nonce=nonce, method=method,
                                uri=uri, qop=qop, nc=nc, cnonce=cnonce)
    alg = canonical_algorithm(algorithm)
    if alg.endswith("-sess"):
        ha1 = hash_hex(alg, f"{ha1}:{nonce}:{cnonce}")
    hbody = _hash_bytes(alg, body)
    ha2 = hash_hex(alg, f"{method}:{uri}:{hbody}")
    return hash_hex(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _hash_bytes(algorithm: str, data: bytes) -> str:
    import hashlib

    fn = hashlib.md5 if algorithm.startswith("MD5") else hashlib.sha256
    return fn(data).hexdigest()


def choose_qop(ch: Challenge, body: bytes) -> str | None:
    """auth when offered (what every registrar checks); auth-int only when it is the sole
    offer, or offered and a body is present (RFC 3261 22.4 leaves the choice to us)."""
    if not ch.qop:
        return None
    if "auth-int" in ch.qop and (body or "auth" not in ch.qop):
        return "auth-int"
    return "auth"


def authorization(ch: Challenge, secret: Secret, *, method: str, uri: str, cnonce: str,
                  nc: int = 1, body: bytes = b"") -> str:
    """The Authorization / Proxy-Authorization value answering `ch` (header name:
    `ch.header_name`)."""
    qop = choose_qop(ch, body)
    ha1 = secret.ha1_for(ch.realm, ch.algorithm.removesuffix("-sess"))
    ncs = f"{nc:08x}"
    use_cnonce = qop is not None or ch.algorithm.endswith("-sess")
    resp = digest_response(algorithm=ch.algorithm, ha1=ha1, nonce=ch.nonce, method=method,
                           uri=uri, qop=qop, nc=ncs if qop else "",
                           cnonce=cnonce if use_cnonce else "", body=body)
    parts = [f"username={quote(secret.username)}", f"realm={quote(ch.realm)}",
             f"nonce={quote(ch.nonce)}", f"uri={quote(uri)}", f"response={quote(resp)}",
             f"algorithm={ch.algorithm}"]
    if use_cnonce:
        parts.append(f"cnonce={quote(cnonce)}")
    if qop:
        parts += [f"qop={qop}", f"nc={ncs}"]
    if ch.opaque is not None:
        parts.append(f"opaque={quote(ch.opaque)}")
    return "Digest " + ", ".join(parts)


class ChallengeMemory:
    """The "one retry per challenge" rule for one request (one transaction or one
    registration): once we answered a realm, a further challenge from it means the
    credentials were refused (RFC 7616 3.3: a server that rejects them challenges again,
    with a new nonce or the same) and goes upstream, unless it says stale=true: the nonce
    merely expired, which is honoured once per realm."""

    __slots__ = ("answered", "stale_retries", "nc")

    def __init__(self) -> None:
        self.answered: set[str] = set()  # realms
        self.stale_retries: set[str] = set()  # realms
        self.nc: dict[str, int] = {}  # nonce -> last nonce-count used

    def may_answer(self, ch: Challenge) -> bool:
        if ch.realm not in self.answered:
            return True
        if ch.stale and ch.realm not in self.stale_retries:
            self.stale_retries.add(ch.realm)
            return True
        return False

    def next_nc(self, nonce: str) -> int:
        n = self.nc.get(nonce, 0) + 1
        if len(self.nc) > 16:
            self.nc.clear()
        self.nc[nonce] = n
        return n

    def answered_now(self, ch: Challenge) -> None:
        self.answered.add(ch.realm)


__all__ = ["ALGORITHMS", "Challenge", "ChallengeError", "ChallengeMemory", "Secret",
           "UnsupportedChallenge", "authorization", "challenges_of", "choose_qop",
           "digest_response", "parse_challenge", "pick"]
