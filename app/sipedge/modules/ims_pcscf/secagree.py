"""sec-agree (RFC 3329, TS 33.203 Annex H, TS 24.229 5.2.2): Security-Client parsing, the
choice of one offer, Security-Server formatting and the Security-Verify check.

Sans-IO: header values in, typed values out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 3329 section 2.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")

MECHANISM = "ipsec-3gpp"
SPI_MIN = 256  # 1..255 are reserved by IANA for future use (RFC 4303 2.1), 0 is "no SA"
SPI_MAX = 0xFFFFFFFF
KNOWN_ALGS = ("hmac-sha-1-96", "hmac-md5-96")
KNOWN_EALGS = ("aes-cbc", "des-ede3-cbc", "null")


class SecAgreeError(ValueError):
    """An offer we cannot use (the text says why)."""


@dataclass(frozen=True)
class Offer:
    """One ipsec-3gpp mechanism of a Security-Client (or Security-Server/-Verify)."""

    alg: str
    ealg: str
    spi_c: int
    spi_s: int
    port_c: int
    port_s: int
    q: float = 0.0
    prot: str = "esp"
    mod: str = "trans"
    position: int = 0  # order in the request (tie-break)
    extra: tuple[tuple[str, str], ...] = field(default=())  # unknown parameters, kept


@dataclass(frozen=True)
class Rejected:
    text: str
    reason: str


def split_mechanisms(values: list[str]) -> list[str]:
    """Header values (several headers, comma lists) -> one text per mechanism. Commas
    inside quoted strings are kept."""
    out: list[str] = []
    for value in values:
        cur, quoted, esc = [], False, False
        for ch in value:
            if esc:
                esc = False
            elif ch == "\\" and quoted:
                esc = True
            elif ch == '"':
                quoted = not quoted
            elif ch == "," and not quoted:
                out.append("".join(cur).strip())
                cur = []
                continue
            cur.append(ch)
        if "".join(cur).strip():
            out.append("".join(cur).strip())
    return [m for m in out if m]


def _params(text: str) -> tuple[str, list[tuple[str, str]]]:
    parts = [p.strip() for p in text.split(";")]
    name = parts[0].lower()
    params = []
    for p in parts[1:]:
        if not p:
            continue
        k, eq, v = p.partition("=")
        params.append((k.strip().lower(), v.strip().strip('"') if eq else ""))
    return name, params


def _int(name: str, value: str, lo: int, hi: int) -> int:
    if not value.isdigit() or len(value) > 10:
        raise SecAgreeError(f"{name}={value!r} is not a number")
    n = int(value)
    if not lo <= n <= hi:
        raise SecAgreeError(f"{name}={n} out of range {lo}..{hi}")
    return n


def parse_mechanism(text: str, position: int = 0) -> Offer:
    """One mechanism text -> Offer. Raises SecAgreeError for another mechanism, a missing or
    out-of-range spi/port, a duplicate parameter, or prot/mod other than esp/trans."""
    name, params = _params(text)
    if name != MECHANISM:
        raise SecAgreeError(f"mechanism {name!r} is not {MECHANISM}")
    seen: dict[str, str] = {}
    extra = []
    for k, v in params:
        if k in seen:
            raise SecAgreeError(f"parameter {k} given twice")
        seen[k] = v
        if k not in ("alg", "ealg", "spi-c", "spi-s", "port-c", "port-s", "q", "prot", "mod"):
            extra.append((k, v))
    for need in ("alg", "spi-c", "spi-s", "port-c", "port-s"):
        if need not in seen:
            raise SecAgreeError(f"parameter {need} missing")
    q = 0.0
    if "q" in seen:
        if not _QVALUE.fullmatch(seen["q"]):  # RFC 3329 preference = "q" EQUAL qvalue
            raise SecAgreeError(f"q={seen['q']!r} is not a qvalue (0..1, at most 3 decimals)")
        q = float(seen["q"])
    prot = seen.get("prot", "esp").lower()
    mod = seen.get("mod", "trans").lower()
    if prot != "esp":
        raise SecAgreeError(f"prot={prot} (only esp)")
    if mod != "trans":
        raise SecAgreeError(f"mod={mod} (only trans)")
    return Offer(alg=seen["alg"].lower(), ealg=seen.get("ealg", "null").lower() or "null",
                 spi_c=_int("spi-c", seen["spi-c"], SPI_MIN, SPI_MAX),
                 spi_s=_int("spi-s", seen["spi-s"], SPI_MIN, SPI_MAX),
                 port_c=_int("port-c", seen["port-c"], 1, 65535),
                 port_s=_int("port-s", seen["port-s"], 1, 65535),
                 q=q, prot=prot, mod=mod, position=position, extra=tuple(extra))


def parse_security_client(values: list[str]) -> tuple[list[Offer], list[Rejected]]:
    """Every offer of every Security-Client header; unusable ones are listed with why."""
    offers, rejected = [], []
    for i, text in enumerate(split_mechanisms(values)):
        try:
            offers.append(parse_mechanism(text, i))
        except SecAgreeError as exc:
            rejected.append(Rejected(text, str(exc)))
    return offers, rejected


@dataclass(frozen=True)
class Preference:
    """What we accept, best first. `accelerated` lists ealg/alg names the box runs in
    hardware or CPU instructions; with `prefer_accelerated` they win over the order."""

    algs: tuple[str, ...] = ("hmac-sha-1-96", "hmac-md5-96")
    ealgs: tuple[str, ...] = ("aes-cbc", "des-ede3-cbc")
    allow_null: bool = False
    prefer_accelerated: bool = False
    accelerated: frozenset[str] = frozenset()


def choose(offers: list[Offer], pref: Preference) -> Offer | None:
    """The offer to use: allowed alg and ealg, ranked by our preference (hardware first
    when asked), then the UE's q, then its order. None when nothing fits."""
    ealgs = list(pref.ealgs) + (["null"] if pref.allow_null and "null" not in pref.ealgs
                                else [])
    if not pref.allow_null:
        ealgs = [e for e in ealgs if e != "null"]

    def key(o: Offer):
        hw = 0
        if pref.prefer_accelerated:
            hw = -(int(o.ealg in pref.accelerated) * 2 + int(o.alg in pref.accelerated))
        return (hw, ealgs.index(o.ealg), pref.algs.index(o.alg), -o.q, o.position)

    usable = [o for o in offers if o.alg in pref.algs and o.ealg in ealgs]
    return min(usable, key=key) if usable else None


def format_mechanism(o: Offer, q: float | None = 0.1) -> str:
    """Security-Server / -Verify text for an offer (our SPIs and ports in it)."""
    qs = "" if q is None else f";q={q:g}"
    return (f"{MECHANISM}{qs};prot={o.prot};mod={o.mod};spi-c={o.spi_c};spi-s={o.spi_s};"
            f"port-c={o.port_c};port-s={o.port_s};ealg={o.ealg};alg={o.alg}")


def _canon(o: Offer) -> tuple:
    return (o.alg, o.ealg, o.spi_c, o.spi_s, o.port_c, o.port_s, o.prot, o.mod)


def verify_matches(verify_values: list[str], server: Offer) -> str | None:
    """None when the Security-Verify headers name exactly our Security-Server mechanism
    (parameter order, case and q ignored); else the reason."""
    mechs = split_mechanisms(verify_values)
    if not mechs:
        return "no Security-Verify"
    if len(mechs) != 1:
        return f"{len(mechs)} mechanisms in Security-Verify, expected 1"
    try:
        got = parse_mechanism(mechs[0])
    except SecAgreeError as exc:
        return f"Security-Verify: {exc}"
    if _canon(got) != _canon(server):
        return "Security-Verify differs from our Security-Server"
    return None


def has_option_tag(values: list[str], tag: str = "sec-agree") -> bool:
    for v in values:
        if any(t.strip().lower() == tag for t in v.split(",")):
            return True
    return False
