"""The transaction part of the routing API (t_relay & co): what it records. No I/O."""

from __future__ import annotations

import pytest

from sipedge.script.api import Forward, Relay, ReplyMsg, RequestMsg, TmState, TReply
from sipedge.sip.message import parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore, Source

SRC = Source("udp", "127.0.0.1", 5999, 0)
CORE = ProxyCore([LocalAddress(0, "udp", "127.0.0.1", 5060, "127.0.0.1", 5060)])


def msg(first="INVITE sip:bob@example.com SIP/2.0"):
    return parse_message(
        f"{first}\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx\r\n"
        "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n".encode())


def test_t_relay_records_relay_with_destination_and_branches():
    m = RequestMsg(msg(), SRC, CORE)
    m.append_branch("sip:carol@10.0.0.2")
    m.append_branch()  # the current R-URI
    a = m.t_relay("sip:10.0.0.1:5070")
    assert isinstance(a, Relay) and str(a.uri) == "sip:10.0.0.1:5070"
    assert [str(u) for u in m.tm.branches] == ["sip:carol@10.0.0.2", "sip:bob@example.com"]
    m2 = RequestMsg(msg(), SRC, CORE)
    m2.set_dst_uri("sip:10.0.0.9")
    assert str(m2.t_relay().uri) == "sip:10.0.0.9"


def test_route_names_are_validated():
    m = RequestMsg(msg(), SRC, CORE)
    m.t_on_failure("failover")
    m.t_on_reply("replies")
    m.t_on_branch("branch_1")
    assert m.tm.routes == {"failure": "failover", "reply": "replies", "branch": "branch_1"}
    with pytest.raises(ValueError):
        m.t_on_failure("not a name")
    with pytest.raises(ValueError):
        m.t_on_reply(lambda r: None)  # type: ignore[arg-type]


def test_t_reply_is_stateful_and_validated():
    m = RequestMsg(msg(), SRC, CORE)
    a = m.t_reply(486, "Busy Here", {"Retry-After": "30"})
    assert m.actions == [a] and isinstance(a, TReply)
    assert a.headers == (("Retry-After", "30"),)
    with pytest.raises(ValueError):
        m.t_reply(99, "x")


def test_failure_route_view_of_winning_reply():
    m = RequestMsg(msg(), SRC, CORE)
    assert not m.t_check_status("4[0-9][0-9]") and m.reply_status is None
    assert not m.t_is_canceled()
    reply = parse_message(b"SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
                          b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\n"
                          b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    st = m.tm
    st.reply = ReplyMsg(reply, SRC)
    st.canceled = True
    assert m.t_check_status("404") and m.t_check_status("40[0-9]|5..")
    assert not m.t_check_status("40")  # whole code only
    assert m.reply_status == 404 and m.winning_reply.reason == "Not Found"
    assert m.t_is_canceled()
    assert ReplyMsg(reply, SRC).t_check_status("4..")


def test_stateless_api_unchanged_and_pays_nothing():
    m = RequestMsg(msg(), SRC, CORE)
    a = m.forward("sip:10.0.0.1")
    assert isinstance(a, Forward)
    assert m._tm is None and "_tm" not in vars(m)  # no transaction state was created
    assert isinstance(TmState(), TmState)


def test_vars_is_one_dict_per_transaction_state():
    m = RequestMsg(msg(), SRC, CORE)
    assert m._tm is None  # nothing until used
    m.vars["dispatcher.selection"] = 1
    assert m.tm.vars == {"dispatcher.selection": 1} and m.vars is m.tm.vars
    assert RequestMsg(msg(), SRC, CORE).vars == {}
