"""Health probes of the proxy: the `core.health` heartbeat over RPC and a SIP OPTIONS ping.

Both are async and bounded by a timeout, and never raise: a failure is a
`HealthReport(ok=False, detail=...)` the policy counts.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from typing import Any

from .ports import HealthReport

MAX_REPLY_BYTES = 1 << 20


class RpcCallError(Exception):
    """The RPC peer answered with an error object or garbage."""


async def rpc_request(path: str, method: str, params: dict[str, Any] | None = None,
                      timeout: float = 2.0) -> Any:
    """One JSON-RPC 2.0 call over a UNIX stream socket (one JSON object per line)."""

    async def call() -> Any:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_REPLY_BYTES)
        try:
            req = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
            writer.write(json.dumps(req).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        if not line:
            raise RpcCallError("connection closed without a reply")
        try:
            reply = json.loads(line)
        except ValueError:
            raise RpcCallError("reply is not JSON") from None
        if not isinstance(reply, dict):
            raise RpcCallError("reply is not an object")
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            raise RpcCallError(str(err.get("message", reply["error"])))
        return reply.get("result")

    return await asyncio.wait_for(call(), timeout)


class CoreHealthProbe:
    """Calls `core.health` on the proxy's control socket."""

    def __init__(self, ctl_socket: str, timeout: float = 2.0) -> None:
        self.ctl_socket = ctl_socket
        self.timeout = timeout

    async def probe(self) -> HealthReport:
        try:
            res = await rpc_request(self.ctl_socket, "core.health", None, self.timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            return HealthReport(False, f"proxy control socket {self.ctl_socket} not open "
                                "(proxy starting, or not running)")
        except asyncio.TimeoutError:
            return HealthReport(False, f"proxy did not answer core.health within "
                                f"{self.timeout:g}s (hung or overloaded)")
        except (OSError, RpcCallError) as exc:
            return HealthReport(False, f"core.health: {exc or type(exc).__name__}")
        if not isinstance(res, dict):
            return HealthReport(False, "core.health: result is not an object")
        try:
            alive = int(res.get("workers_alive", 0))
            expected = int(res.get("workers_expected", 0))
            lag = float(res.get("loop_lag_ms") or 0.0)  # None: no worker reported yet
        except (TypeError, ValueError):
            return HealthReport(False, "core.health: malformed result")
        ok = alive >= expected
        detail = "" if ok else f"workers {alive}/{expected} alive"
        return HealthReport(ok, detail, alive, expected, lag)


def build_options(target: tuple[str, int], local: tuple[str, int], branch: str,
                  call_id: str, tag: str) -> bytes:
    host, port = target
    hp = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lhost, lport = local[0], local[1]
    lhp = f"[{lhost}]:{lport}" if ":" in lhost else f"{lhost}:{lport}"
    lines = [
        f"OPTIONS sip:{hp} SIP/2.0",
        f"Via: SIP/2.0/UDP {lhp};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:supervisor@{lhp}>;tag={tag}",
        f"To: <sip:{hp}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "User-Agent: sipedge-supervisor",
        "Content-Length: 0",
        "", "",
    ]
    return "\r\n".join(lines).encode("ascii")


def parse_reply(data: bytes, call_id: str) -> int | None:
    """Status code of a reply carrying our Call-ID, else None (not ours, or not a reply)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        return None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("call-id", "i") and value.strip() == call_id:
            return int(parts[1])
    return None


class _OptionsProtocol(asyncio.DatagramProtocol):
    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        code = parse_reply(data, self.call_id)
        if code is not None and code >= 200 and not self.status.done():
            self.status.set_result(code)

    def error_received(self, exc: Exception) -> None:
        if not self.status.done():
            self.status.set_exception(exc)


class SipOptionsProbe:
    """Sends one OPTIONS to the proxy's UDP listener and waits for a final reply."""

    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        self.target = (host, port)
        self.timeout = timeout

    async def probe(self) -> HealthReport:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
        call_id = secrets.token_hex(8) + "@sipedge-supervisor"
        try:
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _OptionsProtocol(call_id), remote_addr=self.target, family=family)
        except OSError as exc:
            return HealthReport(False, f"OPTIONS: {exc.strerror or exc}")
        try:
            local = transport.get_extra_info("sockname")
            msg = build_options(self.target, local, "z9hG4bK-sv" + secrets.token_hex(6), call_id,
                                secrets.token_hex(4))
            transport.sendto(msg)
            code = await asyncio.wait_for(proto.status, self.timeout)
        except asyncio.TimeoutError:
            return HealthReport(False, "OPTIONS: no reply")
        except OSError as exc:
            return HealthReport(False, f"OPTIONS: {exc.strerror or exc}")
        finally:
            transport.close()
        if 200 <= code < 300:
            return HealthReport(True)
        return HealthReport(False, f"OPTIONS: answered {code}")


class CombinedProbe:
    """Heartbeat first; if it is fine, the OPTIONS ping too (a loop can be alive but deaf)."""

    def __init__(self, heartbeat: Any, options: Any | None) -> None:
        self.heartbeat = heartbeat
        self.options = options

    async def probe(self) -> HealthReport:
        hb = await self.heartbeat.probe()
        if not hb.ok or self.options is None:
            return hb
        op = await self.options.probe()
        if op.ok:
            return hb
        return HealthReport(False, op.detail, hb.workers_alive, hb.workers_expected,
                            hb.loop_lag_ms)
