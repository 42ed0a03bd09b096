"""RFC 2782 SRV target ordering: ascending priority, weighted random within a priority."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from dns.rdtypes.IN.SRV import SRV


def order_srv(records: Iterable[SRV], rand: Callable[[], float] = random.random) -> list[SRV]:
    """Order SRV records for use (RFC 2782, "Usage rules").

    Within one priority, records are picked one by one: a number is drawn uniformly from
    0..(sum of remaining weights) and the first record whose running weight sum reaches it
    wins. Weight-0 records come first in the running sum, so they are chosen only when the
    draw is 0 or when nothing else is left. `rand()` returns a float in [0, 1); tests inject
    a fixed sequence. A lone target "." (service not offered) yields an empty list.
    """
    recs = [r for r in records if r.target.to_text() != "."]
    out: list[SRV] = []
    for prio in sorted({r.priority for r in recs}):
        # zero weights first, otherwise the order the server gave
        group = sorted((r for r in recs if r.priority == prio), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            draw = min(int(rand() * (total + 1)), total)
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= draw:
                    out.append(group.pop(i))
                    break
    return out
