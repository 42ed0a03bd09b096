"""SupervisorPolicy and RespawnPolicy: the whole lifecycle with a fake clock, no processes."""

import pytest

from sipedge.appliance.fakes import FakeClock
from sipedge.appliance.policy import (KILL_GRACE_S, GiveUp, HealthLimits, Idle, Kill,
                                      RespawnPolicy, Restart, Spawn, State, SupervisorPolicy,
                                      Terminate)
from sipedge.errors import LocalProtocolError


def make(retry=3, threshold=60.0, timeout=1.0, max_delay=8.0, **limits):
    lim = dict(start_timeout_s=10.0, health_timeout_s=5.0, max_loop_lag_ms=500.0,
               term_timeout_s=3.0)
    lim.update(limits)
    return SupervisorPolicy(RespawnPolicy(threshold, timeout, max_delay, retry),
                            HealthLimits(**lim))


def running(clock, **kw):
    p = make(**kw)
    assert p.start(clock()) == Spawn()
    p.on_spawned(clock())
    clock.advance(1)
    assert p.on_health(True, 1.0, clock()) == Idle()
    assert p.state is State.RUNNING
    return p


# ------------------------------------------------------------------ RespawnPolicy (procd rule)

def test_quick_crashes_back_off_exponentially_then_give_up():
    r = RespawnPolicy(threshold_s=60, timeout_s=1, max_delay_s=3, retry=3)
    delays = []
    for _ in range(3):
        a = r.on_exit(runtime=2, now=100)
        assert isinstance(a, Restart)
        delays.append(a.delay_s)
    assert delays == [1, 2, 3]  # doubling, capped at max_delay_s
    a = r.on_exit(runtime=2, now=100)
    assert isinstance(a, GiveUp) and "4 crashes" in a.reason


def test_long_run_resets_the_crash_counter():
    r = RespawnPolicy(threshold_s=60, timeout_s=1, max_delay_s=30, retry=1)
    assert isinstance(r.on_exit(5, 0), Restart)
    a = r.on_exit(61, 100)  # ran longer than the threshold: not a quick crash
    assert a == Restart(at=101, delay_s=1, crashes=0)
    assert isinstance(r.on_exit(5, 200), Restart)
    assert isinstance(r.on_exit(5, 300), GiveUp)


def test_retry_zero_gives_up_at_the_first_quick_crash():
    assert isinstance(RespawnPolicy(60, 1, 1, 0).on_exit(1, 0), GiveUp)


# ------------------------------------------------------------------ start / health

def test_start_healthy_and_status():
    clock = FakeClock()
    p = running(clock)
    clock.advance(2)
    s = p.status(clock())
    assert s["state"] == "RUNNING" and s["healthy_for_s"] == 2 and s["crashes"] == 0


def test_not_healthy_within_start_timeout_is_terminated():
    clock = FakeClock()
    p = make()
    p.start(clock())
    p.on_spawned(clock())
    assert p.get_timer() == clock() + 10
    clock.advance(10)
    assert p.on_timer(clock()) == Idle()
    clock.advance(0.1)
    a = p.on_timer(clock())
    assert isinstance(a, Terminate) and a.kill_at == clock() + 3
    assert p.state is State.STOPPING


def test_failed_probes_degrade_then_hang_restarts():
    clock = FakeClock()
    p = running(clock)
    clock.advance(1)
    assert p.on_health(False, 0, clock(), "OPTIONS: no reply") == Idle()
    assert p.state is State.DEGRADED and p.status(clock())["problem"] == "OPTIONS: no reply"
    clock.advance(3.9)  # 4.9 s since the last good probe
    assert p.on_health(False, 0, clock()) == Idle()
    assert p.should_pet(clock())
    clock.advance(0.2)
    a = p.on_timer(clock())
    assert isinstance(a, Terminate) and "no healthy probe" in a.reason
    # the hung proxy ignores SIGTERM: SIGKILL at kill_at, exactly once
    assert p.get_timer() == a.kill_at
    clock.advance(3)
    assert p.on_timer(clock()) == Kill()
    assert p.on_timer(clock()) == Idle()
    a = p.on_exit(runtime=8, now=clock(), returncode=-9)
    assert isinstance(a, Restart) and a.crashes == 1  # a hang counts as a crash
    assert p.state is State.BACKOFF


def test_recovery_from_degraded():
    clock = FakeClock()
    p = running(clock)
    p.on_health(False, 0, clock())
    clock.advance(1)
    p.on_health(True, 0, clock())
    assert p.state is State.RUNNING and p.last_problem == ""


def test_loop_lag_over_limit_is_unhealthy():
    clock = FakeClock()
    p = running(clock)
    p.on_health(True, 900.0, clock())
    assert p.state is State.DEGRADED and "loop lag 900ms" in p.last_problem


def test_crash_loop_ends_in_failed_without_looping():
    clock = FakeClock()
    p = make(retry=2, timeout=1, max_delay=8)
    p.start(clock())
    spawns = 1
    for _ in range(10):  # bounded: the policy must stop long before this
        p.on_spawned(clock())
        clock.advance(0.5)
        a = p.on_exit(0.5, clock(), 1)
        if isinstance(a, GiveUp):
            break
        assert isinstance(a, Restart)
        clock.advance(a.delay_s)
        assert p.on_timer(clock()) == Spawn()
        spawns += 1
    assert p.state is State.FAILED and spawns == 3
    assert p.get_timer() is None
    clock.advance(1e6)
    assert p.on_timer(clock()) == Idle()
    assert p.should_pet(clock())  # default: stay up and show FAILED


def test_failed_stops_petting_when_reset_on_failed():
    clock = FakeClock()
    p = make(retry=0, reset_on_failed=True)
    p.start(clock())
    p.on_spawned(clock())
    assert isinstance(p.on_exit(0.1, clock()), GiveUp)
    assert not p.should_pet(clock())


def test_backoff_restart_fires_at_timer():
    clock = FakeClock()
    p = running(clock)
    a = p.on_exit(2.0, clock(), 1)
    assert a == Restart(at=clock() + 1, delay_s=1, crashes=1)
    assert p.on_timer(clock() + 0.5) == Idle()
    assert p.on_timer(a.at) == Spawn() and p.state is State.STARTING
    assert p.status(a.at)["restarts"] == 1


# ------------------------------------------------------------------ watchdog petting rule

def test_pet_only_while_healthy_or_recovering():
    clock = FakeClock()
    p = make()
    assert p.should_pet(clock())  # STOPPED
    p.start(clock())
    p.on_spawned(clock())
    assert p.should_pet(clock() + 10)
    assert not p.should_pet(clock() + 10.01)  # never became healthy
    clock.advance(1)
    p.on_health(True, 0, clock())
    assert p.should_pet(clock() + 5) and not p.should_pet(clock() + 5.01)


def test_unkillable_proxy_stops_petting():
    clock = FakeClock()
    p = running(clock)
    a = p.request_stop(clock())
    assert isinstance(a, Terminate)
    clock.advance(3)
    assert p.on_timer(clock()) == Kill()
    assert p.should_pet(clock() + KILL_GRACE_S)
    assert not p.should_pet(clock() + KILL_GRACE_S + 0.01)  # stuck in D state: let it reset


# ------------------------------------------------------------------ stop / restart

def test_clean_stop():
    clock = FakeClock()
    p = running(clock)
    a = p.request_stop(clock())
    assert isinstance(a, Terminate) and a.reason == "stop requested"
    assert p.request_stop(clock()) == Idle()
    assert p.on_exit(5, clock(), 0) == Idle()
    assert p.state is State.STOPPED


def test_stop_during_backoff_cancels_restart():
    clock = FakeClock()
    p = running(clock)
    p.on_exit(1, clock(), 1)
    assert p.request_stop(clock()) == Idle()
    assert p.state is State.STOPPED and p.get_timer() is None


def test_planned_restart_is_not_a_crash():
    clock = FakeClock()
    p = running(clock)
    a = p.request_restart(clock(), "config changed")
    assert isinstance(a, Terminate)
    assert p.on_exit(1, clock(), 0) == Spawn()
    assert p.state is State.STARTING and p.respawn.crashes == 0


def test_restart_from_failed_resets_counter():
    clock = FakeClock()
    p = make(retry=0)
    p.start(clock())
    p.on_spawned(clock())
    p.on_exit(0.1, clock(), 1)
    assert p.state is State.FAILED
    assert p.request_restart(clock(), "operator") == Spawn()
    assert p.respawn.crashes == 0


def test_illegal_transitions_raise():
    clock = FakeClock()
    p = make()
    with pytest.raises(LocalProtocolError):
        p.on_exit(1, clock())
    with pytest.raises(LocalProtocolError):
        p.on_spawned(clock())
    p.start(clock())
    with pytest.raises(LocalProtocolError):
        p.start(clock())


def test_health_ignored_when_not_running():
    clock = FakeClock()
    p = make()
    assert p.on_health(True, 0, clock()) == Idle()
    assert p.state is State.STOPPED


# ------------------------------------------------------------------ repeated hangs -> reset

def hang(p, clock, running=True):
    """The proxy stops answering: health (or start) timeout, TERM ignored, KILL, exit."""
    clock.advance((5.0 if running else 10.0) + 0.1)
    a = p.on_timer(clock())
    assert isinstance(a, Terminate)
    clock.advance(3)
    assert p.on_timer(clock()) == Kill()
    return p.on_exit(runtime=10, now=clock(), returncode=-9)


def respawn_healthy(p, clock, action):
    assert isinstance(action, Restart)
    clock.advance(action.delay_s)
    assert p.on_timer(clock()) == Spawn()
    p.on_spawned(clock())
    clock.advance(1)
    p.on_health(True, 1.0, clock())
    assert p.state is State.RUNNING


def test_hangs_in_a_row_end_in_failed_and_stop_the_petting():
    clock = FakeClock()
    p = running(clock, retry=10, hang_limit=3)
    for n in (1, 2):
        a = hang(p, clock)
        assert p.status(clock())["hangs"] == n and p.state is State.BACKOFF
        assert p.should_pet(clock()) and p.wants_reset(clock()) is None
        respawn_healthy(p, clock, a)
    a = hang(p, clock)
    assert isinstance(a, GiveUp)
    assert a.reason.startswith("proxy hung 3 times in a row") and "no healthy probe" in a.reason
    assert p.state is State.FAILED and p.status(clock())["problem"] == a.reason
    assert p.get_timer() is None and p.on_timer(clock() + 1e6) == Idle()  # no restart
    assert not p.should_pet(clock())  # the hardware watchdog resets the box
    assert p.wants_reset(clock()) == a.reason


def test_start_timeout_is_a_hang_too():
    clock = FakeClock()
    p = make(retry=10, hang_limit=2)
    p.start(clock())
    p.on_spawned(clock())
    a = hang(p, clock, running=False)
    assert isinstance(a, Restart) and p.hangs == 1
    clock.advance(a.delay_s)
    assert p.on_timer(clock()) == Spawn()
    p.on_spawned(clock())
    assert isinstance(hang(p, clock, running=False), GiveUp)
    assert "not healthy 10s after start" in p.last_problem and not p.should_pet(clock())


def test_voluntary_exits_and_planned_restarts_are_not_hangs():
    clock = FakeClock()
    p = running(clock, retry=10, hang_limit=1)
    a = p.on_exit(2.0, clock(), 1)  # crash: counted by the respawn policy only
    assert isinstance(a, Restart) and p.hangs == 0
    respawn_healthy(p, clock, a)
    assert isinstance(p.request_restart(clock(), "config changed"), Terminate)
    clock.advance(3)
    assert p.on_timer(clock()) == Kill()  # even when it needs SIGKILL
    assert p.on_exit(3.0, clock(), -9) == Spawn() and p.hangs == 0
    p.on_spawned(clock())
    assert isinstance(p.request_stop(clock()), Terminate)
    assert p.on_exit(1.0, clock(), 0) == Idle() and p.hangs == 0


def test_stable_period_clears_the_hang_count():
    clock = FakeClock()
    p = running(clock, retry=10, threshold=60.0, hang_limit=2)
    respawn_healthy(p, clock, hang(p, clock))
    assert p.hangs == 1
    since = p.healthy_since
    for t in range(1, 60):  # healthy probes every second, not yet 60 s
        clock.now = since + t
        p.on_health(True, 1.0, clock())
    assert p.hangs == 1
    clock.now = since + 60.01
    p.on_health(True, 1.0, clock())  # healthy for the respawn threshold (60 s)
    assert p.hangs == 0
    a = hang(p, clock)
    assert isinstance(a, Restart) and p.hangs == 1  # counted from scratch


def test_degraded_interrupts_the_stable_period():
    clock = FakeClock()
    p = running(clock, retry=10, threshold=60.0, hang_limit=2)
    respawn_healthy(p, clock, hang(p, clock))
    clock.advance(40)
    p.on_health(True, 1.0, clock())
    p.on_health(False, 0, clock(), "slow")  # DEGRADED: the healthy period starts over
    clock.advance(1)
    p.on_health(True, 1.0, clock())
    clock.advance(30)
    p.on_health(True, 1.0, clock())
    assert p.hangs == 1
    assert isinstance(hang(p, clock), GiveUp)


def test_hang_limit_zero_keeps_restarting():
    clock = FakeClock()
    p = running(clock, retry=100, hang_limit=0)
    for n in range(1, 6):
        a = hang(p, clock)
        assert isinstance(a, Restart) and p.hangs == n
        respawn_healthy(p, clock, a)
    assert p.should_pet(clock())


def test_crash_loop_guard_first_keeps_petting():
    """hang_limit above the respawn retry: the crash-loop guard gives up first (FAILED,
    petted), as documented for `hang_limit > respawn_retry + 1`."""
    clock = FakeClock()
    p = running(clock, retry=1, hang_limit=5)
    respawn_healthy(p, clock, hang(p, clock))
    a = hang(p, clock)
    assert isinstance(a, GiveUp) and "crashes" in a.reason
    assert p.should_pet(clock()) and p.wants_reset(clock()) is None


def test_operator_restart_from_hang_failed_clears_the_count():
    clock = FakeClock()
    p = running(clock, retry=10, hang_limit=1)
    assert isinstance(hang(p, clock), GiveUp)
    assert p.request_restart(clock(), "operator") == Spawn()
    assert p.hangs == 0 and p.should_pet(clock()) and not p.failed_by_hang


# ------------------------------------------------------------------ boot-loop guard input

def test_resets_suppressed_hang_limit_stays_failed_and_petted():
    clock = FakeClock()
    p = running(clock, retry=10, hang_limit=1)
    p.allow_resets(False)
    a = hang(p, clock)
    assert isinstance(a, GiveUp) and a.reason.endswith(
        "; watchdog reset suppressed: max_resets reached")
    assert p.state is State.FAILED
    assert p.should_pet(clock()) and p.should_pet(clock() + 1e6)
    assert p.wants_reset(clock()) == a.reason  # still reported as needing one
    p.allow_resets(True)  # the guard's record was cleared (e.g. by hand) and re-read
    assert not p.should_pet(clock())


def test_resets_suppressed_for_unkillable_and_reset_on_failed():
    clock = FakeClock()
    p = running(clock)
    p.allow_resets(False)
    p.request_stop(clock())
    clock.advance(3)
    assert p.on_timer(clock()) == Kill()
    later = clock() + KILL_GRACE_S + 1
    assert p.should_pet(later) and "did not exit 5s after SIGKILL" in p.wants_reset(later)
    q = make(retry=0, reset_on_failed=True)
    q.allow_resets(False)
    q.start(clock())
    q.on_spawned(clock())
    assert isinstance(q.on_exit(0.1, clock()), GiveUp)
    assert q.should_pet(clock()) and q.wants_reset(clock()) is not None


def test_wants_reset_is_none_for_transient_gaps_and_crash_loops():
    clock = FakeClock()
    p = running(clock)
    assert not p.should_pet(clock() + 5.5)  # health timeout passed, on_timer not yet run
    assert p.wants_reset(clock() + 5.5) is None
    q = make(retry=0)
    q.start(clock())
    q.on_spawned(clock())
    q.on_exit(0.1, clock(), 1)
    assert q.state is State.FAILED and q.wants_reset(clock()) is None and q.should_pet(clock())
