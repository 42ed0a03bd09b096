"""Supervision of the further proxy instances of a config with [instances.<name>].

The supervisor (supervisor.py) drives the first instance with its own state, as it always drove
the single proxy (OTA mark-good and the boot-loop guard follow every required instance, as the
watchdog does; the config trial follows the required instances a new file changed,
`Supervisor.trial_instances`). Every
further instance gets an `InstanceRunner`: its own `SupervisorPolicy` (respawn with backoff,
start and health timeouts, SIGTERM -> SIGKILL), its own process tree
(`sipedge --config FILE --instance NAME`), its own probe (heartbeat on its control socket,
OPTIONS to its first UDP listener). The runner's events go through the supervisor's queue
tagged with the runner, so one loop serves all. Whether the watchdog is petted is decided in
the supervisor from every instance marked `required`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from ..config.instances import instance_sections
from .policy import Action, GiveUp, Idle, Kill, Restart, Spawn, State, Terminate

if TYPE_CHECKING:
    import asyncio

    from ..config import Config
    from .ports import HealthReport
    from .process import ProxyProcess
    from .sdconfig import ConfigChoice
    from .supervisor import Supervisor

log = logging.getLogger("sipedge.appliance.supervisor")


def is_multi(config: Config) -> bool:
    """True for a file with [instances] (even a single named one)."""
    return config.instances.get("default") is not config


def first_instance(config: Config) -> Config:
    """The instance the supervisor drives itself: the config for the single-proxy layout,
    else the first [instances.<name>] of the file."""
    if config.instance_name and config.instance_name in config.instances:
        return config  # already an instance
    return next(iter(config.instances.values()))


def proxy_argv(choice: ConfigChoice) -> list[str]:
    """The command line of the first (or only) instance's proxy for a config choice."""
    argv = list(choice.config.supervisor.command)
    if choice.path is not None:
        argv += ["--config", str(choice.path)]
    if is_multi(choice.config):
        argv += ["--instance", first_instance(choice.config).instance_name]
    return argv


def fingerprint(config: Config) -> Any:
    """What, when it changes, restarts an instance: its own sections, required/data_dir,
    and the proxy command (box-wide sections such as [network] or [panel] do not)."""
    own = instance_sections()
    return (tuple(sorted((k, v) for k, v in config.sections().items() if k in own)),
            config.required, config.data_dir, tuple(config.supervisor.command))


def instance_choice(choice: ConfigChoice, name: str) -> ConfigChoice:
    return dataclasses.replace(choice, config=choice.config.instances[name])


class InstanceRunner:
    def __init__(self, sup: Supervisor, name: str) -> None:
        from .supervisor import build_policy

        self.sup = sup
        self.name = name
        choice = instance_choice(sup.choice, name)
        self.config = choice.config
        self.policy = build_policy(choice)
        self.policy.allow_resets(sup.policy.resets_allowed)
        self.probe = sup.probe_factory(choice)
        self.proc: ProxyProcess | None = None
        self.spawned_at = 0.0
        self.last_report: HealthReport | None = None
        self.cause = ""
        self.next_probe = 0.0
        self._probe_task: asyncio.Task[None] | None = None
        self._exit_task: asyncio.Task[None] | None = None
        self.removed = False  # taken out of the config: stop, then forget

    # -------------------------------------------------------------- config

    def update(self, choice: ConfigChoice, now: float) -> bool:
        """A new config choice: True when this instance must restart."""
        from .supervisor import _limits

        new = instance_choice(choice, self.name)
        changed = fingerprint(new.config) != fingerprint(self.config)
        self.config = new.config
        self.policy.limits = _limits(new)
        p = new.config.supervisor
        r = self.policy.respawn
        r.threshold_s, r.timeout_s, r.retry = (p.respawn_threshold_s, p.respawn_timeout_s,
                                               p.respawn_retry)
        r.max_delay_s = max(p.respawn_max_delay_s, p.respawn_timeout_s)
        self.probe = self.sup.probe_factory(new)
        return changed

    # -------------------------------------------------------------- loop hooks

    def tick(self, now: float) -> None:
        """Probe when due (called every loop turn)."""
        if self.policy.state not in (State.STARTING, State.RUNNING, State.DEGRADED):
            return
        if now < self.next_probe or (self._probe_task and not self._probe_task.done()):
            return
        self.next_probe = now + self.config.supervisor.health_interval_s
        import asyncio  # not at module level: proxy_argv() runs before the supervisor imports it

        self._probe_task = asyncio.ensure_future(self._run_probe())

    def deadlines(self) -> list[float]:
        out = []
        timer = self.policy.get_timer()
        if timer is not None:
            out.append(timer)
        if self.policy.state in (State.STARTING, State.RUNNING, State.DEGRADED):
            out.append(self.next_probe)
        return out

    async def _run_probe(self) -> None:
        report = await self.probe.probe()
        self.sup.post("instance-probe", (self, report))

    async def on_probe(self, report: HealthReport, now: float) -> None:
        self.last_report = report
        if not report.ok and self.policy.state is not State.STARTING:
            log.warning("instance %s unhealthy detail=%s", self.name, report.detail)
        elif report.ok:
            self.cause = ""
        await self.apply(self.policy.on_health(report.ok, report.loop_lag_ms, now,
                                               report.detail))

    async def on_exit(self, proc: ProxyProcess, rc: int | None, now: float) -> None:
        from .supervisor import _cause

        if proc is not self.proc:
            return
        proc.reap_group()
        runtime = now - self.spawned_at
        level = logging.INFO if self.policy.state is State.STOPPING else logging.ERROR
        log.log(level, "instance %s exited pid=%s rc=%s runtime_s=%.1f", self.name, proc.pid,
                rc, runtime)
        self.proc = None
        if self.policy.state is not State.STOPPING:
            self.cause = _cause(proc, rc)
        await self.apply(self.policy.on_exit(runtime, now, rc))

    async def apply(self, action: Action) -> None:
        if isinstance(action, Spawn):
            await self._spawn()
        elif isinstance(action, Terminate):
            log.warning("stopping instance %s reason=%s", self.name, action.reason)
            if self.proc is not None:
                self.proc.terminate()
        elif isinstance(action, Kill):
            log.error("instance %s ignored SIGTERM: SIGKILL", self.name)
            if self.proc is not None:
                self.proc.kill()
        elif isinstance(action, Restart):
            log.warning("restarting instance %s in %.1fs crashes=%d", self.name,
                        action.delay_s, action.crashes)
        elif isinstance(action, GiveUp):
            log.error("instance %s FAILED, not restarting: %s", self.name, action.reason)
        else:
            assert isinstance(action, Idle)

    def argv(self) -> list[str]:
        argv = list(self.config.supervisor.command)
        if self.sup.choice.path is not None:
            argv += ["--config", str(self.sup.choice.path)]
        return argv + ["--instance", self.name]

    async def _spawn(self) -> None:
        now = self.sup.clock()
        self.policy.on_spawned(now)
        self.spawned_at = now
        self.next_probe = now + min(1.0, self.config.supervisor.health_interval_s)
        argv = self.argv()
        proc = (self.sup.process_factory(argv, cwd=self.sup.proxy_cwd) if self.sup.proxy_cwd
                else self.sup.process_factory(argv))
        self.proc = proc
        try:
            await proc.start()
        except OSError as exc:
            log.error("cannot start instance %s argv=%s error=%s", self.name, argv, exc)
            self.sup.post("instance-exit", (self, proc, None))
            return
        import asyncio

        self._exit_task = asyncio.ensure_future(self._watch_exit(proc))

    async def _watch_exit(self, proc: ProxyProcess) -> None:
        rc = await proc.wait()
        self.sup.post("instance-exit", (self, proc, rc))

    def shutdown(self) -> None:
        for task in (self._probe_task, self._exit_task):
            if task is not None and not task.done():
                task.cancel()
        if self.proc is not None and self.proc.running:
            self.proc.kill()

    # -------------------------------------------------------------- reporting

    def status(self, now: float) -> dict[str, Any]:
        st = self.policy.status(now)
        if self.cause and self.policy.state in (State.BACKOFF, State.FAILED, State.STARTING):
            st["problem"] = self.cause + (f" ({st['problem']})" if st["problem"] else "")
        st.update(instance_status(self.config, self.proc, self.last_report))
        return st


def instance_status(config: Config, proc: Any, report: Any) -> dict[str, Any]:
    return {
        "required": config.required,
        "pid": None if proc is None or not proc.running else proc.pid,
        "ctl_socket": config.core.ctl_socket,
        "listen": [f"{lp.proto}:{lp.address}:{lp.port}" for lp in config.listen],
        "health": None if report is None or proc is None else {
            "ok": report.ok, "detail": report.detail,
            "workers_alive": report.workers_alive,
            "workers_expected": report.workers_expected,
            "loop_lag_ms": report.loop_lag_ms},
    }
