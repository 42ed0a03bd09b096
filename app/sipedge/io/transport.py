"""asyncio protocols for SIP over UDP and TCP. They frame bytes and hand messages to a sink;
all SIP logic lives in the worker and the sans-IO core."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Protocol

from ..sip.message import content_length_of_head, find_head_end

MAX_STREAM_BUFFER = 1 << 20
MAX_SEND_BUFFER = 1 << 20
_conn_ids = itertools.count(1)


class Sink(Protocol):
    def on_datagram(self, data: bytes, addr: tuple, listener: int) -> None: ...
    def on_stream_message(self, data: bytes, conn: "StreamConnection") -> None: ...
    def on_stream_error(self, reason: str, data: bytes, conn: "StreamConnection") -> None: ...
    def on_connection_made(self, conn: "StreamConnection") -> None: ...
    def on_connection_lost(self, conn: "StreamConnection") -> None: ...
    def on_stream_overflow(self, conn: "StreamConnection") -> None: ...


class UdpListener(asyncio.DatagramProtocol):
    def __init__(self, sink: Sink, listener: int) -> None:
        self.sink = sink
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.sink.on_datagram(data, addr, self.listener)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.
        pass

    def sendto(self, data: bytes, addr: tuple) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)


class StreamConnection(asyncio.Protocol):
    """One TCP connection. Frames messages by Content-Length (RFC 3261 18.3) and answers
    RFC 5626 CRLFCRLF keep-alives with CRLF."""

    def __init__(self, sink: Sink, listener: int, proto: str = "tcp") -> None:
        self.sink = sink
        self.listener = listener
        self.proto = proto
        self.id = next(_conn_ids)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.buf = bytearray()
        self.last_activity = time.monotonic()
        self.pending: list[bytes] = []
        self.on_connect_failed: list[Callable[[], None]] = []  # senders of `pending`
        self.connected = asyncio.get_event_loop().create_future()
        self.closed = False
        self.server_name: str | None = None  # outbound TLS: the name the server proved
        self.outbound = False  # we opened it (not counted against its peer's source limit)
        self.msg_started: float | None = None  # first byte of an incomplete message
        self.max_message = MAX_STREAM_BUFFER  # the worker sets [core] max_message_bytes
        self.max_send_buffer = MAX_SEND_BUFFER

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        for data in self.pending:
            self.transport.write(data)
        self.pending.clear()
        self.on_connect_failed.clear()
        if not self.connected.done():
            self.connected.set_result(True)
        self.sink.on_connection_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_result(False)
        self.sink.on_connection_lost(self)

    def send(self, data: bytes, on_error: Callable[[], None] | None = None) -> None:
        """Write `data`, or queue it until connected. `on_error` is called (soon, never from
        inside this call) if the data cannot go out: connection closing, connect failed."""
        self.last_activity = time.monotonic()
        if self.transport is None and not self.closed:
            self.pending.append(data)
            if on_error is not None:
                self.on_connect_failed.append(on_error)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if self.transport.get_write_buffer_size() > self.max_send_buffer:
                # a peer that never reads must not hold our memory
                self.sink.on_stream_overflow(self)
                self.transport.abort()
        elif on_error is not None:
            asyncio.get_running_loop().call_soon(on_error)

    def connect_failed(self) -> None:
        """The outbound connection never came up: what was queued is lost; tell its senders."""
        self.closed = True
        self.pending.clear()
        loop = asyncio.get_running_loop()
        for cb in self.on_connect_failed:
            loop.call_soon(cb)
        self.on_connect_failed.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is queued (a peer we give up on)."""
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        now = self.last_activity = time.monotonic()
        if not self.buf:
            self.msg_started = now
        self.buf += data
        while self.buf and not self.closed:
            # keep-alives and stray CRLFs between messages (RFC 5626 3.5.1)
            if self.buf[:1] in (b"\r", b"\n"):
                if self.buf.startswith(b"\r\n\r\n"):
                    del self.buf[:4]
                    self.send(b"\r\n")
                    continue
                if self.buf in (b"\r", b"\r\n", b"\r\n\r"):
                    return  # wait: may become a CRLFCRLF ping
                del self.buf[:2 if self.buf.startswith(b"\r\n") else 1]
                continue
            head_end, body_start = find_head_end(self.buf)
            if head_end < 0:
                if len(self.buf) > min(65536, self.max_message):
                    self._fail("Message Too Large")
                return
            clen = content_length_of_head(bytes(self.buf[:head_end]))
            if clen is None or clen < 0:
                self._fail("Missing Content-Length" if clen is None else "Bad Content-Length")
                return
            total = body_start + clen
            if total > self.max_message:  # refused at once, not after buffering it
                self._fail("Message Too Large")
                return
            if len(self.buf) < total:
                return
            msg = bytes(self.buf[:total])
            del self.buf[:total]
            self.msg_started = now if self.buf else None
            self.sink.on_stream_message(msg, self)

    def _fail(self, reason: str) -> None:
        """Framing is lost: answer if possible, then close the connection."""
        data = bytes(self.buf)
        self.buf.clear()
        self.sink.on_stream_error(reason, data, self)
        self.closed = True
        if self.transport is not None:
            self.transport.close()
