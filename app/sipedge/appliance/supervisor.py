"""The supervisor loop: drives `SupervisorPolicy` with a real process, probes, watchdog and panel.

Everything that decides lives in `policy.py`; this module only turns actions into signals and
process starts, feeds probe results and exits back, pets the watchdog while the policy says so,
and keeps the panel (LEDs, LCD) in step. It is the one place besides per-message dispatch where
`except Exception` is allowed: a failing panel must not stop the supervision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..errors import EdgeError
from ..panel import leds as panel_leds
from ..panel import pages as panel_pages
from ..panel import status as panel_status
from .instances import (InstanceRunner, first_instance, fingerprint, instance_status,
                        is_multi, proxy_argv)
from .health import (
    CombinedProbe,
    CoreHealthProbe,
    RpcCallError,
    SipOptionsProbe,
    rpc_request,
)
from .policy import (
    Action,
    GiveUp,
    HealthLimits,
    Idle,
    Kill,
    RespawnPolicy,
    Restart,
    Spawn,
    State,
    SupervisorPolicy,
    Terminate,
)
from .ports import Display, HealthProbe, HealthReport, StatusLeds, UpdateAgent, Watchdog
from .process import ProxyProcess
from .resetguard import ResetHistory, ResetRecord, ResetRecordStore
from .sdconfig import BootConfigManager, ConfigChoice

log = logging.getLogger("sipedge.appliance.supervisor")

# Upper bound of one loop wait, so a lost wake-up costs at most this much.
MAX_WAIT_S = 1.0


def default_probe(choice: ConfigChoice) -> HealthProbe:
    cfg = first_instance(choice.config)  # the instance's own socket and listeners
    params = cfg.supervisor
    heartbeat = CoreHealthProbe(cfg.core.ctl_socket, timeout=params.probe_timeout_s)
    options = None
    if params.options_probe:
        udp = [lst for lst in cfg.listen if lst.proto == "udp"]
        if udp:
            options = SipOptionsProbe(udp[0].address, udp[0].port,
                                      timeout=params.probe_timeout_s)
    return CombinedProbe(heartbeat, options)


def build_policy(choice: ConfigChoice) -> SupervisorPolicy:
    p = choice.config.supervisor
    return SupervisorPolicy(
        RespawnPolicy(p.respawn_threshold_s, p.respawn_timeout_s, p.respawn_max_delay_s,
                      p.respawn_retry),
        _limits(choice))


def _limits(choice: ConfigChoice) -> HealthLimits:
    p = choice.config.supervisor
    return HealthLimits(start_timeout_s=p.start_timeout_s, health_timeout_s=p.health_timeout_s,
                        max_loop_lag_ms=p.max_loop_lag_ms, term_timeout_s=p.term_timeout_s,
                        reset_on_failed=choice.config.watchdog.reset_on_failed,
                        hang_limit=choice.config.watchdog.hang_limit)


_STATE_ORDER = ("FAILED", "BACKOFF", "STOPPING", "DEGRADED", "STARTING", "STOPPED", "RUNNING")


def _worst(states: list[str]) -> str:
    """The worst of some supervisor states (an unknown one counts as the worst)."""
    return min(states, key=lambda s: _STATE_ORDER.index(s) if s in _STATE_ORDER else 0)


class Supervisor:
    def __init__(self, config_source: BootConfigManager, *,
                 watchdog: Watchdog | None = None,
                 leds: StatusLeds | None = None,
                 display: Display | None = None,
                 update_agent: UpdateAgent | None = None,
                 network: Any = None,
                 hotplug: Any = None,
                 media: Any = None,
                 probe_factory: Callable[[ConfigChoice], HealthProbe] = default_probe,
                 process_factory: Callable[[Sequence[str]], ProxyProcess] = ProxyProcess,
                 clock: Callable[[], float] = time.monotonic,
                 choice: ConfigChoice | None = None,
                 proxy_cwd: str | None = None,
                 reset_store: ResetRecordStore | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config_source = config_source
        self.watchdog = watchdog
        self.leds = leds
        self.display = display
        self.update_agent = update_agent
        self.network = network  # network.NetworkManager or None
        self.network_problems: list[str] = []
        self._network_task: asyncio.Task[None] | None = None
        self.hotplug = hotplug  # hotplug.UdevMonitor (or a fake with async events())
        self.media = media  # hotplug.MediaConfigOffer
        self._hotplug_task: asyncio.Task[None] | None = None
        self.probe_factory = probe_factory
        self.process_factory = process_factory
        # The rootfs is read-only: relative paths the proxy writes to (e.g. the default
        # config's data files) must land on the data partition.
        self.proxy_cwd = proxy_cwd
        self.clock = clock
        self.choice = choice if choice is not None else config_source.select()
        self.policy = build_policy(self.choice)
        self.probe = probe_factory(self.choice)
        self.proc: ProxyProcess | None = None
        # launched by supervisor_main before the loop existed (boot): the first spawn adopts it
        self.early_proc: ProxyProcess | None = None
        # trial_instances() for one config text: (text, names); it compares against the
        # last-known-good file, which is parsed once per new config, not on every tick
        self._trial_cache: tuple[str, list[str]] | None = None
        self.spawned_at = 0.0
        self.last_report: HealthReport | None = None
        self.marked_good = False
        self.pets = 0
        self.info: dict[str, Any] = {"version": __version__}
        self._events: asyncio.Queue[tuple[str, Any]] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._exit_task: asyncio.Task[None] | None = None
        self._next_probe = 0.0
        self._next_pet = 0.0
        self._led_state: dict[str, tuple[str, int, int]] = {}
        self._lcd_shown: list[str] | None = None
        self.started_at = clock()
        self._lcd_started = self.started_at
        self.trial_started: float | None = None  # a boot config not yet last-known-good
        self.rollback: dict[str, Any] | None = None  # the last automatic config rollback
        self.cause: str = ""  # why the proxy is down, in words (from its own last error)
        self.kernel_console: str | None = None  # "/dev/console" on the box: rollback notices
        # builds the LCD adapter for a config (supervisor_main), so `apply` of [panel] works
        self.display_factory: Callable[[ConfigChoice], Display | None] | None = None
        self._numbers_task: asyncio.Task[None] | None = None
        self._next_numbers = 0.0
        self.proc_root = "/proc"  # box uptime (tests point it elsewhere)
        if not self.choice.proven:
            self.trial_started = self.started_at
        # [instances]: the first one is driven by the state above, each further one by an
        # InstanceRunner (instances.py)
        self.runners: dict[str, InstanceRunner] = {}
        self._sync_runners()
        # Boot-loop guard (resetguard.py): the record sits next to last-known-good.
        if reset_store is None and getattr(config_source, "data_dir", None) is not None:
            reset_store = ResetRecordStore(config_source.data_dir)
        self.reset_store = reset_store
        self.wall_clock = wall_clock
        self.reset_history = (reset_store.history() if reset_store is not None
                              else ResetHistory())
        self._reset_recorded = False
        if self.reset_history.previous_reason is not None:
            log.error("previous boot ended in a watchdog reset: %s (resets in a row=%d)",
                      self.reset_history.previous_reason, self.reset_history.resets)
        self._apply_reset_guard()

    # ---------------------------------------------------------------- control (any thread-free
    # caller on the loop: signal handlers, RPC, console)

    def request(self, what: str, arg: Any = None) -> None:
        """Queue `stop`, `reload` or `restart` (arg: an instance name, None: the first or
        only one) for the loop."""
        if self._events is None:
            raise RuntimeError("supervisor is not running")
        self._events.put_nowait((what, arg))

    post = request  # the runners' exit and probe events

    # ---------------------------------------------------------------- instances

    @property
    def first_name(self) -> str:
        return first_instance(self.choice.config).instance_name

    def _sync_runners(self) -> list[InstanceRunner]:
        """A runner per instance after the first; returns the ones new in this config."""
        names = list(self.choice.config.instances)[1:]
        for name, r in self.runners.items():
            r.removed = name not in names
        new = [InstanceRunner(self, n) for n in names if n not in self.runners]
        self.runners.update((r.name, r) for r in new)
        return new

    def instances_status(self, now: float) -> dict[str, Any]:
        first = first_instance(self.choice.config)
        st = {k: v for k, v in self.policy.status(now).items()}
        st["problem"] = self._problem_in_words(st["problem"])
        st.update(instance_status(first, self.proc, self.last_report))
        out = {first.instance_name: st}
        out.update((n, r.status(now)) for n, r in self.runners.items())
        return out

    def _members(self) -> list[tuple[str, bool, SupervisorPolicy, str]]:
        """(name, required, policy, cause) of every instance: the first one is driven by the
        supervisor's own state, each further one by its runner."""
        first = first_instance(self.choice.config)
        return [(first.instance_name, first.required, self.policy, self.cause)] + [
            (n, r.config.required, r.policy, r.cause) for n, r in self.runners.items()]

    def _required_policies(self) -> list[tuple[str, SupervisorPolicy]]:
        return [(n, p) for n, required, p, _ in self._members() if required]

    def _box_health(self, now: float) -> tuple[str, float]:
        """(state, healthy_for) of what the box is for: the worst state and the shortest
        health of the required instances (all of them when none is marked required). OTA
        mark-good and the boot-loop guard's clearing follow this, as the watchdog does."""
        pols = [p for _, p in self._required_policies()] or self._all_policies()
        return _worst([p.state.value for p in pols]), min(p.healthy_for(now) for p in pols)

    def _all_policies(self) -> list[SupervisorPolicy]:
        return [p for _, _, p, _ in self._members()]

    def _worst_state(self) -> str:
        """The worst supervisor state of all instances, for the LEDs."""
        return _worst([p.state.value for p in self._all_policies()])

    def status(self) -> dict[str, Any]:
        now = self.clock()
        st = self.policy.status(now)
        st["problem"] = self._problem_in_words(st["problem"])
        st.update({
            "pid": None if self.proc is None or not self.proc.running else self.proc.pid,
            "uptime_s": round(now - self.started_at, 3),
            "config": {"source": self.choice.source,
                       "path": None if self.choice.path is None else str(self.choice.path),
                       "errors": len(self.choice.issues),
                       "proven": self.choice.proven,
                       "trial_s": (None if self.trial_started is None
                                   else round(now - self.trial_started, 1)),
                       "trial_instances": (None if self.trial_started is None
                                           else self.trial_instances()),
                       "rolled_back": self.rollback},
            "panel": self.panel_state(),
            "lcd": None if self.display is None else {
                "lines": self._lcd_shown,
                "bytes_sent": getattr(self.display, "bytes_sent", None)},
            "leds": dict(self._led_state),
            "led_names": dict(getattr(self.leds, "names", {})),
            "panel_view": self.panel_view(),
            "watchdog": self._watchdog_status(now),
            "health": None if self.last_report is None or self.proc is None else {
                "ok": self.last_report.ok, "detail": self.last_report.detail,
                "workers_alive": self.last_report.workers_alive,
                "workers_expected": self.last_report.workers_expected,
                "loop_lag_ms": self.last_report.loop_lag_ms},
            "marked_good": getattr(self.update_agent, "marked_good", self.marked_good),
            "cause": self.cause,
            "slot": self.info.get("slot"),
            "box_uptime_s": self._box_uptime(),
            "addresses": (self.network.address_lines()
                          if self.network is not None else []),
            "numbers": {k: self.info.get(k) for k in ("registrations", "calls",
                                                      "transactions")},
            "update": (self.update_agent.summary()
                       if hasattr(self.update_agent, "summary") else None),
            "network_problems": list(self.network_problems),
            "network_services": (self.network.services.status()
                                 if getattr(self.network, "services", None) is not None else {}),
            "media_config": None if self.media is None or self.media.offer is None else {
                "device": self.media.offer.devnode, "valid": self.media.offer.valid,
                "errors": list(self.media.offer.issues)},
            "version": __version__,
            "instances": self.instances_status(now),
        })
        return st

    def _box_uptime(self) -> float | None:
        try:
            with open(f"{self.proc_root}/uptime", encoding="ascii") as f:
                return float(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _problem_in_words(self, problem: str) -> str:
        """The policy's problem, with the proxy's own reason when it is known."""
        if self.rollback is not None and self.choice.source != "boot":
            return f"config rolled back: {self.rollback['reason']}"
        if self.cause and self.policy.state in (State.BACKOFF, State.FAILED,
                                                State.STARTING):
            return f"{self.cause}" + (f" ({problem})" if problem else "")
        return problem

    def _watchdog_status(self, now: float) -> dict[str, Any]:
        hist = self.reset_history
        wants = self.policy.wants_reset(now)
        return {
            "armed": self.watchdog is not None and bool(getattr(self.watchdog, "is_open", True)),
            "pets": self.pets,
            "petting": all(p.should_pet(now) for _, p in self._required_policies()),
            "previous_reset": (None if hist.previous_reason is None else
                               f"previous boot ended in a watchdog reset: "
                               f"{hist.previous_reason}"),
            "resets_in_a_row": hist.resets,
            "max_resets": self.choice.config.watchdog.max_resets,
            "resets_allowed": self.policy.resets_allowed,
            "reset_pending": wants if wants is not None and self.policy.resets_allowed else None,
            "reset_suppressed": (wants if wants is not None and not self.policy.resets_allowed
                                 else None),
        }

    def config_errors(self) -> dict[str, Any]:
        return self.choice.as_dict()

    def rpc_methods(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """Methods for the supervisor's RPC socket (see docs/appliance.md)."""

        def ack(what: str) -> Callable[[dict[str, Any]], Any]:
            def method(params: dict[str, Any]) -> Any:
                self.request(what)
                return {"queued": what}
            return method

        def watchdog_status(params: dict[str, Any]) -> Any:
            wd = self.choice.config.watchdog
            return dict(self.status()["watchdog"], device=wd.device,
                        timeout_s=getattr(self.watchdog, "effective_timeout_s", None) or
                        wd.timeout_s)

        return {
            "supervisor.status": lambda params: self.status(),
            "watchdog.status": watchdog_status,
            "config.apply": ack("reload"),
            "supervisor.reload": ack("reload"),
            "supervisor.restart": lambda params: self._rpc_restart(params),
            "supervisor.stop": ack("stop"),
            "config.errors": lambda params: self.config_errors(),
            **(self.update_agent.rpc_methods()  # ota.OtaManager: update.*
               if hasattr(self.update_agent, "rpc_methods") else {}),
        }

    def _rpc_restart(self, params: Any) -> Any:
        name = None
        if isinstance(params, dict):
            name = params.get("instance") or (params.get("args") or [None])[0]
        elif isinstance(params, list) and params:
            name = params[0]
        if name is not None and name not in self.choice.config.instances:
            raise ValueError(f"no instance {name!r} (instances: "
                             f"{', '.join(self.choice.config.instances)})")
        self.request("restart", name)
        return {"queued": "restart", "instance": name or self.first_name}

    # ---------------------------------------------------------------- main loop

    async def run(self) -> int:
        """Run until a stop request has been carried out. Returns the exit status."""
        self._events = asyncio.Queue()
        if self.watchdog is not None:
            # Opening arms the timer: do it here, right before the loop, and pet at once, so
            # slow start-up work (imports, netlink, udev) never eats into the timeout.
            try:
                self.watchdog.open()
            except EdgeError as exc:  # HardwareError: run without it, loudly
                log.error("watchdog unavailable: %s", exc)
                self.watchdog = None
            else:
                self._maybe_pet(self.clock())
        try:
            # [network] manage = false changes nothing the proxy binds to: start the proxy
            # first and read the network state (netlink, seconds of imports on a slow board)
            # behind it (issue 13, boot to first answer)
            network_first = self.choice.config.network.manage
            if network_first:
                await self._apply_network()
            if self.network is not None:
                self._network_task = asyncio.ensure_future(self._watch_network(
                    apply_first=not network_first))
            if self.hotplug is not None:
                self._hotplug_task = asyncio.ensure_future(self._watch_hotplug())
            await self._apply(self.policy.start(self.clock()))
            for r in list(self.runners.values()):
                await r.apply(r.policy.start(self.clock()))
            while True:
                now = self.clock()
                self._maybe_pet(now)
                self._maybe_probe(now)
                await self._tick_runners(now)
                self._maybe_mark_good(now)
                await self._config_trial(now)
                self._maybe_poll_numbers(now)
                self._maybe_clear_resets(now)
                self._update_panel(now)
                if self.policy.state is State.STOPPED and all(
                        r.policy.state is State.STOPPED for r in self.runners.values()):
                    break
                timeout = self._wait_time(now)
                try:
                    kind, arg = await asyncio.wait_for(self._events.get(), timeout)
                except asyncio.TimeoutError:
                    await self._apply(self.policy.on_timer(self.clock()))
                    continue
                await self._handle(kind, arg)
        finally:
            await self._shutdown()
        return 0

    def _wait_time(self, now: float) -> float:
        deadlines = [now + MAX_WAIT_S]
        timer = self.policy.get_timer()
        if timer is not None:
            deadlines.append(timer)
        if self.watchdog is not None:
            deadlines.append(self._next_pet)
        if self.policy.state in (State.STARTING, State.RUNNING, State.DEGRADED):
            deadlines.append(self._next_probe)
        for r in self.runners.values():
            deadlines += r.deadlines()
        return max(0.0, min(deadlines) - now)

    async def _tick_runners(self, now: float) -> None:
        for name, r in list(self.runners.items()):
            await r.apply(r.policy.on_timer(now))
            r.tick(now)
            if r.removed and r.policy.state in (State.STOPPED, State.FAILED) and r.proc is None:
                log.info("instance %s removed from the config: stopped", name)
                del self.runners[name]

    async def _handle(self, kind: str, arg: Any) -> None:
        now = self.clock()
        if kind == "exit":
            proc, rc = arg
            if proc is not self.proc:
                return
            proc.reap_group()
            runtime = now - self.spawned_at
            level = logging.INFO if self.policy.state is State.STOPPING else logging.ERROR
            log.log(level, "proxy exited pid=%s rc=%s runtime_s=%.1f", proc.pid, rc, runtime)
            self.proc = None
            if self.policy.state is not State.STOPPING:
                self.cause = _cause(proc, rc)
            await self._apply(self.policy.on_exit(runtime, now, rc))
        elif kind == "probe":
            report: HealthReport = arg
            self.last_report = report
            if not report.ok and self.policy.state is not State.STARTING:
                log.warning("proxy unhealthy detail=%s", report.detail)
            elif not report.ok:
                log.debug("proxy starting detail=%s", report.detail)
            else:
                self.cause = ""
            await self._apply(self.policy.on_health(report.ok, report.loop_lag_ms, now,
                                                    report.detail))
        elif kind == "instance-exit":
            runner, proc, rc = arg
            await runner.on_exit(proc, rc, now)
        elif kind == "instance-probe":
            runner, report = arg
            await runner.on_probe(report, now)
        elif kind == "stop":
            log.info("stop requested")
            await self._apply(self.policy.request_stop(now))
            for r in self.runners.values():
                await r.apply(r.policy.request_stop(now))
        elif kind == "restart" and arg is not None and arg in self.runners:
            r = self.runners[arg]
            log.info("restart of instance %s requested", arg)
            await r.apply(r.policy.request_restart(now, "restart requested"))
        elif kind == "restart":
            await self._apply(self.policy.request_restart(now, "restart requested"))
        elif kind == "reload":
            await self._reload(now)
        else:
            raise ValueError(f"unknown supervisor event {kind!r}")

    async def _reload(self, now: float) -> None:
        old = self.choice
        self.choice = self.config_source.select()
        await self._reload_to_choice(now, old)

    async def _reload_to_choice(self, now: float, old: ConfigChoice) -> None:
        self.policy.limits = _limits(self.choice)
        self._apply_reset_guard()  # max_resets may have changed
        p = self.choice.config.supervisor
        r = self.policy.respawn
        r.threshold_s, r.timeout_s, r.retry = (p.respawn_threshold_s, p.respawn_timeout_s,
                                               p.respawn_retry)
        r.max_delay_s = max(p.respawn_max_delay_s, p.respawn_timeout_s)
        self.probe = self.probe_factory(self.choice)
        if self.display_factory is not None and self.choice.config.panel != old.config.panel:
            try:
                self.display = self.display_factory(self.choice)
            except Exception:  # boundary: the panel is best effort
                log.exception("LCD set-up failed")
                self.display = None
        self._lcd_shown = None
        self._lcd_started = now  # start the rotation over: a new config error shows first
        if self.choice.config.network != old.config.network:
            await self._apply_network()
        if is_multi(self.choice.config) or is_multi(old.config):
            await self._reload_instances(now, old)
            return
        if self.choice.config.text != old.config.text or self.choice.path != old.path:
            log.info("config changed source=%s path=%s: restarting the proxy",
                     self.choice.source, self.choice.path)
            self.trial_started = None if self.choice.proven else now
            if self.choice.source == "boot":
                self.rollback = None
            await self._apply(self.policy.request_restart(now, "config changed"))
        else:
            log.info("config unchanged: reloading routes")
            await self._route_reload(self.choice.config)

    async def _reload_instances(self, now: float, old: ConfigChoice) -> None:
        """[instances]: restart only the instances whose own sections changed (the others
        reload their routing script); start new ones, stop removed ones."""
        first, old_first = first_instance(self.choice.config), first_instance(old.config)
        if self.choice.config.text != old.config.text:
            self.trial_started = None if self.choice.proven else now
            if self.choice.source == "boot":
                self.rollback = None
        changed = []
        if first.instance_name != old_first.instance_name or \
                fingerprint(first) != fingerprint(old_first):
            changed.append(first.instance_name)
            await self._apply(self.policy.request_restart(now, "config changed"))
        else:
            await self._route_reload(first)
        for r in self._sync_runners():
            changed.append(r.name)
            await r.apply(r.policy.start(now))
        for name, r in self.runners.items():
            if r.removed:
                await r.apply(r.policy.request_stop(now))
            elif r.name not in changed:
                if r.update(self.choice, now):
                    changed.append(name)
                    await r.apply(r.policy.request_restart(now, "config changed"))
                else:
                    await self._route_reload(r.config)
        log.info("config applied source=%s path=%s: restarted instances=%s", self.choice.source,
                 self.choice.path, ",".join(changed) or "none")

    async def _route_reload(self, config: Any) -> None:
        """An unchanged (instance) config: reload its routing script, if it has one."""
        if not config.routing.script:
            return
        ctl_socket = config.core.ctl_socket
        try:
            await rpc_request(ctl_socket, "route.reload", None, 5.0)
        except (OSError, asyncio.TimeoutError, RpcCallError) as exc:
            log.warning("route.reload failed ctl=%s error=%s", ctl_socket, exc)

    async def _apply_network(self) -> None:
        if self.network is None:
            return
        try:
            task = asyncio.ensure_future(self.network.apply(self.choice.config.network))
            while not task.done():  # netlink can be slow (pyroute2 import on a small board):
                self._maybe_pet(self.clock())  # keep the watchdog fed meanwhile
                await asyncio.wait({task}, timeout=0.2)
            self.network_problems = task.result()
        except Exception as exc:  # boundary: a netlink failure must not stop supervision
            log.exception("network set-up failed")
            self.network_problems = [f"network set-up failed: {exc}"]
        for p in self.network_problems:
            log.error("network problem: %s", p)

    async def _watch_network(self, apply_first: bool = False) -> None:
        def on_event(ev: Any) -> None:
            log.info("network event %s", ev)
            self._lcd_shown = None
        if apply_first:
            await self._apply_network()
        try:
            await self.network.watch(on_event)
        except asyncio.CancelledError:
            raise
        except Exception:  # boundary: events are informative only
            log.exception("network watcher stopped")

    async def _watch_hotplug(self) -> None:
        from .hotplug import MediaInserted, MediaRemoved, NetDeviceAdded

        try:
            async for ev in self.hotplug.events():
                log.info("hotplug event %s", ev)
                if isinstance(ev, NetDeviceAdded) and self.choice.config.network.manage:
                    await self._apply_network()
                elif isinstance(ev, (MediaInserted, MediaRemoved)) and self.media is not None:
                    await asyncio.to_thread(self.media.handle, ev)
                if isinstance(ev, (MediaInserted, MediaRemoved)) and \
                        hasattr(self.update_agent, "on_media"):  # a .raucb: offered
                    await asyncio.to_thread(self.update_agent.on_media, ev)
                self._lcd_shown = None
        except asyncio.CancelledError:
            raise
        except Exception:  # boundary: hotplug is an extra, supervision goes on
            log.exception("hotplug watcher stopped")

    async def _apply(self, action: Action) -> None:
        if isinstance(action, Spawn):
            await self._spawn()
        elif isinstance(action, Terminate):
            log.warning("stopping proxy reason=%s", action.reason)
            if self.proc is not None:
                self.proc.terminate()
        elif isinstance(action, Kill):
            log.error("proxy ignored SIGTERM: SIGKILL")
            if self.proc is not None:
                self.proc.kill()
        elif isinstance(action, Restart):
            log.warning("restarting proxy in %.1fs crashes=%d", action.delay_s, action.crashes)
        elif isinstance(action, GiveUp):
            log.error("proxy FAILED, not restarting: %s", action.reason)
        else:
            assert isinstance(action, Idle)

    def _argv(self) -> list[str]:
        return proxy_argv(self.choice)

    async def _spawn(self) -> None:
        now = self.clock()
        self.policy.on_spawned(now)
        self.spawned_at = now
        self._next_probe = now + min(1.0, self.choice.config.supervisor.health_interval_s)
        proc = self._adopt_early()
        if proc is None:
            proc = (self.process_factory(self._argv(), cwd=self.proxy_cwd) if self.proxy_cwd
                    else self.process_factory(self._argv()))
        try:
            await (proc.attach() if getattr(proc, "launched", False) else proc.start())
        except OSError as exc:
            log.error("cannot start proxy argv=%s error=%s", self._argv(), exc)
            assert self._events is not None
            self.proc = proc
            self._events.put_nowait(("exit", (proc, None)))
            return
        self.proc = proc
        self._exit_task = asyncio.ensure_future(self._watch_exit(proc))

    def _adopt_early(self) -> ProxyProcess | None:
        """The proxy supervisor_main launched at boot, if it was started for this config."""
        proc, self.early_proc = self.early_proc, None
        if proc is None:
            return None
        if proc.argv == self._argv() and proc.cwd == self.proxy_cwd:
            log.info("proxy launched at boot adopted pid=%s", proc.pid)
            return proc
        log.warning("proxy launched at boot pid=%s no longer matches the config: stopped",
                    proc.pid)
        proc.discard()
        return None

    async def _watch_exit(self, proc: ProxyProcess) -> None:
        rc = await proc.wait()
        assert self._events is not None
        self._events.put_nowait(("exit", (proc, rc)))

    def _maybe_probe(self, now: float) -> None:
        if self.policy.state not in (State.STARTING, State.RUNNING, State.DEGRADED):
            return
        if now < self._next_probe or (self._probe_task and not self._probe_task.done()):
            return
        self._next_probe = now + self.choice.config.supervisor.health_interval_s
        self._probe_task = asyncio.ensure_future(self._run_probe(self.probe))

    async def _run_probe(self, probe: HealthProbe) -> None:
        report = await probe.probe()
        assert self._events is not None
        self._events.put_nowait(("probe", report))

    def _maybe_pet(self, now: float) -> None:
        if self.watchdog is None or now < self._next_pet:
            return
        self._next_pet = now + self.choice.config.watchdog.pet_interval_s
        # only while every instance marked `required` is healthy (or being recovered)
        for name, policy in self._required_policies():
            if policy.should_pet(now):
                continue
            reason = policy.wants_reset(now)
            if reason is not None:
                self._record_reset(reason if name == "default" else f"{name}: {reason}")
            log.error("not petting the watchdog: instance %s unrecoverable state=%s "
                      "problem=%s", name, policy.state.value, policy.last_problem)
            return
        try:
            self.watchdog.pet()
            self.pets += 1
        except EdgeError as exc:  # HardwareError: nothing better to do than report it
            log.error("watchdog keep-alive failed: %s", exc)

    # ---------------------------------------------------------------- boot-loop guard

    def _apply_reset_guard(self) -> None:
        max_resets = self.choice.config.watchdog.max_resets
        allowed = self.reset_history.resets_allowed(max_resets)
        if not allowed and self.policy.resets_allowed:
            log.error("watchdog resets suppressed: %d deliberate resets in a row "
                      "(max_resets=%d); a proxy beyond recovery stays FAILED",
                      self.reset_history.resets, max_resets)
        self.policy.allow_resets(allowed)
        for r in getattr(self, "runners", {}).values():
            r.policy.allow_resets(allowed)

    def _record_reset(self, reason: str) -> None:
        """Write the guard record once, before the watchdog is left to fire."""
        if self._reset_recorded:
            return
        self._reset_recorded = True
        resets = self.reset_history.resets + 1
        log.error("letting the hardware watchdog reset the box: %s (reset %d in a row, "
                  "max_resets=%d)", reason, resets, self.choice.config.watchdog.max_resets)
        if self.reset_store is None:
            return
        record = ResetRecord(resets, reason, self.reset_store.boot_id(), self.wall_clock())
        try:
            self.reset_store.save(record)
        except OSError as exc:  # the reset must happen anyway; the guard just cannot count it
            log.error("cannot write the watchdog reset record file=%s error=%s",
                      self.reset_store.path, exc)

    def _maybe_clear_resets(self, now: float) -> None:
        if not (self.reset_history.present or self._reset_recorded):
            return
        after = self.choice.config.watchdog.reset_record_clear_s
        state, healthy_for = self._box_health(now)
        if state != State.RUNNING.value or healthy_for < after:
            return
        if self.reset_store is not None:
            try:
                self.reset_store.clear()
            except OSError as exc:  # cleared in memory all the same: this boot is healthy
                log.error("cannot clear the watchdog reset record file=%s error=%s",
                          self.reset_store.path, exc)
        log.info("proxy healthy for %.0fs: watchdog reset record cleared", after)
        hist = self.reset_history
        self.reset_history = ResetHistory(previous_reason=hist.previous_reason,
                                          previous_time=hist.previous_time)
        self._reset_recorded = False
        self._apply_reset_guard()

    async def _config_trial(self, now: float) -> None:
        """Promote a boot config after `config_good_after_s` of health, or roll it back to
        last-known-good (only when there is one). With [instances] the trial watches the
        instances `trial_instances` names (the required ones the file changed); an optional
        instance never rolls a file back (docs/instances.md)."""
        if self.trial_started is None:
            return
        p = self.choice.config.supervisor
        members = self._trial_members()
        if all(pol.state is State.RUNNING and pol.healthy_for(now) >= p.config_good_after_s
               for _, pol, _ in members):
            self.trial_started = None
            if self.config_source.promote(self.choice):
                self.choice = dataclasses.replace(self.choice, proven=True)
                log.info("config proved itself (healthy %.0fs): now last-known-good file=%s "
                         "instances=%s", p.config_good_after_s, self.choice.path,
                         ",".join(n for n, _, _ in members))
                for name, st in self.instances_status(now).items():
                    if not st["required"] and st["state"] != State.RUNNING.value:
                        log.warning("config kept although optional instance %s is %s: "
                                    "optional instances do not roll a config back", name,
                                    st["state"])
            return
        for name, pol, cause in members:
            why = _trial_failure(pol, now - self.trial_started, p.config_trial_s)
            if why is not None:
                break
        else:
            return
        if self.config_source.lkg_text() is None:
            # nothing has proved itself on this box yet: no config to go back to (the factory
            # default might lack the operator's network or management settings); the proxy
            # stays in its respawn policy (FAILED after too many crashes), the cause shown
            return
        if is_multi(self.choice.config):
            why = f"instance {name}: {why}"
        reason = f"{why} on {self.choice.path}" + (f": {cause}" if cause else "")
        self.rollback = {"file": str(self.choice.path), "reason": reason}
        self.trial_started = None
        old = self.choice
        self.choice = self.config_source.reject(old, reason)
        _console_line(self.kernel_console, f"sipedge: config {old.path} rolled back ({reason}); running "
                      f"{self.choice.source} {self.choice.path or ''}")
        await self._reload_to_choice(now, old)

    def trial_instances(self) -> list[str]:
        """The instances whose health decides a boot config's trial. One proxy: it. With
        [instances]: the required instances the file changed against last-known-good (its own
        sections, required, data_dir: `instances.fingerprint`; a new instance is changed);
        when it changed none of them (only box-wide sections or optional instances), every
        required one; with no required instance at all, every instance."""
        config = self.choice.config
        if not is_multi(config):
            return [first_instance(config).instance_name]
        key = config.text
        if self._trial_cache is not None and self._trial_cache[0] == key:
            return self._trial_cache[1]
        lkg = self._lkg_instances()
        changed = [n for n, c in config.instances.items()
                   if lkg is None or n not in lkg or fingerprint(lkg[n]) != fingerprint(c)]
        required = [n for n, c in config.instances.items() if c.required]
        names = ([n for n in changed if n in required] or required or list(config.instances))
        self._trial_cache = (key, names)
        return names

    def _lkg_instances(self) -> dict[str, Any] | None:
        from ..config import ConfigError, load_text

        text = self.config_source.lkg_text()
        if text is None:
            return None
        try:
            # read as the boot file it was, so its relative paths compare equal
            return load_text(text, str(self.choice.boot_path)).instances
        except ConfigError:
            return None

    def _trial_members(self) -> list[tuple[str, SupervisorPolicy, str]]:
        """(name, policy, cause) of each instance in `trial_instances`."""
        by_name = {n: (n, p, cause) for n, _, p, cause in self._members()}
        return [by_name[n] for n in self.trial_instances() if n in by_name]

    def _maybe_poll_numbers(self, now: float) -> None:
        """Registrations, calls and transactions from the proxy (`core.panel`), for the LCD
        and `status`; every page interval while the proxy runs."""
        if self.policy.state not in (State.RUNNING, State.DEGRADED):
            for k in ("registrations", "calls", "transactions"):
                self.info.pop(k, None)
            return
        if now < self._next_numbers or (self._numbers_task and not self._numbers_task.done()):
            return
        self._next_numbers = now + min(5.0, self.choice.config.panel.page_interval_s)
        self._numbers_task = asyncio.ensure_future(self._poll_numbers())

    async def _poll_numbers(self) -> None:
        try:
            res = await rpc_request(first_instance(self.choice.config).core.ctl_socket,
                                    "core.panel", None,
                                    self.choice.config.supervisor.probe_timeout_s)
        except (OSError, asyncio.TimeoutError, RpcCallError) as exc:
            log.debug("core.panel failed error=%s", exc)
            return
        if isinstance(res, dict):
            for k in ("registrations", "calls", "transactions"):
                v = res.get(k)
                self.info[k] = v if isinstance(v, int) else None

    def _maybe_mark_good(self, now: float) -> None:
        hook = getattr(self.update_agent, "on_supervisor_tick", None)
        state, healthy_for = self._box_health(now)
        if hook is not None:  # ota.OtaManager: [update] mark-good and the trial boot
            try:
                hook(now, state, healthy_for)
            except Exception:  # boundary: an OTA agent failure must not stop supervision
                log.exception("update agent tick failed")
            return
        after = self.choice.config.update.mark_good_after_s  # the one setting (issue 12)
        if self.marked_good or self.update_agent is None or after <= 0:
            return
        if state == State.RUNNING.value and healthy_for >= after:
            self.marked_good = True
            try:
                self.update_agent.mark_good()
                log.info("booted slot marked good")
            except Exception:  # boundary: an OTA agent failure must not stop supervision
                log.exception("mark_good failed")

    # ---------------------------------------------------------------- panel

    def panel_state(self) -> str:
        ota_alarms = getattr(self.update_agent, "panel_alarms", list)()
        return panel_status.panel_state(self._worst_state(), len(self.choice.issues),
                                        upgrading=bool(getattr(self.update_agent, "installing",
                                                               False)),
                                        alarms=len(self.network_problems) + len(ota_alarms))

    def panel_info(self) -> dict[str, Any]:
        info = dict(self.info)
        info["state"] = self.panel_state()
        info["config_errors"] = self.choice.errors
        info["problem"] = self.policy.last_problem
        if self.runners:  # [instances]: one LCD page each
            st = self.instances_status(self.clock())
            info["instances"] = [(n, s["state"], (s["listen"] or [""])[0], s["problem"])
                                 for n, s in st.items()]
            if not info["problem"]:
                info["problem"] = next((f"{n}: {s['problem']}" for n, s in st.items()
                                        if s["problem"]), "")
        if self.network is not None:
            info["addresses"] = self.network.address_lines()
        info["alarms"] = list(self.network_problems)
        info["alarms"] += getattr(self.update_agent, "panel_alarms", list)()
        progress = getattr(self.update_agent, "progress_line", lambda: None)()
        if progress:
            info["alarms"].append(progress)
        if self.reset_history.present and self.reset_history.previous_reason is not None:
            info["alarms"].append("prev. WDT reset")
        if not self.policy.resets_allowed:
            info["alarms"].append("WDT resets off")
        offer = None if self.media is None else self.media.offer
        if offer is not None:
            info["alarms"].append("USB config " + ("ready: import" if offer.valid else "INVALID"))
        return info

    def panel_view(self) -> dict[str, Any] | None:
        """What the panel shows, whether or not a display or LEDs are fitted: the LCD pages
        the display cycles through and each LED role's pattern (status and tests)."""
        try:
            state = self.panel_state()
            pc = self.choice.config.panel
            return {"pages": panel_pages.build_pages(self.panel_info(), pc.lcd_cols,
                                                     pc.lcd_rows),
                    "leds": {role: list(panel_leds.pattern_for(state, role))
                             for role in panel_leds.ROLES}}
        except Exception:  # boundary: the panel is best effort
            log.exception("panel view failed")
            return None

    def _update_panel(self, now: float) -> None:
        try:
            state = self.panel_state()
            if self.leds is not None:
                for role in panel_leds.ROLES:
                    pattern = panel_leds.pattern_for(state, role)
                    if self._led_state.get(role) != pattern:
                        self.leds.set(role, *pattern)
                        self._led_state[role] = pattern
            if self.display is not None:
                cols, rows = self.display.size
                pages = panel_pages.build_pages(self.panel_info(), cols, rows)
                interval_ms = int(self.choice.config.panel.page_interval_s * 1000)
                page = panel_pages.page_at(pages, int((now - self._lcd_started) * 1000),
                                           interval_ms)
                if page != self._lcd_shown:
                    self.display.show(page)
                    self._lcd_shown = page
        except Exception:  # boundary: the panel is best effort
            log.exception("panel update failed")

    # ---------------------------------------------------------------- shutdown

    async def _shutdown(self) -> None:
        for task in (self._probe_task, self._exit_task, self._network_task,
                     self._hotplug_task, self._numbers_task):
            if task is not None and not task.done():
                task.cancel()
        if self.proc is not None and self.proc.running:
            self.proc.kill()
        for r in self.runners.values():
            r.shutdown()
        if self.network is not None and hasattr(self.network, "close"):
            try:
                await self.network.close()
            except Exception:  # noqa: BLE001  (shutdown goes on)
                log.exception("stopping the network helpers failed")
        if self.watchdog is not None:
            clean = self.policy.state is State.STOPPED
            self.watchdog.close(disarm=clean)


def _trial_failure(policy: SupervisorPolicy, on_trial_s: float, trial_s: float) -> str | None:
    """Why one instance fails a config trial, or None (still a chance, or running)."""
    st = policy.state
    if st is State.FAILED:
        return "proxy FAILED"
    if policy.respawn.crashes >= 2 and st is not State.RUNNING:
        return f"{policy.respawn.crashes} failed starts"
    if on_trial_s > trial_s and st is not State.RUNNING:
        return f"not running healthy {trial_s:g}s after it was applied"
    return None


def _cause(proc: ProxyProcess, rc: int | None) -> str:
    """Why the proxy stopped, in words: its own last error line, else the exit status."""
    err = getattr(proc, "last_error", None)
    if err:
        err = err.removeprefix("cannot start: ")
        return f"proxy cannot start: {err}"
    if rc is None:
        return "proxy cannot be started (see logs)"
    if rc < 0:
        import signal

        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return f"proxy killed by {name}"
    return f"proxy exited with status {rc}"


def _console_line(path: str | None, text: str) -> None:
    """One line on the kernel console, where an operator at the box looks first."""
    if path is None:
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError:
        pass  # no console (a PC, a test): the log has the same line
