"""JSON-RPC 2.0 over a UNIX stream socket, one JSON object per line (like Kamailio jsonrpcs).

Server: asyncio (`RpcServer`). Client: blocking (`rpc_call`), for sipedgectl and tests.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..errors import EdgeError

log = logging.getLogger("sipedge.rpc")

Method = Callable[[dict[str, Any]], Any | Awaitable[Any]]
MAX_REQUEST_BYTES = 1 << 20
# Bounds of the control socket: a client that never reads its replies, never sends, or
# many of them at once must not hold the proxy's memory or file descriptors.
MAX_CLIENTS = 32  # past it the least recently active client is disconnected
WRITE_TIMEOUT_S = 5.0  # a reply must be taken by the client within this time
IDLE_TIMEOUT_S = 60.0  # a connected client must send its next request within this time

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
APP_ERROR = -32000


SECRET_PARAMS = frozenset({"password", "ha1_md5", "ha1_sha256", "secret"})


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """The params with credentials replaced, for logs (subscriber.add's password)."""
    return {k: ("<redacted>" if k in SECRET_PARAMS else v) for k, v in params.items()}


class RpcError(EdgeError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class RpcServer:
    """Serve `methods` on a UNIX socket. Each method gets the params dict (positional params
    arrive as {"args": [...]}) and returns a JSON-serialisable result (or an awaitable)."""

    def __init__(self, path: str | Path, methods: dict[str, Method]) -> None:
        self.path = str(path)
        self.methods = dict(methods)
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.StreamWriter, None] = {}  # least recently active first
        self.methods.setdefault("core.methods", lambda params: sorted(self.methods))

    async def start(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._server = await asyncio.start_unix_server(self._client, path=self.path,
                                                       limit=MAX_REQUEST_BYTES)
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients[writer] = None
        while len(self._clients) > MAX_CLIENTS:
            oldest = next(iter(self._clients))
            log.info("rpc: more than %d clients, disconnecting the least recently active",
                     MAX_CLIENTS)
            self._clients.pop(oldest, None)
            oldest.transport.abort()
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_error(None, INVALID_REQUEST, "request too large"))
                    break
                except asyncio.TimeoutError:
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                if writer in self._clients:  # most recently active last
                    self._clients.pop(writer)
                    self._clients[writer] = None
                writer.write(await self.dispatch(line))
                try:
                    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
                except asyncio.TimeoutError:
                    log.info("rpc: client does not read its replies, disconnecting")
                    writer.transport.abort()
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.pop(writer, None)
            writer.close()

    async def dispatch(self, line: bytes) -> bytes:
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return _error(None, PARSE_ERROR, "parse error")
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(
                req.get("method"), str):
            return _error(req.get("id") if isinstance(req, dict) else None, INVALID_REQUEST,
                          "invalid request")
        rid = req.get("id")
        fn = self.methods.get(req["method"])
        if fn is None:
            return _error(rid, METHOD_NOT_FOUND, f"method not found: {req['method']}")
        params = req.get("params", {})
        if isinstance(params, list):
            params = {"args": params}
        if not isinstance(params, dict):
            return _error(rid, INVALID_PARAMS, "params must be an object or an array")
        log.debug("rpc method=%s params=%s", req["method"], redact(params))
        try:
            result = fn(params)
            if inspect.isawaitable(result):
                result = await result
        except RpcError as exc:
            return _error(rid, exc.code, exc.message, exc.data)
        except (KeyError, TypeError, ValueError) as exc:
            return _error(rid, INVALID_PARAMS, f"invalid params: {exc}")
        except Exception as exc:  # noqa: BLE001 - RPC boundary: report, keep serving
            log.exception("rpc method %s failed", req["method"])
            return _error(rid, APP_ERROR, f"{type(exc).__name__}: {exc}")
        return (json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}, default=str)
                + "\n").encode()


def _error(rid: Any, code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return (json.dumps({"jsonrpc": "2.0", "id": rid, "error": err}, default=str) + "\n").encode()


def rpc_call(path: str | Path, method: str, params: dict | list | None = None,
             timeout: float = 5.0) -> Any:
    """Call one method and return its result. Raises RpcError (also for a dead socket)."""
    req = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        req["params"] = params
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall((json.dumps(req) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > 64 * MAX_REQUEST_BYTES:
                    raise RpcError(APP_ERROR, "reply too large")
    except OSError as exc:
        raise RpcError(APP_ERROR, f"cannot reach {path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise RpcError(PARSE_ERROR, "bad reply from server") from None
    if "error" in reply:
        e = reply["error"]
        raise RpcError(e.get("code", APP_ERROR), e.get("message", "error"), e.get("data"))
    return reply.get("result")
