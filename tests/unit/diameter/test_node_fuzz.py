"""Whatever bytes a peer sends, the node never raises: it answers, drops or closes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sipedge.diameter import base
from sipedge.diameter import dictionary as dd
from sipedge.diameter.base import Identity
from sipedge.diameter.codec import FLAG_P, FLAG_R, Avp, Message
from sipedge.modules.diameter.core import Node, NodeSettings, PeerConfig
from sipedge.modules.diameter.routing import Route, RoutingTable

CX = 16777216


def _open_node():
    me = Identity("dra.mid", "mid", auth_apps=(0xFFFFFFFF,))
    node = Node(me, [PeerConfig("c.cli"), PeerConfig("s.srv")],
                RoutingTable([Route("srv", "s.srv")]), NodeSettings(max_pending=50))
    for conn, host in ((1, "c.cli"), (2, "s.srv")):
        other = Identity(host, host.split(".")[1], auth_apps=(CX,))
        node.connection_made(conn, None, 0)
        cer = base.request(257, 0, other, base.capabilities_avps(other, None)[2:], 1, 1)
        node.data_received(conn, cer.encode(), 0)
    node.actions()
    assert node.peers["c.cli"].usable and node.peers["s.srv"].usable
    return node


_avp = st.builds(lambda c, v, f, d: Avp(c, d, f & 0x60, v),
                 st.sampled_from([1, 263, 264, 268, 279, 282, 283, 293, 296, 260, 297, 601,
                                  99999]),
                 st.sampled_from([0, 0, 10415]), st.integers(0, 255), st.binary(max_size=24))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda code, flags, app, avps: Message(code, flags, app, 7, 8, avps).encode(),
              st.sampled_from([257, 280, 282, 300, 303, 316]),
              st.sampled_from([FLAG_R | FLAG_P, FLAG_R, 0, FLAG_P, 0x20]),
              st.sampled_from([0, CX, 4]), st.lists(_avp, max_size=6)),
), max_size=6), st.sampled_from([1, 2]), st.integers(1, 5))
def test_node_never_raises(chunks, conn, split):
    node = _open_node()
    now = 1.0
    for chunk in chunks:
        for i in range(0, len(chunk), max(1, len(chunk) // split)):
            node.data_received(conn, chunk[i:i + max(1, len(chunk) // split)], now)
        node.actions()
        node.events()
        now += 0.5
    node.handle_timer(now + 100)
    node.actions()
    assert node.npending >= 0


def test_relay_of_unknown_avps_is_byte_identical():
    node = _open_node()
    weird = Avp(4242, b"\x01\x02\x03", 0x80, 77777)
    req = Message(300, FLAG_R | FLAG_P, CX, 9, 10, [
        dd.avp("Session-Id", "c.cli;1"), dd.avp("Origin-Host", "c.cli"),
        dd.avp("Origin-Realm", "cli"), dd.avp("Destination-Realm", "srv"), weird])
    raw = req.encode()
    node.data_received(1, raw, 1.0)
    (send,) = [a for a in node.actions() if getattr(a, "conn", None) == 2]
    assert send.data[20:len(raw)] == raw[20:]
    assert send.data[16:20] == raw[16:20]  # end-to-end id


def test_stats_keys_stay_bounded_under_made_up_codes():
    node = _open_node()
    for i in range(600):
        m = Message(100000 + i, FLAG_R | FLAG_P, CX, i, i, [
            dd.avp("Origin-Host", "c.cli"), dd.avp("Origin-Realm", "cli"),
            dd.avp("Destination-Realm", "nowhere")])
        node.data_received(1, m.encode(), 1.0)
        a = Message(300, 0, CX, 999999 + i, i, [dd.avp("Result-Code", 10000 + i)])
        node.data_received(2, a.encode(), 1.0)
        node.actions()
    assert len(node.stats) < 30 and len(node.result_stats) <= 257
    assert node.stats["rx other-R"] == 600
