"""Sans-IO supervision policy: when to start, restart, kill, give up, and pet the watchdog.

No processes, sockets, clocks or logging here: every method takes `now` (monotonic seconds) and
returns an action for the driver (`supervisor.py`) to carry out. All state transitions of the
supervised proxy live in this file.

    STOPPED --start--> STARTING --healthy--> RUNNING <--healthy-- DEGRADED
                          |                     |--unhealthy-------^  |
                          |start_timeout        |health_timeout       |health_timeout
                          v                     v                     v
                       STOPPING (TERM, KILL after term_timeout) <-----'
    exit -> respawn policy -> BACKOFF --delay--> STARTING
                           -> FAILED (too many quick crashes; no loop)
         -> hang count     -> FAILED (`hang_limit` hangs in a row: watchdog reset)
    request_stop -> STOPPING -> STOPPED

Respawn follows procd: an exit after less than `threshold_s` of runtime is a quick crash; more
than `retry` quick crashes in a row give up (FAILED). An exit after a long run resets the count.
The restart delay starts at `timeout_s` and doubles per quick crash, capped at `max_delay_s`.

Hangs are counted on their own: an exit that follows a kill for the start or health timeout is
a hang recovery. `hang_limit` of them in a row, with no stable period (healthy for
`threshold_s`) in between, mean restarting does not help: FAILED, and the keep-alive stops so
the hardware watchdog resets the box. A crash loop (voluntary exits) is different: it is
usually the config or the software, a reset would not change it and the box must stay
reachable on its console, so FAILED keeps petting unless `reset_on_failed`. A proxy that keeps
hanging may be caught in kernel or driver state (a wedged NIC, a stuck socket) that a reset
clears.

Every deliberate reset (hang limit, an unkillable proxy, `reset_on_failed`) is suppressed while
`allow_resets(False)` holds: the driver says so when earlier boots already ended in too many
watchdog resets (boot-loop guard; the record lives on the data partition, not here). Then the
proxy stays FAILED (or stuck in STOPPING) and the watchdog is petted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..errors import LocalProtocolError


class State(str, Enum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"
    STOPPING = "STOPPING"
    BACKOFF = "BACKOFF"
    FAILED = "FAILED"


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Spawn:
    """Start the proxy now."""


@dataclass(frozen=True)
class Terminate:
    """Send SIGTERM now; the policy asks for `Kill` at `kill_at` if it is still alive."""

    kill_at: float
    reason: str


@dataclass(frozen=True)
class Kill:
    """Send SIGKILL to the proxy's process group now."""


@dataclass(frozen=True)
class Restart:
    """Start the proxy again at `at` (monotonic)."""

    at: float
    delay_s: float
    crashes: int


@dataclass(frozen=True)
class GiveUp:
    """Too many quick crashes: stay down in FAILED."""

    reason: str


@dataclass(frozen=True)
class Idle:
    """Nothing to do."""


Action = Spawn | Terminate | Kill | Restart | GiveUp | Idle

# After SIGKILL a process that has not gone within this time is stuck in the kernel (D state):
# the supervisor cannot recover it and lets the hardware watchdog reset the box.
KILL_GRACE_S = 5.0


class RespawnPolicy:
    """procd-style crash-loop guard: `on_exit(runtime, now) -> Restart | GiveUp`."""

    def __init__(self, threshold_s: float, timeout_s: float, max_delay_s: float,
                 retry: int) -> None:
        self.threshold_s = threshold_s
        self.timeout_s = timeout_s
        self.max_delay_s = max(max_delay_s, timeout_s)
        self.retry = retry
        self.crashes = 0

    def on_exit(self, runtime: float, now: float) -> Restart | GiveUp:
        if runtime < self.threshold_s:
            self.crashes += 1
        else:
            self.crashes = 0
        if self.crashes > self.retry:
            return GiveUp(f"{self.crashes} crashes, each within {self.threshold_s:g}s of start")
        delay = self.timeout_s * (2 ** max(self.crashes - 1, 0))
        delay = min(delay, self.max_delay_s)
        return Restart(at=now + delay, delay_s=delay, crashes=self.crashes)

    def reset(self) -> None:
        self.crashes = 0


@dataclass(frozen=True)
class HealthLimits:
    start_timeout_s: float = 120.0
    health_timeout_s: float = 20.0
    max_loop_lag_ms: float = 500.0
    term_timeout_s: float = 10.0
    reset_on_failed: bool = False
    hang_limit: int = 3  # hangs in a row before FAILED + watchdog reset; 0: never


class SupervisorPolicy:
    """The proxy's lifecycle as a state machine driven by the supervisor loop.

    Inputs: `start`, `on_spawned`, `on_health`, `on_timer`, `on_exit`, `request_stop`,
    `request_restart`, `allow_resets`. Outputs: actions, `get_timer()`, `should_pet(now)`,
    `wants_reset(now)` and `status(now)`.
    """

    def __init__(self, respawn: RespawnPolicy, limits: HealthLimits) -> None:
        self.respawn = respawn
        self.limits = limits
        self.state = State.STOPPED
        self.started_at: float | None = None
        self.last_ok: float | None = None
        self.healthy_since: float | None = None
        self.kill_at: float | None = None
        self.killed_at: float | None = None
        self.restart_at: float | None = None
        self.restarts = 0
        self.last_exit: dict[str, Any] | None = None
        self.last_problem = ""
        self._stop_requested = False
        self._planned_restart = False
        self.hangs = 0  # hang recoveries in a row (kills for the start/health timeout)
        self.failed_by_hang = False
        self.resets_allowed = True
        self._hang_kill = False  # the current STOPPING is a hang recovery

    # -------------------------------------------------------------- inputs

    def start(self, now: float) -> Action:
        if self.state not in (State.STOPPED, State.FAILED):
            raise LocalProtocolError(f"start in state {self.state.value}")
        self._stop_requested = False
        self.respawn.reset()
        self._reset_hangs()
        self.state = State.STARTING
        self.started_at = now
        return Spawn()

    def on_spawned(self, now: float) -> None:
        if self.state is not State.STARTING:
            raise LocalProtocolError(f"spawned in state {self.state.value}")
        self.started_at = now
        self.last_ok = None
        self.healthy_since = None
        self.kill_at = None
        self.killed_at = None

    def on_health(self, ok: bool, loop_lag_ms: float, now: float, detail: str = "") -> Action:
        """Feed one probe result (heartbeat and/or OPTIONS) into the machine."""
        if self.state not in (State.STARTING, State.RUNNING, State.DEGRADED):
            return Idle()
        if ok and loop_lag_ms > self.limits.max_loop_lag_ms:
            ok = False
            detail = f"loop lag {loop_lag_ms:.0f}ms > {self.limits.max_loop_lag_ms:g}ms"
        if ok:
            self.last_ok = now
            if self.state is not State.RUNNING:
                self.healthy_since = now
            self.state = State.RUNNING
            self.last_problem = ""
            if self.hangs and now - self.healthy_since >= self.respawn.threshold_s:
                self.hangs = 0  # stable again: earlier hangs no longer count
        else:
            self.last_problem = detail or "probe failed"
            if self.state is State.RUNNING:
                self.state = State.DEGRADED
                self.healthy_since = None
        return self.on_timer(now)

    def on_timer(self, now: float) -> Action:
        st = self.state
        if st is State.STARTING and self.started_at is not None:
            if now - self.started_at > self.limits.start_timeout_s:
                return self._terminate(now, f"not healthy {self.limits.start_timeout_s:g}s "
                                       "after start", hang=True)
        elif st in (State.RUNNING, State.DEGRADED):
            ref = self.last_ok if self.last_ok is not None else self.started_at
            if ref is not None and now - ref > self.limits.health_timeout_s:
                return self._terminate(now, f"no healthy probe for {now - ref:.1f}s "
                                       f"({self.last_problem or 'no answer'})", hang=True)
        elif st is State.STOPPING:
            if self.killed_at is None and self.kill_at is not None and now >= self.kill_at:
                self.killed_at = now
                return Kill()
        elif st is State.BACKOFF and self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            self.state = State.STARTING
            self.started_at = now
            self.restarts += 1
            return Spawn()
        return Idle()

    def on_exit(self, runtime: float, now: float, returncode: int | None = None) -> Action:
        """The proxy process exited after `runtime` seconds."""
        if self.state in (State.STOPPED, State.BACKOFF, State.FAILED):
            raise LocalProtocolError(f"exit in state {self.state.value}")
        self.last_exit = {"returncode": returncode, "runtime_s": round(runtime, 3)}
        self.healthy_since = None
        self.kill_at = self.killed_at = None
        hang, self._hang_kill = self._hang_kill, False
        if self._stop_requested:
            self.state = State.STOPPED
            return Idle()
        if self._planned_restart:
            self._planned_restart = False
            self.state = State.STARTING
            self.started_at = now
            self.restarts += 1
            return Spawn()
        hang_problem = self.last_problem
        action = self.respawn.on_exit(runtime, now)  # a hang is a crash too (crash count)
        if hang:
            self.hangs += 1
            limit = self.limits.hang_limit
            if limit and self.hangs >= limit:
                reason = (f"proxy hung {self.hangs} times in a row, restarting does not help "
                          f"(last: {hang_problem})")
                if not self.resets_allowed:
                    reason += "; watchdog reset suppressed: max_resets reached"
                self.failed_by_hang = True
                action = GiveUp(reason)
        if isinstance(action, GiveUp):
            self.state = State.FAILED
            self.last_problem = action.reason
        else:
            self.state = State.BACKOFF
            self.restart_at = action.at
        return action

    def request_stop(self, now: float) -> Action:
        """Clean stop (SIGTERM to the supervisor)."""
        self._stop_requested = True
        if self.state in (State.STARTING, State.RUNNING, State.DEGRADED):
            return self._terminate(now, "stop requested")
        if self.state is State.STOPPING:
            return Idle()
        self.state = State.STOPPED
        self.restart_at = None
        return Idle()

    def request_restart(self, now: float, reason: str) -> Action:
        """Planned restart (new config): not counted as a crash."""
        if self.state in (State.STARTING, State.RUNNING, State.DEGRADED):
            self._planned_restart = True
            return self._terminate(now, reason)
        if self.state in (State.BACKOFF, State.FAILED):
            self.respawn.reset()
            self._reset_hangs()
            self.restart_at = None
            self.state = State.STARTING
            self.started_at = now
            self.restarts += 1
            return Spawn()
        return Idle()

    def allow_resets(self, allowed: bool) -> None:
        """Boot-loop guard from the driver: False suppresses every deliberate watchdog reset
        (the proxy stays FAILED, or stuck in STOPPING, and the watchdog is petted)."""
        self.resets_allowed = allowed

    # -------------------------------------------------------------- outputs

    def get_timer(self) -> float | None:
        st = self.state
        if st is State.STARTING and self.started_at is not None:
            return self.started_at + self.limits.start_timeout_s
        if st in (State.RUNNING, State.DEGRADED):
            ref = self.last_ok if self.last_ok is not None else self.started_at
            return None if ref is None else ref + self.limits.health_timeout_s
        if st is State.STOPPING and self.killed_at is None:
            return self.kill_at
        if st is State.BACKOFF:
            return self.restart_at
        return None

    def should_pet(self, now: float) -> bool:
        """Pet the hardware watchdog only while the proxy is healthy or being recovered."""
        st = self.state
        lim = self.limits
        if st is State.STARTING:
            return self.started_at is None or now - self.started_at <= lim.start_timeout_s
        if st in (State.RUNNING, State.DEGRADED):
            ref = self.last_ok if self.last_ok is not None else self.started_at
            return ref is None or now - ref <= lim.health_timeout_s
        if self.wants_reset(now) is not None:
            return not self.resets_allowed
        return True  # STOPPING, BACKOFF, FAILED (crash loop), STOPPED

    def wants_reset(self, now: float) -> str | None:
        """Why only a hardware reset can help now (the keep-alive is withheld unless
        `allow_resets(False)`), or None. Transient gaps (a health timeout before `on_timer`
        has run) are not reported here."""
        if self.state is State.FAILED and (self.failed_by_hang or self.limits.reset_on_failed):
            return self.last_problem
        if (self.state is State.STOPPING and self.killed_at is not None
                and now - self.killed_at > KILL_GRACE_S):
            return (f"proxy did not exit {KILL_GRACE_S:g}s after SIGKILL (stuck in the kernel; "
                    f"stopped for: {self.last_problem or 'stop'})")
        return None

    def healthy_for(self, now: float) -> float:
        return 0.0 if self.healthy_since is None else now - self.healthy_since

    def status(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "restarts": self.restarts,
            "crashes": self.respawn.crashes,
            "hangs": self.hangs,
            "healthy_for_s": round(self.healthy_for(now), 3),
            "last_exit": self.last_exit,
            "problem": self.last_problem,
            "restart_in_s": (None if self.restart_at is None
                             else round(max(self.restart_at - now, 0.0), 3)),
        }

    # -------------------------------------------------------------- internals

    def _reset_hangs(self) -> None:
        self.hangs = 0
        self.failed_by_hang = False

    def _terminate(self, now: float, reason: str, hang: bool = False) -> Terminate:
        self._hang_kill = hang
        self.state = State.STOPPING
        self.kill_at = now + self.limits.term_timeout_s
        self.killed_at = None
        if not self._stop_requested:
            self.last_problem = reason
        return Terminate(kill_at=self.kill_at, reason=reason)
