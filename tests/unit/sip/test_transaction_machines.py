"""The four RFC 3261 17 machines (+ RFC 6026), driven by `now` and get_timer() (aioquic
style): no sockets, no clock. Loss scenarios drop what a transaction sends and check the
retransmission schedule."""

from __future__ import annotations

import pytest

from sipedge.errors import LocalProtocolError
from sipedge.sip.message import parse_message
from sipedge.sip.transaction import (
    ICT_TRANSITIONS, INITIAL_STATE, IST_TRANSITIONS, NICT_TRANSITIONS, NIST_TRANSITIONS,
    AckReceived, ClientTransaction, Input, Kind, ResponseReceived, ServerTransaction, State,
    TimerValues, TransactionTerminated, TransactionTimedOut, build_ack, build_cancel,
    client_key, response_key, server_key)

T = TimerValues(t1=0.5, t2=4.0, t4=5.0, timer_d=32.0)
BRANCH = "z9hG4bK0xt1.abc"


def req(method="INVITE", branch=BRANCH, cseq_method=None, to_tag=""):
    return parse_message(
        f"{method} sip:bob@127.0.0.1:5080 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKcaller\r\n"
        "Route: <sip:10.0.0.9;lr>\r\n"
        "Max-Forwards: 69\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        f"To: <sip:bob@127.0.0.1>{to_tag}\r\n"
        "Call-ID: c1@test\r\n"
        f"CSeq: 7 {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n".encode())


def resp(status, method="INVITE", branch=BRANCH, reason="X"):
    return parse_message(
        f"SIP/2.0 {status} {reason}\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKcaller\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@127.0.0.1>;tag=b1\r\n"
        "Call-ID: c1@test\r\n"
        f"CSeq: 7 {method}\r\n"
        "Content-Length: 0\r\n\r\n".encode())


def events(txn):
    out = []
    while (ev := txn.next_event()) is not None:
        out.append(ev)
    return out


def client(method="INVITE", reliable=False, now=0.0):
    r = req(method)
    return ClientTransaction(r, r.to_bytes(), now, reliable=reliable, timers=T)


def run_timers(txn, until):
    """Fire every timer up to `until`; returns the times at which something was sent."""
    sent = []
    while (t := txn.get_timer()) is not None and t <= until:
        txn.handle_timer(t)
        if txn.data_to_send():
            sent.append(round(t, 6))
    return sent


# -- tables ----------------------------------------------------------------------------------

@pytest.mark.parametrize("table,kind", [(ICT_TRANSITIONS, Kind.ICT), (NICT_TRANSITIONS, Kind.NICT),
                                        (IST_TRANSITIONS, Kind.IST), (NIST_TRANSITIONS, Kind.NIST)])
def test_network_input_has_an_entry_in_every_state(table, kind):
    states = {s for s, _ in table}
    inputs = ((Input.RCV_1XX, Input.RCV_2XX, Input.RCV_FINAL) if kind in (Kind.ICT, Kind.NICT)
              else (Input.RCV_REQUEST, Input.RCV_ACK))
    assert INITIAL_STATE[kind] in states
    for s in states:
        for i in inputs:
            assert (s, i) in table, (kind, s, i)


def test_illegal_tu_input_raises_local_protocol_error():
    st = ServerTransaction(req("OPTIONS"), 0.0, timers=T)
    st.send_response(200, b"200", 0.0)
    with pytest.raises(LocalProtocolError):
        st.send_response(404, b"404", 0.1)
    ist = ServerTransaction(req(), 0.0, timers=T)
    ist.send_response(486, b"486", 0.0)
    with pytest.raises(LocalProtocolError):
        ist.send_response(180, b"180", 0.1)


def test_ack_never_creates_a_transaction():
    with pytest.raises(LocalProtocolError):
        ServerTransaction(req("ACK", cseq_method="ACK"), 0.0)
    with pytest.raises(LocalProtocolError):
        client("ACK")


# -- matching ------------------------------------------------------------------------------------

def test_matching_keys():
    invite = req()
    assert server_key(req("ACK", cseq_method="INVITE")) == server_key(invite)
    cancel = req("CANCEL")
    assert server_key(cancel) != server_key(invite)
    assert server_key(cancel, "INVITE") == server_key(invite)
    assert response_key(resp(180)) == client_key(BRANCH, "INVITE")
    assert response_key(resp(200, "CANCEL")) == client_key(BRANCH, "CANCEL")
    other = req(branch="z9hG4bKother")
    assert server_key(other) != server_key(invite)


# -- INVITE client transaction ------------------------------------------------------------------

def test_ict_timer_a_doubles_without_cap_until_timer_b():
    ct = client()
    assert ct.data_to_send() == [ct.data]
    assert ct.state is State.CALLING
    # request lost every time: A at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5; B at 32
    assert run_timers(ct, 40) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert ct.state is State.TERMINATED
    evs = events(ct)
    assert evs == [TransactionTimedOut("B"), TransactionTerminated()]


def test_ict_reliable_has_no_timer_a():
    ct = client(reliable=True)
    ct.data_to_send()
    assert ct.get_timer() == pytest.approx(32.0)
    assert run_timers(ct, 40) == []
    assert ct.state is State.TERMINATED


def test_ict_loss_then_provisional_stops_retransmissions():
    ct = client()
    ct.data_to_send()
    assert run_timers(ct, 2.0) == [0.5, 1.5]  # two copies lost
    ct.receive_response(resp(180), 2.2)
    assert ct.state is State.PROCEEDING
    assert [type(e) for e in events(ct)] == [ResponseReceived]
    assert ct.get_timer() is None  # Proceeding: no A, no B (the TU's fr_inv timer rules)


def test_ict_non_2xx_is_acked_hop_by_hop_and_absorbed():
    ct = client()
    ct.data_to_send()
    ct.receive_response(resp(486), 0.1)
    assert ct.state is State.COMPLETED
    (ack,) = ct.data_to_send()
    a = parse_message(ack)
    assert a.method == "ACK" and a.uri_text == "sip:bob@127.0.0.1:5080"
    assert a.get_all("via") == [f"SIP/2.0/UDP 127.0.0.1:5060;branch={BRANCH};rport"]
    assert a.get("cseq") == "7 ACK" and a.to.tag == "b1" and a.get("route") == "<sip:10.0.0.9;lr>"
    assert [type(e) for e in events(ct)] == [ResponseReceived]
    # the 486 is retransmitted (our ACK was lost): ACK again, nothing for the TU
    ct.receive_response(resp(486), 1.0)
    assert ct.data_to_send() == [ack]
    assert events(ct) == []
    assert ct.get_timer() == pytest.approx(32.1)
    ct.handle_timer(32.1)
    assert ct.state is State.TERMINATED


def test_ict_2xx_accepted_state_passes_retransmissions_rfc6026():
    ct = client()
    ct.data_to_send()
    ct.receive_response(resp(200), 0.1)
    assert ct.state is State.ACCEPTED
    assert ct.data_to_send() == []  # the 2xx ACK is end to end, not ours
    ct.receive_response(resp(200), 0.6)
    assert [type(e) for e in events(ct)] == [ResponseReceived, ResponseReceived]
    assert ct.get_timer() == pytest.approx(0.1 + 64 * 0.5)  # Timer M
    ct.handle_timer(40)
    assert ct.state is State.TERMINATED


# -- non-INVITE client transaction --------------------------------------------------------------

def test_nict_timer_e_caps_at_t2_and_f_times_out():
    ct = client("OPTIONS")
    ct.data_to_send()
    sent = run_timers(ct, 40)
    # E: 0.5, 1.5, 3.5, 7.5 then every T2=4: 11.5 ... 31.5; F at 32
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events(ct)[0] == TransactionTimedOut("F")


def test_nict_proceeding_retransmits_every_t2_then_completes():
    ct = client("OPTIONS")
    ct.data_to_send()
    ct.receive_response(resp(100, "OPTIONS"), 0.2)
    assert ct.state is State.PROCEEDING
    assert run_timers(ct, 9) == [0.5, 4.5, 8.5]
    ct.receive_response(resp(200, "OPTIONS"), 9.0)
    assert ct.state is State.COMPLETED
    assert ct.get_timer() == pytest.approx(14.0)  # Timer K = T4
    ct.receive_response(resp(200, "OPTIONS"), 9.5)  # absorbed
    assert [type(e) for e in events(ct)] == [ResponseReceived, ResponseReceived]
    ct.handle_timer(14.0)
    assert ct.state is State.TERMINATED


# -- INVITE server transaction ------------------------------------------------------------------

def test_ist_absorbs_retransmissions_and_repeats_last_provisional():
    st = ServerTransaction(req(), 0.0, timers=T)
    st.receive_request(req(), 0.1)
    assert st.data_to_send() == []  # nothing sent yet
    st.send_response(100, b"100", 0.1)
    st.send_response(180, b"180", 0.2)
    assert st.data_to_send() == [b"100", b"180"]
    st.receive_request(req(), 0.6)
    assert st.data_to_send() == [b"180"]


def test_ist_non_2xx_with_lost_responses_then_ack():
    st = ServerTransaction(req(), 0.0, timers=T)
    st.send_response(486, b"486", 0.0)
    assert st.data_to_send() == [b"486"]
    # G: 0.5, 1.5 (1 s), 3.5 (2 s), 7.5 (4 s = T2), 11.5
    assert run_timers(st, 12) == [0.5, 1.5, 3.5, 7.5, 11.5]
    st.receive_request(req("ACK", cseq_method="ACK"), 12.0)
    assert st.state is State.CONFIRMED
    assert st.get_timer() == pytest.approx(17.0)  # Timer I = T4
    st.receive_request(req("ACK", cseq_method="ACK"), 12.5)  # absorbed
    st.receive_request(req(), 12.6)  # late INVITE copy: absorbed
    assert st.data_to_send() == []
    st.handle_timer(17.0)
    assert st.state is State.TERMINATED


def test_ist_timer_h_without_ack():
    st = ServerTransaction(req(), 0.0, timers=T)
    st.send_response(404, b"404", 0.0)
    run_timers(st, 100)
    assert st.state is State.TERMINATED
    assert TransactionTimedOut("H") in events(st)


def test_ist_2xx_goes_to_accepted_and_absorbs_invite_rfc6026():
    st = ServerTransaction(req(), 0.0, timers=T)
    st.send_response(200, b"200a", 0.0)
    assert st.state is State.ACCEPTED
    st.send_response(200, b"200b", 0.5)  # a 2xx retransmission from downstream
    st.receive_request(req(), 0.6)
    assert st.data_to_send() == [b"200a", b"200b"]
    st.receive_request(req("ACK", cseq_method="ACK"), 0.7)
    assert [type(e) for e in events(st)] == [AckReceived]
    assert st.get_timer() == pytest.approx(32.0)  # Timer L
    st.handle_timer(32.0)
    assert st.state is State.TERMINATED


def test_ist_reliable_no_timer_g_and_i_zero():
    st = ServerTransaction(req(), 0.0, reliable=True, timers=T)
    st.send_response(486, b"486", 0.0)
    assert st.get_timer() == pytest.approx(32.0)  # only H
    st.receive_request(req("ACK", cseq_method="ACK"), 0.1)
    assert st.get_timer() == pytest.approx(0.1)
    st.handle_timer(0.1)
    assert st.state is State.TERMINATED


# -- non-INVITE server transaction ---------------------------------------------------------------

def test_nist_absorbs_then_repeats_final_until_timer_j():
    st = ServerTransaction(req("OPTIONS"), 0.0, timers=T)
    st.receive_request(req("OPTIONS"), 0.1)
    assert st.data_to_send() == []  # Trying: absorbed silently
    st.send_response(200, b"200", 0.2)
    st.receive_request(req("OPTIONS"), 0.7)
    assert st.data_to_send() == [b"200", b"200"]
    assert st.get_timer() == pytest.approx(32.2)
    st.handle_timer(32.2)
    assert st.state is State.TERMINATED
    st.receive_request(req("OPTIONS"), 33)  # after the end: ignored, no error
    assert st.data_to_send() == []


def test_transport_error_and_abandon_terminate():
    ct = client()
    ct.transport_error(0.1)
    assert ct.terminated and ct.get_timer() is None
    ct2 = client("OPTIONS")
    ct2.abandon(0.1)
    assert ct2.terminated
    ct2.receive_response(resp(200, "OPTIONS"), 0.2)  # late: ignored
    assert [type(e) for e in events(ct2)] == [TransactionTerminated]


def test_cancel_built_from_the_invite_we_sent():
    c = build_cancel(req())
    assert c.method == "CANCEL" and c.uri_text == "sip:bob@127.0.0.1:5080"
    assert c.get_all("via") == [f"SIP/2.0/UDP 127.0.0.1:5060;branch={BRANCH};rport"]
    assert c.get("cseq") == "7 CANCEL" and c.get("route") == "<sip:10.0.0.9;lr>"
    a = build_ack(req(), resp(404))
    assert a.to.tag == "b1"


def test_docs_tables_match_the_code():
    from pathlib import Path

    from sipedge.sip.transaction import transition_table_markdown

    doc = (Path(__file__).parents[3] / "docs" / "transactions.md").read_text()
    for kind in Kind:
        assert transition_table_markdown(kind) in doc, kind
