"""Flood blocking, failed-login blocking, User-Agent filter and listener ACLs (sans-IO)."""

from __future__ import annotations

import pytest

from sipedge.config.loader import load_text
from sipedge.errors import ConfigError
from sipedge.modules.security import api
from sipedge.modules.security.blocklist import Blocklist
from sipedge.modules.security.core import Action, Security
from sipedge.modules.security.failures import AuthFailures
from sipedge.modules.security.filters import Acl, ListenerAcls, UserAgentFilter
from sipedge.modules.security.flood import FloodDetector
from sipedge.modules.security.params import ListenerAclParams, SecurityParams
from sipedge.modules.security.rpc import sec_blocked, sec_unblock
from sipmsg import FakeMsg, request

L = "udp:127.0.0.1:5060"


def test_flood_blocks_one_source_and_not_another():
    f = FloodDetector(window_s=1.0, max_requests=10, block_s=30)
    t = 100.0
    assert all(f.hit("198.51.100.1", t + i * 0.01) for i in range(10))
    assert not f.hit("198.51.100.1", t + 0.2)  # the 11th within a second
    assert f.blocked.is_blocked("198.51.100.1", t + 1)
    assert f.hit("198.51.100.2", t + 0.2)  # another address is served
    assert not f.hit("198.51.100.1", t + 29.0)
    assert f.hit("198.51.100.1", t + 31.0)  # block over


def test_steady_rate_under_the_limit_is_never_blocked():
    f = FloodDetector(window_s=2.0, max_requests=20, block_s=60)
    # 9 requests per second for a minute (18 per 2 s window, under 20)
    assert all(f.hit("192.0.2.1", 1000 + i / 9) for i in range(9 * 60))


def test_sliding_window_catches_a_burst_across_the_boundary():
    f = FloodDetector(window_s=1.0, max_requests=10, block_s=60)
    for i in range(8):
        assert f.hit("192.0.2.1", 10.9 + i * 0.01)  # end of one window
    results = [f.hit("192.0.2.1", 11.0 + i * 0.01) for i in range(8)]  # start of the next
    assert not all(results)


def test_trusted_sources_and_memory_bound():
    f = FloodDetector(window_s=1.0, max_requests=2, block_s=60, max_tracked=100,
                      trusted=["10.0.0.0/8"])
    assert all(f.hit("10.1.2.3", 5.0) for _ in range(100))
    for i in range(1000):
        f.hit(f"192.0.{i // 256}.{i % 256}", 5.0)
    assert f.tracked() <= 100
    assert f.purge(100.0) > 0 and f.tracked() == 0


def test_blocklist_bounded():
    b = Blocklist(max_entries=3)
    for i in range(5):
        b.block(f"192.0.2.{i}", 100.0 + i, "flood")
    assert len(b) == 3 and [x.ip for x in b.active(0)] == ["192.0.2.2", "192.0.2.3",
                                                            "192.0.2.4"]
    b.block("192.0.2.4", 50.0, "manual")  # a shorter block never shortens a longer one
    assert b.active(0)[-1].until == 104.0
    assert b.purge(103.5) == 2


def test_auth_failures_per_source_and_per_user():
    bl = Blocklist()
    af = AuthFailures(bl, max_failures=3, max_user_failures=5, window_s=60, block_s=600)
    assert af.failed("192.0.2.1", "alice", 0) is None
    assert af.failed("192.0.2.1", "alice", 1) is None
    af.succeeded("192.0.2.1")  # the phone got its password right: count starts over
    assert af.failed("192.0.2.1", "alice", 2) is None
    assert af.failed("192.0.2.1", "alice", 3) is None
    blk = af.failed("192.0.2.1", "alice", 4)
    assert blk is not None and blk.reason == "auth_failures" and blk.until == 604
    # outside the window failures are forgotten
    assert af.failed("192.0.2.9", "bob", 0) is None
    assert af.failed("192.0.2.9", "bob", 61) is None and af.failures("192.0.2.9", 61) == 1
    # a distributed guess at one user: once the user has 5 failures, each failing source
    # is blocked at its first failure
    bl2 = Blocklist()
    af2 = AuthFailures(bl2, max_failures=3, max_user_failures=5, window_s=60, block_s=600)
    for i in range(4):
        assert af2.failed(f"198.51.100.{i}", "admin", 10) is None
    blk = af2.failed("198.51.100.50", "admin", 11)
    assert blk is not None and blk.reason == "user_failures"
    assert bl2.is_blocked("198.51.100.50", 12) and not bl2.is_blocked("198.51.100.1", 12)


@pytest.mark.parametrize("ua,hit", [
    ("friendly-scanner", "friendly-scanner"), ("SIPVicious 0.3.4", "sipvicious"),
    ("sipcli/v1.8", "sipcli"), ("Mozilla FRIENDLY-SCANNER x", "friendly-scanner"),
    ("Yealink SIP-T46S", None), ("", None), (None, None)])
def test_user_agent_filter(ua, hit):
    assert UserAgentFilter().denied(ua) == hit


def test_acls():
    acl = Acl.from_strings(allow=["10.0.0.0/8", "2001:db8::/32"], deny=["10.9.0.0/16"])
    assert acl.permits("10.1.1.1") and not acl.permits("10.9.1.1")
    assert not acl.permits("192.0.2.1") and acl.permits("2001:db8::5")
    assert acl.permits("::ffff:10.1.1.1")  # IPv4-mapped IPv6
    assert not acl.permits("not-an-ip")
    open_acl = Acl.from_strings(deny=["192.0.2.0/24"])
    assert open_acl.permits("198.51.100.1") and not open_acl.permits("192.0.2.77")
    acls = ListenerAcls({"udp:0.0.0.0:5060": acl, "*": open_acl})
    assert not acls.permits("udp:0.0.0.0:5060", "198.51.100.1")
    assert acls.permits("tcp:0.0.0.0:5060", "198.51.100.1")
    assert ListenerAcls({}).permits("x", "192.0.2.1")
    with pytest.raises(ValueError):
        Acl.from_strings(allow=["10.0.0.0/33"])


def test_security_instance_and_rpc():
    sec = Security(SecurityParams(flood_window_s=1, flood_max_requests=5, flood_block_s=60,
                                  flood_action="503", acl=[
                                      ListenerAclParams(listener=L, deny=["192.0.2.66"])]))
    assert sec.check_request("192.0.2.66", L, None, 0).reason == "acl"
    assert sec.check_request("192.0.2.1", L, "friendly-scanner", 0).reason == "user_agent"
    for i in range(5):
        assert sec.check_request("192.0.2.1", L, "Yealink", i * 0.01).accepted
    d = sec.check_request("192.0.2.1", L, "Yealink", 0.1)
    assert d.action is Action.REJECT_503 and d.reason == "flood"
    assert api.reply_for(d).status == 503
    assert sec.check_request("192.0.2.1", L, "Yealink", 1.0).reason == "blocked"
    assert sec_blocked(sec, 10.0) == [{"ip": "192.0.2.1", "reason": "flood",
                                       "expires_in_s": 50.1}]
    assert sec_unblock(sec, "192.0.2.1") and not sec_unblock(sec, "192.0.2.1")
    assert sec.check_request("192.0.2.1", L, "Yealink", 10.0).accepted
    with pytest.raises(ValueError):
        sec_unblock(sec, "nonsense")
    msg = FakeMsg(request("OPTIONS", "sip:x@example.com", extra=["User-Agent: sipvicious"]))
    assert api.check(sec, msg, L, 20.0).action is Action.DROP


def test_flood_detection_off_still_honours_auth_blocks():
    sec = Security(SecurityParams(flood_max_requests=0, auth_max_failures=1))
    assert all(sec.check_request("192.0.2.1", L, None, 0).accepted for _ in range(1000))
    sec.auth_failed("192.0.2.1", "alice", 1.0)
    assert sec.check_request("192.0.2.1", L, None, 2.0).reason == "blocked"


def test_params_load_from_toml():
    cfg = load_text('[security]\nflood_max_requests = 100\nuser_agent_deny = ["evil"]\n'
                    '[[security.acl]]\nlistener = "udp:0.0.0.0:5060"\nallow = ["10.0.0.0/8"]\n')
    assert cfg.security.flood_max_requests == 100
    assert cfg.security.acl == [ListenerAclParams(listener="udp:0.0.0.0:5060",
                                                  allow=["10.0.0.0/8"])]
    with pytest.raises(ConfigError) as e:
        load_text('[security]\nflood_action = "reject"\n[[security.acl]]\nallow = []\n')
    assert "security.flood_action" in str(e.value) and "listener" in str(e.value)


def test_each_block_and_unblock_is_reported_once():
    """Issue 14: a block is an event (logged and counted once), not a silent table entry."""
    from sipedge.modules.security.blocklist import Blocklist

    fd = FloodDetector(window_s=1.0, max_requests=2, block_s=30.0)
    bl = fd.blocked
    for i in range(50):  # a long flood from one source: one block, not fifty
        fd.hit("198.51.100.9", 100.0 + i * 0.01)
    events = bl.drain()
    assert [(e.kind, e.block.ip, e.block.reason) for e in events] == [
        ("blocked", "198.51.100.9", "flood")]
    assert events[0].block.until - events[0].block.since == pytest.approx(30.0)
    assert bl.drain() == [] and bl.blocks_total == 1
    assert not fd.hit("198.51.100.9", 120.0)  # still blocked: nothing new
    assert bl.drain() == []
    assert fd.hit("198.51.100.9", 131.0)  # expired: reported once, as such
    assert [(e.kind, e.cause) for e in bl.drain()] == [("unblocked", "expired")]
    small = Blocklist(max_entries=2)
    for i in range(3):
        small.block(f"192.0.2.{i}", 10.0 + i, "manual", 0.0)
    small.unblock("192.0.2.2")
    kinds = [(e.kind, e.block.ip, e.cause) for e in small.drain()]
    assert kinds == [("blocked", "192.0.2.0", ""), ("blocked", "192.0.2.1", ""),
                     ("blocked", "192.0.2.2", ""), ("unblocked", "192.0.2.0", "evicted"),
                     ("unblocked", "192.0.2.2", "manual")]
    assert (small.blocks_total, small.unblocks_total) == (3, 2)
