"""Selection algorithms. Each orders the *selectable* destinations of a set: the first is
used, the rest are the fail-over order for `next_destination()`.

| name          | Kamailio | what it does |
|---------------|----------|--------------|
| `hash_callid` | 0        | rendezvous hash over the Call-ID: every request of a call goes to the same box |
| `hash_from`   | 1        | rendezvous hash over the From URI (`user@host`): one caller's calls stay on one box |
| `hash_to`     | 2        | rendezvous hash over the To URI: one callee's calls stay on one box (the "Alice and Bob are on box A" case with stateful backends) |
| `hash_ruri`   | 3        | rendezvous hash over the Request-URI (`user@host`) |
| `round_robin` | 4        | rotate over the active destinations, one step per selection |
| `weight`      | 9        | smooth weighted round-robin by the `weight` attribute: over any `sum(weights)` selections each destination is chosen exactly `weight` times, interleaved |
| `priority`    | 8        | set order (priority, higher first, then as written): first active wins |
| `least_calls` | 10       | fewest active calls (the TU reports call start/end), ties broken by fewest selections, then set order |

Hashing is rendezvous (highest random weight) hashing: every destination gets a score
`H(key, destination URI)` and they are ordered by score. Unlike `hash % n` this moves only
the keys of a destination that goes away, and the fail-over order for a key is stable too.
`H` is BLAKE2b, so all workers and restarts agree (Python's `hash()` is salted per process).
URIs are reduced to `user@host` (host lower case; port and parameters ignored) so that the
same user reached through different URI spellings lands on the same box. Weights are ignored
by the hash algorithms.

Functions here are pure: the mutable per-set cursors (`RoundRobinCursor`, `SmoothWeights`)
are owned by the Dispatcher and passed in.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

from ...errors import RemoteProtocolError
from ...sip.uri import parse_uri
from .health import Health
from .table import Destination

HASH_FIELDS = {"hash_callid": "call_id", "hash_from": "from_uri", "hash_to": "to_uri",
               "hash_ruri": "ruri"}
ALGORITHMS = ("hash_callid", "hash_from", "hash_to", "hash_ruri", "round_robin", "weight",
              "priority", "least_calls")
KAMAILIO_NUMBERS = {0: "hash_callid", 1: "hash_from", 2: "hash_to", 3: "hash_ruri",
                    4: "round_robin", 8: "priority", 9: "weight", 10: "least_calls"}


def algorithm_name(alg: str | int) -> str:
    """Normalise an algorithm given by name or by Kamailio number. Raises ValueError."""
    if isinstance(alg, int) and not isinstance(alg, bool):
        try:
            return KAMAILIO_NUMBERS[alg]
        except KeyError:
            raise ValueError(f"unknown dispatcher algorithm {alg}") from None
    name = str(alg).lower()
    if name not in ALGORITHMS:
        raise ValueError(f"unknown dispatcher algorithm {alg!r} (one of {', '.join(ALGORITHMS)})")
    return name


def hash_key(field: str, value: str) -> str:
    """The text hashed for a message field: the Call-ID as is, URIs as `user@host`."""
    if field == "call_id":
        return value.strip()
    text = value.strip()
    if text.startswith("<") or "<" in text:  # tolerate a name-addr
        text = text[text.find("<") + 1:text.rfind(">") if ">" in text else None]
    try:
        uri = parse_uri(text)
    except RemoteProtocolError:
        return text.lower()
    if uri.scheme == "tel":
        return (uri.user or "").replace("-", "").replace(".", "")
    host = uri.host_bare
    return f"{uri.user}@{host}" if uri.user else host


def hrw_score(key: str, dest: Destination) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(key.encode("utf-8", "surrogateescape"))
    h.update(b"\x00")
    h.update(str(dest.uri).encode())
    return int.from_bytes(h.digest(), "big")


def order_by_hash(dests: Sequence[Destination], key: str) -> list[Destination]:
    return sorted(dests, key=lambda d: (-hrw_score(key, d), d.position))


def order_round_robin(dests: Sequence[Destination], cursor: int) -> list[Destination]:
    if not dests:
        return []
    i = cursor % len(dests)
    return list(dests[i:]) + list(dests[:i])


class SmoothWeights:
    """Smooth weighted round-robin state of one set (the nginx scheme): each selection adds
    every candidate's weight to its running value, picks the largest, and subtracts the
    total from the winner. Destinations with weight 0 are only used when nothing else is."""

    def __init__(self) -> None:
        self.current: dict[tuple[int, str], int] = {}

    def order(self, dests: Sequence[Destination]) -> list[Destination]:
        weighted = [d for d in dests if d.weight > 0]
        if not weighted:
            return list(dests)
        total = 0
        for d in weighted:
            self.current[d.key] = self.current.get(d.key, 0) + d.weight
            total += d.weight
        best = max(weighted, key=lambda d: (self.current[d.key], -d.position))
        self.current[best.key] -= total
        rest = sorted((d for d in dests if d is not best), key=lambda d: (-d.weight, d.position))
        return [best] + rest


def order_least_calls(dests: Sequence[Destination],
                      health: Callable[[Destination], Health]) -> list[Destination]:
    return sorted(dests, key=lambda d: (health(d).active_calls, health(d).selected, d.position))
