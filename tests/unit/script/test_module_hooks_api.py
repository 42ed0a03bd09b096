"""The routing-API pieces the registrar/auth modules need: replies with repeated headers,
the receiving listener, branches with a destination and a Path. No I/O."""

from __future__ import annotations

import pytest

from sipedge.modules import ReplySpec
from sipedge.script.api import Reply, RequestMsg, TReply
from sipedge.sip.message import parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore, Source

SRC = Source("udp", "127.0.0.1", 5999, 0)
CORE = ProxyCore([LocalAddress(0, "udp", "127.0.0.1", 5060, "127.0.0.1", 5060)])


def msg():
    return parse_message(
        b"INVITE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n")


def test_reply_takes_a_list_of_pairs_with_repeated_names():
    m = RequestMsg(msg(), SRC, CORE)
    a = m.reply(401, "Unauthorized", [("WWW-Authenticate", 'Digest realm="a"'),
                                      ("WWW-Authenticate", 'Digest realm="b"')])
    assert isinstance(a, Reply)
    assert a.headers == (("WWW-Authenticate", 'Digest realm="a"'),
                         ("WWW-Authenticate", 'Digest realm="b"'))
    with pytest.raises(ValueError):
        m.reply(401, "x", [("Bad Name", "v")])


def test_reply_spec_unpacks_into_reply_and_t_reply():
    spec = ReplySpec(407, "Proxy Authentication Required", (("Proxy-Authenticate", "Digest x"),))
    m = RequestMsg(msg(), SRC, CORE)
    a = m.t_reply(*spec)
    assert isinstance(a, TReply) and a.status == 407
    assert a.headers == (("Proxy-Authenticate", "Digest x"),)
    assert RequestMsg(msg(), SRC, CORE).reply(*ReplySpec(480, "Temporarily Unavailable")).status == 480


def test_listener_name():
    assert RequestMsg(msg(), SRC, CORE, "udp:127.0.0.1:5060").listener == "udp:127.0.0.1:5060"
    assert RequestMsg(msg(), SRC, CORE).listener == ""


def test_append_branch_keeps_destination_and_path():
    m = RequestMsg(msg(), SRC, CORE)
    m.append_branch("sip:bob@10.0.0.2:5062", dst_uri="sip:198.51.100.7:40000",
                    path=["<sip:edge.example;lr>"], socket="udp:127.0.0.1:5060")
    m.append_branch("sip:bob@10.0.0.3")
    assert [str(u) for u in m.tm.branches] == ["sip:bob@10.0.0.2:5062", "sip:bob@10.0.0.3"]
    (dst1, path1, sock1), (dst2, path2, sock2) = m.tm.branch_opts
    assert str(dst1) == "sip:198.51.100.7:40000" and path1 == ("<sip:edge.example;lr>",)
    assert sock1 == "udp:127.0.0.1:5060"
    assert dst2 is None and path2 == () and sock2 is None
    with pytest.raises(ValueError):
        m.append_branch("sip:ok@x", dst_uri="not a uri")


def test_force_send_socket():
    m = RequestMsg(msg(), SRC, CORE)
    assert m.send_socket is None
    m.force_send_socket("UDP:127.0.0.1:5080")
    assert m.send_socket == "udp:127.0.0.1:5080" and m.raw.send_socket == m.send_socket
    m.force_send_socket("udp:::1:5080")  # IPv6 listeners are named like this too
    assert m.send_socket == "udp:::1:5080"
    for bad in ("udp:127.0.0.1", "127.0.0.1:5080", "udp:127.0.0.1:x"):
        with pytest.raises(ValueError):
            m.force_send_socket(bad)
