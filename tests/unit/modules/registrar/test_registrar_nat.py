"""NAT detection, Contact fixing and keepalive scheduling."""

from __future__ import annotations

from sipedge.modules.registrar.core import Binding
from sipedge.modules.registrar.nat import (KeepaliveSchedule, PingTarget, fix_contact,
                                           is_private, nat_reasons, options_ping)
from sipedge.sip.message import parse_message
from sipmsg import request


def test_is_private():
    for h in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd00::1", "[fe80::1]",
              "169.254.1.1"):
        assert is_private(h), h
    for h in ("203.0.113.1", "8.8.8.8", "127.0.0.1", "example.com", "2001:4860::1"):
        assert not is_private(h), h


def test_nat_reasons():
    behind = request(contacts=["<sip:a@192.168.1.20:5060>"],
                     via="SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK1;rport")
    assert nat_reasons(behind, "203.0.113.7", 40312) == ["via_address", "via_port",
                                                         "contact_private"]
    direct = request(contacts=["<sip:a@203.0.113.7:5060>"],
                     via="SIP/2.0/UDP 203.0.113.7;branch=z9hG4bK1")
    assert nat_reasons(direct, "203.0.113.7", 5060) == []
    # a port-only change (symmetric NAT keeping the address) still counts
    assert nat_reasons(direct, "203.0.113.7", 6000) == ["via_port", "contact_address"]
    # over TCP the source port is ephemeral anyway
    assert nat_reasons(direct, "203.0.113.7", 6000, "tcp") == []


def test_fix_contact_in_a_reply():
    resp = parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
                         b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\n"
                         b"CSeq: 1 INVITE\r\nContact: \"B\" <sip:b@10.0.0.9:5070;transport=udp>"
                         b";expires=60\r\nContent-Length: 0\r\n\r\n")
    assert fix_contact(resp, "198.51.100.4", 34000)
    assert resp.get("contact") == '"B" <sip:b@198.51.100.4:34000;transport=udp>;expires=60'
    assert not fix_contact(resp, "198.51.100.4", 34000)
    v6 = request("INVITE", "sip:x@example.com", contacts=["<sip:a@[fd00::5]>"])
    assert fix_contact(v6, "2001:db8::9", 5060)
    assert v6.get("contact") == "<sip:a@[2001:db8::9]:5060>"


def _b(n, nat=True, exp=2000.0):
    return Binding(aor=f"u{n}@x", contact=f"sip:u{n}@10.0.0.{n}", expires_at=exp,
                   received=f"sip:203.0.113.{n}:4000{n}", nat=nat, socket="udp:0.0.0.0:5060")


def test_keepalive_schedule_spreads_and_repeats():
    ks = KeepaliveSchedule(interval_s=20)
    ks.sync([_b(1), _b(2), _b(3, nat=False), _b(4, exp=50.0)], now=100.0)
    assert len(ks) == 2  # not NATed and expired bindings are not pinged
    first_round = ks.due(120.0)
    assert sorted(t.contact for t in first_round) == ["sip:u1@10.0.0.1", "sip:u2@10.0.0.2"]
    assert ks.due(120.0) == []
    nxt = ks.next_timer()
    assert nxt is not None and 120.0 < nxt <= 140.0
    assert len(ks.due(140.0)) == 2
    # after a long stall each target is pinged once, not once per missed round
    assert len(ks.due(1000.0)) == 2 and ks.due(1000.0) == []
    ks.sync([_b(1)], now=1000.0)
    assert len(ks) == 1


def test_options_ping():
    t = PingTarget("sip:203.0.113.1:40001", "udp", "udp:0.0.0.0:5060", "sip:u1@10.0.0.1")
    req = options_ping(t, local_uri="sip:ping@edge.example.net", via_sent_by="192.0.2.1:5060",
                       branch="z9hG4bKka1", call_id="ka-1", tag="t1")
    again = parse_message(req.to_bytes())
    assert again.method == "OPTIONS" and again.uri_text == "sip:u1@10.0.0.1"
    assert again.via.branch == "z9hG4bKka1" and again.cseq.method == "OPTIONS"
