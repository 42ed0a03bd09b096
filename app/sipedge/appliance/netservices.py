"""Helper daemons the `[network]` section asks for: a DHCP client per DHCP interface or VLAN,
an NTP daemon.

Split like the rest of the appliance code:

- `service_specs(params)` is pure: the config -> the helpers that should run, each with its
  full command line and the files it needs (BusyBox `udhcpc -f ...` per `dhcp = true`
  interface or VLAN; for NTP chrony's `chronyd -d -f CONF` with a generated CONF where
  chronyd is installed, else BusyBox `ntpd -n -p ...`).
- `ServicePolicy` is sans-IO: given the wanted helpers, process starts and exits and the
  clock, it says what to start and stop and when to restart a helper that died (delay doubles
  per quick exit up to `max_delay_s`; a run of `threshold_s` resets it). A helper is started
  once, restarted while it is wanted, restarted when its command line changes and stopped when
  it is no longer wanted.
- `ServiceRunner` carries the actions out with asyncio; the process boundary is `spawn`
  (tests pass a fake).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..pdeathsig import term_with_parent
from .params import NetworkParams
from .sdconfig import atomic_write

log = logging.getLogger("sipedge.appliance.netservices")

UDHCPC_SCRIPT = "/usr/libexec/sipedge/udhcpc-event"
CHRONY_CONF = "/run/sipedge/chrony.conf"


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # "udhcpc:eth0", "ntpd"
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (path, text) written before each start


def split_ntp_server(server: str) -> tuple[str, int | None]:
    """ "host", "host:port", "[v6]:port" or a bare IPv6 address -> (host, port or None).

    Raises ValueError for an empty host or a bad port."""
    host, port = server, None
    if server.startswith("["):
        end = server.find("]")
        if end < 0 or server[end + 1:end + 2] not in ("", ":"):
            raise ValueError("bad bracketed address")
        host = server[1:end]
        if server[end + 1:]:
            port = server[end + 2:]
    elif server.count(":") == 1:
        host, port = server.split(":")
    if not host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError("want HOST, HOST:PORT or [IPv6]:PORT")
    return host, None if port is None else int(port)


def chrony_conf(servers: list[str], pidfile: str) -> str:
    """chronyd's configuration for `servers`: poll them, step the clock whenever it is more
    than a second off (boards without an RTC boot in 1970, and a box may stay offline for
    days), keep the RTC in sync where there is one, no command socket (nothing else to talk
    to chronyd)."""
    lines = ["# written by sipedge-supervisor from [network] ntp_servers; do not edit"]
    for server in servers:
        host, port = split_ntp_server(server)
        lines.append(f"server {host} iburst" + (f" port {port}" if port else ""))
    lines += ["makestep 1.0 -1", "rtcsync", "cmdport 0", "bindcmdaddress /",
              f"pidfile {pidfile}", ""]
    return "\n".join(lines)


def service_specs(params: NetworkParams, busybox: str = "busybox",
                  script: str = UDHCPC_SCRIPT, chronyd: str | None = None,
                  chrony_conf_path: str = CHRONY_CONF,
                  links: Collection[str] | None = None) -> dict[str, ServiceSpec]:
    """The helpers `params` asks for (none unless `manage`). NTP runs `chronyd` when its path
    is given, else BusyBox ntpd.

    `links` names the interfaces that exist after the network was applied (None: unknown). A
    DHCP VLAN not among them (its parent is missing) gets no client yet: the apply that creates
    the VLAN starts it, instead of a client that exits and waits out its restart delay. A
    physical interface gets its client either way (a NIC can appear without an apply)."""
    out: dict[str, ServiceSpec] = {}
    if not params.manage:
        return out
    # With configured resolvers a lease must not replace resolv.conf (the event script checks).
    env = (("SIPEDGE_KEEP_RESOLV", "1"),) if params.dns_servers else ()
    dhcp = [itf.name for itf in params.interface if itf.dhcp]
    dhcp += [v.name for v in params.vlan if v.dhcp and (links is None or v.name in links)]
    for name in dhcp:
        argv = [busybox, "udhcpc", "-f", "-S", "-i", name, "-s", script]
        if params.hostname:
            argv += ["-x", f"hostname:{params.hostname}"]
        out[f"udhcpc:{name}"] = ServiceSpec(f"udhcpc:{name}", tuple(argv), env)
    if params.ntp_servers and chronyd:
        pidfile = os.path.join(os.path.dirname(chrony_conf_path), "chronyd.pid")
        conf = chrony_conf(params.ntp_servers, pidfile)
        out["ntpd"] = ServiceSpec("ntpd", (chronyd, "-d", "-f", chrony_conf_path),
                                  files=((chrony_conf_path, conf),))
    elif params.ntp_servers:
        argv = [busybox, "ntpd", "-n"]
        for server in params.ntp_servers:
            argv += ["-p", server]
        out["ntpd"] = ServiceSpec("ntpd", tuple(argv))
    return out


# ------------------------------------------------------------------ sans-IO policy


@dataclass(frozen=True)
class Start:
    spec: ServiceSpec


@dataclass(frozen=True)
class Stop:
    name: str


class ServicePolicy:
    """Which helpers run and when a dead one is restarted. Pure: the caller passes `now`."""

    def __init__(self, restart_delay_s: float = 1.0, max_delay_s: float = 60.0,
                 threshold_s: float = 30.0) -> None:
        self.restart_delay_s = restart_delay_s
        self.max_delay_s = max(max_delay_s, restart_delay_s)
        self.threshold_s = threshold_s
        self.wanted: dict[str, ServiceSpec] = {}
        self.running: dict[str, tuple[ServiceSpec, float]] = {}  # name -> (spec, started)
        self.restart_at: dict[str, float] = {}
        self.quick_exits: dict[str, int] = {}
        self.restarts: dict[str, int] = {}

    def set_wanted(self, specs: Mapping[str, ServiceSpec], now: float) -> list[Start | Stop]:
        """New wanted set: stops first (gone or changed), then starts."""
        actions: list[Start | Stop] = []
        for name, (spec, _t) in sorted(self.running.items()):
            if specs.get(name) != spec:
                actions.append(Stop(name))
                del self.running[name]
        for name in list(self.restart_at):
            if specs.get(name) != self.wanted.get(name):
                del self.restart_at[name]
        for name in [n for n in self.quick_exits if specs.get(n) != self.wanted.get(n)]:
            del self.quick_exits[name]
        self.wanted = dict(specs)
        for name, spec in sorted(self.wanted.items()):
            if name not in self.running and name not in self.restart_at:
                actions.append(Start(spec))
                self.running[name] = (spec, now)
        return actions

    def on_exit(self, name: str, now: float) -> None:
        """A helper ended by itself (not by a Stop): schedule its restart if still wanted."""
        entry = self.running.pop(name, None)
        if entry is None or name not in self.wanted:
            return
        spec, started = entry
        if now - started < self.threshold_s:
            self.quick_exits[name] = self.quick_exits.get(name, 0) + 1
        else:
            self.quick_exits[name] = 0
        n = self.quick_exits[name]
        delay = min(self.restart_delay_s * 2 ** max(n - 1, 0), self.max_delay_s)
        self.restart_at[name] = now + delay

    def next_timer(self) -> float | None:
        return min(self.restart_at.values(), default=None)

    def on_timer(self, now: float) -> list[Start | Stop]:
        actions: list[Start | Stop] = []
        for name, at in sorted(self.restart_at.items()):
            if at <= now and name in self.wanted:
                del self.restart_at[name]
                spec = self.wanted[name]
                self.running[name] = (spec, now)
                self.restarts[name] = self.restarts.get(name, 0) + 1
                actions.append(Start(spec))
        return actions


# ------------------------------------------------------------------ process boundary


class HelperProcess(Protocol):
    pid: int

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


async def spawn_helper(spec: ServiceSpec) -> HelperProcess:
    """Start a helper in its own session, stdio on /dev/null except stderr (the log), and
    SIGTERM when the supervisor dies."""
    env = dict(os.environ, **dict(spec.env)) if spec.env else None
    return await asyncio.create_subprocess_exec(
        *spec.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        start_new_session=True, env=env, preexec_fn=term_with_parent)


class ServiceRunner:
    """Carries out `ServicePolicy` decisions: `update(specs)` and `close()`."""

    def __init__(self, spawn: Callable[[ServiceSpec], Awaitable[HelperProcess]] = spawn_helper,
                 policy: ServicePolicy | None = None,
                 clock: Callable[[], float] = time.monotonic, term_timeout_s: float = 5.0) -> None:
        self.spawn = spawn
        self.policy = policy or ServicePolicy()
        self.clock = clock
        self.term_timeout_s = term_timeout_s
        self.procs: dict[str, HelperProcess] = {}
        self.problems: dict[str, str] = {}
        self._waiters: dict[str, asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def update(self, specs: Mapping[str, ServiceSpec]) -> None:
        async with self._lock:
            await self._do(self.policy.set_wanted(specs, self.clock()))
            self._arm()

    async def close(self) -> None:
        await self.update({})
        if self._timer is not None:
            self._timer.cancel()

    def status(self) -> dict[str, Any]:
        return {name: {"pid": p.pid, "argv": list(self.policy.running[name][0].argv),
                       "restarts": self.policy.restarts.get(name, 0)}
                for name, p in sorted(self.procs.items()) if name in self.policy.running}

    async def _do(self, actions: list[Start | Stop]) -> None:
        for act in actions:
            if isinstance(act, Stop):
                await self._stop(act.name)
            else:
                await self._start(act.spec)

    async def _start(self, spec: ServiceSpec) -> None:
        try:
            for path, text in spec.files:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                atomic_write(Path(path), text.encode())
            proc = await self.spawn(spec)
        except OSError as exc:
            self.problems[spec.name] = f"{spec.name}: cannot start {spec.argv[0]}: {exc}"
            log.error("helper start failed name=%s error=%s", spec.name, exc)
            self.policy.on_exit(spec.name, self.clock())
            return
        self.problems.pop(spec.name, None)
        self.procs[spec.name] = proc
        log.info("helper started name=%s pid=%s argv=%s", spec.name, proc.pid,
                 " ".join(spec.argv))
        self._waiters[spec.name] = asyncio.ensure_future(self._wait(spec.name, proc))

    async def _wait(self, name: str, proc: HelperProcess) -> None:
        rc = await proc.wait()
        async with self._lock:
            if self.procs.get(name) is not proc:
                return  # stopped by us
            del self.procs[name]
            self._waiters.pop(name, None)
            log.warning("helper exited name=%s pid=%s rc=%s", name, proc.pid, rc)
            self.policy.on_exit(name, self.clock())
            self._arm()

    async def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        waiter = self._waiters.pop(name, None)
        if proc is None:
            return
        log.info("helper stopping name=%s pid=%s", name, proc.pid)
        try:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.term_timeout_s)
        except ProcessLookupError:
            pass
        except TimeoutError:
            try:
                proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
        if waiter is not None:
            waiter.cancel()  # it would wait for the lock we hold; the exit was ours anyway

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.policy.next_timer()
        if at is not None:
            delay = max(0.0, at - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer_task = asyncio.ensure_future(self._on_timer())

    async def _on_timer(self) -> None:
        async with self._lock:
            self._timer = None
            await self._do(self.policy.on_timer(self.clock()))
            self._arm()
