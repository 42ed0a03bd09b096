"""CSeq (RFC 3261 20.16)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import RemoteProtocolError
from ..grammar import is_digits, is_token


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_cache: dict[str, CSeq] = {}


def parse_cseq(text: str) -> CSeq:
    """Parse a CSeq value. CSeqs are immutable, so recent ones are shared from a small cache
    (a transaction's replies repeat its request's CSeq); errors are not cached."""
    cseq = _cache.get(text)
    if cseq is None:
        cseq = _parse_cseq(text)
        if len(_cache) >= 4096:
            _cache.clear()
        _cache[text] = cseq
    return cseq


def _parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2 or not is_digits(parts[0]) or not is_token(parts[1]):
        raise RemoteProtocolError("Bad CSeq")
    seq = int(parts[0])
    if seq >= 2**31:
        raise RemoteProtocolError("Bad CSeq")
    return CSeq(seq, parts[1])
