"""sipedge.sip.overload: what is shed under overload, and the 503 built from raw bytes."""

from __future__ import annotations

import pytest

from sipedge.sip.message import parse_message
from sipedge.sip.overload import Overload, is_new_work, is_shed_ack, shed_reply

HEAD = ("{method} sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKov1\r\n"
        "v: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKov0\r\n"
        "From: <sip:alice@example.org>;tag=a\r\n{to}\r\n"
        "Call-ID: ov-1@192.0.2.1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n")


def msg(method="INVITE", to="To: <sip:bob@example.com>") -> bytes:
    return HEAD.format(method=method, to=to).encode()


@pytest.mark.parametrize("data, new", [
    (msg(), True),
    (msg("REGISTER"), True),
    (msg("OPTIONS"), True),
    (msg("FOO"), True),
    (msg(to="t: <sip:bob@example.com> ;tag = b"), False),  # in dialog
    (msg("BYE", "To: <sip:bob@example.com>;tag=b"), False),
    (msg("ACK"), False),
    (msg("CANCEL"), False),
    (b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", False),  # replies always go on
    (b"garbage", False),  # the full parser answers garbage
    (msg().replace(b"\r\n\r\n", b"\r\n"), False),  # no end of head
])
def test_is_new_work(data, new):
    assert is_new_work(data) is new


def test_shed_reply_is_a_valid_503_with_the_same_tag_for_a_retransmission():
    raw = shed_reply(msg(), 7, b"k", "sipedge")
    r = parse_message(raw)
    assert (r.status, r.reason) == (503, "Service Unavailable")
    assert r.get("retry-after") == "7"
    assert r.get_all("via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKov1",
                                "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKov0"]
    assert r.call_id == "ov-1@192.0.2.1" and str(r.cseq) == "1 INVITE"
    assert r.to.tag.startswith("ovl") and r.from_.tag == "a"
    assert shed_reply(msg(), 7, b"k", "sipedge") == raw
    ack = msg("ACK", f"To: <sip:bob@example.com>;tag={r.to.tag}")
    assert is_shed_ack(ack)
    assert not is_shed_ack(msg("ACK", "To: <sip:bob@example.com>;tag=b"))
    assert not is_shed_ack(msg("ACK").replace(b"tag=a", b"tag=ovlx"))  # From tag: not ours


def test_shed_reply_needs_what_a_reply_needs():
    assert shed_reply(msg().replace(b"Call-ID", b"X-Call-ID"), 5, b"k", "s") is None
    assert shed_reply(msg().replace(b"CSeq: 1", b"CSeq:\r\n 1"), 5, b"k", "s") is None


def test_overload_hysteresis():
    o = Overload(1000)
    assert not o.update(900) and not o.active
    assert o.update(1001) and o.active
    assert not o.update(300) and o.active  # still above a quarter
    assert o.update(249) and not o.active
    assert o.episodes == 1
    off = Overload(0)
    assert not off.update(10**9) and not off.active
