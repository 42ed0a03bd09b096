"""SIP OPTIONS probe wire format and the probe combination rule (no sockets)."""

from sipedge.appliance.fakes import FakeProbe
from sipedge.appliance.health import CombinedProbe, SipOptionsProbe, build_options, parse_reply
from sipedge.appliance.ports import HealthReport


def test_options_request_is_well_formed():
    msg = build_options(("127.0.0.1", 5060), ("127.0.0.1", 40000), "z9hG4bK-sv1", "cid@x", "t1")
    head, body = msg.split(b"\r\n\r\n")
    assert body == b""
    lines = head.decode().split("\r\n")
    assert lines[0] == "OPTIONS sip:127.0.0.1:5060 SIP/2.0"
    assert "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-sv1;rport" in lines
    assert "Call-ID: cid@x" in lines and "CSeq: 1 OPTIONS" in lines
    assert "Content-Length: 0" in lines and "Max-Forwards: 70" in lines


def test_options_ipv6_brackets():
    msg = build_options(("::1", 5060), ("::1", 4000, 0, 0), "b", "c", "t").decode()
    assert msg.startswith("OPTIONS sip:[::1]:5060 SIP/2.0\r\n")
    assert "SIP/2.0/UDP [::1]:4000;" in msg


def test_parse_reply_matches_call_id_and_compact_form():
    ok = b"SIP/2.0 200 OK\r\nVia: x\r\nCall-ID: abc\r\nContent-Length: 0\r\n\r\n"
    assert parse_reply(ok, "abc") == 200
    assert parse_reply(ok, "other") is None
    compact = b"SIP/2.0 503 Busy\r\ni: abc\r\n\r\n"
    assert parse_reply(compact, "abc") == 503
    assert parse_reply(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: abc\r\n\r\n", "abc") is None
    assert parse_reply(b"\xff\xfe garbage", "abc") is None
    assert parse_reply(b"", "abc") is None


def test_wildcard_listener_is_probed_on_loopback():
    assert SipOptionsProbe("0.0.0.0", 5060).target == ("127.0.0.1", 5060)
    assert SipOptionsProbe("::", 5060).target == ("::1", 5060)


async def test_combined_probe():
    hb, op = FakeProbe(HealthReport(True, "", 2, 2, 3.0)), FakeProbe(HealthReport(True))
    assert (await CombinedProbe(hb, op).probe()).ok
    op.report = HealthReport(False, "OPTIONS: no reply")
    r = await CombinedProbe(hb, op).probe()
    assert not r.ok and r.detail == "OPTIONS: no reply" and r.loop_lag_ms == 3.0
    hb.report = HealthReport(False, "core.health: refused")
    count = op.count
    r = await CombinedProbe(hb, op).probe()
    assert r.detail == "core.health: refused" and op.count == count  # no OPTIONS when dead
    assert (await CombinedProbe(FakeProbe(), None).probe()).ok
