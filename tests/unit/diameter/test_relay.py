"""Realm routing and the relay agent (RFC 6733 6.1) over the in-memory network."""

from __future__ import annotations

from sipedge.diameter import base
from sipedge.diameter import dictionary as dd
from sipedge.diameter.base import Identity
from sipedge.diameter.codec import FLAG_T, decode
from sipedge.diameter.peer import PeerSettings
from sipedge.modules.diameter.core import LocalAnswer, Node, NodeSettings, PeerConfig
from sipedge.modules.diameter.routing import Route, RoutingTable

from .netsim import Net

CX = 16777216
RELAY = 0xFFFFFFFF


def st(connect):
    return PeerSettings(connect=connect, tc_s=1, tw_s=6, cea_timeout_s=3, dpr_timeout_s=2,
                        reopen_dwa=1)


def server(host, seen):
    n = Node(Identity(host, "srv", auth_apps=(CX,)), [PeerConfig("dra.mid", "D",
                                                                settings=st(True))],
             settings=NodeSettings(relay=False))

    def handle(msg, frm):
        seen.append((host, msg))
        return base.answer(msg, n.me, 2001, [dd.avp("Server-Name", f"sip:{host}")])
    n.local_handler = handle
    return n


def build(routes=None, servers=("s1.srv", "s2.srv"), max_pending=100000, timeout=10.0):
    net = Net()
    seen = []
    dra = Node(Identity("dra.mid", "mid", auth_apps=(RELAY,)),
               [PeerConfig("c.cli", "", settings=st(False))]
               + [PeerConfig(s, "", settings=st(False)) for s in servers],
               RoutingTable(routes or []), NodeSettings(max_pending=max_pending,
                                                        request_timeout_s=timeout))
    cli = Node(Identity("c.cli", "cli", auth_apps=(CX,)), [PeerConfig("dra.mid", "D",
                                                                     settings=st(True))],
               RoutingTable([Route("*", "dra.mid")]))
    net.add("D", dra)
    net.add("C", cli)
    for i, s in enumerate(servers):
        net.add(f"S{i + 1}", server(s, seen))
    for name, node in net.nodes.items():
        if name != "D":
            node.start(0)
    net.run(0)
    return net, dra, cli, seen


def ask(net, cli, now, user="alice", realm="srv", host=None):
    tok = cli.send_request(CX, 300, [dd.avp("Session-Id", f"c.cli;{user}"),
                                     dd.avp("User-Name", user)], now,
                           dest_realm=realm, dest_host=host)
    net.run(now)
    return tok


def answers(net, tok):
    return [e for e in net.events["C"] if isinstance(e, LocalAnswer) and e.token == tok]


def test_relay_route_record_hbh_rewrite_e2e_kept():
    net, _dra, cli, seen = build()
    tok = ask(net, cli, 1)
    (ans,) = answers(net, tok)
    assert ans.result_code == 2001
    _host, req = seen[0]
    assert dd.get_all(req.avps, "Route-Record") == ["c.cli"]
    c_out = next(decode(d) for f, t, d in net.sent if f == "C" and decode(d).code == 300)
    d_out = next(decode(d) for f, t, d in net.sent if f == "D" and decode(d).code == 300
             and decode(d).is_request)
    assert c_out.end_to_end == d_out.end_to_end
    assert c_out.hop_by_hop != d_out.hop_by_hop
    assert ans.message.hop_by_hop == c_out.hop_by_hop


def test_equal_metrics_spread_lowest_wins():
    routes = [Route("srv", "s1.srv", 10), Route("srv", "s2.srv", 10)]
    net, _dra, cli, seen = build(routes)
    for i in range(6):
        ask(net, cli, 1 + i, user=f"u{i}")
    hosts = [h for h, _ in seen]
    assert hosts.count("s1.srv") == 3 and hosts.count("s2.srv") == 3
    net2, _dra2, cli2, seen2 = build([Route("srv", "s1.srv", 20), Route("srv", "s2.srv", 5)])
    for i in range(4):
        ask(net2, cli2, 1 + i, user=f"u{i}")
    assert {h for h, _ in seen2} == {"s2.srv"}


def test_default_route_only_without_realm_route():
    routes = [Route("srv", "s1.srv", 10), Route("*", "s2.srv", 10)]
    net, dra, cli, seen = build(routes)
    dra.routing.peer_realm_routes = False
    ask(net, cli, 1)
    assert seen[-1][0] == "s1.srv"
    tok = ask(net, cli, 2, realm="other")
    assert seen[-1][0] == "s2.srv" and answers(net, tok)[0].result_code == 2001
    net.cut("S1", 3)
    net.dead.add("S1")
    ask(net, cli, 3)
    assert seen[-1][0] == "s2.srv"


def test_destination_host_override_and_dead_host_3002():
    routes = [Route("srv", "s1.srv", 1), Route("srv", "s2.srv", 50)]
    net, _dra, cli, seen = build(routes)
    ask(net, cli, 1, host="s2.srv")
    assert seen[-1][0] == "s2.srv"
    net.cut("S2", 2)
    net.dead.add("S2")
    tok = ask(net, cli, 3, host="s2.srv")
    assert answers(net, tok)[0].result_code == 3002


def test_unknown_realm_3002_at_once():
    net, _dra, cli, seen = build()
    tok = ask(net, cli, 1, realm="nowhere")
    (ans,) = answers(net, tok)
    assert ans.result_code == 3002 and ans.message.is_error and not seen
    assert _dra.stats_snapshot()["result_codes"] == {"3002": 1}


def test_loop_3005_with_e_bit_nothing_forwarded():
    net, _dra, cli, seen = build()
    tok = cli.send_request(CX, 300, [dd.avp("Session-Id", "x"),
                                     dd.avp("Route-Record", "dra.mid")], 1, dest_realm="srv")
    net.run(1)
    (ans,) = answers(net, tok)
    assert ans.result_code == 3005 and ans.message.is_error and not seen


def test_predictive_loop_avoidance():
    routes = [Route("srv", "s1.srv", 1), Route("srv", "s2.srv", 50)]
    net, _dra, cli, seen = build(routes)
    cli.send_request(CX, 300, [dd.avp("Session-Id", "x"), dd.avp("Route-Record", "s1.srv")],
                     1, dest_realm="srv")
    net.run(1)
    assert seen[-1][0] == "s2.srv"


def _blackhole_s1(net):
    node = net.nodes["S1"]
    real = node._on_request

    def on_request(p, msg, raw, now):
        if dd.get(msg.avps, "User-Name") == "blackhole":
            net.events.setdefault("swallowed", []).append(msg)
            return
        real(p, msg, raw, now)
    node._on_request = on_request


def test_failover_with_t_flag_on_peer_loss():
    routes = [Route("srv", "s1.srv", 1), Route("srv", "s2.srv", 50)]
    net, dra, cli, seen = build(routes)
    _blackhole_s1(net)
    tok = ask(net, cli, 1, user="blackhole")
    assert not answers(net, tok)
    net.cut("S1", 2)
    net.dead.add("S1")
    net.run(2)
    (ans,) = answers(net, tok)
    assert ans.result_code == 2001 and ans.peer == "dra.mid"
    host, _req = seen[-1]
    assert host == "s2.srv"
    t_flagged = [decode(d) for f, t, d in net.sent if t == "S2" and decode(d).code == 300]
    assert t_flagged[0].flags & FLAG_T
    assert dra.stats["failovers"] == 1 and dra.npending == 0


def test_failover_uses_peer_that_came_up_after_first_routing():
    routes = [Route("srv", "s1.srv", 1), Route("srv", "s2.srv", 50)]
    net, dra, cli, seen = build(routes)
    net.cut("S2", 0.5)
    net.dead.add("S2")
    net.run(0.5)
    _blackhole_s1(net)
    tok = ask(net, cli, 1, user="blackhole")
    net.dead.discard("S2")
    net.nodes["S2"] = server("s2.srv", seen)  # S2 restarted: connects only now
    net.nodes["S2"].start(3)
    net.advance(3, 4)
    assert dra.peers["s2.srv"].usable
    net.cut("S1", 5)
    net.dead.add("S1")
    net.run(5)
    (ans,) = answers(net, tok)
    assert ans.result_code == 2001 and seen[-1][0] == "s2.srv"


def test_origin_gone_answer_dropped():
    routes = [Route("srv", "s1.srv", 1)]
    net, dra, cli, _seen = build(routes)
    _blackhole_s1(net)
    ask(net, cli, 1, user="blackhole")
    net.cut("C", 2)
    net.dead.add("C")
    net.nodes["S1"]._on_request = net.nodes["S1"].__class__._on_request.__get__(net.nodes["S1"])
    # S1 answers now (late): the DRA drops it
    (pe,) = [pe for per in dra.pending.values() for pe in per.values()]
    s1 = net.nodes["S1"]
    req = decode(set_hbh(pe))
    s1._send_answer(s1.peers["dra.mid"], base.answer(req, s1.me, 2001))
    net.run(3)
    assert dra.stats["answers_dropped_origin_gone"] == 1 and dra.npending == 0


def set_hbh(pe):
    from sipedge.diameter.codec import set_hop_by_hop
    return set_hop_by_hop(pe.raw, pe.out_hbh)


def test_timeout_3002_and_table_empties():
    net, dra, cli, _seen = build([Route("srv", "s1.srv", 1)], timeout=5)
    _blackhole_s1(net)
    toks = [ask(net, cli, 1, user="blackhole") for _ in range(50)]
    assert dra.npending == 50
    net.advance(1, 7)
    assert dra.npending == 0 and not dra.pending
    codes = {answers(net, t)[0].result_code for t in toks}
    assert codes == {3002}
    # each 3002 the DRA sent is counted once in diameter.stats
    assert dra.stats_snapshot()["result_codes"] == {"3002": 50}


def test_own_request_timeout_is_the_callers():
    """`ksr.diameter.request(..., timeout=T)`: our own request gets its 3002 after the caller's
    T, even when the next hop (the DRA, 10 s here) would wait longer; the late answer is
    dropped."""
    net, dra, cli, _seen = build([Route("srv", "s1.srv", 1)], timeout=10)
    _blackhole_s1(net)
    tok = cli.send_request(CX, 300, [dd.avp("Session-Id", "c.cli;t"),
                                     dd.avp("User-Name", "blackhole")], 1, dest_realm="srv",
                           timeout_s=2)
    net.run(1)
    net.advance(1, 2.5)
    assert not answers(net, tok) and cli.npending == 1
    net.advance(2.75, 3.5)
    (ans,) = answers(net, tok)
    assert ans.result_code == 3002 and ans.message is None and cli.npending == 0
    assert dra.npending == 1  # the DRA still waits for s1 (its own 10 s)
    net.advance(3.75, 12)
    assert dra.npending == 0 and len(answers(net, tok)) == 1


def test_bounded_pending_table_3004():
    net, _dra, cli, _seen = build([Route("srv", "s1.srv", 1)], max_pending=3)
    _blackhole_s1(net)
    toks = [ask(net, cli, 1, user="blackhole") for _ in range(5)]
    got = [answers(net, t) for t in toks]
    assert [a[0].result_code for a in got if a] == [3004, 3004]


def test_proxy_hook_adds_avp_and_can_reject():
    net, dra, cli, seen = build()

    def hook(msg, frm):
        if dd.get(msg.avps, "User-Name") == "bad":
            return 5012
        msg.avps.append(dd.avp("Proxy-Host", "dra.mid"))
        return None
    dra.request_hook = hook
    ask(net, cli, 1)
    assert dd.get(seen[-1][1].avps, "Proxy-Host") == "dra.mid"
    tok = ask(net, cli, 2, user="bad")
    assert answers(net, tok)[0].result_code == 5012
