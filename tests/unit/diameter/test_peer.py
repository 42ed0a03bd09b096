"""RFC 6733 5.6 peer state machine and RFC 3539 watchdog, two nodes over an in-memory link."""

from __future__ import annotations

import random

import pytest
from sipedge.diameter import base
from sipedge.diameter import dictionary as dd
from sipedge.diameter.base import Identity, VendorApp
from sipedge.diameter.codec import FLAG_R, Message, decode
from sipedge.diameter.peer import TRANSITIONS, Peer, PeerSettings, State, Watchdog
from sipedge.errors import LocalProtocolError
from sipedge.modules.diameter.core import Node, PeerConfig

from .netsim import Net

CX = 16777216


def ident(host, apps=(CX,), vendor_apps=()):
    return Identity(host, host.split(".", 1)[1], auth_apps=tuple(apps),
                    vendor_apps=tuple(vendor_apps))


def fast(connect=True, **kw):
    return PeerSettings(connect=connect, tc_s=2, tw_s=6, cea_timeout_s=3, dpr_timeout_s=2,
                        reopen_dwa=3, hold_after_dpr_s=20, **kw)


def pair(a_apps=(CX,), b_apps=(CX,), a_connects=True, b_connects=False, b_vendor=()):
    net = Net()
    a = Node(ident("a.one", a_apps), [PeerConfig("b.two", "B", settings=fast(a_connects))],
             rng=random.Random(1))
    b = Node(ident("b.two", b_apps, b_vendor), [PeerConfig("a.one", "A",
                                                            settings=fast(b_connects))],
             rng=random.Random(2))
    net.add("A", a)
    net.add("B", b)
    return net, a, b


def test_cer_cea_open_both_sides():
    net, a, b = pair()
    a.start(0)
    b.start(0)
    net.run(0)
    assert a.peers["b.two"].state == State.I_OPEN and a.peers["b.two"].usable
    assert b.peers["a.one"].state == State.R_OPEN and b.peers["a.one"].usable
    assert a.peers["b.two"].applications == {CX}


def test_vendor_specific_application_matches():
    net, a, b = pair(b_apps=(), b_vendor=(VendorApp(10415, auth=CX),))
    a.start(0)
    net.run(0)
    assert a.peers["b.two"].usable and b.peers["a.one"].usable


def test_no_common_application_5010_and_close():
    net, a, b = pair(a_apps=(CX,), b_apps=(16777236,))
    a.start(0)
    net.run(0)
    ceas = [decode(d) for f, t, d in net.sent if f == "B"]
    assert base.result_code(ceas[0]) == 5010
    assert a.peers["b.two"].state == State.CLOSED and not net.links
    assert b.peers["a.one"].state == State.CLOSED


def test_acct_application_ids_plain_and_vendor_specific():
    """Acct-Application-Id, plain and inside Vendor-Specific-Application-Id, is announced in
    the CER/CEA and matched against the peer's acct ids only (an auth id of the same number is
    not a common application)."""
    def node(host, peer, addr, connects, **kw):
        return Node(Identity(host, host.split(".", 1)[1], **kw),
                    [PeerConfig(peer, addr, settings=fast(connects))], rng=random.Random(1))

    for b_kw, common in (({"acct_apps": (3,)}, {3}),
                         ({"vendor_apps": (VendorApp(10415, acct=3),)}, {3}),
                         ({"auth_apps": (3,)}, None)):
        net = Net()
        a = node("a.one", "b.two", "B", True, acct_apps=(3,))
        b = node("b.two", "a.one", "A", False, **b_kw)
        net.add("A", a)
        net.add("B", b)
        a.start(0)
        net.run(0)
        cer = decode(next(d for f, _, d in net.sent if f == "A"))
        assert cer.code == base.CER and dd.get(cer.avps, "Acct-Application-Id") == 3
        cea = decode(next(d for f, _, d in net.sent if f == "B"))
        if common is None:
            assert base.result_code(cea) == 5010 and not a.peers["b.two"].usable
        else:
            assert base.result_code(cea) == 2001
            assert a.peers["b.two"].applications == common and b.peers["a.one"].usable


def test_non_cer_first_closes():
    _net, a, b = pair()
    b.connection_made(99, None, 0)
    b.data_received(99, base.request(280, 0, a.me, [], 1, 1).encode(), 0)
    acts = b.actions()
    assert [type(x).__name__ for x in acts] == ["Close"]
    assert b.stats["non_cer_first"] == 1


def test_unknown_peer_gets_3010():
    _net, _a, b = pair()
    b.connection_made(99, None, 0)
    cer = base.request(257, 0, ident("x.evil"), base.capabilities_avps(ident("x.evil"),
                                                                      None)[2:], 1, 1)
    b.data_received(99, cer.encode(), 0)
    sent, _close = b.actions()
    assert base.result_code(decode(sent.data)) == 3010


def test_election_simultaneous_connect_one_survives():
    net, a, b = pair(a_connects=True, b_connects=True)
    a.start(0)
    b.start(0)
    net.run(0)
    assert a.peers["b.two"].usable and b.peers["a.one"].usable
    assert len(net.links) == 2  # one connection (two ends)
    # b.two > a.one: b won and kept the connection a opened
    assert b.peers["a.one"].state == State.R_OPEN
    assert a.peers["b.two"].state == State.I_OPEN


def test_election_when_cer_crosses_before_connect_ack():
    me = ident("z.top")
    p = Peer("a.low", me, fast())
    p.start(0)
    p.actions()
    other = ident("a.low")
    cer = base.request(257, 0, other, base.capabilities_avps(other, None)[2:], 1, 1)
    p.incoming_cer(10, cer, 0.1)
    assert p.state == State.WAIT_CONN_ACK_ELECT
    p.connected(11, 0.2)
    # we win (z > a): our connection closed, CEA on theirs
    kinds = [(type(x).__name__, x.conn) for x in p.actions()]
    assert ("Close", 11) in kinds and ("Send", 10) in kinds and p.state == State.R_OPEN


def test_dwr_dwa_and_tw_jitter():
    net, a, _b = pair()
    a.start(0)
    net.run(0)
    start = len(net.sent)
    net.advance(0, 20)
    dwrs = [decode(x) for f, t, x in net.sent[start:] if decode(x).code == 280]
    assert any(m.is_request for m in dwrs) and any(not m.is_request for m in dwrs)
    assert a.peers["b.two"].watchdog == Watchdog.OKAY
    p = a.peers["b.two"]
    jit = {round(p._tw_interval(), 3) for _ in range(20)}
    assert len(jit) > 1 and all(4.5 <= j <= 7.5 for j in jit)


def test_suspect_down_reconnect_reopen_then_okay():
    net, a, _b = pair()
    a.start(0)
    net.run(0)
    net.holes.add("B")  # B swallows everything: no DWA
    net.advance(0, 16)
    assert a.peers["b.two"].watchdog in (Watchdog.SUSPECT, Watchdog.DOWN)
    net.advance(16, 30)
    assert a.peers["b.two"].watchdog == Watchdog.DOWN
    net.holes.clear()
    t = net.advance(30, 40)
    assert a.peers["b.two"].state in (State.I_OPEN, State.R_OPEN)
    assert a.peers["b.two"].watchdog == Watchdog.REOPEN  # not used yet
    assert not a.peers["b.two"].usable
    net.advance(t, t + 30)
    assert a.peers["b.two"].watchdog == Watchdog.OKAY and a.peers["b.two"].usable


def test_dpr_answered_with_dpa_before_close():
    net, a, b = pair()
    a.start(0)
    net.run(0)
    b.peers["a.one"].stop(1, base.REBOOTING)
    b._collect(1)
    net.run(1)
    codes = [(f, decode(x).code, bool(decode(x).flags & FLAG_R)) for f, t, x in net.sent]
    assert ("B", 282, True) in codes and ("A", 282, False) in codes
    assert a.peers["b.two"].state == State.CLOSED and b.peers["a.one"].state == State.CLOSED
    assert not net.links
    # REBOOTING: reconnect after Tc
    net.advance(1, 5)
    assert a.peers["b.two"].usable


def test_our_dpr_times_out_when_never_answered():
    net, a, _b = pair()
    a.start(0)
    net.run(0)
    net.holes.add("B")
    a.stop(1)
    net.run(1)
    assert a.peers["b.two"].state == State.CLOSING
    net.advance(1, 4)
    assert a.peers["b.two"].state == State.CLOSED and not net.links
    net.advance(4, 10)
    assert a.peers["b.two"].state == State.CLOSED  # disabled: no reconnect


def test_disable_enable():
    net, a, _b = pair()
    a.start(0)
    net.run(0)
    a.set_enabled("b.two", False, 1)
    net.advance(1, 8)
    assert a.peers["b.two"].state == State.CLOSED
    a.set_enabled("b.two", True, 8)
    net.run(8)
    assert a.peers["b.two"].usable


def test_enable_before_the_dpa_reconnects_at_once_not_after_tc():
    """`diameter.enable` right after `diameter.disable`, while our DPR still waits for its
    DPA: once the DPA closes the connection we connect again at once, not after Tc."""
    net, a, _b = pair()
    a.start(0)
    net.run(0)
    net.holes.add("B")  # B's DPA is late
    a.set_enabled("b.two", False, 1)
    net.run(1)
    assert a.peers["b.two"].state == State.CLOSING
    a.set_enabled("b.two", True, 1.5)
    net.holes.discard("B")
    net.advance(1.5, 1.5 + a.peers["b.two"].settings.dpr_timeout_s + 0.5)
    assert a.peers["b.two"].usable


def test_illegal_transition_raises():
    p = Peer("x.y", ident("a.b"))
    with pytest.raises(LocalProtocolError):
        p._go("Rcv-DPA")


def test_transition_table_covers_rfc_states():
    assert {s for s, _ in TRANSITIONS} == set(State)


def test_malformed_request_gets_5014_and_connection_stays():
    net, a, b = pair()
    a.start(0)
    net.run(0)
    conn = a.peers["b.two"].conn
    m = Message(300, FLAG_R | 0x40, CX, 77, 78, [dd.avp("Origin-Host", "a.one")])
    raw = bytearray(m.encode())
    raw[25:28] = (300).to_bytes(3, "big")
    net._deliver("A", conn, bytes(raw), 1)
    net.run(1)
    ans = decode(net.sent[-1][2])
    assert base.result_code(ans) == 5014 and ans.hop_by_hop == 77 and ans.find(279)
    assert a.peers["b.two"].usable and b.peers["a.one"].usable


def test_docs_table_matches_the_code():
    from pathlib import Path

    from sipedge.diameter.peer import transition_table_markdown

    doc = (Path(__file__).parents[3] / "docs" / "diameter.md").read_text()
    assert transition_table_markdown() in doc


def test_unknown_peer_accepted_when_allowed_and_forgotten_after():
    from sipedge.modules.diameter.core import NodeSettings

    net = Net()
    a = Node(ident("a.one"), [PeerConfig("b.two", "B", settings=fast(True))])
    b = Node(ident("b.two"), [], settings=NodeSettings(accept_unknown_peers=True))
    net.add("A", a)
    net.add("B", b)
    a.start(0)
    net.run(0)
    assert b.peers["a.one"].usable and b.peers["a.one"].dynamic
    net.cut("A", 1)
    assert "a.one" not in b.peers


def test_stop_while_connecting_closes():
    p = Peer("x.y", ident("a.b"), fast())
    p.start(0)
    p.connected(5, 0.1)
    p.actions()
    p.stop(0.2, disable=True)
    assert p.state == State.CLOSED and [type(x).__name__ for x in p.actions()] == ["Close"]
    p.handle_timer(100)
    assert p.state == State.CLOSED and not p.actions()
