"""The stateful proxy core (sip/stateful.py) between a fake caller and fake callees: no
sockets, `now` is a number. Covers best-response selection, failure hooks, fr timers,
CANCEL, forking and loss."""

from __future__ import annotations

from sipedge.sip.message import Request, Response, parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore, Source
from sipedge.sip.stateful import (Absorber, BranchTarget, NoHooks, Peer, StatefulProxy, TmParams,
                                  best_response, copy_request, is_stateful_branch)
from sipedge.sip.transaction import TimerValues

T = TimerValues(t1=0.5, t2=4.0, t4=5.0, timer_d=32.0)
LOCAL = LocalAddress(0, "udp", "127.0.0.1", 5060, "127.0.0.1", 5060)
CALLER = Source("udp", "127.0.0.1", 5999, 0)
UAS1 = Peer("udp", "127.0.0.1", 6001, 0)
UAS2 = Peer("udp", "127.0.0.1", 6002, 0)


def invite(method="INVITE", branch="z9hG4bKcaller1", cseq=None):
    return parse_message(
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: call-1@test\r\n"
        f"CSeq: 1 {cseq or method}\r\n"
        "Content-Length: 0\r\n\r\n".encode())


def answer(sent: bytes, status: int, reason: str = "X", to_tag: str = "b1") -> Response:
    """The callee's response to a request the proxy sent."""
    r = parse_message(sent)
    assert isinstance(r, Request)
    resp = Response(status, reason)
    for h in r.headers:
        if h[0] in ("via", "from", "call-id", "cseq"):
            resp.headers.append(list(h))
        elif h[0] == "to":
            resp.headers.append([h[0], h[1], h[2] + (f";tag={to_tag}" if status > 100 else "")])
    return parse_message(resp.to_bytes())


class Recorder(NoHooks):
    def __init__(self):
        self.replies = []
        self.failures = []
        self.on_fail = None

    def on_reply(self, ctx, branch, resp):
        self.replies.append(resp.status)
        return True

    def on_failure(self, ctx, now):
        self.failures.append(ctx.best.status)
        return self.on_fail(ctx, now) if self.on_fail else False


class Net:
    def __init__(self, **kw):
        self.hooks = Recorder()
        self.core = ProxyCore([LOCAL], worker=1, secret=b"s")
        self.tm = StatefulProxy(self.core, TmParams(T, **kw), hooks=self.hooks, salt="ab")
        self.now = 0.0

    def sent(self):
        """What the proxy sent, as (peer port, parsed message)."""
        return [(t.peer.port, parse_message(t.data)) for t in self.tm.data_to_send()]

    def relay(self, msg, peers):
        ctx = self.tm.create(msg, CALLER, self.now)
        ctx.routes["failure"] = "f"
        targets = [BranchTarget(copy_request(msg), p, LOCAL) for p in peers]
        self.tm.relay(ctx, targets, self.now)
        return ctx

    def run_until(self, t):
        while (w := self.tm.get_timer()) is not None and w <= t:
            self.now = w
            self.tm.handle_timer(w)
        self.now = t

    def idle(self):
        return all(v == 0 for v in self.tm.active.values()) and self.tm.contexts == 0


def statuses(sent, port=5999):
    return [m.status for p, m in sent if p == port and isinstance(m, Response)]


def requests_to(sent, port):
    return [m for p, m in sent if p == port and isinstance(m, Request)]


def test_call_completes_2xx_end_to_end():
    n = Net()
    ctx = n.relay(invite(), [UAS1])
    out = n.sent()
    assert statuses(out) == [100]
    (inv,) = requests_to(out, 6001)
    assert is_stateful_branch(inv.via.branch) and inv.via.branch.startswith("z9hG4bK1xt")
    assert inv.get("max-forwards") == "69" and inv.has("record-route")
    data = inv.to_bytes()
    for st in (180, 200):
        assert n.tm.receive_response(answer(data, st), n.now)
    out = n.sent()
    assert statuses(out) == [180, 200]
    assert all(m.via.branch == "z9hG4bKcaller1" for _, m in out)  # our Via removed
    # the UAS retransmits its 2xx (ACK still on its way): forwarded again
    assert n.tm.receive_response(answer(data, 200), n.now + 0.5)
    assert statuses(n.sent()) == [200]
    assert ctx.final_status == 200 and n.hooks.replies == [180, 200, 200]
    assert n.tm.counters == {"snd_rpl_1xx": 1, "fwd_rpl_1xx": 1, "fwd_rpl_2xx": 2}
    n.run_until(100)
    assert n.idle()


def test_invite_retransmission_absorbed_and_100_repeated():
    n = Net()
    n.relay(invite(), [UAS1])
    n.sent()
    assert n.tm.match_request(invite(), CALLER, 0.5)
    assert statuses(n.sent()) == [100]  # nothing new went downstream


def test_404_failure_hook_relays_to_next_target_serial_fork():
    n = Net()

    def failover(ctx, now):
        n.tm.relay(ctx, [BranchTarget(copy_request(ctx.request), UAS2, LOCAL)], now)
        return True

    n.hooks.on_fail = failover
    ctx = n.relay(invite(), [UAS1])
    (inv1,) = requests_to(n.sent(), 6001)
    n.tm.receive_response(answer(inv1.to_bytes(), 404, "Not Found"), 0.1)
    out = n.sent()
    assert [m.method for m in requests_to(out, 6001)] == ["ACK"]  # hop by hop
    (inv2,) = requests_to(out, 6002)
    assert inv2.via.branch != inv1.via.branch
    assert statuses(out) == []  # the 404 did not go upstream
    assert n.hooks.failures == [404]
    n.tm.receive_response(answer(inv2.to_bytes(), 200), 0.2)
    assert statuses(n.sent()) == [200]
    assert ctx.final_status == 200


def test_no_answer_fr_timer_gives_408_to_failure_route_then_caller():
    n = Net(fr_timeout=2.0)
    n.relay(invite(), [UAS1])
    n.sent()
    n.run_until(1.9)
    assert [m.method for m in requests_to(n.sent(), 6001)] == ["INVITE", "INVITE"]  # A: 0.5, 1.5
    n.run_until(2.1)
    assert n.hooks.failures == [408]
    out = n.sent()
    assert statuses(out) == [408]
    assert requests_to(out, 6001) == []  # no provisional: no CANCEL, retransmissions stop
    n.run_until(10)
    assert requests_to(n.sent(), 6001) == []


def test_fr_inv_timer_after_provisional_cancels_branch():
    n = Net(fr_timeout=2.0, fr_inv_timeout=5.0)
    n.relay(invite(), [UAS1])
    (inv,) = requests_to(n.sent(), 6001)
    n.tm.receive_response(answer(inv.to_bytes(), 180), 0.1)
    n.sent()
    n.run_until(4.0)
    assert n.sent() == []
    n.run_until(5.2)
    out = n.sent()
    assert [m.method for m in requests_to(out, 6001)] == ["CANCEL"]
    assert statuses(out) == [408]


def test_cancel_while_ringing_487_and_no_leak():
    n = Net()
    n.relay(invite(), [UAS1])
    (inv,) = requests_to(n.sent(), 6001)
    data = inv.to_bytes()
    n.tm.receive_response(answer(data, 180), 0.1)
    n.sent()
    assert n.tm.match_request(invite("CANCEL"), CALLER, 1.0)
    out = n.sent()
    assert statuses(out) == [200]  # the CANCEL's own 200
    (cancel,) = requests_to(out, 6001)
    assert cancel.method == "CANCEL" and cancel.via.branch == inv.via.branch
    n.tm.receive_response(answer(cancel.to_bytes(), 200), 1.1)
    n.tm.receive_response(answer(data, 487, "Request Terminated"), 1.1)
    out = n.sent()
    assert [m.method for m in requests_to(out, 6001)] == ["ACK"]
    assert statuses(out) == [487]
    assert n.hooks.failures == [487]
    assert n.tm.counters["fwd_rpl_4xx"] == 1  # the UAS's 487 went upstream
    # the caller ACKs the 487: hop by hop, absorbed
    assert n.tm.match_request(invite("ACK", cseq="ACK"), CALLER, 1.2)
    assert n.sent() == []
    n.run_until(40)
    assert n.idle()


def test_cancel_before_any_provisional_waits_for_it():
    n = Net()
    n.relay(invite(), [UAS1])
    (inv,) = requests_to(n.sent(), 6001)
    n.tm.match_request(invite("CANCEL"), CALLER, 0.1)
    assert requests_to(n.sent(), 6001) == []  # 9.1: not before a provisional
    n.tm.receive_response(answer(inv.to_bytes(), 100), 0.2)
    assert [m.method for m in requests_to(n.sent(), 6001)] == ["CANCEL"]


def test_parallel_fork_first_2xx_wins_other_branch_cancelled():
    n = Net()
    n.relay(invite(), [UAS1, UAS2])
    out = n.sent()
    (i1,), (i2,) = requests_to(out, 6001), requests_to(out, 6002)
    for i in (i1, i2):
        n.tm.receive_response(answer(i.to_bytes(), 180, to_tag=str(i.via.port)), 0.1)
    assert statuses(n.sent()) == [180, 180]
    n.tm.receive_response(answer(i2.to_bytes(), 200), 0.2)
    out = n.sent()
    assert statuses(out) == [200]
    assert [m.method for m in requests_to(out, 6001)] == ["CANCEL"]
    n.tm.receive_response(answer(i1.to_bytes(), 487), 0.3)
    out = n.sent()
    assert statuses(out) == []  # the 487 of the losing branch stays here
    assert [m.method for m in requests_to(out, 6001)] == ["ACK"]
    assert n.hooks.failures == []


def test_6xx_cancels_the_others_and_wins():
    n = Net()
    n.relay(invite(), [UAS1, UAS2])
    out = n.sent()
    (i1,), (i2,) = requests_to(out, 6001), requests_to(out, 6002)
    n.tm.receive_response(answer(i2.to_bytes(), 180), 0.1)
    n.tm.receive_response(answer(i1.to_bytes(), 603, "Decline"), 0.2)
    out = n.sent()
    assert [m.method for m in requests_to(out, 6002)] == ["CANCEL"]
    n.tm.receive_response(answer(i2.to_bytes(), 487), 0.3)
    assert statuses(n.sent()) == [603]


def test_loss_downstream_invite_retransmitted_then_call_completes():
    n = Net()
    n.relay(invite(), [UAS1])
    n.sent()  # the first INVITE is lost
    n.run_until(0.6)
    (inv,) = requests_to(n.sent(), 6001)
    n.tm.receive_response(answer(inv.to_bytes(), 200), 0.7)
    assert statuses(n.sent()) == [200]


def test_non_invite_timeout_no_408_upstream_rfc4320():
    n = Net(fr_timeout=60.0)
    n.relay(invite("OPTIONS"), [UAS1])
    n.sent()
    n.run_until(33)  # Timer F = 64*T1 = 32 s
    assert n.hooks.failures == [408]  # the failure route sees the timeout
    assert statuses(n.sent()) == []  # but no 408 goes upstream (the client's Timer F)
    assert n.tm.match_request(invite("OPTIONS"), CALLER, 40.0)  # still absorbed
    n.run_until(70)
    assert n.idle()


def test_401_and_407_challenges_of_all_branches_are_merged():
    n = Net()
    n.relay(invite(), [UAS1, UAS2])
    out = n.sent()
    (i1,), (i2,) = requests_to(out, 6001), requests_to(out, 6002)
    r1 = answer(i1.to_bytes(), 401)
    r1.add("WWW-Authenticate", 'Digest realm="a", nonce="1"')
    r2 = answer(i2.to_bytes(), 407)
    r2.add("Proxy-Authenticate", 'Digest realm="b", nonce="2"')
    n.tm.receive_response(r1, 0.1)
    n.tm.receive_response(r2, 0.2)
    (resp,) = [m for p, m in n.sent() if p == 5999]
    assert resp.status == 401
    assert resp.get("www-authenticate") and resp.get("proxy-authenticate")


def test_best_response_rules():
    def r(s):
        return Response(s, "x")
    assert best_response([r(486), r(404), r(503)]).status == 486
    assert best_response([r(500), r(407), r(404)]).status == 407
    assert best_response([r(302), r(404)]).status == 302
    assert best_response([r(486), r(603)]).status == 603
    assert best_response([]) is None


def test_503_becomes_500_upstream():
    n = Net()
    n.relay(invite("OPTIONS"), [UAS1])
    (req,) = requests_to(n.sent(), 6001)
    n.tm.receive_response(answer(req.to_bytes(), 503), 0.1)
    assert statuses(n.sent()) == [500]


def test_t_reply_statefully_absorbs_retransmission():
    n = Net()
    ctx = n.tm.create(invite(), CALLER, 0.0)
    n.tm.reply(ctx, 404, "Not Here", now=0.0)
    assert statuses(n.sent()) == [404]
    n.tm.match_request(invite(), CALLER, 0.3)
    assert statuses(n.sent()) == [404]
    n.run_until(0.6)  # Timer G
    assert statuses(n.sent()) == [404]


def test_stats_count_kinds():
    n = Net()
    n.relay(invite(), [UAS1, UAS2])
    s = n.tm.stats()
    assert s["active"] == {"ict": 2, "nict": 0, "ist": 1, "nist": 0}
    assert s["total"]["ict"] == 2 and s["contexts"] == 1


def test_cancelled_branch_that_never_answers_is_given_up_after_64_t1():
    n = Net(fr_inv_timeout=100.0)
    n.relay(invite(), [UAS1])
    (inv,) = requests_to(n.sent(), 6001)
    n.tm.receive_response(answer(inv.to_bytes(), 180), 0.1)
    n.tm.match_request(invite("CANCEL"), CALLER, 1.0)
    n.sent()
    # the UAS answers nothing more (not even the CANCEL)
    n.run_until(1.0 + 32.1)
    assert statuses(n.sent()) == [487]  # the caller is not kept waiting for fr_inv_timer
    n.run_until(200)
    assert n.idle()


def test_finished_calls_do_not_stay_in_the_timer_heap():
    """Stopped fr timers (minutes long) must not keep finished calls alive."""
    n = Net(fr_timeout=600.0, fr_inv_timeout=600.0)
    for i in range(2000):
        msg = parse_message(invite(branch=f"z9hG4bKc{i}").to_bytes()
                            .replace(b"call-1@test", f"call-{i}@t".encode()))
        n.relay(msg, [UAS1])
        (t,) = [t for t in n.tm.data_to_send() if t.peer.port == 6001]
        n.tm.receive_response(answer(t.data, 486), n.now)
        n.tm.data_to_send()
    n.run_until(40)  # Timer H/I/D are over; the fr timers (600 s) were stopped
    assert n.idle()
    assert len(n.tm._heap) < 600


def test_503_or_silence_fails_over_through_the_hook_rfc3263():
    """A branch that carries driver data (a DNS resolution) and gets 503, or no reply at all,
    is handed to on_branch_failed, which relays the next server; the caller sees the 200."""
    n = Net(fr_timeout=2.0)
    tried = []

    def next_server(ctx, b, resp, now):
        tried.append((b.peer.port, resp.status))
        nxt = {6001: UAS2, 6002: None}[b.peer.port]
        if nxt is None:
            return False
        n.tm.relay(ctx, [BranchTarget(copy_request(ctx.request), nxt, LOCAL, "res")], now)
        return True

    n.hooks.on_branch_failed = next_server
    ctx = n.tm.create(invite(), CALLER, 0.0)
    n.tm.relay(ctx, [BranchTarget(copy_request(ctx.request), UAS1, LOCAL, "res")], 0.0)
    (inv1,) = requests_to(n.sent(), 6001)
    n.tm.receive_response(answer(inv1.to_bytes(), 503), 0.1)
    out = n.sent()
    (inv2,) = requests_to(out, 6002)
    assert statuses(out) == []
    n.run_until(2.5)  # the second server stays silent: fr_timeout, and nothing is left
    assert tried == [(6001, 503), (6002, 408)]
    assert statuses(n.sent()) == [408]  # best of 503 and 408: the lower class


def test_transport_error_is_a_503_now_rfc3261_16_9():
    """The driver reports that a branch's request could not be sent (TCP connect refused):
    the branch ends with a local 503 at once, the failure route runs, and no retransmission
    or fr timer of that branch is left."""
    n = Net(fr_timeout=30.0)
    tcp = Peer("tcp", "127.0.0.1", 6003, 0)

    def failover(ctx, now):
        n.tm.relay(ctx, [BranchTarget(copy_request(ctx.request), UAS2, LOCAL)], now)
        return True

    n.hooks.on_fail = failover
    ctx = n.relay(invite(), [tcp])
    (tx,) = [t for t in n.tm.data_to_send() if t.peer == tcp]
    assert tx.key is not None
    n.tm.transport_error(tx.key, 0.05)
    assert n.hooks.failures == [503]
    (b0, b1) = ctx.branches
    assert b0.local and b0.status == 503
    (inv2,) = requests_to(n.sent(), 6002)
    n.tm.transport_error(tx.key, 0.06)  # a second report of the same failure: nothing
    assert n.hooks.failures == [503]
    n.tm.receive_response(answer(inv2.to_bytes(), 200), 0.2)
    assert statuses(n.sent()) == [200]
    n.run_until(100)
    assert requests_to(n.sent(), 6003) == []
    assert n.idle()


def test_transport_error_of_the_only_branch_answers_503_upstream_as_500():
    n = Net()
    n.relay(invite(method="MESSAGE"), [Peer("tcp", "127.0.0.1", 6003, 0)])
    (tx,) = n.tm.data_to_send()
    n.tm.transport_error(tx.key, 0.01)
    # no failure hook action: the best reply goes upstream; a 503 becomes 500 (16.7 step 6)
    assert statuses(n.sent()) == [500]


def test_accepted_invite_keeps_only_a_small_server_transaction():
    """The proxy's ICT leaves Accepted after the 5 s wait (Timer M, Kamailio's wait timer);
    then the IST alone absorbs INVITE retransmissions until Timer L (64*T1), holding no
    context, branch or request (an Absorber). A late 2xx retransmission goes statelessly."""
    n = Net()
    n.tm.params = TmParams(TimerValues(t1=0.5, t2=4.0, t4=5.0, timer_d=32.0, timer_m=5.0))
    ctx = n.relay(invite(), [UAS1])
    (inv,) = requests_to(n.sent(), 6001)
    assert n.tm.receive_response(answer(inv.to_bytes(), 200), 0.1)
    assert statuses(n.sent()) == [200]
    n.run_until(5.0)
    assert n.tm.contexts == 1  # the ICT is still in Accepted
    n.run_until(5.2)
    stats = n.tm.stats()
    assert stats["contexts"] == 0 and stats["active"]["ict"] == stats["active"]["ist"] == 0
    (ist,) = n.tm.server.values()
    assert isinstance(ist, Absorber) and ist.response is None and ctx.branches == []
    assert ist.until == 0.1 + 64 * 0.5 and stats["absorbing"] == 1  # Timer L
    assert n.tm.match_request(invite(), CALLER, 6.0)  # retransmission: absorbed
    assert n.sent() == []
    assert n.tm.match_request(invite("CANCEL"), CALLER, 6.0)  # too late: 200 and nothing else
    out = n.sent()
    assert [(p, m.status) for p, m in out] == [(5999, 200)]
    assert not n.tm.receive_response(answer(inv.to_bytes(), 200), 7.0)
    n.run_until(100)
    assert n.idle() and not n.tm.server


def test_t_reply_and_non_invite_keep_no_context_while_absorbing():
    n = Net()
    ctx = n.tm.create(invite(), CALLER, 0.0)
    n.tm.reply(ctx, 404, "Not Here", now=0.0)
    assert n.tm.contexts == 0 and statuses(n.sent()) == [404]
    assert n.tm.match_request(invite(), CALLER, 0.3)
    assert statuses(n.sent()) == [404]
    bye = invite("BYE", branch="z9hG4bKbye1")
    n.relay(bye, [UAS1])
    (req,) = requests_to(n.sent(), 6001)
    n.tm.receive_response(answer(req.to_bytes(), 200), 1.0)
    assert statuses(n.sent()) == [200]
    # the NICT in Completed (Timer K) needs no context: it went with the final response
    assert n.tm.contexts == 0 and n.tm.stats()["active"]["nict"] == 1
    n.run_until(6.1)  # Timer K of the NICT
    n.sent()  # the 404's Timer G retransmissions (no ACK in this test)
    assert n.tm.contexts == 0 and n.tm.stats()["absorbing"] == 1  # the NIST; the 404 IST: a machine
    assert n.tm.stats()["active"] == {"ict": 0, "nict": 0, "ist": 1, "nist": 0}
    assert n.tm.match_request(invite("BYE", branch="z9hG4bKbye1"), CALLER, 7.0)
    assert statuses(n.sent()) == [200]  # the NIST repeats its final response
    n.run_until(100)
    assert n.idle()


def _call_bytes(n, spliced, edit=lambda raw: raw):
    """INVITE relayed, 180, 200 from the callee (their bytes through `edit`); what went to
    the caller, as bytes."""
    n.relay(invite(), [UAS1])
    (inv,) = requests_to(n.sent(), 6001)
    data = inv.to_bytes()
    for st in (180, 200):
        raw = edit(answer(data, st).to_bytes())
        if spliced:
            assert n.tm.receive_response_data(raw, n.now)
        else:
            assert n.tm.receive_response(parse_message(raw), n.now)
    return [t.data for t in n.tm.data_to_send()], data


def test_transaction_reply_splice_forwards_what_the_full_path_does():
    full, _ = _call_bytes(Net(), spliced=False)
    n = Net()
    spliced, inv = _call_bytes(n, spliced=True)
    assert spliced == full and len(spliced) == 2
    assert n.tm.counters == {"snd_rpl_1xx": 1, "fwd_rpl_1xx": 1, "fwd_rpl_2xx": 1}
    # non-2xx finals, strays, replies with one Via, folded lines: the parser's job
    assert not n.tm.receive_response_data(answer(inv, 486).to_bytes(), n.now)
    one_via = answer(inv, 200).to_bytes().replace(b"Via: SIP/2.0/UDP 127.0.0.1:5999;"
                                                  b"branch=z9hG4bKcaller1\r\n", b"")
    assert one_via.count(b"Via:") == 1 and not n.tm.receive_response_data(one_via, n.now)
    stray = answer(inv, 200).to_bytes().replace(b"z9hG4bK1xt", b"z9hG4bK1xu")
    assert not n.tm.receive_response_data(stray, n.now)
    folded = answer(inv, 200).to_bytes().replace(b"\r\nCall-ID:", b"\r\n Call-ID:")
    assert not n.tm.receive_response_data(folded, n.now)


def test_transaction_reply_splice_takes_vias_joined_in_one_line():
    """SIPp's [last_Via:] writes every Via in one line: spliced all the same, and what goes
    upstream is what the full path sends."""
    def joined(data):
        out = data.replace(b"\r\nVia: SIP/2.0/UDP 127.0.0.1:5999",
                           b", SIP/2.0/UDP 127.0.0.1:5999")
        assert out.count(b"Via:") == 1
        return out

    full, _ = _call_bytes(Net(), spliced=False, edit=joined)
    n = Net()
    spliced, _ = _call_bytes(n, spliced=True, edit=joined)
    assert [parse_message(d).get_all("via") for d in spliced] == \
        [parse_message(d).get_all("via") for d in full]
    assert [d.count(b"5999") for d in spliced] == [1, 1]
    assert n.tm.counters == {"snd_rpl_1xx": 1, "fwd_rpl_1xx": 1, "fwd_rpl_2xx": 1}


def test_transaction_reply_splice_leaves_replies_the_hooks_read_to_the_parser():
    class Reading(Recorder):
        def reads_replies(self, ctx):
            return True

    n = Net()
    n.tm.hooks = Reading()
    n.relay(invite(), [UAS1])
    (inv,) = requests_to(n.sent(), 6001)
    assert not n.tm.receive_response_data(answer(inv.to_bytes(), 180).to_bytes(), n.now)


def test_splice_reply_cuts_the_top_via_line_only():
    from sipedge.sip.stateful import splice_reply

    raw = (b"SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP 10.0.0.1;rport=5;branch=z9hG4bK1xtAB.7\r\n"
           b"VIA : SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKup\r\nCSeq: 7 INVITE\r\n"
           b"Content-Length: 2\r\n\r\nhi")
    status, branch, method, rest = splice_reply(raw)
    assert (status, branch, method) == (180, "z9hG4bK1xtAB.7", "INVITE")
    assert rest == raw.replace(b"v: SIP/2.0/UDP 10.0.0.1;rport=5;branch=z9hG4bK1xtAB.7\r\n", b"")
    assert splice_reply(raw.replace(b"CSeq: 7 INVITE\r\n", b"CSeq: 7 INVITE\r\ncseq: 8 X\r\n")) \
        is None
    assert splice_reply(raw.replace(b"180 Ringing", b"486 Busy Here")) is None
    # the Vias in one line (SIPp's [last_Via:]): our value and its comma go, the line stays
    joined = raw.replace(b".7\r\nVIA : SIP/2.0/UDP 10.0.0.2", b".7 ,\t SIP/2.0/UDP 10.0.0.2")
    status, branch, method, rest = splice_reply(joined)
    assert (status, branch, method) == (180, "z9hG4bK1xtAB.7", "INVITE")
    assert rest.startswith(b"SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKup\r\n"
                           b"CSeq: 7 INVITE\r\n")
    assert splice_reply(raw.replace(b"VIA : SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKup\r\n", b"")) \
        is None  # no Via after ours: the reply was for us
    assert splice_reply(joined.replace(b"SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKup", b"")) is None
    assert splice_reply(raw.replace(b".7\r\n", b'.7;x="a,b"\r\n')) is None  # a quote


def test_non_2xx_final_keeps_machines_but_no_context():
    """486: the ICT repeats its ACK (Timer D), the IST waits for the caller's ACK (G, H):
    both stay machines, the context goes with the 486."""
    n = Net()
    n.relay(invite(), [UAS1])
    (inv,) = requests_to(n.sent(), 6001)
    busy = answer(inv.to_bytes(), 486)
    assert n.tm.receive_response(busy, 0.2)
    assert statuses(n.sent()) == [486]
    assert n.tm.contexts == 0
    assert n.tm.stats()["active"] == {"ict": 1, "nict": 0, "ist": 1, "nist": 0}
    assert n.tm.receive_response(answer(inv.to_bytes(), 486), 0.4)  # retransmitted
    assert [m.method for _, m in n.sent()] == ["ACK"]  # the ACK again, nothing upstream
    assert n.tm.match_request(invite("ACK"), CALLER, 0.5)
    n.run_until(100)
    assert n.idle() and not n.tm.server and not n.tm.client
