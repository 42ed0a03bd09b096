"""Diameter requests from routing scripts of workers other than worker 0.

Worker 0 runs the node; it serves `NodeEndpoint` on an abstract UNIX datagram socket named
after the sipedge instance. Another worker's `RemoteService.request()` sends it the request
(application, command, encoded AVPs, destination, timeout) and waits for the answer bytes or
the error code. One datagram each way; JSON with base64 AVP bytes; bounded in size and time.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import socket

from ...diameter.codec import DiameterDecodeError, Message, decode, decode_avps
from .core import DiameterError

log = logging.getLogger("sipedge.modules.diameter")

MAX_DATAGRAM = 200_000


def node_address(run_id: str) -> bytes:
    return f"\0sipedge-{run_id}-diameter".encode()


def worker_address(run_id: str, index: int) -> bytes:
    return f"\0sipedge-{run_id}-diameter-w{index}".encode()


class NodeEndpoint:
    """Worker 0: requests from the other workers, answered through the node. A plain
    non-blocking socket with `add_reader` (uvloop's datagram transports and abstract UNIX
    addresses do not mix)."""

    def __init__(self, service, sock: socket.socket) -> None:
        self.service = service
        self.sock = sock
        self.tasks: set[asyncio.Task] = set()

    def readable(self) -> None:
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("diameter forward: receive failed: %s", exc)
                return
            self.datagram_received(data, addr)

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            req = json.loads(data)
            rid = req["id"]
            avps = decode_avps(base64.b64decode(req["avps"]))
            args = (int(req["app"]), int(req["cmd"]), avps)
            kw = {"dest_realm": str(req["dest_realm"]), "dest_host": req.get("dest_host"),
                  "timeout": float(req["timeout"])}
        except (ValueError, KeyError, TypeError, DiameterDecodeError) as exc:
            log.warning("diameter forward: bad request from %r: %s", addr, exc)
            return
        t = asyncio.ensure_future(self._serve(rid, args, kw, addr))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _serve(self, rid, args, kw, addr) -> None:
        try:
            msg = await self.service.request(*args, **kw)
            reply = {"id": rid, "answer": base64.b64encode(msg.encode()).decode()}
        except DiameterError as exc:
            reply = {"id": rid, "error": exc.result_code, "reason": exc.reason}
        data = json.dumps(reply).encode()
        if len(data) > MAX_DATAGRAM:
            data = json.dumps({"id": rid, "error": 5012, "reason": "answer too large to "
                               "hand to another worker"}).encode()
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            log.info("diameter forward: worker at %r gone: %s", addr, exc)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


async def serve_node(service, run_id: str) -> NodeEndpoint:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(node_address(run_id))
    sock.setblocking(False)
    ep = NodeEndpoint(service, sock)
    asyncio.get_running_loop().add_reader(sock.fileno(), ep.readable)
    return ep


class RemoteService:
    """What `DiameterApi` needs (`request`) in a worker without the node."""

    def __init__(self, run_id: str, index: int) -> None:
        self.run_id, self.index = run_id, index
        self._ids = itertools.count(1)
        self._futures: dict[int, asyncio.Future] = {}
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(worker_address(self.run_id, self.index))
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(64):
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                reply = json.loads(data)
                fut = self._futures.pop(reply["id"], None)
            except (ValueError, KeyError, TypeError):
                continue
            if fut is not None and not fut.done():
                fut.set_result(reply)

    async def stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    async def request(self, app: int, code: int, avps: list, *, dest_realm: str,
                      dest_host: str | None = None, timeout: float = 5.0) -> Message:
        if self._sock is None:
            raise DiameterError(3002, "diameter forwarding is not running")
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._futures[rid] = fut
        body = base64.b64encode(b"".join(a.encode() for a in avps)).decode()
        data = json.dumps({"id": rid, "app": app, "cmd": code, "avps": body,
                           "dest_realm": dest_realm, "dest_host": dest_host,
                           "timeout": timeout}).encode()
        try:
            self._sock.sendto(data, node_address(self.run_id))
            reply = await asyncio.wait_for(fut, timeout + 1.0)
        except OSError as exc:
            raise DiameterError(3002, f"diameter node (worker 0) unreachable: {exc}") from None
        except TimeoutError:
            raise DiameterError(3002, "no reply from the diameter node (worker 0)") from None
        finally:
            self._futures.pop(rid, None)
        if "error" in reply:
            raise DiameterError(int(reply["error"]), str(reply.get("reason", "")))
        return decode(base64.b64decode(reply["answer"]))
