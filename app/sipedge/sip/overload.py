"""Overload shedding (sans-IO): which messages to refuse when the proxy falls behind, decided
from the first line and a cheap look at the head, before the full parse; and the `503` +
`Retry-After` that refuses them, built from the raw bytes.

Only new work is refused: an initial request (no To tag) other than ACK and CANCEL. Replies,
ACKs, CANCELs and requests inside a dialog always go on, so calls already up finish and the
work a refused request saves is a whole call (its replies, ACK, BYE), not one message.

`Overload` is the state: fed the receive backlog in bytes (the worker reads it from the
kernel), it switches on above `high_bytes` and off below a quarter of it (hysteresis).
"""

from __future__ import annotations

import hashlib
import re

# methods that never start anything: shedding them would only break what is running
_NEVER_SHED = frozenset({b"ACK", b"CANCEL"})
# a To header (full or compact name) that carries a tag parameter, up to the end of its line
_TO_TAG = re.compile(rb"\n[ \t]*(?:to|t)[ \t]*:[^\n]*;[ \t]*tag[ \t]*=", re.I)
# a To header whose tag is one of ours (see shed_tag)
_TO_OUR_TAG = re.compile(rb"\n[ \t]*(?:to|t)[ \t]*:[^\n]*;[ \t]*tag[ \t]*=[ \t]*ovl", re.I)
# header lines copied into the 503 (RFC 3261 8.2.6.2)
_COPIED = frozenset({b"via", b"v", b"from", b"f", b"call-id", b"i", b"cseq"})
_TO = frozenset({b"to", b"t"})


class Overload:
    """On/off with hysteresis from the receive backlog (bytes queued in the kernel)."""

    def __init__(self, high_bytes: int) -> None:
        self.high_bytes = high_bytes
        self.low_bytes = high_bytes // 4
        self.active = False
        self.episodes = 0  # how many times it switched on

    def update(self, backlog_bytes: int) -> bool:
        """Feed the current backlog; returns True when the state changed."""
        if self.high_bytes <= 0:
            return False
        if not self.active and backlog_bytes > self.high_bytes:
            self.active = True
            self.episodes += 1
            return True
        if self.active and backlog_bytes < self.low_bytes:
            self.active = False
            return True
        return False


def is_new_work(data: bytes) -> bool:
    """A request that starts something (no To tag; not ACK or CANCEL), from the raw bytes.
    Replies, ACK, CANCEL and in-dialog requests are False. Garbage is False too: the full
    parser answers it."""
    if data[:4] == b"SIP/":
        return False
    sp = data.find(b" ", 0, 32)
    if sp <= 0 or data[:sp] in _NEVER_SHED:
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
        if end < 0:
            return False
    return _TO_TAG.search(data, 0, end + 1) is None


def shed_reply(data: bytes, retry_after_s: int, secret: bytes, server: str) -> bytes | None:
    """`503 Service Unavailable` with `Retry-After` for a request refused under overload:
    Via, From, Call-ID and CSeq copied, To with a tag (the same for a retransmission, so the
    ACK can be recognised by `is_shed_ack`). None when the head lacks what a reply needs."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
        if end < 0:
            return None
    out = [b"SIP/2.0 503 Service Unavailable"]
    seen = set()
    to_line = None
    call_id = b""
    lines = data[:end].split(b"\n")
    for i in range(1, len(lines)):
        line = lines[i].rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            return None  # folded header lines: leave it to the full path
        name, colon, value = line.partition(b":")
        key = name.strip().lower()
        if key in _COPIED:
            out.append(line)
            short = key[:1] if key != b"call-id" else b"i"
            seen.add(short)
            if short == b"i":
                call_id = value.strip()
        elif key in _TO and to_line is None:
            to_line = value.strip()
    if to_line is None or len(seen) < 4:  # v, f, i, c: all needed for a reply
        return None
    tag = shed_tag(secret, call_id)
    out.append(b"To: " + to_line + b";tag=" + tag)
    out.append(b"Retry-After: %d" % retry_after_s)
    out.append(b"Server: " + server.encode("utf-8", "replace"))
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


def shed_tag(secret: bytes, call_id: bytes) -> bytes:
    """The To tag of our 503s: `ovl` + a keyed hash of the Call-ID line (deterministic)."""
    return b"ovl" + hashlib.blake2s(call_id, key=secret[:32], digest_size=6).hexdigest().encode()


def is_shed_ack(data: bytes) -> bool:
    """An ACK for one of our overload 503s (its To tag starts with `ovl`): absorbed here,
    as Kamailio's sl module absorbs the ACKs of its own stateless replies."""
    return data[:4] == b"ACK " and b"ovl" in data and _TO_OUR_TAG.search(data) is not None
