"""Feature modules inside a worker process: their lifecycle and the script's `ksr` namespace.

`[core] modules` names the modules to load (like Kamailio's `loadmodule`). For each one this
file has a runtime class with the same small shape (security, registrar, auth, dispatcher,
enum, http_client):

- `name`, `depends` (loaded first, their runtime is passed in),
- `async start(env)` / `async stop()`,
- `timers`: `(interval_s, coroutine function)` pairs the worker runs periodically,
- `worker_rpc`: methods the main process fans out to every worker (per-worker state),
- `facade`: what the routing script sees as `ksr.<name>`,
- optionally `on_relay_failed(vars, status)`: called by the tm driver before a failure route
  runs when the round ended with 408 or 5xx (the dispatcher counts a failed relay).

The L1 packages (`sipedge.modules.<name>`) stay pure; this L3 glue adds the clocks
(wall-clock seconds for persisted state and nonces, monotonic seconds for the per-worker
security tables) and the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import secrets as _secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine

from ..config.loader import config_relative
from ..errors import EdgeError
from ..modules import ReplySpec
from ..modules.auth import api as auth_api
from ..modules.auth.core import Auth
from ..modules.registrar import api as reg_api
from ..modules.registrar.aio import AsyncStore
from ..modules.registrar.module import Registrar
from ..modules.registrar.nat import KeepaliveSchedule, PingTarget, options_ping
from ..modules.security import api as sec_api
from ..modules.security import rpc as sec_rpc
from ..modules.security.core import Decision, Security
from ..sip.uri import parse_uri

log = logging.getLogger("sipedge.modules")
sec_log = logging.getLogger("sipedge.modules.security")

SECURITY_PURGE_S = 5.0


def registrar_db_path(config, environ=os.environ) -> str:
    """`[registrar] db_path`; a relative path is relative to the config file's directory, or
    for the embedded default to `$SIPEDGE_DATA_DIR` (the appliance's init sets `/data`) and
    else the working directory (`make run`)."""
    p = Path(config.registrar.db_path)
    if p.is_absolute() or not config.source:
        return str(p)
    if not config.source.startswith("<"):
        return str(Path(config.source).resolve().parent / p)
    base = environ.get("SIPEDGE_DATA_DIR")
    return str(Path(base) / p) if base else str(p)


def registrar_ram_path(p, db_path: str) -> str | None:
    """The RAM file of the location table for `[registrar] storage` memory / write-back
    (None for db): `ram_path`, else /dev/shm (the temp dir without it), named after the
    database so two instances never share one."""
    if p.storage == "db":
        return None
    if p.ram_path:
        return p.ram_path
    if os.path.isdir("/dev/shm"):
        base = "/dev/shm"
    else:
        import tempfile  # not at module level: every proxy imports this module at start

        base = tempfile.gettempdir()
    digest = hashlib.sha256(os.path.abspath(db_path).encode()).hexdigest()[:12]
    return os.path.join(base, f"sipedge-location-{os.getuid()}-{digest}.sqlite")


@dataclass
class ModuleEnv:
    """What a module runtime gets from the worker."""

    config: Any
    index: int  # worker index (0 runs the once-per-box jobs: NAT keepalives)
    secrets: dict[str, str] = field(default_factory=dict)  # from the main process (hex)
    send: Callable[[str, bytes, str, int], None] | None = None  # (proto, data, ip, port)
    sent_by: Callable[[str], str] | None = None  # proto -> our Via sent-by
    runtimes: dict[str, Any] = field(default_factory=dict)  # started so far, by name
    resolver: Any = None  # the worker's DnsResolver (io/dns.py), for dispatcher and enum
    nworkers: int = 1
    # one-way request to another worker's control socket: (worker index, method, params)
    notify: Callable[[int, str, dict], None] | None = None
    script_function: Callable[[str], Any] | None = None  # name -> function of the script
    run_id: str = ""  # names the abstract sockets of this sipedge instance
    # a reply a module held (hold_response returned True) goes on: (response, source)
    resume_response: Callable[[Any, Any], None] | None = None


# -- security ----------------------------------------------------------------------------


class SecurityFacade:
    """`ksr.security`: screening and the block table of this worker."""

    def __init__(self, sec: Security) -> None:
        self._sec = sec

    def check(self, msg) -> Decision:
        """ACL, User-Agent, blocklist, flood counting (the worker already runs this for
        every request before the route; calling it again counts the request twice)."""
        return sec_api.check(self._sec, msg, getattr(msg, "listener", ""), time.monotonic())

    def reply_for(self, decision: Decision) -> ReplySpec | None:
        return sec_api.reply_for(decision)

    def is_blocked(self, ip: str) -> bool:
        return sec_api.is_blocked(self._sec, ip, time.monotonic())


class SecurityRuntime:
    name = "security"
    depends: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.sec: Security | None = None
        self.facade: SecurityFacade | None = None
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.worker_rpc: dict[str, Callable[[dict], Any]] = {}

    async def start(self, env: ModuleEnv) -> None:
        self.sec = Security(env.config.security)
        self.facade = SecurityFacade(self.sec)
        self.timers = [(SECURITY_PURGE_S, self._purge)]
        self.worker_rpc = {
            "sec.blocked": lambda p: sec_rpc.sec_blocked(self.sec, time.monotonic()),
            "sec.unblock": lambda p: sec_rpc.sec_unblock(self.sec, _param(p, "ip")),
        }

    async def _purge(self) -> None:
        assert self.sec is not None
        self.sec.purge(time.monotonic())

    def screen(self, src_ip: str, listener: str, user_agent: str | None) -> Decision:
        assert self.sec is not None
        return self.sec.check_request(src_ip, listener, user_agent, time.monotonic())

    def report_blocks(self, stats: dict[str, int], worker: int) -> None:
        """Log each block and unblock once (source, reason, duration) and count them."""
        if self.sec is None or not self.sec.blocklist.events:
            return
        for ev in self.sec.blocklist.drain():
            b = ev.block
            if ev.kind == "blocked":
                stats["sec_blocks"] += 1
                sec_log.warning("worker=%d blocked src=%s reason=%s duration_s=%.0f",
                            worker, b.ip, b.reason,
                            b.until - (b.since if b.since is not None else time.monotonic()))
            else:
                stats["sec_unblocks"] += 1
                sec_log.info("worker=%d unblocked src=%s reason=%s cause=%s", worker,
                         b.ip, b.reason, ev.cause)

    async def stop(self) -> None:
        return None


# -- registrar ----------------------------------------------------------------------------


class RegistrarFacade:
    """`ksr.registrar`: save, lookup, registered (awaitable: they read or write SQLite)."""

    def __init__(self, reg: Registrar) -> None:
        self._reg = reg

    async def save(self, msg, auth_user: str | None = None) -> ReplySpec:
        """Store the REGISTER's bindings; the reply to send (200 with every binding, or
        400/403/404/420/423/500)."""
        return await reg_api.save(self._reg, msg, time.time(), auth_user=auth_user)

    async def lookup(self, msg) -> ReplySpec | None:
        """Rewrite the request to the R-URI's registered contacts: the highest q becomes
        the Request-URI, every other contact a parallel branch (t_relay() sends them all).
        Returns None when found, else the reply to send: 404 for an unknown user, 480 for
        one without a live binding."""
        targets, reply = await reg_api.lookup(self._reg, msg, time.time())
        if reply is not None or not targets:
            return reply or ReplySpec(480, "Temporarily Unavailable")
        reg_api.apply_targets(msg, targets)
        return None

    async def registered(self, aor: str) -> bool:
        return await reg_api.registered(self._reg, aor, time.time())


class RegistrarRuntime:
    name = "registrar"
    depends: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.store: AsyncStore | None = None
        self.reg: Registrar | None = None
        self.facade: RegistrarFacade | None = None
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.worker_rpc: dict[str, Callable[[dict], Any]] = {}
        self._env: ModuleEnv | None = None
        self._keepalive: KeepaliveSchedule | None = None

    async def start(self, env: ModuleEnv) -> None:
        p = env.config.registrar
        self._env = env
        db_path = registrar_db_path(env.config)
        self.store = await AsyncStore.open(db_path, synchronous=p.db_synchronous,
                                           location_path=registrar_ram_path(p, db_path))
        self.reg = Registrar(p, self.store, tuple(env.config.proxy.domains))
        self.facade = RegistrarFacade(self.reg)
        if p.nat_keepalive_interval_s > 0 and env.index == 0 and env.send is not None:
            # one worker pings for the box; the schedule spreads the pings over the interval
            self._keepalive = KeepaliveSchedule(p.nat_keepalive_interval_s)
            self.timers.append((min(1.0, p.nat_keepalive_interval_s), self._ping))

    async def _ping(self) -> None:
        assert self.store is not None and self._keepalive is not None and self._env
        now = time.time()
        self._keepalive.sync(await self.store.nat_bindings(now), now)
        for target in self._keepalive.due(now):
            try:
                self._send_ping(target)
            except (ValueError, OSError) as exc:
                log.debug("keepalive to %s failed: %s", target.received, exc)

    def _send_ping(self, target: PingTarget) -> None:
        env = self._env
        assert env is not None and env.send is not None and env.sent_by is not None
        uri = parse_uri(target.received)
        proto = (uri.param("transport") or target.transport or "udp").lower()
        ip, port = uri.host_bare, uri.port or 5060
        if proto != "udp" or env.config.registrar.nat_keepalive_method == "crlf":
            env.send(proto, b"\r\n\r\n", ip, port)
            return
        tag = _secrets.token_hex(4)
        req = options_ping(target, local_uri=f"sip:{env.sent_by(proto)}",
                           via_sent_by=env.sent_by(proto),
                           branch=f"z9hG4bK{env.index}xka{_secrets.token_hex(6)}",
                           call_id=f"ka-{_secrets.token_hex(8)}", tag=tag)
        env.send("udp", req.to_bytes(), ip, port)

    async def stop(self) -> None:
        if self.store is not None:
            await self.store.close()


# -- auth ---------------------------------------------------------------------------------


class AuthFacade:
    """`ksr.auth`: digest challenge and check (awaitable: the HA1 comes from SQLite)."""

    def __init__(self, auth: Auth, store: AsyncStore, security: Security | None,
                 domains: tuple[str, ...]) -> None:
        self._auth = auth
        self._store = store
        self._security = security
        self._domains = domains

    async def check(self, msg, realm: str | None = None) -> auth_api.AuthOutcome:
        """Verify the credentials (Authorization for REGISTER, Proxy-Authorization for
        others). `outcome.ok`, else send `outcome.reply` (challenge, stale challenge, 400,
        403). Failed logins count towards blocking the source (security module)."""
        outcome = await auth_api.auth_check_async(self._auth, msg, time.time(), self._store,
                                                  realm=realm, security=self._security,
                                                  sec_now=time.monotonic())
        if outcome.subscriber is not None:  # ksr.registrar.save need not read it again
            msg.auth_subscriber = outcome.subscriber
        return outcome

    def challenge(self, msg, realm: str | None = None, stale: bool = False) -> ReplySpec:
        return auth_api.auth_challenge(self._auth, msg, time.time(), realm=realm, stale=stale)

    def consume_credentials(self, msg, realm: str | None = None) -> int:
        return auth_api.consume_credentials(self._auth, msg, realm=realm)

    def needs_auth(self, msg) -> bool:
        """Method in `challenge_methods` and domain in `[auth] domains` (default: ours)."""
        return self._auth.needs_auth(msg.raw, self._domains)


class _NoSubscribers:
    """The synchronous HA1 source is never used in a worker (auth_check_async fetches the
    HA1 through the AsyncStore first)."""

    def get_ha1(self, username: str, domain: str, algorithm: str) -> None:
        return None


class AuthRuntime:
    name = "auth"
    depends: tuple[str, ...] = ("registrar",)

    def __init__(self) -> None:
        self.auth: Auth | None = None
        self.facade: AuthFacade | None = None
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.worker_rpc: dict[str, Callable[[dict], Any]] = {}

    async def start(self, env: ModuleEnv) -> None:
        secret_hex = env.secrets.get("auth")
        if not secret_hex:
            raise RuntimeError("auth: no nonce secret from the main process")
        self.auth = Auth(env.config.auth, bytes.fromhex(secret_hex), _NoSubscribers())
        self.auth.same_server = _served_by_us(env.config)
        store = env.runtimes["registrar"].store
        sec_rt = env.runtimes.get("security")
        self.facade = AuthFacade(self.auth, store, sec_rt.sec if sec_rt else None,
                                 tuple(env.config.proxy.domains))

    async def stop(self) -> None:
        return None


def _served_by_us(config) -> Callable[[Any], bool]:
    """URI -> is it this box: one of `[proxy] domains`, a listener's (or, for a wildcard
    listener, the host's) address or advertised name. For the digest uri check."""
    names = {d.lower() for d in config.proxy.domains}
    for lp in config.listen:
        names.add(lp.address.lower())
        adv = lp.advertise
        if adv.startswith("["):
            adv = adv[1:].split("]", 1)[0]
        elif adv.count(":") == 1:
            adv = adv.split(":", 1)[0]
        if adv:
            names.add(adv.lower())
    wildcard = bool(names & {"0.0.0.0", "::"})

    def served(uri: Any) -> bool:
        host = uri.host_bare.lower()
        return host in names or (wildcard and _is_local_ip(host))

    return served


def _is_local_ip(host: str) -> bool:
    """An address of this host (a wildcard listener receives on it): only a local address can
    be bound. Called only when a digest uri differs from the R-URI, so no cache."""
    import ipaddress
    import socket

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, 0))
        except OSError:
            return False
    return True


# -- dispatcher -----------------------------------------------------------------------------


def dispatcher_list_path(config) -> str | None:
    """`[dispatcher] list_file`, relative to the config file's directory (else to the
    working directory); None when not set."""
    name = config.dispatcher.list_file
    return config_relative(config, name) if name else None


def load_dispatcher_table(config):
    """The config destinations plus the list file's. Raises DispatcherListError (every bad
    line as `file:line: column: reason`), or ValueError for a (set, URI) given twice."""
    from ..errors import ConfigIssue
    from ..modules.dispatcher.params import build_config_table
    from ..modules.dispatcher.table import DispatcherListError, parse_list

    path = dispatcher_list_path(config)
    list_table = None
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DispatcherListError([ConfigIssue(path, 0, "(file)", str(exc))]) from None
        list_table = parse_list(text, path)
    return build_config_table(config.dispatcher, list_table)


def probe_local_ip(config) -> str:
    """`probe_address`, else the first UDP listener's address. A wildcard listener gives a
    wildcard probe socket: the kernel picks the source address per destination, and the
    Via's sent-by `0.0.0.0` makes the UAS answer to the packet's source (RFC 3261 18.2.2
    `received`); set `probe_address` to have a real address in the Via."""
    if config.dispatcher.probe_address:
        return config.dispatcher.probe_address
    for lp in config.listen:
        if lp.proto == "udp":
            return lp.address
    return "127.0.0.1"


DISPATCHER_SYNC_S = 1.0


class _ReportingDispatcher:
    """A non-probing worker's Dispatcher as the script API sees it: failed relays and
    `mark_inactive()` go to worker 0, which owns health; `mark_inactive()` also applies here
    at once so this worker stops selecting the destination."""

    def __init__(self, disp, report: Callable[[str, Any], None]) -> None:
        self._d = disp
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._d, name)

    def relay_failed(self, dest, now: float) -> None:
        self._report("relay_failed", dest)

    def mark_inactive(self, dest, now: float, reason: str = "marked") -> None:
        self._d.mark_inactive(dest, now, reason)
        self._d.events()  # nobody else reads this worker's events
        self._report("mark_inactive", dest)


class DispatcherRuntime:
    """One Dispatcher per worker (selection cursors, counters); worker 0 alone probes.

    Worker 0 runs the Prober (its own UDP socket) and owns health: it sends every state
    change at once, and all states every DISPATCHER_SYNC_S (a restarted worker catches up),
    to the other workers as one-way `dispatcher.sync` requests on their control sockets.
    The other workers mirror those states (`Dispatcher.mirror_state`) and report their
    failed relays and `mark_inactive()` to worker 0 (`dispatcher.report`), so
    `inactive_after` counts failures box-wide. `dispatcher.set_state` and
    `dispatcher.reload` are fanned out to every worker by the main process."""

    name = "dispatcher"
    depends: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.disp = None
        self.prober = None
        self.facade = None
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.worker_rpc: dict[str, Callable[[dict], Any]] = {}
        self._env: ModuleEnv | None = None

    @property
    def probing(self) -> bool:
        return self.prober is not None

    async def start(self, env: ModuleEnv) -> None:
        from ..modules.dispatcher import rpc as ds_rpc
        from ..modules.dispatcher.aio import Prober
        from ..modules.dispatcher.api import DispatcherApi
        from ..modules.dispatcher.core import Dispatcher

        self._env = env
        p = env.config.dispatcher
        clock = time.monotonic
        self.disp = disp = Dispatcher(load_dispatcher_table(env.config), p.settings(), clock())
        shared = env.nworkers > 1 and env.notify is not None
        if env.index == 0 or not shared:
            self.prober = Prober(disp, local_ip=probe_local_ip(env.config),
                                 method=p.probe_method, from_uri=p.probe_from,
                                 resolve=self._resolver(env.resolver), clock=clock,
                                 on_event=self._changed if shared else None)
            await self.prober.start()
            after_change = self.prober.poke
            self.facade = DispatcherApi(disp, clock)
            if shared:
                self.timers.append((DISPATCHER_SYNC_S, self._push_all))
        else:
            after_change = disp.events  # drain: set_state queues events nobody else reads
            self.facade = DispatcherApi(_ReportingDispatcher(disp, self._report), clock)
        self.worker_rpc = ds_rpc.methods(disp, lambda: load_dispatcher_table(env.config),
                                         clock, after_change=after_change)
        listing = self.worker_rpc["dispatcher.list"]
        self.worker_rpc["dispatcher.list"] = lambda q: {**listing(q), "worker": env.index,
                                                        "probing": self.probing}
        self.worker_rpc["dispatcher.sync"] = self._on_sync
        self.worker_rpc["dispatcher.report"] = self._on_report

    @staticmethod
    def _resolver(resolver):
        """Destinations with a host name are resolved through the worker's DnsResolver
        (RFC 3263 over UDP); numeric ones need no DNS."""
        if resolver is None:
            return None
        from ..sip.proxy import NextHop

        async def resolve(dest):
            uri = dest.uri
            hop = NextHop(uri, uri.host_bare, uri.port or 5060, "udp")
            target = await resolver.next_target(resolver.resolution(hop))
            return (target.ip, target.port) if target is not None else None

        return resolve

    # -- worker 0: health owner --------------------------------------------------------

    def _broadcast(self, states: list) -> None:
        env = self._env
        assert env is not None and env.notify is not None
        for i in range(env.nworkers):
            if i != env.index:
                env.notify(i, "dispatcher.sync", {"states": states})

    def _changed(self, ev) -> None:
        self._broadcast([[ev.set_id, ev.uri, ev.new.value]])

    async def _push_all(self) -> None:
        assert self.disp is not None
        states = [[d.set_id, str(d.uri), self.disp.health_of(d).state.value]
                  for d in self.disp.table.destinations()]
        for i in range(0, len(states), 200):  # datagrams well under the 64 KiB read size
            self._broadcast(states[i:i + 200])

    def _on_report(self, params: dict) -> None:
        """From another worker: a failed relay or mark_inactive() of one destination."""
        from ..modules.dispatcher.core import DispatcherError

        if self.disp is None or self.prober is None:
            return None
        try:
            dest = self.disp.destination(int(params["set"]), str(params["uri"]))
        except DispatcherError:
            return None  # the tables differ for a moment around a reload
        if params.get("kind") == "mark_inactive":
            self.disp.mark_inactive(dest, time.monotonic())
        else:
            self.disp.relay_failed(dest, time.monotonic())
        self.prober.poke()  # drains the events: the change goes out at once
        return None

    # -- other workers: mirrors ---------------------------------------------------------

    def _on_sync(self, params: dict) -> int:
        assert self.disp is not None
        if self.probing:
            return 0
        now = time.monotonic()
        return sum(self.disp.mirror_state(int(set_id), str(uri), str(state), now)
                   for set_id, uri, state in params.get("states", ()))

    def _report(self, kind: str, dest) -> None:
        env = self._env
        if env is not None and env.notify is not None:
            env.notify(0, "dispatcher.report", {"kind": kind, "set": dest.set_id,
                                                "uri": str(dest.uri)})

    def on_relay_failed(self, tvars: dict, status: int) -> None:
        """The tm driver: the round relayed to the current selection ended with 408/5xx."""
        from ..modules.dispatcher.api import VAR

        sel = tvars.get(VAR)
        dest = sel.current if sel is not None else None
        if dest is None or self.disp is None:
            return
        if self.prober is None:
            self._report("relay_failed", dest)
            return
        self.disp.relay_failed(dest, time.monotonic())
        self.prober.poke()  # an inactive destination is probed from now on

    async def stop(self) -> None:
        if self.prober is not None:
            await self.prober.close()


# -- enum -------------------------------------------------------------------------------------


class EnumRuntime:
    """ENUM lookups through the worker's DnsResolver and its cache (`[enum] servers` /
    `timeout_s` give ENUM a resolver of its own, still with the worker's cache)."""

    name = "enum"
    depends: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.lookup = None
        self.facade = None
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.worker_rpc: dict[str, Callable[[dict], Any]] = {}

    async def start(self, env: ModuleEnv) -> None:
        self.lookup = make_enum_lookup(env.config, env.resolver)
        from ..modules.enum.api import EnumApi

        self.facade = EnumApi(self.lookup)

    async def stop(self) -> None:
        return None


def make_enum_lookup(config, resolver=None):
    """An EnumLookup on `resolver` (a DnsResolver; a new one from [dns] when None), with
    [enum] servers / timeout_s overriding [dns]."""
    from ..modules.enum.aio import EnumLookup, make_asker

    p = config.enum
    asker = resolver
    if asker is None or p.servers or p.timeout_s:
        asker = make_asker(config.dns, list(p.servers) or None, p.timeout_s or None)
    cache = resolver.cache if resolver is not None else asker.cache
    return EnumLookup(asker, suffix=p.suffix, services=tuple(p.services),
                      non_digits=p.non_digits, max_depth=p.max_depth, cache=cache)


# -- http_client ------------------------------------------------------------------------------


class HttpClientRuntime:
    """One keep-alive HTTP client per worker, closed at stop."""

    name = "http_client"
    depends: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.client = None
        self.facade = None
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.worker_rpc: dict[str, Callable[[dict], Any]] = {}

    async def start(self, env: ModuleEnv) -> None:
        from ..modules.http_client import rpc as http_rpc
        from ..modules.http_client.api import HttpClientApi
        from ..modules.http_client.client import HttpClient

        self.client = HttpClient(**env.config.http_client.client_kwargs())
        self.facade = HttpClientApi(self.client)
        self.worker_rpc = http_rpc.methods(self.client)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()


RUNTIMES: dict[str, type] = {"security": SecurityRuntime, "registrar": RegistrarRuntime,
                             "auth": AuthRuntime, "dispatcher": DispatcherRuntime,
                             "enum": EnumRuntime, "http_client": HttpClientRuntime}


def _lazy_runtime(module: str, cls: str, depends: tuple[str, ...] = ()) -> Any:
    """A runtime whose code is imported only when the module is loaded: uac, diameter and
    ims_pcscf pull in transaction, Diameter and XFRM code that a box without them never
    needs (seconds of imports on a slow board; issue 13)."""
    def make() -> Any:
        import importlib

        return getattr(importlib.import_module(module, __package__), cls)()

    make.depends = depends  # type: ignore[attr-defined]
    return make


RUNTIMES.update({  # type: ignore[arg-type]
    "uac": _lazy_runtime("..modules.uac.aio", "UacRuntime"),
    "diameter": _lazy_runtime("..modules.diameter.runtime", "DiameterRuntime"),
    "ims_pcscf": _lazy_runtime("..modules.ims_pcscf.aio", "ImsPcscfRuntime"),
})


def module_listeners(config) -> list:
    """Listeners a loaded module adds to [[listen]] (ims_pcscf: its protected ports)."""
    if "ims_pcscf" in config.core.modules:
        from ..modules.ims_pcscf.aio import protected_listeners

        return protected_listeners(config)
    return []


def load_order(names) -> list[str]:
    """Dependencies first (the config check guarantees they are listed)."""
    out: list[str] = []

    def add(n: str) -> None:
        if n in out:
            return
        for d in RUNTIMES[n].depends:
            add(d)
        out.append(n)

    for n in names:
        add(n)
    return out


# -- the ksr namespace ---------------------------------------------------------------------


class Ksr:
    """`ksr` in the routing script: one attribute per loaded module."""

    def __init__(self, facades: dict[str, Any] | None = None) -> None:
        self.__dict__["_facades"] = dict(facades or {})
        # found by the plain attribute lookup: `__getattr__` runs only after a failed one,
        # whose AttributeError costs more than the rest of `ksr.auth` (several per request)
        self.__dict__.update(self.__dict__["_facades"])

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_facades"][name]
        except KeyError:
            raise AttributeError(f"ksr.{name}: module {name!r} is not loaded "
                                 "(add it to [core] modules)") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ksr is read-only")

    def __dir__(self):
        return sorted(self.__dict__["_facades"])

    @property
    def modules(self) -> list[str]:
        return sorted(self.__dict__["_facades"])


class WorkerModules:
    """The loaded modules of one worker."""

    def __init__(self, env: ModuleEnv) -> None:
        self.env = env
        self.names = load_order(env.config.core.modules)
        self.runtimes: dict[str, Any] = {}
        self.ksr = Ksr()
        self.security: SecurityRuntime | None = None
        # tm driver: (vars, status) callbacks for a round that ended with 408/5xx
        self.relay_failed_hooks: list[Callable[[dict, int], None]] = []
        # worker: runtime.request_hook(req) before the script, runtime.response_hook(resp)
        # -> consumed (named apart from the script-facing on_request/on_reply of facades)
        self.request_hooks: list[Callable[[Any], None]] = []
        self.response_hooks: list[Callable[[Any], bool]] = []
        # runtime.hold_response(resp, src) -> True: held, the module resumes it later
        self.response_holds: list[Callable[[Any, Any], bool]] = []
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        for name in self.names:
            rt = RUNTIMES[name]()
            await rt.start(self.env)
            self.runtimes[name] = rt
            self.env.runtimes[name] = rt
        self.ksr = Ksr({n: rt.facade for n, rt in self.runtimes.items()})
        from ..script.ksr import bind

        bind(self.ksr)  # `from sipedge.script import ksr` in scripts
        self.security = self.runtimes.get("security")
        self.relay_failed_hooks = [rt.on_relay_failed for rt in self.runtimes.values()
                                   if hasattr(rt, "on_relay_failed")]
        self.request_hooks = [rt.request_hook for rt in self.runtimes.values()
                              if hasattr(rt, "request_hook")]
        self.response_hooks = [rt.response_hook for rt in self.runtimes.values()
                               if hasattr(rt, "response_hook")]
        self.response_holds = [rt.hold_response for rt in self.runtimes.values()
                               if hasattr(rt, "hold_response")]
        loop = asyncio.get_running_loop()
        for rt in self.runtimes.values():
            for interval, fn in rt.timers:
                self._tasks.append(loop.create_task(_every(interval, fn, rt.name)))
        if self.names:
            log.info("worker=%d modules loaded: %s", self.env.index, ", ".join(self.names))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for name in reversed(list(self.runtimes)):
            await self.runtimes[name].stop()

    def worker_rpc(self) -> dict[str, Callable[[dict], Any]]:
        out: dict[str, Callable[[dict], Any]] = {}
        for rt in self.runtimes.values():
            out.update(rt.worker_rpc)
        return out


async def _every(interval: float, fn: Callable[[], Awaitable[None]], name: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await fn()
        except Exception:  # noqa: BLE001 - supervisor-style boundary of a module timer
            log.exception("module=%s timer failed", name)


def _param(params: dict, key: str) -> Any:
    if key in params:
        return params[key]
    args = params.get("args") or []
    if args:
        return args[0]
    raise KeyError(key)


# -- per-worker control socket: the main process asks every worker ----------------------


def control_address(run_id: str, index: int) -> bytes:
    return f"\0sipedge-{run_id}-w{index}-ctl".encode()


def notification(method: str, params: dict) -> bytes:
    """A one-way control request (handle_control sends no reply)."""
    return json.dumps({"notify": True, "method": method, "params": params}).encode()


def handle_control(methods: dict[str, Callable[[dict], Any]],
                   payload: bytes) -> bytes | Coroutine[Any, Any, bytes] | None:
    """One request datagram `{"id", "method", "params"}` -> one reply datagram. A one-way
    request (`"notify": true`, from another worker) gets no reply (None). A method that
    returns an awaitable (its work runs in a thread: kernel dumps, crypto self-tests) gives
    a coroutine instead, which the caller runs on its loop and whose result is the reply."""
    try:
        req = json.loads(payload)
        rid = req.get("id")
    except (ValueError, AttributeError) as exc:
        return json.dumps({"id": None, "error": f"bad request: {exc}"}).encode()
    if not isinstance(req, dict) or "method" not in req:
        return None  # a reply (or garbage) that reached this socket: never answer it
    fn = methods.get(req.get("method"))
    if req.get("notify") is True:
        if fn is None:
            log.debug("control notification for unknown method %r", req.get("method"))
            return None
        try:
            fn(req.get("params") or {})
        except (ValueError, KeyError, TypeError, EdgeError) as exc:
            log.info("control notification %s failed: %s", req.get("method"), exc)
        return None
    if fn is None:
        return json.dumps({"id": rid, "error": f"no such method {req.get('method')!r}"}).encode()
    try:
        result = fn(req.get("params") or {})
        if inspect.isawaitable(result):
            return _reply_when_done(rid, result)
        return json.dumps({"id": rid, "result": result}).encode()
    except (ValueError, KeyError, TypeError, EdgeError) as exc:
        return json.dumps({"id": rid, "error": f"{type(exc).__name__}: {exc}"}).encode()


async def _reply_when_done(rid: Any, pending: Awaitable[Any]) -> bytes:
    try:
        return json.dumps({"id": rid, "result": await pending}).encode()
    except (ValueError, KeyError, TypeError, EdgeError, OSError) as exc:
        return json.dumps({"id": rid, "error": f"{type(exc).__name__}: {exc}"}).encode()


async def ask_workers(run_id: str, nworkers: int, method: str, params: dict,
                      timeout: float = 1.0) -> list[dict]:
    """Send one request to every worker's control socket and collect the replies (a worker
    that does not answer within `timeout` is left out)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"\0sipedge-{run_id}-main-{os.getpid()}-{_secrets.token_hex(4)}".encode())
    sock.setblocking(False)
    rid = _secrets.token_hex(4)
    data = json.dumps({"id": rid, "method": method, "params": params}).encode()
    sent = 0
    try:
        for i in range(nworkers):
            try:
                sock.sendto(data, control_address(run_id, i))
                sent += 1
            except OSError as exc:
                log.info("worker=%d control socket: %s", i, exc)
        out: list[dict] = []
        deadline = loop.time() + timeout
        while len(out) < sent:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                payload = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), left)
            except asyncio.TimeoutError:
                break
            reply = json.loads(payload)
            if reply.get("id") == rid:
                out.append(reply)
        return out
    finally:
        sock.close()
