"""asyncio adapter of the Diameter node: TCP (and SCTP where the kernel has it) listeners and
connections, one timer re-armed from `Node.get_timer()`, and futures for our own requests.

All protocol logic is in `core.Node` and `sipedge.diameter`; this file only moves bytes and
time. `now` is the loop's monotonic clock. Any exception out of the node while handling one
connection's input is logged and closes that connection: the process keeps serving.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from typing import Any

from ...diameter.codec import Message
from ...diameter.peer import Close, PeerStateChanged, PeerUnusable, PeerUsable, Send
from .core import AnswerDropped, ConnectTo, DiameterError, LocalAnswer, Node

log = logging.getLogger("sipedge.modules.diameter")

IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)


class _Proto(asyncio.Protocol):
    def __init__(self, svc: DiameterService, peer: str | None) -> None:
        self.svc = svc
        self.peer = peer
        self.conn = next(svc._ids)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.type == socket.SOCK_STREAM:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        local = transport.get_extra_info("sockname")
        remote = transport.get_extra_info("peername")
        self.svc._transports[self.conn] = transport  # type: ignore[assignment]
        log.debug("conn=%d %s connection %s -> %s", self.conn,
                  "outgoing" if self.peer else "incoming", local, remote)
        self.svc._call(self.conn, self.svc.node.connection_made, self.conn, self.peer,
                       self.svc.now(), local[0] if local else None)

    def data_received(self, data: bytes) -> None:
        self.svc._call(self.conn, self.svc.node.data_received, self.conn, data, self.svc.now())

    def connection_lost(self, exc: Exception | None) -> None:
        self.svc._transports.pop(self.conn, None)
        self.svc._call(None, self.svc.node.connection_lost, self.conn, self.svc.now(),
                       f"connection lost: {exc}" if exc else "connection closed by peer")


class DiameterService:
    """Runs a `Node` on the event loop."""

    def __init__(self, node: Node, listen: list[tuple[str, int, str]] | None = None) -> None:
        self.node = node
        self.listen = listen or []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._transports: dict[int, asyncio.Transport] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._futures: dict[int, asyncio.Future] = {}
        self._connecting: set[asyncio.Task] = set()
        self.bound: list[tuple[str, int]] = []
        self._closing = False

    def now(self) -> float:
        assert self.loop is not None
        return self.loop.time()

    # ------------------------------------------------------------------ lifecycle

    async def add_listener(self, sock: socket.socket) -> None:
        """Serve on an already bound and listening socket (socket activation, tests)."""
        assert self.loop is not None
        srv = await self.loop.create_server(lambda: _Proto(self, None), sock=sock)
        self._servers.append(srv)
        self.bound.append(sock.getsockname()[:2])

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        for address, port, transport in self.listen:
            if transport == "sctp":
                sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                                     socket.SOCK_STREAM, IPPROTO_SCTP)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                srv = await self.loop.create_server(lambda: _Proto(self, None), sock=sock)
            else:
                srv = await self.loop.create_server(lambda: _Proto(self, None), address, port,
                                                    reuse_address=True)
            self._servers.append(srv)
            for s in srv.sockets:
                self.bound.append(s.getsockname()[:2])
            log.info("diameter listening on %s %s:%d", transport, address,
                     srv.sockets[0].getsockname()[1])
        self.node.start(self.now())
        self.pump()

    async def stop(self, timeout: float = 5.0) -> None:
        """DPR to every open peer, wait (bounded) for the DPAs, then close everything."""
        self._closing = True
        for s in self._servers:
            s.close()
        self.node.stop(self.now())
        self.pump()
        deadline = self.now() + timeout
        while not self.node.all_closed() and self.now() < deadline:
            await asyncio.sleep(0.05)
        for t in list(self._connecting):
            t.cancel()
        for tr in list(self._transports.values()):
            tr.close()
        if self._timer is not None:
            self._timer.cancel()
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(DiameterError(3002, "diameter stopped"))
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ driving the node

    def _call(self, conn: int | None, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("diameter: internal error on conn=%s; closing it", conn)
            if conn is not None:
                tr = self._transports.pop(conn, None)
                if tr is not None:
                    tr.abort()
                try:
                    self.node.connection_lost(conn, self.now(), "internal error")
                except Exception:
                    log.exception("diameter: cleanup after the error failed")
        self.pump()

    def pump(self) -> None:
        node = self.node
        for _ in range(100):
            acts = node.actions()
            evs = node.events()
            if not acts and not evs:
                break
            for a in acts:
                if isinstance(a, Send):
                    tr = self._transports.get(a.conn)
                    if tr is not None and not tr.is_closing():
                        tr.write(a.data)
                elif isinstance(a, Close):
                    tr = self._transports.pop(a.conn, None)
                    if tr is not None:
                        log.debug("conn=%d close: %s", a.conn, a.reason)
                        tr.close()  # writes what is queued (a DPA, a CEA 5010) first
                elif isinstance(a, ConnectTo) and not self._closing:
                    t = asyncio.ensure_future(self._connect(a))
                    self._connecting.add(t)
                    t.add_done_callback(self._connecting.discard)
            for ev in evs:
                self._event(ev)
        self._arm()

    def _event(self, ev: Any) -> None:
        if isinstance(ev, LocalAnswer):
            fut = self._futures.pop(ev.token, None)
            if fut is not None and not fut.done():
                if ev.message is None:
                    fut.set_exception(DiameterError(ev.result_code or 3002,
                                                    ev.reason or "no answer"))
                else:
                    fut.set_result(ev.message)
        elif isinstance(ev, PeerStateChanged):
            log.info("peer=%s state %s -> %s", ev.peer, ev.old.value, ev.new.value)
        elif isinstance(ev, PeerUsable):
            log.info("peer=%s usable", ev.peer)
        elif isinstance(ev, PeerUnusable):
            log.warning("peer=%s unusable: %s", ev.peer, ev.reason)
        elif isinstance(ev, AnswerDropped):
            log.warning("peer=%s answer dropped (command %d): %s", ev.peer, ev.command,
                        ev.reason)

    def _arm(self) -> None:
        t = self.node.get_timer()
        if t == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = t
        if t is not None and self.loop is not None:
            self._timer = self.loop.call_at(t, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._call(None, self.node.handle_timer, self.now())

    async def _connect(self, a: ConnectTo) -> None:
        assert self.loop is not None
        timeout = self.node.peers[a.peer.lower()].settings.cea_timeout_s
        try:
            if a.transport == "sctp":
                fam = socket.AF_INET6 if ":" in a.address else socket.AF_INET
                sock = socket.socket(fam, socket.SOCK_STREAM, IPPROTO_SCTP)
                sock.setblocking(False)
                await asyncio.wait_for(self.loop.sock_connect(sock, (a.address, a.port)),
                                       timeout)
                await self.loop.create_connection(lambda: _Proto(self, a.peer), sock=sock)
            else:
                await asyncio.wait_for(self.loop.create_connection(
                    lambda: _Proto(self, a.peer), a.address, a.port), timeout)
        except (TimeoutError, OSError) as exc:
            log.info("peer=%s connect to %s:%d failed: %s", a.peer, a.address, a.port,
                     exc or "timeout")
            self._call(None, self.node.connect_failed, a.peer, self.now(), str(exc))

    # ------------------------------------------------------------------ our requests

    async def request(self, app: int, code: int, avps: list, *, dest_realm: str,
                      dest_host: str | None = None, timeout: float = 5.0) -> Message:
        """Send a request and wait for its answer. Raises DiameterError (3002 no route or
        no answer in time, 3004 too busy)."""
        assert self.loop is not None
        fut = self.loop.create_future()
        token = self.node.send_request(app, code, avps, self.now(), dest_realm=dest_realm,
                                       dest_host=dest_host, timeout_s=timeout)
        self._futures[token] = fut
        self.pump()
        return await fut
