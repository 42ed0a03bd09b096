"""The reply fast path (ProxyCore.splice_response) gives what the full path gives, and
declines everything that is not the simple case."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from sipedge.sip.message import parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sip"))
from sip_corpus import CORPUS, mutations  # noqa: E402 - the corpus and its mutations

OURS = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK0x1a2b3c;rport"
THEIRS = "SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc;rport=5071;received=198.51.100.2"
CORE = ProxyCore([LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)])


def reply(via_lines: str, body: str = "") -> bytes:
    return (f"SIP/2.0 180 Ringing\r\n{via_lines}From: <sip:a@x>;tag=1\r\n"
            f"To: <sip:b@y>;tag=2\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n"
            f"Contact: <sip:b@198.51.100.9>\r\nContent-Length: {len(body)}\r\n\r\n{body}"
            ).encode()


@pytest.mark.parametrize("vias", [
    f"Via: {OURS}\r\nVia: {THEIRS}\r\n",
    f"Via: {OURS}, {THEIRS}\r\n",
    f"v: {OURS}\r\nv:{THEIRS}, SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKz\r\n",
    f"VIA : {OURS}\r\nVia: {THEIRS}\r\n",
], ids=["two-lines", "one-line", "compact", "upper-case"])
def test_fast_path_equals_full_path(vias):
    data = reply(vias, "v=0\r\n")
    fast = CORE.splice_response(data)
    full = CORE.route_response(parse_message(data))
    assert fast is not None and full is not None
    assert (fast.transport, fast.ip, fast.port) == (full.transport, full.ip, full.port) \
        == ("udp", "198.51.100.2", 5071)
    a, b = parse_message(fast.data), parse_message(full.data)
    assert a.get_all("via") == b.get_all("via")
    assert [(h[0], h[2]) for h in a.headers] == [(h[0], h[2]) for h in b.headers]
    assert a.body == b.body == b"v=0\r\n"


@pytest.mark.parametrize("vias", [
    f"Via: {THEIRS}\r\nVia: {OURS}\r\n",                                   # ours not first
    f"Via: {OURS.replace('0x1a2b3c', '0xt1a2b3c')}\r\nVia: {THEIRS}\r\n",  # transaction
    f"Via: {OURS}\r\nVia: {THEIRS.replace('UDP', 'TCP')}\r\n",             # stream next
    f"Via: {OURS}\r\n  ;x=1\r\nVia: {THEIRS}\r\n",                          # folded
    f"Via: {OURS}\r\n",                                                     # ends at us
    f'Via: {OURS};x="a,b"\r\nVia: {THEIRS}\r\n',                           # quoted
], ids=["not-first", "transaction", "tcp-next", "folded", "last-via", "quoted"])
def test_fast_path_declines(vias):
    assert CORE.splice_response(reply(vias)) is None


def test_no_head_end_declines():
    assert CORE.splice_response(b"SIP/2.0 200 OK\r\nVia: " + OURS.encode()) is None


# -- the splice of a reply whose top Via we wrote (known by its bytes) ---------------------

def _registered_core() -> tuple[ProxyCore, str]:
    """A core that forwarded a request from its UDP listener: its Via is known as ours."""
    core = ProxyCore([LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)])
    ours = core._our_via(core.locals[0], "z9hG4bK0x1a2b3c4dabcdef012345")
    assert ours.encode() in core._own_vias
    return core, ours


@pytest.mark.parametrize("vias", [
    "Via: {ours}\r\nVia: {theirs}\r\n",
    "Via: {ours}\r\nVia: {theirs}, SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKz\r\n",
    "Via: {ours}\r\nVia:   {theirs}\r\n",
    "Via: {ours}\r\nVia: {theirs}  \r\n",
    "Via: {ours}\r\nVia: SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc\r\n",
    "Via: {ours}\r\nVia: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKabc;rport=7\r\n",
    "Via: {ours}\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKabc;maddr=192.0.2.77\r\n",
    # the general splice decides (the same result or a decline either way):
    "v: {ours}\r\nVia: {theirs}\r\n",
    "Via: {ours}\r\nv: {theirs}\r\n",
    "Via: {ours}\r\nContact: <sip:x@y>\r\nVia: {theirs}\r\n",
    "Via: {ours}, {theirs}\r\n",
    "Via: {theirs}\r\nVia: {ours}\r\n",
    "Via: {ours}\r\nVia: {theirs_tcp}\r\n",
    "Via: {ours}\r\nVia: {theirs}\r\n  ;x=1\r\n",
    "Via: {ours}\r\n  ;x=1\r\nVia: {theirs}\r\n",
    "Via: {ours}\r\n",
    'Via: {ours}\r\nVia: {theirs};x="a,b"\r\n',
    "Via: {ours}\r\nVia: {theirs}\nX: 1\r\n",
    "Via: {ours}\r\nVia: {theirs}\rX\r\n",
    "Via: {ours}\r\nVia: SIP/2.0/UDP 198.51.100.1:99999;branch=z9hG4bKabc\r\n",
    "Via: {ours}\r\nVia: \r\n",
    "vIa: {ours}\r\nVia: {theirs}\r\n",
    "Via: {ours};x=1\r\nVia: {theirs}\r\n",
], ids=lambda v: repr(v)[:60])
def test_known_via_splice_equals_general_splice(vias):
    """The splice by our Via's bytes gives what the general splice (a core that does not
    know the Via) gives, a decline or the same error, and the full path agrees."""
    core, ours = _registered_core()
    theirs_tcp = THEIRS.replace("UDP", "TCP")
    data = reply(vias.format(ours=ours, theirs=THEIRS, theirs_tcp=theirs_tcp), "v=0\r\n")
    general = ProxyCore([LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)])

    def outcome(c: ProxyCore):
        try:
            r = c.splice_response(data)
        except Exception as exc:  # noqa: BLE001 - compared, not handled
            return type(exc)
        return None if r is None else (r.data, r.transport, r.ip, r.port, r.via)
    for _ in range(2):  # the second time from the next-Via cache
        assert outcome(core) == outcome(general)
    got = outcome(core)
    if isinstance(got, tuple):
        full = core.route_response(parse_message(data))
        assert full is not None and (full.transport, full.ip, full.port) == got[1:4]
        a, b = parse_message(got[0]), parse_message(full.data)
        assert [(h[0], h[2]) for h in a.headers] == [(h[0], h[2]) for h in b.headers]


def test_known_via_splice_is_taken():
    core, ours = _registered_core()
    data = reply(f"Via: {ours}\r\nVia: {THEIRS}\r\n")
    r = core.splice_response(data)
    assert r is not None and (r.ip, r.port) == ("198.51.100.2", 5071)
    assert THEIRS.encode() in core._reply_hops  # the splice by bytes answered it
    assert r.data == data.replace(f"Via: {ours}\r\n".encode(), b"")


def test_transaction_via_is_not_spliced():
    core = ProxyCore([LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)])
    ours = core._our_via(core.locals[0], "z9hG4bK0xt1a2b3c")
    assert core.splice_response(reply(f"Via: {ours}\r\nVia: {THEIRS}\r\n")) is None


def _with_our_via(data: bytes, ours: str) -> bytes | None:
    """`data` (a reply) with our Via as the line after the status line."""
    i = data.find(b"\r\n")
    if not data.startswith(b"SIP/2.0 ") or i < 0:
        return None
    return data[:i + 2] + f"Via: {ours}\r\n".encode() + data[i + 2:]


def _corpus_replies() -> list[bytes]:
    rng = random.Random(8)
    out = []
    for p in sorted(CORPUS.glob("*/*.sip")):
        data = p.read_bytes()
        if data.startswith(b"SIP/2.0 "):
            out += [data, *mutations(data, rng, 40, max_ops=3)]
    return out


def test_known_via_splice_over_the_corpus():
    """Every reply of the parser corpus and seeded mutations of them, with our Via put on
    top: the splice by bytes gives what the general splice gives (or the same error)."""
    core, ours = _registered_core()
    general = ProxyCore([LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)])
    taken = 0
    for sample in _corpus_replies():
        data = _with_our_via(sample, ours)
        if data is None:
            continue
        results = []
        for c in (core, general, core):  # twice: the second from the next-Via cache
            try:
                r = c.splice_response(data)
                results.append(None if r is None else (r.data, r.transport, r.ip, r.port, r.via))
            except Exception as exc:  # noqa: BLE001 - compared, not handled
                results.append(type(exc))
        assert results[0] == results[1] == results[2], data
        taken += isinstance(results[0], tuple)
    assert taken > 20
