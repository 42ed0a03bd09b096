"""A worker process: its own SO_REUSEPORT sockets on every listener, one asyncio loop,
the stateless proxy core and the routing script. See docs/architecture.md for how requests,
replies and retransmissions reach the right worker."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import mmap
import os
import signal
import socket
import struct
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

from ..bootmark import mark
from ..config import Config, ConfigError, load_text
from ..errors import RemoteProtocolError, ScriptError, TransportError
from ..modules.registrar.store import StoreError
from ..modules.security.api import reply_for as sec_reply_for
from ..pdeathsig import term_with_parent
from ..resolve import Resolution, Target, literal_target
from ..script.api import (
    Drop,
    Forward,
    Relay,
    Reply,
    ReplyMsg,
    RequestMsg,
    RouteTable,
    TReply,
)
from ..script.loader import Script, load_script
from ..sip.grammar import KNOWN_METHODS, stat_method
from ..sip.message import Request, Response, parse_message
from ..sip.overload import Overload, is_new_work, is_shed_ack, shed_reply
from ..sip.proxy import LocalAddress, ProxyCore, Source, salvage_request
from ..sip.stateful import is_stateful_branch
from ..sip.uri import parse_uri
from .dns import PENDING, DnsResolver
from .netaddr import host_addresses
from .modules import (
    ModuleEnv,
    WorkerModules,
    module_listeners,
    control_address,
    handle_control,
    notification,
)
from .tls import client_context, server_context
from .tm_driver import TmDriver
from .transport import StreamConnection, UdpListener

log = logging.getLogger("sipedge.worker")

STATS_SLOT_BYTES = 16384
LISTENER_RETRY_S = 1.0
HEARTBEAT_S = 0.5
SO_MEMINFO = 55  # Linux: getsockopt gives sk_meminfo, [0] = bytes queued for reading
SHED_ACK_S = 32.0  # ACKs of our overload 503s are absorbed this long after the last one
BACKLOG_CHECK_EVERY = 32  # datagrams between two looks at the receive backlog
SRC_IP_CACHE_ENTRIES = 1024  # source address per destination, oldest forgotten first
UDP_SOURCE_CACHE_ENTRIES = 1024  # Source per UDP peer address, oldest made forgotten first


def handoff_address(run_id: str, index: int) -> bytes:
    return f"\0sipedge-{run_id}-w{index}".encode()


def local_addresses(config: Config, listen: list | None = None) -> list[LocalAddress]:
    out = []
    for i, lp in enumerate(config.listen if listen is None else listen):
        host, port = lp.address, lp.port
        if lp.advertise:
            adv = lp.advertise
            if adv.startswith("["):
                h, _, p = adv[1:].partition("]")
                host, port = h, int(p[1:]) if p.startswith(":") else lp.port
            else:
                h, _, p = adv.partition(":")
                host, port = h, int(p) if p else lp.port
        out.append(LocalAddress(i, lp.proto, lp.address, lp.port, host, port))
    return out


def resolve_script_path(config: Config) -> str | None:
    script = config.routing.script
    if not script:
        return None
    if script.startswith("sipedge:"):  # a script shipped with the package (examples/...)
        return str(Path(__file__).resolve().parents[1] / script.removeprefix("sipedge:"))
    p = Path(script)
    if not p.is_absolute() and config.source and not config.source.startswith("<"):
        p = Path(config.source).resolve().parent / p
    elif not p.is_absolute() and config.source == "<embedded default>":
        p = Path(__file__).resolve().parents[1] / p  # shipped scripts (examples/)
    return str(p)


def route_table(config: Config) -> RouteTable:
    rules = [(r.domain, r.user_prefix, parse_uri(r.destination)) for r in config.routing.rule]
    default = parse_uri(config.routing.default_destination) if config.routing.default_destination else None
    return RouteTable(rules, default)


def local_ips() -> set[str]:
    """Every address of this host (for wildcard listeners); loopback at least."""
    ips = {"127.0.0.1", "::1"}
    try:
        # stdlib rtnetlink dump: importing pyroute2 here cost seconds before the first answer
        ips |= host_addresses()
    except OSError:  # best effort; loopback is always known
        log.debug("cannot list local addresses", exc_info=True)
    return ips


def udp_socket(family: int, address: str, port: int, buffer_bytes: int) -> socket.socket:
    """A SO_REUSEPORT UDP socket with large kernel buffers: a burst must queue, not drop,
    while the worker is busy (Kamailio grows its buffers the same way)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # *BUFFORCE
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)  # root: past rmem_max
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, plain, buffer_bytes)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


# statistics keys made once: (received, forwarded) per reply class octet ("1".."6") and
# per request method (stat_method: a method we do not know counts as "other")
_REPLY_KEYS = {ord(c): (f"rcv_rpl_{c}xx", f"fwd_rpl_{c}xx") for c in "123456"}
_REQUEST_KEYS = {m: (f"rcv_req_{m}", f"fwd_req_{m}") for m in KNOWN_METHODS}
_OTHER_REQUEST_KEYS = ("rcv_req_other", "fwd_req_other")


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class Stats(dict):
    """The worker's counters (key -> count, read by sipedgectl through write_stats): a
    missing key counts 0, as in a Counter. Not a Counter: its __delitem__, written in
    Python, makes every `stats[key] += 1` store call dict.__setitem__ through a slot
    wrapper, 2.5 times a dict's store, twice per forwarded message."""

    __slots__ = ()

    def __missing__(self, key: str) -> int:
        return 0


class Worker:
    def __init__(self, index: int, nworkers: int, config: Config, run_id: str,
                 stats: mmap.mmap | None = None, secrets: dict[str, str] | None = None,
                 own_signals: bool = True) -> None:
        self.index = index
        # False: runs inside the main process (workers = 1), whose signals are the main's
        self.own_signals = own_signals
        self.nworkers = nworkers
        self.config = config
        self.run_id = run_id
        self.stats_map = stats
        self.listen = list(config.listen) + module_listeners(config)  # + protected ports
        # TCP connections opened from these listeners bind its port (ims_pcscf: SAs match
        # the protected client port as source)
        self.bind_source_ports = {lp.port for lp in self.listen[len(config.listen):]}
        self.locals = local_addresses(config, self.listen)
        self.core = ProxyCore(self.locals, domains=tuple(config.proxy.domains),
                              record_route=config.proxy.record_route,
                              max_forwards=config.proxy.max_forwards, worker=index,
                              secret=run_id.encode(), server=config.core.server_header)
        if "ims_pcscf" in config.core.modules:
            self.core.proxy_require_ok.add("sec-agree")
        self.core.concretize = self._concrete  # no 0.0.0.0 in a Record-Route
        self.udp: dict[int, UdpListener] = {}
        self.udp_socks: list[socket.socket] = []  # for the backlog (overload shedding)
        self.overload = Overload(config.core.overload_backlog_bytes)
        self._datagrams = 0
        self._absorb_acks = False
        self._last_shed = 0.0
        self.tcp_servers: list[asyncio.AbstractServer] = []
        # least recently active first: the one closed when a limit is reached ([core] tcp_*)
        self.conns: OrderedDict[int, StreamConnection] = OrderedDict()
        self.conns_per_ip: Counter[str] = Counter()  # inbound connections per source
        self.conns_by_peer: dict[tuple[str, str, int], StreamConnection] = {}  # (proto, ip, port)
        self.stats = Stats()
        self.script: Script | None = None
        self.table = route_table(config)
        self.script_path = resolve_script_path(config)
        self.handoff: socket.socket | None = None
        # -- next-hop resolution and TLS (docs/dns.md, docs/tls.md)
        self.resolver = DnsResolver(
            config.dns, transports={la.proto for la in self.locals},
            families=sorted({"ipv6" if ":" in la.ip else "ipv4" for la in self.locals}))
        self.tls_server = self.tls_client = None  # built in start()
        # -- end resolution and TLS
        self.src_ip_cache: dict[str, str] = {}
        self.lag_ms = 0.0
        self.max_message = config.core.max_message_bytes
        self._tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self.tm = TmDriver(self)  # transactions (t_relay): io/tm_driver.py
        # -- feature modules ([core] modules) and the script's ksr namespace: io/modules.py
        self.listener_names = [f"{la.proto}:{la.ip}:{la.port}" for la in self.locals]
        self.modules = WorkerModules(ModuleEnv(config, index, dict(secrets or {}),
                                               send=self._module_send,
                                               sent_by=self._sent_by,
                                               resolver=self.resolver, nworkers=nworkers,
                                               notify=self._notify_worker,
                                               script_function=self._script_function,
                                               resume_response=self.resume_response,
                                               run_id=run_id))
        self.control: socket.socket | None = None
        self._wildcards: list[LocalAddress] = []
        self._not_local: dict[str, float] = {}  # IP literal -> until when it is not ours
        # UDP requests take the proxy core's byte path (no message model) when nothing
        # reads the model (see _use_byte_path)
        self.byte_path = self._use_byte_path()
        # the UDP listener a spliced stateless reply leaves from, per address family (IPv6:
        # True); -1: none of that family (the one it came in on)
        self._reply_listener: dict[bool, int] = {}
        self._udp_sources: dict[tuple, Source] = {}  # peer (ip, port) -> its Source

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self.modules.start()
        if self.script_path:
            self.script = load_script(self.script_path, {"ksr": self.modules.ksr})
        if any(la.proto == "tls" for la in self.locals):  # TransportError: bad cert/key/CAs
            self.tls_server = server_context(self.config.tls)
            self.tls_client = client_context(self.config.tls)
        wildcard = [la for la in self.locals if la.ip in ("0.0.0.0", "::")]
        self._wildcards = wildcard
        if wildcard:
            # Know "myself" before the first request can arrive: a wildcard listener opened
            # first would answer 403/482 to requests for our own addresses until this ran.
            # netlink query in a thread: pyroute2 must not share (or block) this loop
            ips = await loop.run_in_executor(None, local_ips)
            for la in wildcard:
                for ip in ips:
                    if _family(ip) == _family(la.ip):
                        self.core.add_local(ip, la.port)
        for la, lp in zip(self.locals, self.listen):
            try:
                await self._open_listener(la, lp)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
                # the address is not configured yet (DHCP, a VLAN coming up): bind when it is
                log.warning("worker=%d listener %s:%s:%d waits for its address", self.index,
                            lp.proto, lp.address, lp.port)
                self._spawn(self._open_when_available(la, lp))
        self.handoff = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.handoff.bind(handoff_address(self.run_id, self.index))
        self.handoff.setblocking(False)
        loop.add_reader(self.handoff.fileno(), self._on_handoff)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.control.bind(control_address(self.run_id, self.index))
        self.control.setblocking(False)
        loop.add_reader(self.control.fileno(), self._on_control)
        if self.own_signals:
            loop.add_signal_handler(signal.SIGUSR1, self.reload_script)
            loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
            loop.add_signal_handler(signal.SIGINT, self._stopping.set)
        self._spawn(self._heartbeat())
        self._spawn(self._sweep_connections())
        mark(f"listener-ready-{self.index}")

    def _use_byte_path(self) -> bool:
        """Whether stateless UDP requests may skip the message model (docs/architecture.md
        "The hot path"): only the route table decides (no script), no module hooks, screens
        or transactions read requests (transactions only come from a script's t_relay()),
        and "myself" needs no learning (no wildcard listener, `_learn_own_address`)."""
        return not self.script_path and not self.modules.names and not any(
            la.ip in ("0.0.0.0", "::") for la in self.locals)

    async def _open_listener(self, la: LocalAddress, lp) -> None:
        loop = asyncio.get_running_loop()
        fam = _family(lp.address)
        if lp.proto == "udp":
            sock = udp_socket(fam, lp.address, lp.port, self.config.core.udp_buffer_bytes)
            _, proto = await loop.create_datagram_endpoint(
                lambda i=la.index: UdpListener(self, i), sock=sock)
            self.udp[la.index] = proto
            self.udp_socks.append(sock)
        else:
            tls = {"ssl": self.tls_server,
                   "ssl_handshake_timeout": self.config.tls.handshake_timeout_s
                   } if lp.proto == "tls" else {}
            srv = await loop.create_server(
                lambda i=la.index, p=lp.proto: StreamConnection(self, i, p), lp.address,
                lp.port, family=fam, reuse_port=True, backlog=512, **tls)
            self.tcp_servers.append(srv)

    async def _open_when_available(self, la: LocalAddress, lp) -> None:
        """Retry binding a listener whose address does not exist yet, once a second."""
        while True:
            await asyncio.sleep(LISTENER_RETRY_S)
            try:
                await self._open_listener(la, lp)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    continue
                log.error("worker=%d listener %s:%s:%d cannot bind: %s", self.index,
                          lp.proto, lp.address, lp.port, exc)
                return
            log.info("worker=%d listener %s:%s:%d started: its address appeared", self.index,
                     lp.proto, lp.address, lp.port)
            return

    async def run(self) -> None:
        await self.start()
        await self._stopping.wait()
        await self.stop()

    def request_stop(self) -> None:
        """What SIGTERM does to a worker process: `run()` stops and returns."""
        self._stopping.set()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for srv in self.tcp_servers:
            srv.close()
        for conn in list(self.conns.values()):
            conn.close()
        for u in self.udp.values():
            if u.transport:
                u.transport.close()
        if self.handoff is not None:
            asyncio.get_running_loop().remove_reader(self.handoff.fileno())
            self.handoff.close()
        if self.control is not None:
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            self.control.close()
        self.tm.close()
        await self.modules.stop()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reload_script(self) -> None:
        if not self.script_path:
            return
        try:
            self.script = load_script(self.script_path, {"ksr": self.modules.ksr})
            log.info("worker=%d routing script reloaded path=%s", self.index, self.script_path)
        except ScriptError as exc:
            log.error("worker=%d routing script refused, keeping the old one: %s", self.index, exc)

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(HEARTBEAT_S)
            self.lag_ms = max(0.0, (loop.time() - t0 - HEARTBEAT_S) * 1000)
            self.check_backlog()  # also when traffic has stopped
            if self._absorb_acks and time.monotonic() - self._last_shed > SHED_ACK_S:
                self._absorb_acks = False
            if self.modules.security is not None:  # blocks by auth failures, ends of blocks
                self.modules.security.report_blocks(self.stats, self.index)
            self.write_stats()

    def write_stats(self) -> None:
        if self.stats_map is None:
            return
        snap = {"pid": os.getpid(), "ts": time.monotonic(), "lag_ms": round(self.lag_ms, 3),
                "connections": len(self.conns), "stats": dict(self.stats),
                "tm": self.tm.stats(),
                "script_mtime_ns": self.script.mtime_ns if self.script else None}
        data = json.dumps(snap, separators=(",", ":")).encode()
        if len(data) + 4 > STATS_SLOT_BYTES:
            data = json.dumps({k: v for k, v in snap.items() if k != "stats"}).encode()
        off = self.index * STATS_SLOT_BYTES
        self.stats_map[off:off + 4 + len(data)] = struct.pack("!I", len(data)) + data

    async def _sweep_connections(self) -> None:
        idle = self.config.proxy.tcp_idle_timeout_s
        read_timeout = self.config.core.tcp_read_timeout_s
        while True:
            await asyncio.sleep(min(5.0, idle / 2, read_timeout / 2))
            now = time.monotonic()
            for conn in list(self.conns.values()):
                if now - conn.last_activity > idle:
                    log.debug("closing idle connection peer=%s:%d", *conn.peer)
                    conn.close()
                elif conn.buf and conn.msg_started is not None \
                        and now - conn.msg_started > read_timeout:
                    self.stats["tcp_slow_closed"] += 1
                    log.info("closing connection peer=%s:%d: message incomplete after %.0fs",
                             *conn.peer, read_timeout)
                    conn.abort()

    # -- input -------------------------------------------------------------------------

    def on_datagram(self, data: bytes, addr: tuple, listener: int) -> None:
        if len(data) <= 4 and not data.strip():
            self.stats["keepalives"] += 1
            return  # CRLF keep-alive over UDP
        self._datagrams += 1
        if not self._datagrams % BACKLOG_CHECK_EVERY:
            self.check_backlog()
        if (self.overload.active or self._absorb_acks) and self._shed(data, addr, listener):
            return
        if len(data) > self.max_message:
            self.stats["drops"] += 1
            return
        # handle() inlined for UDP: the byte paths first (a spliced reply needs no Source)
        reply = data[:8] == b"SIP/2.0 "
        if reply and b"1" <= data[8:9] <= b"6" and self._reply_splice(data, listener, False):
            return
        src = self._udp_sources.get(addr)
        if src is None or src.listener != listener:
            src = self._udp_source(addr, listener)
        if not reply and self.byte_path and self.script is None \
                and self._forward_bytes(data, src):
            return
        self._handle_parsed(data, src, True, False, 0)

    def _udp_source(self, addr: tuple, listener: int) -> Source:
        """The Source of datagrams from `addr` on `listener`, kept for the next ones (it is
        never changed; a peer sends many): one lookup instead of a new object each."""
        sources = self._udp_sources
        if len(sources) >= UDP_SOURCE_CACHE_ENTRIES:  # addresses are peer input
            sources.pop(next(iter(sources)))
        src = sources[addr] = Source("udp", addr[0], addr[1], listener)
        return src

    # -- overload shedding (sip/overload.py) ------------------------------------------

    def check_backlog(self) -> None:
        """Read how much is queued unread on our UDP sockets; switch shedding on or off."""
        if self.overload.high_bytes <= 0 or not self.udp_socks:
            return
        backlog = 0
        try:
            for sock in self.udp_socks:
                backlog += struct.unpack_from(
                    "I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))[0]
        except OSError as exc:  # not Linux: no shedding
            log.warning("worker=%d overload shedding off: no SO_MEMINFO (%s)", self.index, exc)
            self.overload.high_bytes = 0
            return
        if self.overload.update(backlog):
            if self.overload.active:
                self.stats["overload_episodes"] += 1
                log.warning("worker=%d overloaded: %d bytes queued, new requests get 503",
                            self.index, backlog)
            else:
                log.info("worker=%d overload over: %d bytes queued", self.index, backlog)

    def _shed(self, data: bytes, addr: tuple, listener: int) -> bool:
        """Under overload, answer a new initial request 503 from its raw bytes; absorb the
        ACKs of those 503s. True when the datagram was dealt with here."""
        if self.overload.active and is_new_work(data):
            self.check_backlog()  # one syscall: back to normal as soon as the queue is short
            if not self.overload.active:
                return False
            reply = shed_reply(data, self.config.core.overload_retry_after_s,
                               self.run_id.encode(), self.config.core.server_header)
            if reply is None:
                return False  # the full path answers it
            self.stats["overload_503"] += 1
            self._absorb_acks = True
            self._last_shed = time.monotonic()
            udp = self.udp.get(listener)
            if udp is not None:
                udp.sendto(reply, addr)
            return True
        if data[:4] == b"ACK " and is_shed_ack(data):
            self.stats["overload_acks_absorbed"] += 1
            return True
        return False

    def on_stream_message(self, data: bytes, conn: StreamConnection) -> None:
        if conn.id in self.conns:
            self.conns.move_to_end(conn.id)
        src = Source(conn.proto, conn.peer[0], conn.peer[1], conn.listener, conn.id)
        self.handle(data, src, datagram=False)

    def on_stream_error(self, reason: str, data: bytes, conn: StreamConnection) -> None:
        src = Source(conn.proto, conn.peer[0], conn.peer[1], conn.listener, conn.id)
        self.stats["parse_errors"] += 1
        self._answer_malformed(data, src, RemoteProtocolError(
            reason, 513 if reason == "Message Too Large" else 400))

    def on_connection_made(self, conn: StreamConnection) -> None:
        """Bounded per source and in total ([core] tcp_max_connections*): past a limit the
        least recently active connection (of that source, or of all) is closed."""
        core = self.config.core
        conn.max_message = self.max_message
        conn.max_send_buffer = core.tcp_max_send_buffer_bytes
        if not conn.outbound:
            ip = conn.peer[0]
            if self.conns_per_ip[ip] >= core.tcp_max_connections_per_source:
                oldest = next((c for c in self.conns.values()
                               if c.peer[0] == ip and not c.outbound), None)
                if oldest is not None:
                    self._shed_connection(oldest, "per_source")
            self.conns_per_ip[ip] += 1
        while len(self.conns) >= core.tcp_max_connections:
            self._shed_connection(next(iter(self.conns.values())), "total")
        self.conns[conn.id] = conn
        self.conns_by_peer[(conn.proto, *conn.peer)] = conn

    def on_stream_overflow(self, conn: StreamConnection) -> None:
        self.stats["tcp_send_overflow"] += 1
        log.info("closing connection peer=%s:%d: it does not read (send buffer over %d bytes)",
                 *conn.peer, conn.max_send_buffer)

    def _shed_connection(self, conn: StreamConnection, limit: str) -> None:
        self.stats[f"tcp_limit_{limit}"] += 1
        log.info("closing connection peer=%s:%d: tcp connection limit (%s) reached",
                 *conn.peer, limit)
        self._forget_connection(conn)
        conn.abort()

    def _forget_connection(self, conn: StreamConnection) -> None:
        if self.conns.pop(conn.id, None) is not None and not conn.outbound:
            ip = conn.peer[0]
            self.conns_per_ip[ip] -= 1
            if self.conns_per_ip[ip] <= 0:
                del self.conns_per_ip[ip]

    def on_connection_lost(self, conn: StreamConnection) -> None:
        self._forget_connection(conn)
        key = (conn.proto, *conn.peer)
        if self.conns_by_peer.get(key) is conn:
            del self.conns_by_peer[key]

    def _on_handoff(self) -> None:
        assert self.handoff is not None
        for _ in range(64):
            try:
                payload = self.handoff.recv(1 << 20)
            except BlockingIOError:
                return
            hdr_len = struct.unpack_from("!H", payload)[0]
            proto, ip, port, listener, *rest = json.loads(payload[2:2 + hdr_len])
            self.stats["handoff_in"] += 1
            self.handle(payload[2 + hdr_len:], Source(proto, ip, port, listener), handed=True,
                        ring=rest[0] if rest else 0)

    def _on_control(self) -> None:
        """A request from the main process (sec.blocked, sec.unblock, ...): answer it."""
        assert self.control is not None
        for _ in range(16):
            try:
                payload, addr = self.control.recvfrom(1 << 16)
            except BlockingIOError:
                return
            reply = handle_control(self.modules.worker_rpc(), payload)
            if reply is None:
                continue  # a one-way request from another worker
            if not isinstance(reply, bytes):  # the method's work runs off the loop
                self._spawn(self._control_reply_later(reply, addr))
                continue
            self._control_reply(reply, addr)

    async def _control_reply_later(self, pending, addr) -> None:
        self._control_reply(await pending, addr)

    def _control_reply(self, reply: bytes, addr) -> None:
        if self.control is None:
            return
        try:
            self.control.sendto(reply, addr)
        except OSError as exc:
            log.info("worker=%d control reply failed: %s", self.index, exc)

    def _notify_worker(self, index: int, method: str, params: dict) -> None:
        """A one-way request to another worker's control socket (module state sync)."""
        if self.control is None:
            return
        try:
            self.control.sendto(notification(method, params),
                                control_address(self.run_id, index))
        except OSError as exc:  # not up yet / restarting: the next sync catches up
            log.debug("worker=%d notify worker=%d failed: %s", self.index, index, exc)

    def _script_function(self, name: str):
        """A function of the current routing script by name (module event routes)."""
        fn = self.script.module.__dict__.get(name) if self.script is not None else None
        return fn if callable(fn) else None

    def _module_send(self, proto: str, data: bytes, ip: str, port: int) -> None:
        out = self._pick_listener(proto, ip, None)
        self._send(proto, data, ip, port, out.index if out else 0)

    def _sent_by(self, proto: str) -> str:
        la = next((la for la in self.locals if la.proto == proto), self.locals[0])
        return la.sent_by()

    def _hand_off(self, worker: int, data: bytes, src: Source, ring: int = 0) -> None:
        fields = [src.proto, src.ip, src.port, src.listener] + ([ring] if ring else [])
        hdr = json.dumps(fields).encode()
        try:
            assert self.handoff is not None
            self.handoff.sendto(struct.pack("!H", len(hdr)) + hdr + data,
                                handoff_address(self.run_id, worker))
            self.stats["handoff_out"] += 1
        except OSError as exc:
            self.stats["drops"] += 1
            log.warning("hand-off to worker=%d failed: %s", worker, exc)

    def handle(self, data: bytes, src: Source, *, datagram: bool = True,
               handed: bool = False, ring: int = 0) -> None:
        """Per-message boundary: nothing a message does may stop the worker. `ring`: how
        many workers a CANCEL has already been offered to (`_offer_cancel`). A datagram
        as received takes the same way in `on_datagram`, without this call."""
        if len(data) > self.max_message:
            self.stats["drops"] += 1
            return
        if datagram:
            if data[:8] == b"SIP/2.0 ":
                if b"1" <= data[8:9] <= b"6" and self._reply_splice(data, src.listener, handed):
                    return
            elif not handed and self.byte_path and self.script is None \
                    and self._forward_bytes(data, src):
                return
        self._handle_parsed(data, src, datagram, handed, ring)

    def _reply_splice(self, data: bytes, listener: int, handed: bool) -> bool:
        """A UDP reply (its class byte checked) sent on as bytes, never parsed: True when
        it went (a transaction's, or a stateless one through `listener`'s family)."""
        modules = self.modules
        if modules.response_hooks or modules.response_holds or (
                self.script is not None and self.script.reply_route is not None):
            return False  # one stats key per class, never a byte
        # a 1xx/2xx of one of our client transactions (also one handed over by another
        # worker): spliced by the transaction layer, never parsed (sip/stateful.py)
        if data[8:9] <= b"2" and self.tm.proxy.client and self.tm.receive_response_data(data):
            self.stats[f"rcv_rpl_{chr(data[8])}xx"] += 1
            return True
        if handed:
            return False
        # a stateless reply: spliced by the proxy core
        try:
            route = self.core.splice_response(data)
        except RemoteProtocolError:
            return False  # the full path answers for it
        if route is None:
            return False
        rcv, fwd_key = _REPLY_KEYS[data[8]]
        stats = self.stats
        stats[rcv] += 1
        stats[fwd_key] += 1
        ip = route.ip
        index = self._reply_listener.get(":" in ip)  # by address family
        if index is None:
            out = self._pick_listener("udp", ip, None)
            index = self._reply_listener[":" in ip] = out.index if out else -1
        self._send_udp(route.data, ip, route.port, index if index >= 0 else listener)
        return True

    def _forward_bytes(self, data: bytes, src: Source) -> bool:
        """A stateless UDP request nothing else reads, edited as bytes (sip/proxy.py
        forward_datagram) and sent: True when it went; False when it is not the plain
        case: the full path decides."""
        try:
            fwd = self.core.forward_datagram(data, src, self.table.destination)
        except Exception:  # noqa: BLE001 - per-message boundary: the full path decides
            log.exception("byte path failed; taking the full path")
            return False
        if fwd is None:
            return False
        rcv, fwd_key = _REQUEST_KEYS.get(fwd[4], _OTHER_REQUEST_KEYS)
        stats = self.stats
        stats[rcv] += 1
        stats[fwd_key] += 1
        self._send_udp(fwd[0], fwd[1], fwd[2], fwd[3])
        return True

    def _handle_parsed(self, data: bytes, src: Source, datagram: bool, handed: bool,
                       ring: int) -> None:
        """`handle` past the byte paths: parse, then the request or response path."""
        try:
            msg = parse_message(data, datagram=datagram)
        except RemoteProtocolError as exc:
            self.stats["parse_errors"] += 1
            self._answer_malformed(data, src, exc)
            return
        try:
            if isinstance(msg, Request):
                if not ring:
                    self.stats["rcv_req_" + stat_method(msg.method)] += 1
                self.handle_request(msg, src, data, ring)
            else:
                self.stats[f"rcv_rpl_{msg.status // 100}xx"] += 1
                self.handle_response(msg, src, data, handed)
        except RemoteProtocolError as exc:
            self.stats["parse_errors"] += 1
            log.debug("bad message from %s:%d: %s", src.ip, src.port, exc.reason)
            if isinstance(msg, Request) and msg.method != "ACK":
                self._answer_malformed(data, src, exc, msg)
            else:
                self.stats["drops"] += 1
                log.debug("dropped bad message from %s:%d: %s", src.ip, src.port, exc.reason)
        except Exception:  # noqa: BLE001 - per-message boundary: log, answer 500, keep going
            self.stats["internal_errors"] += 1
            log.exception("internal error handling message call_id=%s", msg.call_id)
            if isinstance(msg, Request) and msg.method != "ACK":
                try:
                    if msg.has("via") and self.core.is_own_via(msg.via):
                        msg.pop_first("via")  # failed after we added ours: answer upstream
                    self.send_reply(self.core.make_reply(msg, 500, "Server Internal Error"), src)
                except Exception:  # noqa: BLE001 - the message itself may be unusable
                    log.debug("could not answer 500", exc_info=True)

    def _answer_malformed(self, data: bytes, src: Source, exc: RemoteProtocolError,
                          msg: Request | None = None) -> None:
        """Answer a bad request (400, or the error's status hint); never raises: the
        request may be broken in more ways than the one that brought us here."""
        try:
            self._reply_malformed(data, src, exc, msg)
        except RemoteProtocolError as again:
            self.stats["drops"] += 1
            log.info("bad request from %s:%d: %s (unanswerable: %s)", src.ip, src.port,
                     exc.reason, again.reason)

    def _reply_malformed(self, data: bytes, src: Source, exc: RemoteProtocolError,
                         msg: Request | None) -> None:
        req = msg if msg is not None else salvage_request(data)
        if req is not None and msg is None:
            try:
                self.core.stamp_via(req, src)
            except RemoteProtocolError:
                req = None
        if req is None:
            self.stats["drops"] += 1
            log.debug("dropped unanswerable message from %s:%d: %s", src.ip, src.port, exc.reason)
            return
        status = exc.status_hint if 400 <= exc.status_hint < 700 else 400
        log.info("bad request from %s:%d: %s", src.ip, src.port, exc.reason)
        resp = self.core.make_reply(req, status, exc.reason)
        try:
            resp.via  # noqa: B018 - must parse to be routable
        except RemoteProtocolError:
            # a Via list with empty elements (", ,"): answer to what is there
            for h in resp.headers:
                if h[0] == "via":
                    h[2] = ", ".join(v for v in (p.strip() for p in h[2].split(",")) if v)
            resp._invalidate("via")
            resp.via  # noqa: B018 - still unparsable: RemoteProtocolError, a drop
        if msg is not None:  # the error may have come before check_request stamped it
            self.core.stamp_via(resp, src)  # type: ignore[arg-type] - same header rules
        self.send_reply(resp, src)

    # -- requests ----------------------------------------------------------------------

    def handle_request(self, msg: Request, src: Source, data: bytes = b"",
                       ring: int = 0) -> None:
        # edge security before anything else: ACL, scanner User-Agents, blocked, flood
        sec = self.modules.security
        if sec is not None and not ring:  # a CANCEL passed round was screened where it came in
            decision = sec.screen(src.ip, self.listener_names[src.listener],
                                  msg.get("user-agent"))
            if not decision.accepted:
                self.stats[f"sec_{decision.reason}"] += 1
                sec.report_blocks(self.stats, self.index)
                spec = sec_reply_for(decision)  # 503 when flood_action = "503", else silence
                if spec is not None and msg.method != "ACK":
                    self.send_reply(self.core.make_reply(msg, *spec), src)
                return
        # transactions: retransmissions, hop-by-hop ACK, CANCEL of a relayed INVITE
        if self.tm.proxy.server and self.tm.match_request(msg, src):
            return
        if msg.method == "CANCEL" and data and self._offer_cancel(data, src, ring):
            return
        for hook in self.modules.request_hooks:  # uac: CSeq shift of authenticated dialogs
            hook(msg)
        if src.proto != "udp":
            # remember the connection in the Via so replies find it (like force_rport)
            v = msg.via
            if v.rport is None:
                msg.pop_first("via")
                msg.add_top("Via", str(v.with_param("rport", "")))
        self._learn_own_address(msg.uri)
        reply = self.core.check_request(msg, src)
        if reply is not None:
            if msg.method != "ACK":
                self.send_reply(reply, src)
            return
        if self.core.is_options_to_self(msg):
            self.send_reply(self.core.options_reply(msg), src)
            return
        ctx = RequestMsg(msg, src, self.core, self.listener_names[src.listener])
        script = self.script
        if script is None:
            self.table.request_route(ctx)
        elif script.is_async:
            self._spawn(self._run_async_route(script, ctx, msg, src))
            return
        else:
            try:
                script.request_route(ctx)
            except Exception as exc:  # noqa: BLE001 - a script bug must not stop the proxy
                self._script_failed(script, exc, msg, src)
                return
        self.execute(ctx, msg, src)

    async def _run_async_route(self, script: Script, ctx: RequestMsg, msg: Request,
                               src: Source) -> None:
        try:
            await script.request_route(ctx)
        except Exception as exc:  # noqa: BLE001 - a script bug must not stop the proxy
            self._script_failed(script, exc, msg, src)
            return
        try:
            self.execute(ctx, msg, src)
        except RemoteProtocolError as exc:
            self._answer_malformed(b"", src, exc, msg)

    def _script_failed(self, script: Script, exc: Exception, msg: Request, src: Source) -> None:
        from ..script.loader import error_location

        self.stats["script_errors"] += 1
        log.error("call_id=%s request_route failed at %s: %s: %s", msg.call_id,
                  error_location(exc, script.path), type(exc).__name__, exc)
        if msg.method != "ACK":
            self.send_reply(self.core.make_reply(msg, 500, "Server Internal Error"), src)

    def execute(self, ctx: RequestMsg, msg: Request, src: Source) -> None:
        action = next(iter(ctx.actions), None)
        if action is None or isinstance(action, Drop):
            self.stats["drops"] += 1
            return
        if len(ctx.actions) > 1:
            log.debug("call_id=%s only the first action (%s) is carried out", msg.call_id,
                      type(action).__name__)
        if isinstance(action, (Relay, TReply)):  # t_relay() / t_reply(): io/tm_driver.py
            self.tm.execute(action, ctx, msg, src)
        elif isinstance(action, Reply):
            if msg.method == "ACK":
                return
            self.send_reply(self.core.make_reply(msg, action.status, action.reason,
                                                 action.headers, action.body,
                                                 action.content_type), src)
        elif isinstance(action, Forward):
            if ctx._tm is not None:  # a registered Path (lookup) applies to forward() too
                for route in reversed(ctx._tm.main_path):
                    msg.add_top("Route", route)
            self.forward(msg, src, action)

    def forward(self, msg: Request, src: Source | None, action: Forward) -> None:
        hop = self.core.next_hop(msg, action.uri)
        # numeric hosts stay on the synchronous path; names go through RFC 3263 (io/dns.py)
        target = literal_target(hop.uri, hop.host)
        if target is not None:
            self._send_request(msg, src, target)
            return
        res = self.resolver.resolution(hop)
        found = self.resolver.next_target_nowait(res)
        if found is PENDING:
            self._spawn(self._forward_after_dns(msg, src, res))
            return
        self._send_or_503(msg, src, res, found)

    async def _forward_after_dns(self, msg: Request, src: Source | None,
                                 res: Resolution) -> None:
        self._send_or_503(msg, src, res, await self.resolver.next_target(res))

    def _send_or_503(self, msg: Request, src: Source | None, res: Resolution,
                     target: Target | None) -> None:
        if target is None:
            log.info("call_id=%s cannot resolve %s (queries=%d failed=%d)", msg.call_id,
                     res.host, res.queries, res.failures)
            if src is not None and msg.method != "ACK":
                self.send_reply(self.core.make_reply(msg, 503, "Next Hop Unresolvable"), src)
            return
        self._send_request(msg, src, target)

    def _send_request(self, msg: Request, src: Source | None, target: Target) -> None:
        proto = target.transport
        out = self._pick_listener(proto, target.ip, src, msg.send_socket)
        if out is None:
            log.warning("call_id=%s no %s listener for %s", msg.call_id, proto, target.ip)
            if src is not None and msg.method != "ACK":
                self.send_reply(self.core.make_reply(msg, 503, "No Listener For Transport"), src)
            return
        data = self.core.finalize_request(msg, src, out)
        self.stats["fwd_req_" + stat_method(msg.method)] += 1
        self._send(proto, data, target.ip, target.port, out.index, target.server_name)

    def _pick_listener(self, proto: str, ip: str, src: Source | None,
                       prefer: str | None = None) -> LocalAddress | None:
        """The listener to send from: `prefer` (a forced send socket) when it fits the
        transport and address family, else the one the request came in on, else the first
        that fits."""
        fam = _family(ip)
        if prefer is not None:
            for i, name in enumerate(self.listener_names):
                la = self.locals[i]
                if name == prefer and la.proto == proto and _family(la.ip) == fam:
                    return self._concrete(la, ip)
            log.info("send socket %s does not fit %s to %s: choosing another", prefer, proto, ip)
        if src is not None:
            la = self.locals[src.listener]
            if la.proto == proto and _family(la.ip) == fam:
                return self._concrete(la, ip)
        for la in self.locals:
            if la.proto == proto and _family(la.ip) == fam:
                return self._concrete(la, ip)
        return None

    def _learn_own_address(self, uri) -> None:
        """A wildcard listener receives on every address, also on one that appeared after the
        start (DHCP, a VLAN): when a request names an IP literal "myself" does not know yet,
        ask the kernel (only a local address can be bound) and learn it. Without this the
        first requests for a DHCP address got 403 (not myself) or 482 (relayed to ourselves).
        A foreign address is remembered for a second, so relaying to IP literals costs at
        most one bind per address and second."""
        if not self._wildcards or not uri.is_sip:
            return
        host = uri.host_bare
        if host in self.core._hosts or not host or not (host[0].isdigit() or ":" in host):
            return
        now = time.monotonic()
        if self._not_local.get(host, 0.0) > now:
            return
        if len(self._not_local) > 4096:
            self._not_local.clear()
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(fam, socket.SOCK_DGRAM) as probe:
                probe.bind((host, 0))
        except OSError:
            self._not_local[host] = now + 1.0
            return
        for la in self._wildcards:
            if _family(la.ip) == fam:
                self.core.add_local(host, la.port)
        log.info("worker=%d learned own address %s", self.index, host)

    def _concrete(self, la: LocalAddress, dest_ip: str) -> LocalAddress:
        """A wildcard listener without `advertise` speaks with the source address the kernel
        picks for the destination."""
        if la.host not in ("0.0.0.0", "::"):
            return la
        src_ip = self.src_ip_cache.get(dest_ip)
        if src_ip is None:
            with socket.socket(_family(dest_ip), socket.SOCK_DGRAM) as s:
                try:
                    s.connect((dest_ip, 9))
                    src_ip = s.getsockname()[0]
                except OSError:
                    src_ip = "127.0.0.1" if _family(dest_ip) == socket.AF_INET else "::1"
            if len(self.src_ip_cache) >= SRC_IP_CACHE_ENTRIES:  # R-URI hosts are peer input
                self.src_ip_cache.pop(next(iter(self.src_ip_cache)))
            self.src_ip_cache[dest_ip] = src_ip
            self.core.add_local(src_ip, la.adv_port)
        return LocalAddress(la.index, la.proto, la.ip, la.port, src_ip, la.adv_port)

    def _offer_cancel(self, data: bytes, src: Source, ring: int) -> bool:
        """A CANCEL whose INVITE transaction is not in this worker. The kernel spreads
        datagrams over the workers by source address and port, so a UA that sends its CANCEL
        from another port than its INVITE reaches another worker: the CANCEL goes round the
        other workers once (each tries to match it). If none has the transaction it comes
        back to the worker that received it, which routes it like any unmatched CANCEL
        (script; stateless forwarding): for a CANCEL from the INVITE's own socket that is the
        worker that forwarded the INVITE, so a stateless CANCEL gets the INVITE's branch
        (16.11; the branch names the worker). UDP only: a stream's CANCEL comes on the
        INVITE's connection, which one worker owns."""
        if self.nworkers < 2 or src.proto != "udp" or ring >= self.nworkers:
            return False
        self._hand_off((self.index + 1) % self.nworkers, data, src, ring + 1)
        return True

    # -- responses ---------------------------------------------------------------------

    def handle_response(self, msg: Response, src: Source, data: bytes, handed: bool) -> None:
        if not handed and self.nworkers > 1:
            owner = self.core.worker_of_branch(msg.via.branch)
            if owner is not None and owner != self.index and 0 <= owner < self.nworkers:
                vias = msg.get_all("via")
                # a transaction's reply must reach the worker that owns the transaction
                if len(vias) > 1 and not vias[1].upper().startswith("SIP/2.0/UDP") \
                        or is_stateful_branch(msg.via.branch):
                    self._hand_off(owner, data, src)
                    return
        for hook in self.modules.response_hooks:  # uac: our own requests, CSeq shift
            if hook(msg):
                return
        for hold in self.modules.response_holds:  # ims_pcscf: a 401 waits for its SAs
            if hold(msg, src):
                return  # the module calls resume_response() later
        self.resume_response(msg, src)

    def resume_response(self, msg: Response, src: Source) -> None:
        """The part of handle_response after the module hooks (a held reply goes on here)."""
        if self.tm.proxy.client and self.tm.receive_response(msg):
            return  # a reply of a client transaction (io/tm_driver.py)
        script = self.script
        if script is not None and script.reply_route is not None:
            ctx = ReplyMsg(msg, src)
            try:
                script.reply_route(ctx)
            except Exception as exc:  # noqa: BLE001 - a script bug must not stop the proxy
                from ..script.loader import error_location

                self.stats["script_errors"] += 1
                log.error("call_id=%s reply_route failed at %s: %s", msg.call_id,
                          error_location(exc, script.path), exc)
            if any(isinstance(a, Drop) for a in ctx.actions):
                self.stats["drops"] += 1
                return
        route = self.core.route_response(msg)
        if route is None:
            self.stats["drops"] += 1
            return
        self.stats[f"fwd_rpl_{msg.status // 100}xx"] += 1
        proto = route.transport if route.transport in ("tcp", "tls") else "udp"
        listener = self._pick_listener(proto, route.ip, None)
        self._send(proto, route.data, route.ip, route.port,
                   listener.index if listener else src.listener)

    def send_reply(self, resp: Response, src: Source) -> None:
        """Send a reply we generated (RFC 3261 18.2.2): same connection for streams,
        otherwise to the top Via's received/rport."""
        self.stats[f"snd_rpl_{resp.status // 100}xx"] += 1
        data = resp.to_bytes()
        if src.conn_id is not None:
            conn = self.conns.get(src.conn_id)
            if conn is not None and not conn.closed:
                conn.send(data)
                return
        ip, port = resp.via.response_target()
        self._send(src.proto, data, ip, port, src.listener)

    # -- output ------------------------------------------------------------------------

    def _send(self, proto: str, data: bytes, ip: str, port: int, listener: int,
              server_name: str | None = None,
              on_error: Callable[[], None] | None = None) -> None:
        """Send, logging failures; `on_error` (if given) is also called soon after a failure,
        including a TCP/TLS connect that fails later."""
        try:
            if proto == "udp":
                (self.udp.get(listener) or self._udp_for(ip)).sendto(data, (ip, port))
            else:
                self._stream_send(data, ip, port, listener, proto, server_name, on_error)
        except (OSError, TransportError) as exc:
            self._send_failed(proto, ip, port, exc, on_error)

    def _send_udp(self, data: bytes, ip: str, port: int, listener: int) -> None:
        """`_send` over UDP, for the byte paths (a call with fewer arguments)."""
        try:
            (self.udp.get(listener) or self._udp_for(ip)).sendto(data, (ip, port))
        except (OSError, TransportError) as exc:
            self._send_failed("udp", ip, port, exc, None)

    def _udp_for(self, ip: str) -> UdpListener:
        """Some UDP listener of `ip`'s address family (the one asked for is not open)."""
        udp = next((u for i, u in self.udp.items() if _family(self.locals[i].ip) == _family(ip)),
                   None)
        if udp is None:
            raise TransportError(f"no UDP listener for {ip}")
        return udp

    def _send_failed(self, proto: str, ip: str, port: int, exc: Exception,
                     on_error: Callable[[], None] | None) -> None:
        self.stats["send_errors"] += 1
        log.info("send to %s:%s:%d failed: %s", proto, ip, port, exc)
        if on_error is not None:
            asyncio.get_running_loop().call_soon(on_error)

    def _stream_send(self, data: bytes, ip: str, port: int, listener: int, proto: str = "tcp",
                     server_name: str | None = None,
                     on_error: Callable[[], None] | None = None) -> None:
        """Reuse the connection to (proto, ip, port), else open one. An outbound TLS
        connection is reused only for the name its certificate was checked against."""
        key = (proto, ip, port)
        conn = self.conns_by_peer.get(key)
        if conn is not None and not conn.closed and (
                server_name is None or conn.server_name in (None, server_name)):
            conn.send(data, on_error)
            return
        if proto == "tls" and self.tls_client is None:
            raise TransportError("no tls listener, so no TLS configuration")
        conn = StreamConnection(self, listener, proto)
        conn.outbound = True
        conn.peer = (ip, port)
        conn.server_name = (server_name or ip) if proto == "tls" else None
        conn.send(data, on_error)  # queued until connected
        self.conns_by_peer[key] = conn
        self._spawn(self._connect(conn, ip, port))

    async def _connect(self, conn: StreamConnection, ip: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        key = (conn.proto, ip, port)
        tls = {"ssl": self.tls_client, "server_hostname": conn.server_name,
               "ssl_handshake_timeout": self.config.tls.handshake_timeout_s
               } if conn.proto == "tls" else {}
        try:
            la = self.locals[conn.listener] if 0 <= conn.listener < len(self.locals) else None
            if la is not None and la.port in self.bind_source_ports and conn.proto == "tcp":
                sock = socket.socket(_family(ip), socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.setblocking(False)
                sock.bind((la.ip, la.port))
                await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), 10)
                await loop.create_connection(lambda: conn, sock=sock)
            else:
                await asyncio.wait_for(loop.create_connection(lambda: conn, ip, port, **tls),
                                       10)
        except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.stats["send_errors"] += 1
            log.info("connect to %s:%s:%d failed: %s", conn.proto, ip, port, exc)
            if self.conns_by_peer.get(key) is conn:
                del self.conns_by_peer[key]
            conn.connect_failed()


def _run_loop(coro):
    try:
        import uvloop  # a dependency; the fallback is for platforms without it

        factory = uvloop.new_event_loop
        log.info("event loop: uvloop %s", getattr(uvloop, "__version__", "?"))
    except ImportError:
        factory = None
        log.warning("event loop: asyncio's default (uvloop is not importable; "
                    "each message costs ~1.6x the CPU)")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the main process dies (even by SIGKILL), so a worker
    never outlives it holding the SIP ports."""
    term_with_parent()
    if os.getppid() == 1:
        sys.exit(0)  # the parent is already gone


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process (started by the main process, not by users)."""
    ap = argparse.ArgumentParser(prog="sipedge-worker")
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--stats-fd", type=int)
    ap.add_argument("--source", default="<config>")
    ap.add_argument("--instance", help="[instances.NAME] of the config (docs/instances.md)")
    args = ap.parse_args(argv)
    _die_with_parent()
    # stdin: the config text, then NUL and a JSON object of secrets (never in argv or logs)
    text, _, extra = sys.stdin.read().partition("\0")
    secrets = json.loads(extra) if extra.strip() else {}
    config = load_text(text, args.source)
    if args.instance:
        config = config.instances[args.instance]
    from ..app import setup_logging

    setup_logging(config.core.log_level)
    stats = None
    if args.stats_fd is not None:
        stats = mmap.mmap(args.stats_fd, STATS_SLOT_BYTES * args.workers)
    worker = Worker(args.index, args.workers, config, args.run_id, stats, secrets)
    profile_dir = os.environ.get("SIPEDGE_PROFILE_DIR")  # developer aid: cProfile per worker
    profiler = None
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        _run_loop(worker.run())
    except (ScriptError, TransportError, StoreError, ConfigError) as exc:
        log.error("worker=%d cannot start: %s", args.index, exc)
        sys.exit(2)
    except OSError as exc:
        log.error("worker=%d cannot bind: %s", args.index, exc)
        sys.exit(3)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile_dir}/worker{args.index}.prof")


def run_forked_worker(index: int, workers: int, config: Config, run_id: str, stats_fd: int,
                      secrets: dict) -> int:
    """A worker in a child forked by the main process (sipedge.app.Proxy.spawn), which has
    imported all of this already. Returns the exit status (as main() would exit)."""
    # The parent's event loop owns the signal wake-up fd and handlers: this process gets
    # its own loop, so start from the defaults.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    _die_with_parent()
    stats = mmap.mmap(stats_fd, STATS_SLOT_BYTES * workers)
    worker = Worker(index, workers, config, run_id, stats, secrets)
    try:
        _run_loop(worker.run())
    except (ScriptError, TransportError, StoreError, ConfigError) as exc:
        log.error("worker=%d cannot start: %s", index, exc)
        return 2
    except OSError as exc:
        log.error("worker=%d cannot bind: %s", index, exc)
        return 3
    return 0


if __name__ == "__main__":
    main()
