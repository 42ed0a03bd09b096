"""ProxyCore: RFC 3261 section 16 rules without sockets (sans-IO)."""

from __future__ import annotations

import pytest

from sipedge.errors import RemoteProtocolError
from sipedge.sip.message import parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore, Source

UDP = LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)
TCP = LocalAddress(1, "tcp", "192.0.2.10", 5060, "192.0.2.10", 5060)
NAT = LocalAddress(2, "udp", "10.0.0.5", 5062, "203.0.113.7", 15062)
SRC = Source("udp", "198.51.100.1", 5070, 0)


def core(**kw) -> ProxyCore:
    return ProxyCore([UDP, TCP, NAT], domains=("example.com",), secret=b"k", **kw)


def req(method="INVITE", ruri="sip:bob@example.org", extra="", via="SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc",
        to="<sip:bob@example.org>"):
    return parse_message((
        f"{method} {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: <sip:alice@example.net>;tag=f1\r\n"
        f"To: {to}\r\nCall-ID: c1@x\r\nCSeq: 7 {method}\r\n{extra}Content-Length: 0\r\n\r\n").encode())


def test_forward_adds_via_record_route_and_decrements_max_forwards():
    c = core()
    m = req(extra="Max-Forwards: 10\r\n")
    assert c.check_request(m, SRC) is None
    hop = c.next_hop(m)
    assert (hop.host, hop.port, hop.transport) == ("example.org", 5060, "udp")
    out = parse_message(c.finalize_request(m, SRC, UDP))
    vias = out.get_all("via")
    assert vias[0].startswith("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK0x")
    assert vias[1] == "SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc"
    assert out.get("max-forwards") == "9"
    assert out.get_all("record-route") == ["<sip:192.0.2.10:5060;lr>"]


def test_max_forwards_added_when_missing_and_483_at_zero():
    c = core(max_forwards=42)
    m = req()
    c.check_request(m, SRC)
    assert parse_message(c.finalize_request(m, SRC, UDP)).get("max-forwards") == "42"
    reply = c.check_request(req(extra="Max-Forwards: 0\r\n"), SRC)
    assert reply.status == 483


def test_double_record_route_when_transport_changes():
    c = core()
    m = req()
    c.check_request(m, SRC)
    out = parse_message(c.finalize_request(m, SRC, TCP))
    assert out.get_all("record-route") == ["<sip:192.0.2.10:5060;transport=tcp;lr>",
                                           "<sip:192.0.2.10:5060;lr>"]


def test_advertised_address_used_in_via_and_record_route():
    c = core()
    m = req()
    src = Source("udp", "198.51.100.1", 5070, 2)
    c.check_request(m, src)
    out = parse_message(c.finalize_request(m, src, NAT))
    assert out.via.host == "203.0.113.7" and out.via.port == 15062
    assert out.get("record-route") == "<sip:203.0.113.7:15062;lr>"


def test_received_and_rport_stamped():
    c = core()
    m = req(via="SIP/2.0/UDP 10.1.1.1:5060;rport;branch=z9hG4bKx")
    c.check_request(m, SRC)
    assert m.via.received == "198.51.100.1" and m.via.rport == "5070"
    assert m.via.response_target() == ("198.51.100.1", 5070)


def test_branch_stable_for_retransmission_and_cancel_but_not_for_new_transaction():
    c = core()
    a, b = req(), req()
    cancel = req("CANCEL")
    other = req(via="SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKother")
    for m in (a, b, cancel, other):
        c.check_request(m, SRC)
    assert c.branch(a) == c.branch(b) == c.branch(cancel)
    assert c.branch(a) != c.branch(other)
    assert ProxyCore.worker_of_branch(core(worker=3).branch(a)) == 3


def test_loose_route_removes_our_route_entries():
    c = core()
    m = req(extra="Route: <sip:192.0.2.10:5060;transport=tcp;lr>, <sip:192.0.2.10;lr>, "
                  "<sip:p2.example.org;lr>\r\n", to="<sip:bob@example.org>;tag=t")
    c.check_request(m, SRC)
    assert m.loose_routed
    assert m.get_all("route") == ["<sip:p2.example.org;lr>"]
    assert c.next_hop(m).host == "p2.example.org"
    assert m.uri_text == "sip:bob@example.org"


def test_strict_router_put_our_uri_in_request_uri():
    c = core()
    m = req(ruri="sip:192.0.2.10:5060;lr", extra="Route: <sip:bob@198.51.100.9>\r\n",
            to="<sip:bob@example.org>;tag=t")
    c.check_request(m, SRC)
    assert m.uri_text == "sip:bob@198.51.100.9"
    assert not m.has("route")


def test_next_hop_is_strict_router():
    c = core()
    m = req(extra="Route: <sip:old.example.org>, <sip:p3.example.org;lr>\r\n",
            to="<sip:bob@example.org>;tag=t")
    c.check_request(m, SRC)
    hop = c.next_hop(m)
    assert hop.host == "old.example.org"
    assert m.uri_text == "sip:old.example.org"
    assert m.get_all("route") == ["<sip:p3.example.org;lr>", "<sip:bob@example.org>"]


def test_loop_detected_when_the_same_request_returns():
    c = core()
    m = req()
    c.check_request(m, SRC)
    looped = parse_message(c.finalize_request(m, SRC, UDP))
    assert c.check_request(looped, Source("udp", "192.0.2.10", 5060, 0)).status == 482
    # a spiral (Request-URI changed downstream) is not a loop
    spiral = parse_message(c.finalize_request(req(), SRC, UDP))
    spiral.uri = "sip:carol@example.org"
    assert c.check_request(spiral, Source("udp", "192.0.2.10", 5060, 0)) is None


def test_416_420_and_cseq_checks():
    c = core()
    assert c.check_request(req(ruri="http://example.org/"), SRC).status == 416
    r = c.check_request(req(extra="Proxy-Require: foo, bar\r\n"), SRC)
    assert r.status == 420 and r.get_all("unsupported") == ["foo", "bar"]
    with pytest.raises(RemoteProtocolError):
        c.check_request(parse_message(req().to_bytes().replace(b"CSeq: 7 INVITE",
                                                               b"CSeq: 7 BYE")), SRC)


def test_options_to_self_and_stateless_reply_tags():
    c = core()
    m = req("OPTIONS", "sip:example.com")
    c.check_request(m, SRC)
    assert c.is_options_to_self(m)
    r = c.options_reply(m)
    assert r.status == 200 and "INVITE" in r.get("allow")
    assert r.to.tag == c.to_tag(m)  # deterministic: a retransmission gets the same tag
    assert not c.is_options_to_self(req("OPTIONS", "sip:bob@example.org"))


def test_response_routed_by_second_via_and_foreign_via_discarded():
    c = core()
    m = req(via="SIP/2.0/UDP 198.51.100.1:5070;rport;branch=z9hG4bKabc")
    c.check_request(m, SRC)
    fwd = parse_message(c.finalize_request(m, SRC, UDP))
    lines = [f"Via: {v}" for v in fwd.get_all("via")]
    resp = parse_message(("SIP/2.0 180 Ringing\r\n" + "\r\n".join(lines) +
                          "\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c1@x\r\n"
                          "CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n").encode())
    route = c.route_response(resp)
    assert (route.transport, route.ip, route.port) == ("udp", "198.51.100.1", 5070)
    assert parse_message(route.data).get_all("via")[0].startswith("SIP/2.0/UDP 198.51.100.1:5070")
    foreign = parse_message(route.data)
    assert c.route_response(foreign) is None


# ------------------------------------------------------------------ issue 14: myself, early 400s

@pytest.mark.parametrize("ruri, mine", [
    ("sip:192.0.2.10", True),  # default port 5060: our UDP and TCP listener
    ("sip:192.0.2.10:5060", True),
    ("sip:192.0.2.10:5060;transport=tcp", True),
    ("sip:192.0.2.10:5060;transport=tls", False),  # no TLS listener there
    ("sip:192.0.2.10:5099", False),  # our address, another port: not us (Kamailio myself)
    ("sip:192.0.2.10:5062", False),  # a port of ours, on another address
    ("sip:203.0.113.7:15062", True),  # advertised address and port
    ("sip:10.0.0.5:5062", True),  # bound address and port
    ("sip:203.0.113.7", False),  # advertised address, default port
    ("sips:192.0.2.10", False),  # 5061/tls: no such listener
    ("sip:example.com:7777", True),  # a configured domain is an alias on any port
])
def test_options_shortcut_only_for_myself(ruri, mine):
    c = core()
    m = req("OPTIONS", ruri)
    c.check_request(m, SRC)
    assert c.is_options_to_self(m) is mine
    m = req("OPTIONS", ruri, "Max-Forwards: 0\r\n")
    assert c.check_request(m, SRC).status == (200 if mine else 483)


@pytest.mark.parametrize("header, value", [
    ("From", '"Alice <sip:alice@example.net>;tag=1'),  # unbalanced quote
    ("From", "<sip:alice@example.net;tag=1"),  # no '>'
    ("To", "Bob <sip:bob@example.org> junk"),
    ("To", "sip:bob@exa mple.org"),
])
def test_malformed_from_to_is_a_400_before_routing(header, value):
    raw = req().to_bytes().decode()
    line = next(x for x in raw.split("\r\n") if x.startswith(header + ":"))
    m = parse_message(raw.replace(line, f"{header}: {value}").encode())
    with pytest.raises(RemoteProtocolError) as info:
        core().check_request(m, SRC)
    assert info.value.status_hint == 400 and info.value.reason


def test_to_tag_and_reply_with_empty_via_list_elements():
    c = core()
    m = req(via="SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc, , SIP/2.0/UDP 192.0.2.2")
    with pytest.raises(RemoteProtocolError):
        c.check_request(m, SRC)
    r = c.make_reply(m, 400, "Empty list element")  # must not raise
    assert r.status == 400 and r.to.tag == c.to_tag(m)


def test_salvage_answers_other_versions_and_keeps_first_duplicate():
    from sipedge.sip.proxy import salvage_request

    raw = req().to_bytes()
    s = salvage_request(raw.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1))
    assert s is not None and s.method == "INVITE"
    dup = raw.replace(b"Call-ID: c1@x\r\n", b"Call-ID: c1@x\r\nCall-ID: c2@x\r\n")
    s = salvage_request(dup)
    assert s.get_all("call-id") == ["c1@x"]
    holes = raw.replace(b"Via: SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc",
                        b"Via: SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc, ,")
    s = salvage_request(holes)
    assert s.get_all("via") == ["SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc"]


@pytest.mark.parametrize("config_rr, script_rr, method, to, want", [
    (False, None, "INVITE", "<sip:bob@example.org>", 0),
    (False, True, "INVITE", "<sip:bob@example.org>", 1),  # record_route() in the script
    (False, True, "SUBSCRIBE", "<sip:bob@example.org>", 1),
    (True, None, "INVITE", "<sip:bob@example.org>", 1),
    (True, False, "INVITE", "<sip:bob@example.org>", 0),  # record_route(False)
    (True, None, "INVITE", "<sip:bob@example.org>;tag=t", 0),  # in-dialog: not by config
    (False, True, "INVITE", "<sip:bob@example.org>;tag=t", 1),  # the script asked
])
def test_record_route_per_request_from_the_script(config_rr, script_rr, method, to, want):
    from sipedge.script.api import RequestMsg

    c = core(record_route=config_rr)
    m = req(method, to=to)
    c.check_request(m, SRC)
    if script_rr is not None:
        RequestMsg(m, SRC, c).record_route(script_rr)
    out = parse_message(c.finalize_request(m, SRC, UDP))
    assert len(out.get_all("record-route")) == want


def test_wildcard_listener_never_puts_0000_in_record_route():
    """Issue 11: `sip:0.0.0.0:5060;lr` in a Record-Route. The outbound listener is made
    concrete by the I/O layer; the inbound one (when it is another socket) through the
    injected `concretize` (the address the sender reaches us on)."""
    wu = LocalAddress(0, "udp", "0.0.0.0", 5060, "0.0.0.0", 5060)
    wt = LocalAddress(1, "tcp", "0.0.0.0", 5060, "0.0.0.0", 5060)
    c = ProxyCore([wu, wt], secret=b"k")
    c.concretize = lambda la, ip: LocalAddress(la.index, la.proto, la.ip, la.port,
                                               "192.0.2.10", la.adv_port)
    out_udp = LocalAddress(0, "udp", "0.0.0.0", 5060, "192.0.2.10", 5060)  # same socket
    m = req()
    c.check_request(m, SRC)
    rr = parse_message(c.finalize_request(m, SRC, out_udp)).get_all("record-route")
    assert rr == ["<sip:192.0.2.10:5060;lr>"]  # one socket: one entry, never 0.0.0.0
    out_tcp = LocalAddress(1, "tcp", "0.0.0.0", 5060, "192.0.2.10", 5060)
    m = req()
    c.check_request(m, SRC)
    rr = parse_message(c.finalize_request(m, SRC, out_tcp)).get_all("record-route")
    assert rr == ["<sip:192.0.2.10:5060;transport=tcp;lr>", "<sip:192.0.2.10:5060;lr>"]
