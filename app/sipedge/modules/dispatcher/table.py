"""Destination sets: the immutable table the dispatcher selects from.

A table comes from the config (`[[dispatcher.destination]]`) or from a Kamailio-style list
file, one destination per line::

    # set  uri                      flags  priority  attributes
    1      sip:10.0.0.21:5060       8      10        weight=50;duid=box-a
    1      sip:10.0.0.22:5060       8      5         weight=50;duid=box-b
    2      sip:pstn.example.net     0

Columns after the URI are optional. `flags` is Kamailio's bit mask (1 inactive, 2 trying,
4 disabled, 8 probing) and says how a destination *starts*; after that its health is
runtime state kept by the `Dispatcher`. `priority` orders the set (higher first, then file
order). Attributes are `name=value` pairs separated by `;`: `weight` (0-1000, default 1)
and `duid` are understood, every other pair is kept verbatim in `attrs`.

Parsing reports every bad line at once as `DispatcherListError` (a `ConfigError` whose issues
read `file:line: column: what is wrong`). Nothing here does I/O: the caller reads the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ...errors import ConfigError, ConfigIssue, RemoteProtocolError
from ...sip.uri import URI, parse_uri

FLAG_INACTIVE = 1
FLAG_TRYING = 2
FLAG_DISABLED = 4
FLAG_PROBING = 8
KNOWN_FLAGS = FLAG_INACTIVE | FLAG_TRYING | FLAG_DISABLED | FLAG_PROBING

MAX_SET_ID = 1 << 31
MAX_WEIGHT = 1000
MAX_LINES = 100000


class DispatcherListError(ConfigError):
    """A destination list (file or config) is invalid; `errors` lists every problem."""


@dataclass(frozen=True, slots=True)
class Destination:
    """One next hop of a set. `key` (set id, URI text) identifies it across reloads."""

    set_id: int
    uri: URI
    flags: int = 0
    priority: int = 0
    weight: int = 1
    duid: str = ""
    attrs: tuple[tuple[str, str], ...] = ()
    position: int = 0  # order in its set as written (tie-breaker everywhere)
    # derived from set_id and uri once: every selection reads the key of each destination
    uri_text: str = field(init=False, repr=False, compare=False)
    key: tuple[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = str(self.uri)
        object.__setattr__(self, "uri_text", text)
        object.__setattr__(self, "key", (self.set_id, text))

    @property
    def probed_by_flag(self) -> bool:
        return bool(self.flags & FLAG_PROBING)

    def attr(self, name: str) -> str | None:
        for k, v in self.attrs:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class DestinationSet:
    """The destinations of one set id, ordered by priority (higher first), then as written."""

    set_id: int
    destinations: tuple[Destination, ...]

    def __len__(self) -> int:
        return len(self.destinations)

    def __iter__(self):
        return iter(self.destinations)


@dataclass(frozen=True)
class DispatcherTable:
    """Every set, by id. Immutable: a reload builds a new table."""

    sets: Mapping[int, DestinationSet] = field(default_factory=dict)
    source: str = ""

    def get(self, set_id: int) -> DestinationSet | None:
        return self.sets.get(set_id)

    def destinations(self) -> Iterable[Destination]:
        for set_id in sorted(self.sets):
            yield from self.sets[set_id].destinations

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets.values())


def build_table(destinations: Iterable[Destination], source: str = "") -> DispatcherTable:
    """Group destinations into sets, ordered by priority (descending) then as given."""
    grouped: dict[int, list[Destination]] = {}
    for d in destinations:
        grouped.setdefault(d.set_id, []).append(d)
    sets = {}
    for set_id, dests in grouped.items():
        ordered = sorted(dests, key=lambda d: (-d.priority, d.position))
        sets[set_id] = DestinationSet(set_id, tuple(ordered))
    return DispatcherTable(dict(sorted(sets.items())), source)


def parse_attrs(text: str) -> tuple[tuple[str, str], ...]:
    """`weight=50;duid=a` -> (("weight", "50"), ("duid", "a")). Raises ValueError."""
    out = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not eq or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"attribute {part!r} is not name=value")
        out.append((name, value.strip()))
    return tuple(out)


def make_destination(set_id: int, uri: str, flags: int = 0, priority: int = 0,
                     attrs: str | Iterable[tuple[str, str]] = "", *, weight: int | None = None,
                     duid: str | None = None, position: int = 0) -> Destination:
    """Validate one destination. Raises ValueError naming the bad field as `field: reason`."""
    if not 0 <= set_id < MAX_SET_ID:
        raise ValueError(f"set: must be 0..{MAX_SET_ID - 1}")
    try:
        parsed = parse_uri(uri)
    except RemoteProtocolError as exc:
        raise ValueError(f"uri: not a SIP URI ({exc.reason})") from None
    if not parsed.is_sip:
        raise ValueError("uri: must be a sip: or sips: URI")
    if flags & ~KNOWN_FLAGS or flags < 0:
        raise ValueError(f"flags: unknown bits in {flags} (known: 1 inactive, 2 trying, "
                         "4 disabled, 8 probing)")
    try:
        pairs = parse_attrs(attrs) if isinstance(attrs, str) else tuple(attrs)
    except ValueError as exc:
        raise ValueError(f"attrs: {exc}") from None
    kept = []
    w, d = 1, ""
    for k, v in pairs:
        if k == "weight":
            if not (v.isascii() and v.isdigit()) or not 0 <= int(v) <= MAX_WEIGHT:
                raise ValueError(f"attrs: weight must be 0..{MAX_WEIGHT}, got {v!r}")
            w = int(v)
        elif k == "duid":
            d = v
        else:
            kept.append((k, v))
    if weight is not None:
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight: must be 0..{MAX_WEIGHT}")
        w = weight
    if duid is not None and duid:
        d = duid
    return Destination(set_id, parsed, flags, priority, w, d, tuple(kept), position)


def parse_list(text: str, source: str = "<dispatcher list>") -> DispatcherTable:
    """Parse a Kamailio-style list file (see the module doc). Raises DispatcherListError."""
    issues: list[ConfigIssue] = []
    dests: list[Destination] = []
    seen: dict[tuple[int, str], int] = {}
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise DispatcherListError([ConfigIssue(source, MAX_LINES + 1, "(file)",
                                               f"more than {MAX_LINES} lines")])
    for lineno, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split(None, 4)
        if len(cols) < 2:
            issues.append(ConfigIssue(source, lineno, "uri", "expected `set uri [flags "
                                      "[priority [attributes]]]`"))
            continue
        ints = []
        bad = False
        for idx, name in ((0, "set"), (2, "flags"), (3, "priority")):
            if idx >= len(cols):
                ints.append(0)
                continue
            value = cols[idx]
            if not (value.isascii() and value.lstrip("-").isdigit() and len(value) <= 10):
                issues.append(ConfigIssue(source, lineno, name, f"expected an integer, got "
                                          f"{value!r}"))
                bad = True
                ints.append(0)
            else:
                ints.append(int(value))
        if bad:
            continue
        set_id, flags, priority = ints
        attrs = cols[4] if len(cols) > 4 else ""
        try:
            dest = make_destination(set_id, cols[1], flags, priority, attrs,
                                    position=lineno)
        except ValueError as exc:
            column, _, reason = str(exc).partition(": ")
            issues.append(ConfigIssue(source, lineno, column, reason))
            continue
        if dest.key in seen:
            issues.append(ConfigIssue(source, lineno, "uri", f"duplicate of line "
                                      f"{seen[dest.key]} in set {set_id}"))
            continue
        seen[dest.key] = lineno
        dests.append(dest)
    if issues:
        raise DispatcherListError(issues)
    return build_table(dests, source)


def format_list(table: DispatcherTable) -> str:
    """The list-file text of a table (parse_list(format_list(t)) gives the same sets)."""
    out = []
    for d in table.destinations():
        attrs = [f"weight={d.weight}"] + ([f"duid={d.duid}"] if d.duid else [])
        attrs += [f"{k}={v}" for k, v in d.attrs]
        out.append(f"{d.set_id} {d.uri} {d.flags} {d.priority} {';'.join(attrs)}")
    return "\n".join(out) + "\n"
