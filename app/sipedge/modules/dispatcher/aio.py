"""asyncio driver of dispatcher probing: its own UDP socket, one timer re-armed from
`Dispatcher.get_timer()` (the aioquic pattern). All decisions stay in the core.

    prober = Prober(dispatcher, local_ip="127.0.0.1")
    await prober.start()
    ...
    prober.poke()      # after reload()/set_state(): re-arm the timer
    await prober.close()

Destinations must have a numeric host unless `resolve` is given: an async callable
`resolve(Destination) -> (ip, port) | None` (the composition root passes one built on
`sipedge.io.dns`). A destination that cannot be resolved fails its probe.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from typing import Awaitable, Callable

from .core import Dispatcher, SendProbe
from .probe import build_probe, parse_probe_reply
from .table import Destination

log = logging.getLogger("sipedge.dispatcher")

Resolve = Callable[[Destination], Awaitable["tuple[str, int] | None"]]


def numeric_target(dest: Destination) -> tuple[str, int] | None:
    host = dest.uri.host_bare
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    default = 5061 if dest.uri.scheme == "sips" else 5060
    return host, dest.uri.port or default


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, prober: "Prober") -> None:
        self.prober = prober

    def datagram_received(self, data: bytes, addr) -> None:
        self.prober._on_datagram(data)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.
        log.debug("probe socket error: %s", exc)


class Prober:
    """Sends the probes the core asks for and feeds replies back. `clock` is monotonic."""

    def __init__(self, dispatcher: Dispatcher, *, local_ip: str = "127.0.0.1",
                 local_port: int = 0, method: str = "OPTIONS",
                 from_uri: str = "sip:dispatcher@localhost", resolve: Resolve | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_event: Callable[[object], None] | None = None) -> None:
        self.dispatcher = dispatcher
        self.local_ip = local_ip
        self.local_port = local_port
        self.method = method
        self.from_uri = from_uri
        self.resolve = resolve
        self.clock = clock
        self.on_event = on_event
        self.instance = format(os.getpid() % 46656, "x") + format(id(self) % 4096, "x")
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sent: dict[int, tuple[Destination, float]] = {}  # token -> (dest, sent at)
        self._tasks: set[asyncio.Task] = set()
        self.sent = 0
        self.received = 0

    @property
    def address(self) -> tuple[str, int]:
        assert self._transport is not None
        return self._transport.get_extra_info("sockname")[:2]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.local_ip else socket.AF_INET
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.local_ip, self.local_port), family=family)
        self.poke()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def poke(self) -> None:
        """Run due work now and re-arm the single timer from the core's deadline."""
        if self._transport is None:
            return
        now = self.clock()
        for action in self.dispatcher.handle_timer(now):
            self._send(action)
        self._drain_events()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.dispatcher.get_timer()
        if when is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(0.0, when - self.clock()), self.poke)

    def _drain_events(self) -> None:
        for ev in self.dispatcher.events():
            log.info("destination state changed set=%s uri=%s %s->%s reason=%s", ev.set_id,
                     ev.uri, ev.old.value, ev.new.value, ev.reason)
            if self.on_event is not None:
                self.on_event(ev)

    def _send(self, action: SendProbe) -> None:
        target = numeric_target(action.dest)
        if target is None and self.resolve is not None:
            task = asyncio.get_running_loop().create_task(self._resolve_and_send(action))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if target is None:
            self.dispatcher.probe_result(action.dest, False, None, self.clock(), action.token)
            return
        self._send_to(action, target)

    async def _resolve_and_send(self, action: SendProbe) -> None:
        assert self.resolve is not None
        target = await self.resolve(action.dest)
        if target is None:
            self.dispatcher.probe_result(action.dest, False, None, self.clock(), action.token)
            self._drain_events()
        elif self._transport is not None:
            self._send_to(action, target)

    def _send_to(self, action: SendProbe, target: tuple[str, int]) -> None:
        ip, port = self.address
        data = build_probe(action.dest, ip, port, action.token, instance=self.instance,
                           method=self.method, from_uri=self.from_uri)
        self._sent[action.token] = (action.dest, self.clock())
        if len(self._sent) > 4096:  # answers that never came: forget the oldest
            for token in sorted(self._sent)[:1024]:
                del self._sent[token]
        assert self._transport is not None
        self._transport.sendto(data, target)
        self.sent += 1

    def _on_datagram(self, data: bytes) -> None:
        reply = parse_probe_reply(data, self.instance)
        if reply is None or reply.status < 200:
            return
        sent = self._sent.pop(reply.token, None)
        if sent is None:
            return
        dest, at = sent
        self.received += 1
        now = self.clock()
        ok = self.dispatcher.is_probe_ok(reply.status)
        self.dispatcher.probe_result(dest, ok, now - at, now, reply.token, reply.status)
        self._drain_events()
