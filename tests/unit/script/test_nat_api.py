"""NAT helpers of the script API: nat_detected() and fix_nated_contact()."""

from sipedge.script.api import ReplyMsg, RequestMsg
from sipedge.sip.message import parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore, Source

CORE = ProxyCore([LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)])


def _req(contact: str, via: str = "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa"):
    return parse_message((
        f"INVITE sip:bob@192.0.2.10 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@x>;tag=1\r\n"
        f"To: <sip:bob@192.0.2.10>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\n"
        "Content-Length: 0\r\n\r\n").encode())


def test_request_from_behind_nat_gets_contact_fixed():
    msg = RequestMsg(_req("<sip:alice@10.0.0.5:5060>;expires=60"),
                     Source("udp", "198.51.100.7", 40123, 0), CORE)
    assert set(msg.nat_detected()) >= {"via_address", "contact_private"}
    assert msg.fix_nated_contact() is True
    assert msg.get_hf("contact") == "<sip:alice@198.51.100.7:40123>;expires=60"
    assert msg.fix_nated_contact() is False  # already pointing at the source


def test_request_not_behind_nat_is_left_alone():
    msg = RequestMsg(_req("<sip:alice@198.51.100.7:5060>",
                          via="SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKa"),
                     Source("udp", "198.51.100.7", 5060, 0), CORE)
    assert msg.nat_detected() == []


def test_reply_only_looks_at_contact():
    resp = parse_message((
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK0x1\r\n"
        "Via: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKb\r\nFrom: <sip:a@x>;tag=1\r\n"
        "To: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:bob@172.16.1.2:5060>\r\nContent-Length: 0\r\n\r\n").encode())
    msg = ReplyMsg(resp, Source("udp", "203.0.113.4", 6000, 0))
    assert msg.nat_detected() == ["contact_private"]
    assert msg.fix_nated_contact()
    assert msg.get_hf("contact") == "<sip:bob@203.0.113.4:6000>"
