"""The byte path (ProxyCore.forward_datagram) against the full path, differentially.

The full path is what the worker does for a UDP request when no script, module or
transaction reads it: parse_message, check_request, the route table, next_hop,
literal_target, the listener choice, finalize_request. For every input the byte path must
either decline (None: the worker then takes the full path) or produce exactly what the full
path sends: the same bytes, to the same address, from the same listener. Inputs: the parser
corpus, requests shaped like the proxy rule cases (tests/unit/proxy/test_proxy_core.py),
and seeded mutations of both (those are where a malformed request must not slip through).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from sipedge.errors import RemoteProtocolError
from sipedge.resolve.sip import literal_target
from sipedge.script.api import Reply, RequestMsg, RouteTable
from sipedge.sip.message import Request, parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore, Source
from sipedge.sip.uri import parse_uri

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sip"))
from sip_corpus import CORPUS, DELIMITERS, mutations  # noqa: E402 - corpus and mutations
UDP = LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)
TCP = LocalAddress(1, "tcp", "192.0.2.10", 5060, "192.0.2.10", 5060)
UDP6 = LocalAddress(2, "udp", "2001:db8::10", 5060, "2001:db8::10", 5060)
SRC = Source("udp", "198.51.100.1", 5070, 0)
SRC_NAT = Source("udp", "203.0.113.9", 40001, 0)  # Via says otherwise: received/rport
SRC6 = Source("udp", "2001:db8::1", 5070, 2)


def _core() -> ProxyCore:
    return ProxyCore([UDP, TCP, UDP6], domains=("example.com",), secret=b"k", worker=1)


TABLES = {
    "default": RouteTable([], parse_uri("sip:192.0.2.99:5080")),
    "rules": RouteTable([("example.org", "", parse_uri("sip:198.51.100.7:5090")),
                         ("", "+49", parse_uri("sip:[2001:db8::99]:5062")),
                         ("", "tcp", parse_uri("sip:192.0.2.98;transport=tcp"))], None),
    "none": RouteTable([], None),
}


def _pick(core: ProxyCore, proto: str, ip: str, src: Source) -> LocalAddress | None:
    """Worker._pick_listener without a forced socket and without wildcards."""
    fam = ":" in ip
    la = core.locals[src.listener]
    if la.proto == proto and (":" in la.ip) == fam:
        return la
    return next((la for la in core.locals if la.proto == proto and (":" in la.ip) == fam), None)


def full_path(core: ProxyCore, table: RouteTable, data: bytes, src: Source):
    try:
        msg = parse_message(data)
    except RemoteProtocolError as exc:
        return ("rejected", exc.status_hint)
    if not isinstance(msg, Request):
        return ("response",)
    try:
        reply = core.check_request(msg, src)
        if reply is not None:
            return ("reply", reply.status)
        if core.is_options_to_self(msg):
            return ("reply", 200)
        ctx = RequestMsg(msg, src, core, "udp:192.0.2.10:5060")
        table.request_route(ctx)
        action = ctx.actions[0]
        if isinstance(action, Reply):
            return ("reply", action.status)
        hop = core.next_hop(msg, action.uri)
        target = literal_target(hop.uri, hop.host)
        if target is None:
            return ("dns", hop.host)
        out = _pick(core, target.transport, target.ip, src)
        if out is None:
            return ("no listener", target.transport)
        data = core.finalize_request(msg, src, out)
        return (data, target.ip, target.port, out.index, msg.method)
    except RemoteProtocolError as exc:
        return ("rejected", exc.status_hint)


def _request(method="INVITE", ruri="sip:bob@example.org", *, via=None, extra="",
             to="<sip:bob@example.org>", mf="Max-Forwards: 70\r\n", cseq=None,
             body=b"", cl=None, frm="<sip:alice@example.net>;tag=f1") -> bytes:
    via = via or "SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKabc"
    cl = f"Content-Length: {len(body)}\r\n" if cl is None else cl
    head = (f"{method} {ruri} SIP/2.0\r\nVia: {via}\r\n{mf}From: {frm}\r\nTo: {to}\r\n"
            f"Call-ID: c1@x\r\nCSeq: {cseq or '7 ' + method}\r\n{extra}{cl}\r\n")
    return head.encode() + body


OURS = "<sip:192.0.2.10:5060;lr>"
DIALOG = "<sip:bob@example.org>;tag=t9"
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"

CASES = {
    "invite": _request(body=SDP),
    "invite_no_max_forwards": _request(mf=""),
    "invite_max_forwards_1": _request(mf="Max-Forwards: 1\r\n"),
    "invite_max_forwards_0": _request(mf="Max-Forwards: 0\r\n"),
    "invite_max_forwards_leading_zero": _request(mf="Max-Forwards: 007\r\n"),
    "invite_rport": _request(via="SIP/2.0/UDP 198.51.100.1:5070;rport;branch=z9hG4bKr"),
    "invite_via_host_name": _request(via="SIP/2.0/UDP ua.example.net;branch=z9hG4bKn"),
    "invite_two_via_lines": _request(extra="Via: SIP/2.0/UDP 198.51.100.2;branch=z9hG4bKup\r\n"),
    "invite_via_list": _request(via="SIP/2.0/UDP 198.51.100.1:5070;branch=z9hG4bKa, "
                                    "SIP/2.0/UDP 198.51.100.2;branch=z9hG4bKb"),
    "invite_our_via": _request(extra="Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1x\r\n"),
    "invite_no_cookie": _request(via="SIP/2.0/UDP 198.51.100.1:5070;branch=1234"),
    "invite_compact": _request(body=SDP).replace(b"\r\nVia:", b"\r\nv:").replace(
        b"\r\nFrom:", b"\r\nf:").replace(b"\r\nTo:", b"\r\nt:").replace(
        b"\r\nCall-ID:", b"\r\ni:").replace(b"\r\nContent-Length:", b"\r\nl:"),
    "invite_lower_names": _request().replace(b"\r\nVia:", b"\r\nVIA:").replace(
        b"Max-Forwards", b"max-forwards"),
    "invite_to_before_from": _request(frm="<sip:alice@example.net>;tag=f1").replace(
        b"From: <sip:alice@example.net>;tag=f1\r\nTo: <sip:bob@example.org>",
        b"To: <sip:bob@example.org>\r\nFrom: <sip:alice@example.net>;tag=f1"),
    "invite_record_route_present": _request(extra="Record-Route: <sip:198.51.100.50;lr>\r\n"),
    "invite_no_content_length": _request(body=SDP, cl=""),
    "invite_content_length_short": _request(body=SDP, cl="Content-Length: 10\r\n"),  # cut
    "invite_content_length_long": _request(body=SDP, cl="Content-Length: 999\r\n"),  # 400
    "invite_content_length_padded": _request(body=SDP, cl=f"Content-Length:   {len(SDP)}\r\n"),
    "invite_content_length_blank": _request(cl="Content-Length:    \r\n"),
    "invite_content_length_not_last": _request(body=SDP, cl="").replace(
        b"CSeq:", b"Content-Length: %d\r\nCSeq:" % len(SDP)),
    "invite_proxy_require": _request(extra="Proxy-Require: foo\r\n"),
    "invite_proxy_authorization": _request(extra="Proxy-Authorization: Digest x=1\r\n"),
    "invite_cseq_mismatch": _request(cseq="7 BYE"),
    "invite_bad_from": _request(frm="<sip:alice@example.net"),
    "invite_tel": _request(ruri="tel:+4930123"),
    "invite_e164_user": _request(ruri="sip:+4930123@example.net"),
    "invite_tcp_rule": _request(ruri="sip:tcp1@example.net"),
    "invite_mailto": _request(ruri="mailto:bob@example.org"),
    "invite_to_us_no_default": _request(ruri="sip:bob@192.0.2.10"),
    "invite_strict_router_ruri": _request(ruri="sip:192.0.2.10;lr",
                                          extra="Route: <sip:198.51.100.7>\r\n"),
    "invite_ipv6_to": _request(ruri="sip:bob@[2001:db8::77]:5070"),
    "invite_extension_header": _request(extra="X-Thing: a: b ; c\r\nSubject: hi there\r\n"),
    "invite_tab_in_value": _request(extra="Subject: a\tb\r\n"),
    # the Request-URI ends in ":" (a valid parameter value), so the request line holds ": ",
    # and a header line without any colon whose text is a known header name
    "invite_colon_uri_and_line_without_colon": _request(
        ruri="sip:bob@example.org;p=a:", extra="Subject\r\n"),
    "message": _request("MESSAGE", body=b"hello"),
    "register": _request("REGISTER", "sip:example.com",
                         extra="Contact: <sip:alice@198.51.100.1:5070>\r\n"),
    "options": _request("OPTIONS"),
    "cancel": _request("CANCEL"),
    "ack_route_ours": _request("ACK", "sip:bob@198.51.100.7:5090", to=DIALOG,
                               extra=f"Route: {OURS}\r\n", cseq="7 ACK"),
    "ack_for_invite_cseq": _request("ACK", "sip:bob@198.51.100.7", to=DIALOG,
                                    cseq="7 INVITE"),
    "bye_route_ours": _request("BYE", "sip:bob@198.51.100.7:5090", to=DIALOG,
                               extra=f"Route: {OURS}\r\n"),
    "bye_route_ours_twice": _request("BYE", "sip:bob@198.51.100.7:5090", to=DIALOG,
                                     extra=f"Route: {OURS}\r\nRoute: <sip:192.0.2.10;lr>\r\n"),
    "bye_route_ours_three": _request(
        "BYE", "sip:bob@198.51.100.7:5090", to=DIALOG,
        extra=f"Route: {OURS}\r\nRoute: {OURS}\r\nRoute: {OURS}\r\n"),
    "bye_route_ours_then_next": _request(
        "BYE", "sip:bob@198.51.100.7:5090", to=DIALOG,
        extra=f"Route: {OURS}\r\nRoute: <sip:198.51.100.20:5062;lr>\r\n"),
    "bye_route_next_strict": _request(
        "BYE", "sip:bob@198.51.100.7:5090", to=DIALOG,
        extra=f"Route: {OURS}\r\nRoute: <sip:198.51.100.20:5062>\r\n"),
    "bye_route_name": _request("BYE", "sip:bob@198.51.100.7", to=DIALOG,
                               extra="Route: <sip:proxy.example.net;lr>\r\n"),
    "bye_route_list": _request("BYE", "sip:bob@198.51.100.7", to=DIALOG,
                               extra=f"Route: {OURS}, <sip:198.51.100.20;lr>\r\n"),
    "bye_route_maddr": _request("BYE", "sip:bob@198.51.100.7", to=DIALOG,
                                extra="Route: <sip:x.example.net;maddr=198.51.100.21;lr>\r\n"),
    "bye_no_route_ruri_ip": _request("BYE", "sip:bob@198.51.100.7:5090", to=DIALOG),
    "bye_no_route_ruri_us": _request("BYE", "sip:bob@192.0.2.10", to=DIALOG),
    "bye_no_route_ruri_tcp": _request("BYE", "sip:bob@198.51.100.7;transport=tcp",
                                      to=DIALOG),
}


# inserts for the byte path: its line and Route rules besides SIP's delimiters
INSERTS = DELIMITERS + (b"\t", b"\r\n ", b"\n", b"\r", b": ", b"\xc3\xa9", b";lr", b"0", b"Via: ",
                        b"Route: " + OURS.encode())


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    return mutations(data, rng, count, max_ops=3, inserts=INSERTS)


def _inputs() -> list[bytes]:
    rng = random.Random(15)
    corpus = [p.read_bytes() for p in sorted(CORPUS.glob("*/*.sip"))]
    out = []
    for data in corpus:
        out += [data, *_mutations(data, rng, 8)]
    for data in CASES.values():
        out += [data, *_mutations(data, rng, 40)]
    return out


INPUTS = _inputs()


def _compare(table: RouteTable, src: Source, inputs: list[bytes]) -> int:
    taken = 0
    for data in inputs:
        fast = _core().forward_datagram(data, src, table.destination)
        if fast is None:
            continue
        taken += 1
        full = full_path(_core(), table, data, src)
        assert fast == full, (f"input {data!r}\nbyte path: {fast!r}\nfull path: {full!r}")
    return taken


@pytest.mark.parametrize("table", sorted(TABLES))
@pytest.mark.parametrize("src", [SRC, SRC_NAT, SRC6], ids=["src", "nat", "ipv6"])
def test_byte_path_sends_what_the_full_path_sends(table, src):
    taken = _compare(TABLES[table], src, INPUTS)
    if src is not SRC6:  # the v6 source reaches v4 next hops only through the full path
        assert taken > 20, taken


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_cases(name):
    """Each proxy rule case alone: the same result, or a decline."""
    for table in TABLES.values():
        for src in (SRC, SRC_NAT, SRC6):
            _compare(table, src, [CASES[name]])


@pytest.mark.parametrize("name", [
    "invite", "invite_no_max_forwards", "invite_rport", "invite_via_host_name",
    "invite_two_via_lines", "invite_compact", "invite_to_before_from",
    "invite_record_route_present", "invite_no_content_length", "invite_content_length_short",
    "invite_content_length_padded",
    "invite_content_length_not_last", "invite_proxy_authorization", "message", "register",
    "ack_route_ours", "ack_for_invite_cseq", "bye_route_ours", "bye_route_ours_twice",
    "bye_route_ours_three", "bye_route_ours_then_next", "bye_route_maddr",
    "bye_no_route_ruri_ip", "invite_extension_header", "invite_tab_in_value",
])
def test_plain_requests_take_the_byte_path(name):
    table = TABLES["default"] if not name.startswith(("bye", "ack")) else TABLES["none"]
    assert _core().forward_datagram(CASES[name], SRC_NAT, table.destination) is not None


@pytest.mark.parametrize("name", [
    "invite_max_forwards_0", "invite_via_list", "invite_our_via", "invite_no_cookie",
    "invite_proxy_require", "invite_cseq_mismatch", "invite_bad_from", "invite_mailto",
    "invite_content_length_long", "invite_content_length_blank", "invite_strict_router_ruri",
    "invite_colon_uri_and_line_without_colon",
    "options", "cancel",
    "bye_route_next_strict", "bye_route_name", "bye_route_list", "bye_no_route_ruri_tcp",
])
def test_unusual_requests_take_the_full_path(name):
    parse_message(CASES["invite_extension_header"])  # header names known (the key cache)
    for table in TABLES.values():
        assert _core().forward_datagram(CASES[name], SRC_NAT, table.destination) is None


def test_branch_is_the_full_paths_for_retransmission_and_non_2xx_ack():
    """16.11: the INVITE's retransmission and its non-2xx ACK get the INVITE's branch,
    whichever path forwarded each (the ACK of a non-2xx has the INVITE's branch and CSeq
    number; its To carries the tag of the reply)."""
    table = TABLES["default"]
    inv = CASES["invite"]
    fast = _core().forward_datagram(inv, SRC, table.destination)
    again = _core().forward_datagram(inv, SRC, table.destination)
    full = full_path(_core(), table, inv, SRC)
    assert fast == again == full
    ack = _request("ACK", cseq="7 ACK")
    fast_ack = _core().forward_datagram(ack, SRC, table.destination)
    assert fast_ack == full_path(_core(), table, ack, SRC)
    cancel = _request("CANCEL")
    assert _core().forward_datagram(cancel, SRC, table.destination) is None
    full_cancel = full_path(_core(), table, cancel, SRC)

    def branch(data: bytes) -> str:
        return parse_message(data).via.branch or ""
    assert branch(full_cancel[0]) == branch(fast[0]) == branch(fast_ack[0])
