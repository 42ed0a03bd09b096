"""Selection algorithms, health state machine, probe timer wheel and reload (now is a number)."""

from __future__ import annotations

from collections import Counter

import pytest

from sipedge.errors import LocalProtocolError
from sipedge.modules.dispatcher import (Dispatcher, DispatcherError, MessageFields, SendProbe,
                                        Settings, State, parse_list)
from sipedge.modules.dispatcher.health import TRANSITIONS, Health, Input

LIST = """\
1 sip:10.0.0.1:5060 0 0 weight=3
1 sip:10.0.0.2:5060 0 0 weight=1
1 sip:10.0.0.3:5060 0 0 weight=0
2 sip:10.0.1.1 0 5
2 sip:10.0.1.2 0 9
2 sip:10.0.1.3 0 1
"""


def make(settings: Settings | None = None, text: str = LIST) -> Dispatcher:
    return Dispatcher(parse_list(text), settings or Settings(probe_interval_s=10,
                                                             probe_timeout_s=2,
                                                             inactive_after=3, active_after=2))


def uris(sel):
    return [str(d.uri) for d in sel.candidates]


# ------------------------------------------------------------------ algorithms

@pytest.mark.parametrize("alg,field", [("hash_callid", "call_id"), ("hash_from", "from_uri"),
                                       ("hash_to", "to_uri"), ("hash_ruri", "ruri")])
def test_hash_is_stable_and_spreads(alg, field):
    d = make()
    first = {}
    for i in range(300):
        value = f"c{i}@x" if field == "call_id" else f"sip:user{i}@example.com"
        sel = d.select(1, alg, MessageFields(**{field: value}))
        again = d.select(1, alg, MessageFields(**{field: value}))
        assert uris(sel) == uris(again) and len(sel.candidates) == 3
        first[value] = sel.current.uri.host
    spread = Counter(first.values())
    assert set(spread) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    assert min(spread.values()) > 60  # roughly even


def test_hash_from_uses_user_and_host_only():
    d = make()
    a = d.select(1, "hash_from", MessageFields(from_uri="sip:alice@Example.com;transport=tcp"))
    b = d.select(1, "hash_from", MessageFields(from_uri="sip:alice@example.com:5070"))
    c = d.select(1, "hash_from", MessageFields(from_uri='"Alice" <sip:alice@example.com>'))
    assert uris(a) == uris(b) == uris(c)


def test_hash_to_keeps_user_on_box_and_moves_only_failed_keys():
    d = make()
    users = [f"sip:bob{i}@example.com" for i in range(200)]
    before = {u: d.select(1, "hash_to", MessageFields(to_uri=u)).current.uri.host for u in users}
    dead = d.destination(1, "sip:10.0.0.2:5060")
    d.mark_inactive(dead, now=1.0)
    after = {u: d.select(1, "hash_to", MessageFields(to_uri=u)).current.uri.host for u in users}
    for u in users:
        if before[u] != "10.0.0.2":
            assert after[u] == before[u]  # rendezvous hashing: others do not move
        else:
            assert after[u] != "10.0.0.2"
            # ... and they move to what was their second choice
    assert "10.0.0.2" not in after.values()


def test_round_robin_rotates_over_active_only():
    d = make()
    got = [d.select(1, "round_robin").current.uri.host for _ in range(6)]
    assert got == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] * 2
    sel = d.select(1, "round_robin")
    assert len(sel.candidates) == 3  # the rest is the fail-over order
    d.set_state(1, "sip:10.0.0.2:5060", "disabled", now=0)
    got = {d.select(1, "round_robin").current.uri.host for _ in range(4)}
    assert got == {"10.0.0.1", "10.0.0.3"}


def test_weight_is_exact_and_interleaved():
    d = make()
    got = [d.select(1, "weight").current.uri.host for _ in range(8)]
    assert Counter(got) == {"10.0.0.1": 6, "10.0.0.2": 2}  # weight 0 never while others live
    assert got[:4].count("10.0.0.2") == 1  # smooth: not 3 in a row then 1
    sel = d.select(1, "weight")
    assert [c.weight for c in sel.candidates[1:]] == sorted(
        [c.weight for c in sel.candidates[1:]], reverse=True)
    # weight-0 destination is the last resort
    d.mark_inactive(d.destination(1, "sip:10.0.0.1:5060"), 0)
    d.mark_inactive(d.destination(1, "sip:10.0.0.2:5060"), 0)
    assert d.select(1, "weight").current.uri.host == "10.0.0.3"


def test_priority_first_active():
    d = make()
    assert uris(d.select(2, "priority")) == ["sip:10.0.1.2", "sip:10.0.1.1", "sip:10.0.1.3"]
    d.mark_inactive(d.destination(2, "sip:10.0.1.2"), 0)
    assert d.select(2, "priority").current.uri.host == "10.0.1.1"
    assert d.select(2, 8).current.uri.host == "10.0.1.1"  # Kamailio number


def test_least_calls_uses_call_counter():
    d = make()
    a, b, c = (d.destination(1, f"sip:10.0.0.{i}:5060") for i in (1, 2, 3))
    for _ in range(3):
        d.call_started(a)
    d.call_started(b)
    assert d.select(1, "least_calls").current == c
    d.call_started(c)
    d.call_started(c)
    assert d.select(1, "least_calls").current == b
    d.call_ended(a)
    d.call_ended(a)
    d.call_ended(a)
    assert d.select(1, "least_calls").current == a
    d.call_ended(a)  # never below zero
    assert d.health_of(a).active_calls == 0


def test_next_destination_skips_meanwhile_inactive_and_ends():
    d = make()
    sel = d.select(2, "priority")
    assert sel.current.uri.host == "10.0.1.2"
    d.mark_inactive(d.destination(2, "sip:10.0.1.1"), 0)  # went down meanwhile
    assert d.next_destination(sel).uri.host == "10.0.1.3"
    assert d.next_destination(sel) is None
    assert not sel


def test_no_active_destination_is_a_falsy_selection():
    d = make()
    for i in (1, 2, 3):
        d.set_state(1, f"sip:10.0.0.{i}:5060", "inactive", 0)
    sel = d.select(1, "hash_callid", MessageFields(call_id="x"))
    assert not sel and sel.current is None


def test_unknown_set_and_algorithm():
    d = make()
    with pytest.raises(DispatcherError):
        d.select(99, "round_robin")
    with pytest.raises(ValueError):
        d.select(1, "random")
    with pytest.raises(ValueError):
        d.select(1, 7)


# ------------------------------------------------------------------ health

def test_every_state_input_pair_has_a_transition():
    for s in State:
        for i in Input:
            assert (s, i) in TRANSITIONS


def test_missing_transition_is_a_local_error(monkeypatch):
    h = Health()
    monkeypatch.delitem(TRANSITIONS, (State.ACTIVE, Input.PROBE_OK))
    with pytest.raises(LocalProtocolError):
        h.apply(Input.PROBE_OK, 0, inactive_after=1, active_after=1)


def run_probes(d: Dispatcher, now: float, answer) -> list[SendProbe]:
    """Fire due timers at `now`; answer each probe with answer(dest) -> bool|None (None: lost)."""
    sent = d.handle_timer(now)
    for p in sent:
        ok = answer(p.dest)
        if ok is not None:
            d.probe_result(p.dest, ok, 0.01, now + 0.01, p.token, 200 if ok else 503)
    return sent


def probe_round(d: Dispatcher, answer) -> float:
    """Advance timer by timer until a probe goes out, answer it, process its timeout if lost."""
    for _ in range(10):
        now = d.get_timer()
        if run_probes(d, now, answer):
            if d._pending:  # lost: let the timeout fire
                d.handle_timer(d.get_timer())
            return now
    raise AssertionError("no probe went out")


def test_inactive_after_n_lost_probes_active_after_m_answers():
    d = make(text="1 sip:10.0.0.1\n")
    dest = d.destination(1, "sip:10.0.0.1")
    assert d.get_timer() <= 1.0  # first probe soon after start
    times = [probe_round(d, lambda _: None) for _ in range(2)]
    assert d.health_of(dest).state is State.ACTIVE  # N = 3 not reached yet
    times.append(probe_round(d, lambda _: None))
    assert times[1] - times[0] == pytest.approx(10.0)  # one probe per interval
    assert d.health_of(dest).state is State.INACTIVE
    changes = d.events()
    assert [(e.old, e.new, e.reason) for e in changes] == [
        (State.ACTIVE, State.INACTIVE, "probe timed out")]
    assert changes[0].at == pytest.approx(times[2] + 2.0)  # at the probe timeout
    assert d.health_of(dest).probes_failed == 3
    probe_round(d, lambda _: True)  # M = 2 answers bring it back
    assert d.health_of(dest).state is State.INACTIVE
    probe_round(d, lambda _: True)
    assert d.health_of(dest).state is State.ACTIVE
    assert d.events()[-1].new is State.ACTIVE
    # an answer resets the failure streak: fail, ok, fail, fail keeps it active
    for ans in (None, True, None, None):
        probe_round(d, lambda _, a=ans: a)
    assert d.health_of(dest).state is State.ACTIVE


def test_timer_wheel_intervals_and_timeouts():
    d = make(text="1 sip:10.0.0.1\n1 sip:10.0.0.2\n")
    t0 = d.get_timer()
    sent = d.handle_timer(t0 + 0.5)  # both first probes are due within the first second
    assert len(sent) == 2
    # next events: the timeouts at +2 s, then the next probes at +10 s
    assert d.get_timer() == pytest.approx(t0 + 0.5 + 2.0, abs=0.2)
    for p in sent:
        assert d.probe_result(p.dest, True, 0.002, t0 + 0.6, p.token, 200)
        assert not d.probe_result(p.dest, True, 0.002, t0 + 0.6, p.token, 200)  # duplicate
    nxt = d.get_timer()
    assert 9.0 < nxt - t0 < 11.5  # answered: no timeout pending, next probe one interval on
    assert d.handle_timer(nxt - 0.001) == []
    snap = {r["uri"]: r for r in d.snapshot(t0 + 1)}
    assert snap["sip:10.0.0.1"]["rtt_ms"] == 2.0 and snap["sip:10.0.0.1"]["probes_ok"] == 1


def test_relay_failures_count_and_mark_inactive_is_immediate():
    d = make()
    a = d.destination(1, "sip:10.0.0.1:5060")
    d.relay_failed(a, 1)
    d.relay_failed(a, 2)
    assert d.health_of(a).state is State.ACTIVE
    d.relay_failed(a, 3)
    assert d.health_of(a).state is State.INACTIVE
    b = d.destination(1, "sip:10.0.0.2:5060")
    d.mark_inactive(b, 4)
    assert d.health_of(b).state is State.INACTIVE
    assert [e.reason for e in d.events()] == ["relay failed", "marked"]


def test_probe_reply_codes():
    d = make(Settings(ok_codes=("2xx", "404")))
    assert d.is_probe_ok(200) and d.is_probe_ok(404)
    assert not d.is_probe_ok(503) and not d.is_probe_ok(403)


def test_disabled_is_not_probed_and_leaves_only_by_admin():
    d = make(text="1 sip:10.0.0.1 4\n1 sip:10.0.0.2 2\n")
    dis = d.destination(1, "sip:10.0.0.1")
    tr = d.destination(1, "sip:10.0.0.2")
    assert d.health_of(dis).state is State.DISABLED
    assert d.health_of(tr).state is State.PROBING  # flag 2: probing-only
    sent = d.handle_timer(5.0)
    assert [p.dest for p in sent] == [tr]
    d.mark_inactive(dis, 5)  # ignored
    assert d.health_of(dis).state is State.DISABLED
    assert not d.select(1, "priority")  # probing-only is not selectable
    d.probe_result(tr, True, 0.01, 5.1, sent[0].token, 200)
    d.set_state(1, "sip:10.0.0.1", "active", 6)
    assert d.health_of(dis).state is State.ACTIVE
    with pytest.raises(DispatcherError):
        d.set_state(1, "sip:10.0.0.1", "sleepy", 6)
    with pytest.raises(DispatcherError):
        d.set_state(1, "sip:10.9.9.9", "active", 6)


def test_probe_mode_flagged_probes_only_flagged_or_unhealthy():
    d = make(Settings(probe_mode="flagged"), text="1 sip:10.0.0.1 8\n1 sip:10.0.0.2 0\n")
    flagged = d.destination(1, "sip:10.0.0.1")
    plain = d.destination(1, "sip:10.0.0.2")
    assert [p.dest for p in d.handle_timer(1.0)] == [flagged]
    d.mark_inactive(plain, 2.0)  # an unflagged destination that failed must be probed
    now = 11.0
    sent = d.handle_timer(now)
    assert plain in [p.dest for p in sent]


# ------------------------------------------------------------------ reload

def test_reload_keeps_health_of_unchanged_and_resets_changed():
    d = make()
    a = d.destination(1, "sip:10.0.0.1:5060")
    b = d.destination(1, "sip:10.0.0.2:5060")
    d.mark_inactive(a, 1)
    d.mark_inactive(b, 1)
    d.call_started(d.destination(1, "sip:10.0.0.3:5060"))
    old_table = d.table
    new = LIST.replace("sip:10.0.0.2:5060 0 0", "sip:10.0.0.2:5060 8 0") \
              .replace("2 sip:10.0.1.3 0 1\n", "") + "3 sip:10.0.2.1\n"
    result = d.reload(parse_list(new), now=2)
    assert result == {"added": 2, "removed": 1, "kept": 4}
    assert d.table is not old_table and old_table.get(3) is None  # old table untouched
    assert d.health_of(d.destination(1, "sip:10.0.0.1:5060")).state is State.INACTIVE  # kept
    assert d.health_of(d.destination(1, "sip:10.0.0.2:5060")).state is State.ACTIVE  # flags changed
    assert d.health_of(d.destination(1, "sip:10.0.0.3:5060")).active_calls == 1
    with pytest.raises(DispatcherError):
        d.destination(2, "sip:10.0.1.3")
    # one probe chain per destination after reload, none for removed ones
    sent = d.handle_timer(2.0 + 1.0)
    keys = [p.dest.key for p in sent]
    assert len(keys) == len(set(keys))
    assert (2, "sip:10.0.1.3") not in keys and (3, "sip:10.0.2.1") in keys


def test_settings_validation():
    with pytest.raises(ValueError):
        Settings(probe_interval_s=1, probe_timeout_s=2)
    with pytest.raises(ValueError):
        Settings(ok_codes=("2x",))
    with pytest.raises(ValueError):
        Settings(probe_mode="some")


def test_destination_lookup_accepts_equivalent_spelling():
    d = make()
    assert d.destination(1, " sip:10.0.0.1:5060") is d.destination(1, "sip:10.0.0.1:5060")
    with pytest.raises(DispatcherError):
        d.destination(1, "not a uri")


def test_mirror_state_follows_another_dispatcher_without_probing_or_events():
    d = make()
    first = next(iter(d.table.destinations()))
    uri = str(first.uri)
    timers_before = len(d._timers)
    assert d.mirror_state(first.set_id, uri, "inactive", 5.0) is True
    assert d.health_of(first).state is State.INACTIVE
    assert d.mirror_state(first.set_id, uri, "inactive", 5.5) is False  # no change
    assert d.events() == [] and len(d._timers) == timers_before
    assert d.mirror_state(first.set_id, uri, State.ACTIVE, 6.0) is True
    assert d.mirror_state(99, "sip:nowhere", "active", 6.0) is False  # unknown: ignored
    assert d.mirror_state(first.set_id, uri, "sleepy", 6.0) is False
