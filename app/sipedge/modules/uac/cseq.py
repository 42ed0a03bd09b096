"""Hiding the CSeq change of uac_auth from the caller (sans-IO; `now` in, rewrites out).

When the proxy answers a challenge it sends the request again with CSeq + 1 (RFC 3261 22.2:
a new request of the same dialog needs a higher CSeq). From then on the two sides of the
dialog count differently: the caller's CSeq N is the callee's N + delta. Left alone, the
caller gets replies with a CSeq it never sent, and the callee gets a BYE whose CSeq is not
higher than the INVITE's and refuses it (12.2.2: 500). This table keeps `delta` per dialog
direction (Call-ID, caller's From tag) and rewrites:

- requests from the caller inside the dialog (ACK of the 2xx, BYE, re-INVITE, ...):
  CSeq + delta, when the number is at least the INVITE's original CSeq;
- replies to them (and every reply of the authenticated request): CSeq - delta, when the
  number is at least the authenticated CSeq.

Requests from the callee keep their own numbering (the callee's CSeq space is untouched), and
the CANCEL and non-2xx ACK of the INVITE never need it: the proxy builds those hop by hop
from the branch's own request.

A final failure reply to the authenticated request itself puts the shift back to what it
was before (none for an initial INVITE): a caller that then tries again on its own, with
the same Call-ID, is not shifted. Entries are bounded (`max_entries`, oldest dropped
first) and forgotten after `idle_s` without traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Shift:
    first: int  # the caller's CSeq of the request that was authenticated
    delta: int  # how much higher the callee side counts
    seen: float  # last use (monotonic seconds)
    base: int = 0  # the delta before the authentication in progress
    last: int = 0  # upstream CSeq of that authenticated request (0: settled)


def _set_cseq(msg, seq: int) -> None:
    msg.set("CSeq", f"{seq} {msg.cseq.method}")


class CSeqMap:
    def __init__(self, max_entries: int = 65536, idle_s: float = 7200.0) -> None:
        self.max_entries = max_entries
        self.idle_s = idle_s
        self._map: OrderedDict[tuple[str, str], Shift] = OrderedDict()

    def __len__(self) -> int:
        return len(self._map)

    def shifted(self, call_id: str, from_tag: str | None, caller_cseq: int,
                upstream_cseq: int, base: int, now: float) -> None:
        """The caller's request `caller_cseq` goes upstream as `upstream_cseq` (a challenge
        answered); `base` is the dialog's shift before this transaction."""
        key = (call_id, from_tag or "")
        old = self._map.get(key)
        first = min(old.first, caller_cseq) if old is not None else caller_cseq
        self._map[key] = Shift(first, upstream_cseq - caller_cseq, now, base, upstream_cseq)
        self._map.move_to_end(key)
        while len(self._map) > self.max_entries:
            self._map.popitem(last=False)

    def bumped(self, call_id: str, from_tag: str | None, caller_cseq: int, now: float,
               by: int = 1) -> None:
        """Shorthand: the shift of the dialog grows by `by` for `caller_cseq`."""
        d = self.delta(call_id, from_tag)
        self.shifted(call_id, from_tag, caller_cseq, caller_cseq + d + by, d, now)

    def delta(self, call_id: str, from_tag: str | None) -> int:
        sh = self._map.get((call_id, from_tag or ""))
        return sh.delta if sh is not None else 0

    def fix_request(self, req, now: float) -> bool:
        """A request from the caller towards the callee: CSeq + delta. True if changed."""
        if not self._map:
            return False
        key = (req.call_id, req.from_.tag or "")
        sh = self._map.get(key)
        if sh is None:
            return False
        seq = req.cseq.seq
        if seq < sh.first or req.method == "CANCEL":
            return False
        sh.seen = now
        self._map.move_to_end(key)
        _set_cseq(req, seq + sh.delta)
        return True

    def fix_response(self, resp, now: float) -> bool:
        """A reply travelling back to the caller: CSeq - delta. True if changed."""
        if not self._map:
            return False
        key = (resp.call_id, resp.from_.tag or "")
        sh = self._map.get(key)
        if sh is None:
            return False
        seq = resp.cseq.seq
        if seq < sh.first + sh.delta or resp.cseq.method == "CANCEL":
            return False
        sh.seen = now
        _set_cseq(resp, seq - sh.delta)
        if resp.status >= 300 and sh.last and seq == sh.last:
            # the authenticated request failed (or is challenged again, and a new answer
            # sets the shift anew): the dialog was not set up with this CSeq
            if sh.base:
                sh.delta, sh.last = sh.base, 0
            else:
                del self._map[key]
        elif resp.status >= 200 and seq == sh.last:
            sh.last = 0  # settled: this shift is the dialog's from now on
        return True

    def purge(self, now: float) -> int:
        """Forget dialogs idle for `idle_s`."""
        old = [k for k, sh in self._map.items() if now - sh.seen > self.idle_s]
        for k in old:
            del self._map[k]
        return len(old)


__all__ = ["CSeqMap", "Shift"]
