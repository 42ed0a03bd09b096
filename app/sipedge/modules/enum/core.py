"""ENUM (RFC 6116) over the DDDS NAPTR rules (RFC 3402, RFC 3403), sans-IO.

    res = EnumResolution("+61 3 5550 0912")       # or enum_domain(...) to just build the name
    while (q := res.next_query(now)) is not None:
        res.feed(ask_dns(q), now)                   # sipedge.resolve.Answer, None on failure
    res.result                                      # Found(uri) | NotFound(reason) | DnsFailure

Rules
- The number is E.164, with or without a leading `+`. Other characters are stripped
  (`non_digits="strip"`, default: "+61 (3) 5550-0912" works) or refused (`"reject"`).
  The Application Unique String the regexps see is `+` and the digits.
- The domain is the digits reversed, dot-separated, under the suffix (default e164.arpa.).
- NAPTR records are sorted by order, then preference. Terminal records have flag `u`; their
  service must be one of `services` (default E2U+sip and the pre-RFC 3761 form SIP+E2U,
  compared case-insensitively; `E2U+sip` also matches a record listing several
  enumservices such as `E2U+voice:tel+sip`). The regexp field is
  `<delim>ere<delim>replacement<delim>flags`; the delimiter is the field's first character,
  flag `i` makes the match case-insensitive, `\\1`..`\\9` are back-references and `\\\\` a
  backslash. The result must be a sip:/sips: URI (or any URI with `uri_schemes` widened).
  Regexps that could backtrack for long are refused (`check_complexity`): they come from DNS.
- Non-terminal records (empty flags) point to another domain, by their replacement field or
  by a regexp that rewrites the AUS to a domain; that domain's NAPTR set is processed the
  same way, at most `max_depth` levels deep and never the same domain twice. When it yields
  nothing, the next record of the parent set is tried.
- A failed query (timeout, SERVFAIL, refused) ends the resolution with DnsFailure: without
  the answer we cannot know whether the number exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from dns.rdatatype import RdataType

from ...errors import EdgeError, RemoteProtocolError
from ...resolve import Answer, DnsCache, Query
from ...sip.uri import parse_uri

DEFAULT_SUFFIX = "e164.arpa."
DEFAULT_SERVICES = ("e2u+sip", "sip+e2u")
MAX_REGEXP = 512
_SEPARATORS = re.compile(r"[^0-9]")


class EnumNumberError(EdgeError, ValueError):
    """The input is not a usable E.164 number."""


@dataclass(frozen=True, slots=True)
class Found:
    """The number maps to `uri` (the rewritten result of the chosen NAPTR)."""

    uri: str
    number: str  # the AUS, e.g. "+61355500912"
    domain: str  # where the chosen record was found
    order: int
    preference: int
    service: str

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class NotFound:
    """No usable record: `reason` is one of "no such number" (NXDOMAIN or no NAPTR),
    "no record for the service", "no regexp matched", "depth limit", "bad record"."""

    reason: str
    number: str = ""

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class DnsFailure:
    """DNS did not answer (timeout, SERVFAIL, refused) for `name`: the script may retry or
    answer 503."""

    name: str
    number: str = ""

    @property
    def reason(self) -> str:
        return f"DNS failure for {self.name}"

    def __bool__(self) -> bool:
        return False


EnumResult = Found | NotFound | DnsFailure


def normalize_number(number: str, non_digits: str = "strip") -> str:
    """The Application Unique String `+<digits>`. Raises EnumNumberError."""
    if non_digits not in ("strip", "reject"):
        raise ValueError("non_digits must be 'strip' or 'reject'")
    text = number.strip()
    body = text[1:] if text.startswith("+") else text
    if non_digits == "reject":
        if not body.isascii() or not body.isdigit():
            raise EnumNumberError(f"not an E.164 number: {number!r}")
        digits = body
    else:
        digits = _SEPARATORS.sub("", body)
    if not 1 <= len(digits) <= 15:
        raise EnumNumberError(f"an E.164 number has 1 to 15 digits, got {len(digits)} in "
                              f"{number!r}")
    return "+" + digits


def enum_domain(number: str, suffix: str = DEFAULT_SUFFIX, non_digits: str = "strip") -> str:
    """`+61355500912` -> `2.1.9.0.0.5.5.5.3.1.6.e164.arpa.` (absolute, lower case)."""
    digits = normalize_number(number, non_digits)[1:]
    sfx = suffix.strip().lower()
    if not sfx.endswith("."):
        sfx += "."
    return ".".join(reversed(digits)) + "." + sfx.lstrip(".")


# ---------------------------------------------------------------- NAPTR fields


@dataclass(frozen=True, slots=True)
class Naptr:
    """A NAPTR record with text fields (from dnspython rdata or written by hand)."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str  # "." for none

    @classmethod
    def from_rdata(cls, rd: Any) -> "Naptr":
        def text(v: Any) -> str:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

        return cls(int(rd.order), int(rd.preference), text(rd.flags), text(rd.service),
                   text(rd.regexp), rd.replacement.to_text() if hasattr(rd.replacement,
                                                                        "to_text")
                   else str(rd.replacement))


class RegexpError(ValueError):
    """A NAPTR regexp field that cannot be used."""


@dataclass(frozen=True, slots=True)
class SubstExpr:
    pattern: re.Pattern
    replacement: str

    def apply(self, aus: str) -> str | None:
        """The rewritten string, or None when the pattern does not match."""
        m = self.pattern.search(aus)
        if m is None:
            return None
        out = []
        rep = self.replacement
        i = 0
        while i < len(rep):
            c = rep[i]
            if c == "\\" and i + 1 < len(rep):
                nxt = rep[i + 1]
                if nxt in "123456789":
                    n = int(nxt)
                    if n > (self.pattern.groups or 0):
                        raise RegexpError(f"back-reference \\{n} without that group")
                    out.append(m.group(n) or "")
                else:
                    out.append(nxt)  # \\ -> \, \<delim> -> delim, \x -> x
                i += 2
                continue
            out.append(c)
            i += 1
        return aus[:m.start()] + "".join(out) + aus[m.end():]


def _split_unescaped(text: str, delim: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            # an escaped delimiter is the delimiter itself inside the part
            cur.append(nxt if nxt == delim else c + nxt)
            i += 2
            continue
        if c == delim:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def parse_regexp(field: str) -> SubstExpr:
    """`!^\\+(.*)$!sip:\\1@example.com!i` -> SubstExpr. Raises RegexpError."""
    if not field or len(field) > MAX_REGEXP:
        raise RegexpError("empty or oversized regexp field")
    delim = field[0]
    if delim.isdigit() or delim == "\\" or delim == "i":
        raise RegexpError(f"bad delimiter {delim!r}")
    parts = _split_unescaped(field[1:], delim)
    if len(parts) != 3:
        raise RegexpError("expected <d>ere<d>replacement<d>flags")
    ere, repl, flags = parts
    if flags not in ("", "i"):
        raise RegexpError(f"unknown regexp flags {flags!r}")
    if "(?" in ere:  # POSIX ERE has no Perl extensions; refuse instead of guessing
        raise RegexpError("extended (?...) syntax is not ERE")
    try:
        check_complexity(ere)
        pattern = re.compile(ere, re.IGNORECASE if flags == "i" else 0)
    except (re.error, RecursionError, OverflowError) as exc:
        raise RegexpError(f"bad ERE: {exc}") from None
    return SubstExpr(pattern, repl)


MAX_REPEATS = 6


def check_complexity(ere: str) -> None:
    """Refuse regexps that could backtrack for long on a 16-character subject: a regexp comes
    from DNS, i.e. from anyone who controls a zone. Allowed: at most MAX_REPEATS quantifiers,
    none inside another quantified part, no alternation inside a quantified part, no
    back-references in the pattern. Real ENUM regexps (`^.*$`, `^\\+?(\\d+)$`) pass."""
    try:
        from re import _parser as sre_parse  # Python >= 3.11
    except ImportError:  # pragma: no cover - older Pythons
        import sre_parse  # type: ignore[no-redef]
    count = 0

    def walk(items, in_repeat: bool) -> None:
        nonlocal count
        for op, av in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                count += 1
                if in_repeat:
                    raise RegexpError("nested quantifiers")
                walk(av[2], True)
            elif name == "SUBPATTERN":
                walk(av[-1], in_repeat)
            elif name == "BRANCH":
                if in_repeat:
                    raise RegexpError("alternation inside a quantified group")
                for branch in av[1]:
                    walk(branch, in_repeat)
            elif name in ("GROUPREF", "GROUPREF_EXISTS", "ASSERT", "ASSERT_NOT"):
                raise RegexpError(f"{name.lower()} is not ERE")
        if count > MAX_REPEATS:
            raise RegexpError(f"more than {MAX_REPEATS} quantifiers")

    walk(sre_parse.parse(ere), False)


def _service_tokens(service: str) -> tuple[str, frozenset[str]] | None:
    """("e2u", {"sip", "voice:tel"}) for "E2U+sip+voice:tel"; ("sip+e2u", {}) for the old
    form; None for other services."""
    s = service.strip().lower()
    if not s:
        return None
    parts = s.split("+")
    if parts[0] == "e2u":
        return "e2u", frozenset(parts[1:])
    if parts[-1] == "e2u":  # RFC 2916 form: "sip+E2U"
        return "e2u-old", frozenset(parts[:-1])
    return None


def service_matches(record_service: str, wanted: Iterable[str]) -> bool:
    have = _service_tokens(record_service)
    if have is None:
        return False
    for w in wanted:
        want = _service_tokens(w)
        if want is not None and want[0] == have[0] and want[1] <= have[1]:
            return True
    return False


# ---------------------------------------------------------------- resolution


@dataclass
class _Frame:
    domain: str
    depth: int
    records: list[Naptr] | None = None
    index: int = 0


class EnumResolution:
    """One ENUM lookup (see the module doc). `services` are wanted in any order: the NAPTR
    order/preference decides. `cache` (a DnsCache shared per worker) is optional."""

    def __init__(self, number: str, *, suffix: str = DEFAULT_SUFFIX,
                 services: Iterable[str] = DEFAULT_SERVICES, non_digits: str = "strip",
                 max_depth: int = 4, uri_schemes: tuple[str, ...] = ("sip", "sips"),
                 cache: DnsCache | None = None, max_queries: int = 8) -> None:
        self.number = normalize_number(number, non_digits)
        self.domain = enum_domain(self.number, suffix)
        self.services = tuple(s.lower() for s in services)
        self.max_depth = max_depth
        self.uri_schemes = uri_schemes
        self.cache = cache
        self.max_queries = max_queries
        self.queries = 0
        self.result: EnumResult | None = None
        self._stack = [_Frame(self.domain, 0)]
        self._visited = {self._norm(self.domain)}
        self._why = "no such number"
        self._waiting: Query | None = None

    @staticmethod
    def _norm(name: str) -> str:
        return name.rstrip(".").lower()

    def next_query(self, now: float = 0.0) -> Query | None:
        """The NAPTR question to ask, or None when `result` is set."""
        while self.result is None:
            frame = self._stack[-1]
            if frame.records is None:
                q = Query(self._norm(frame.domain), RdataType.NAPTR)
                cached = self.cache.get(q.name, q.rdtype, now) if self.cache else None
                if cached is not None:
                    self._take(frame, cached)
                    continue
                if self.queries >= self.max_queries:
                    self._finish(NotFound("depth limit", self.number))
                    return None
                self._waiting = q
                return q
            self._step()
        return None

    def feed(self, answer: Answer | None, now: float = 0.0) -> None:
        """The answer to the last `next_query()`: an Answer (empty: NXDOMAIN / no NAPTR),
        or None when the query failed."""
        q = self._waiting
        if q is None or self.result is not None:
            raise ValueError("feed() without an outstanding query")
        self._waiting = None
        self.queries += 1
        if answer is None:
            self._finish(DnsFailure(q.name, self.number))
            return
        if self.cache is not None:
            self.cache.put(q.name, q.rdtype, tuple(answer.rdatas), answer.ttl, now)
        self._take(self._stack[-1], answer.rdatas)

    def _take(self, frame: _Frame, rdatas) -> None:
        recs = []
        for rd in rdatas:
            try:
                recs.append(rd if isinstance(rd, Naptr) else Naptr.from_rdata(rd))
            except (AttributeError, TypeError, ValueError):
                continue  # not a NAPTR (a confused server); ignore it
        recs.sort(key=lambda r: (r.order, r.preference))
        frame.records = recs
        if recs and self._why == "no such number":
            self._why = "no record for the service"

    def _step(self) -> None:
        """Consider the next record of the top frame."""
        frame = self._stack[-1]
        assert frame.records is not None
        if frame.index >= len(frame.records):
            self._stack.pop()
            if not self._stack:
                self._finish(NotFound(self._why, self.number))
            return
        rec = frame.records[frame.index]
        frame.index += 1
        flags = rec.flags.lower()
        if flags == "u":
            if not service_matches(rec.service, self.services):
                return
            uri = self._rewrite(rec)
            if uri is not None:
                self._finish(Found(uri, self.number, frame.domain, rec.order, rec.preference,
                                   rec.service))
        elif flags == "":
            if rec.service and not service_matches(rec.service, self.services):
                return
            target = self._next_domain(rec)
            if target is None:
                return
            if frame.depth + 1 > self.max_depth:
                self._why = "depth limit"
                return
            if self._norm(target) in self._visited:
                return  # a loop
            self._visited.add(self._norm(target))
            self._stack.append(_Frame(target, frame.depth + 1))
        # other flags (s, a, p) are not ENUM: skip

    def _rewrite(self, rec: Naptr) -> str | None:
        try:
            out = parse_regexp(rec.regexp).apply(self.number)
        except RegexpError:
            self._why = "bad record"
            return None
        if out is None:
            if self._why in ("no such number", "no record for the service"):
                self._why = "no regexp matched"
            return None
        try:
            uri = parse_uri(out)
        except RemoteProtocolError:
            self._why = "bad record"
            return None
        if uri.scheme not in self.uri_schemes:
            self._why = "bad record"
            return None
        return out

    def _next_domain(self, rec: Naptr) -> str | None:
        repl = rec.replacement.strip()
        if repl and repl != ".":
            return repl if repl.endswith(".") else repl + "."
        if rec.regexp:
            try:
                out = parse_regexp(rec.regexp).apply(self.number)
            except RegexpError:
                self._why = "bad record"
                return None
            if out and re.fullmatch(r"[A-Za-z0-9_.-]+", out):
                return out if out.endswith(".") else out + "."
        self._why = "bad record"
        return None

    def _finish(self, result: EnumResult) -> None:
        self.result = result
        self._waiting = None
