"""The reply fast path (ProxyCore.splice_response) gives what the full path gives, and
declines everything that is not the simple case."""

from __future__ import annotations

import pytest

from sipedge.sip.message import parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore

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
