"""Async HTTP/1.1 client on asyncio streams and h11: a keep-alive pool per host, TLS
verified by default, every wait and size bounded.

    client = HttpClient(timeout_s=5, max_response_bytes=1 << 20)
    status, headers, body = await client.request("GET", "http://10.0.0.5/route?u=alice")
    r = await client.post("https://api.example/x", b'{"a":1}', "application/json")
    await client.close()

A call waits only for itself: a slow server holds one connection of its host, never the
event loop. `timeout_s` bounds the whole call (connect, TLS, send, response); a connection
that timed out is closed, never reused. A reused keep-alive connection that the server had
already closed is retried once on a new connection when nothing of the response arrived
and the method is idempotent (RFC 9110 9.2.2); a POST is not sent twice.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .h1 import (
    HttpError,
    HttpProtocolError,
    HttpTooLarge,
    Response,
    ResponseParser,
    build_request,
)

__all__ = ["HttpClient", "HttpConnectError", "HttpError", "HttpProtocolError", "HttpTimeout",
           "HttpTooLarge", "Response"]


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class HttpTimeout(HttpError):
    """The call did not complete within its timeout."""


class HttpConnectError(HttpError):
    """No connection (refused, unreachable, TLS handshake or certificate failure)."""


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0
    uses: int = 0

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


@dataclass
class _Host:
    idle: deque[_Conn] = field(default_factory=deque)
    slots: asyncio.Semaphore | None = None


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    host_header: str


def parse_url(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"only http and https URLs, not {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if parts.username or parts.password:
        raise ValueError("credentials in URLs are not supported; pass an Authorization header")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return _Target(scheme, host, port, path, shown if port == default else f"{shown}:{port}")


class HttpClient:
    """One per worker. Not thread-safe; every method runs on the worker's loop."""

    def __init__(self, *, timeout_s: float = 5.0, connect_timeout_s: float | None = None,
                 max_response_bytes: int = 1 << 20, max_head_bytes: int = 16384,
                 max_connections_per_host: int = 8, idle_timeout_s: float = 30.0,
                 verify_tls: bool = True, ca_file: str | None = None,
                 user_agent: str = "sipedge") -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s or timeout_s
        self.max_response_bytes = max_response_bytes
        self.max_head_bytes = max_head_bytes
        self.max_connections_per_host = max_connections_per_host
        self.idle_timeout_s = idle_timeout_s
        self.user_agent = user_agent
        self._ssl = self._make_ssl(verify_tls, ca_file)
        self._hosts: dict[tuple[str, str, int], _Host] = {}
        self.connections_opened = 0
        self.requests = 0

    @staticmethod
    def _make_ssl(verify: bool, ca_file: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else \
            ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    # ------------------------------------------------------------------ public API

    async def get(self, url: str, headers: dict[str, str] | None = None,
                  timeout: float | None = None) -> Response:
        return await self.request("GET", url, headers, None, timeout)

    async def post(self, url: str, body: bytes | str, content_type: str = "text/plain",
                   headers: dict[str, str] | None = None,
                   timeout: float | None = None) -> Response:
        h = dict(headers or {})
        h.setdefault("Content-Type", content_type)
        return await self.request("POST", url, h, body, timeout)

    async def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                      body: bytes | str | None = None, timeout: float | None = None) -> Response:
        """Send one request and return the whole response. Raises HttpTimeout,
        HttpConnectError, HttpProtocolError, HttpTooLarge (all HttpError) or ValueError for
        a bad URL or header."""
        target = parse_url(url)
        if isinstance(body, str):
            body = body.encode("utf-8")
        hdrs = [(k, str(v)) for k, v in (headers or {}).items()]
        names = {k.lower() for k, _ in hdrs}
        if "user-agent" not in names:
            hdrs.append(("User-Agent", self.user_agent))
        data = build_request(method.upper(), target.path, target.host_header, hdrs, body)
        limit = self.timeout_s if timeout is None else timeout
        self.requests += 1
        try:
            async with asyncio.timeout(limit):
                return await self._exchange(target, method.upper(), data)
        except TimeoutError:
            raise HttpTimeout(f"{method} {url}: no complete response within {limit:g}s") from None

    async def download(self, url: str, path: str | os.PathLike[str], *, max_bytes: int,
                       timeout: float | None = None, resume: bool = True,
                       on_progress: Callable[[int, int | None], None] | None = None,
                       on_start: Callable[[int | None, int], None] | None = None) -> int:
        """GET `url` into the file `path`, streaming (the body never sits in memory), and
        return the file's size. With `resume` an existing partial file is continued with a
        `Range` request; a server that answers 200 instead of 206 restarts it from zero.
        More than `max_bytes` in total raises HttpTooLarge (what was written stays, so a
        later call with a corrected bound can resume). `on_progress(done, total)` is called
        per chunk (`total` None when unknown). `on_start(total, have)` is called once the
        response head of a 200/206 is known, before any byte of its body is written
        (`have`: bytes kept from an earlier partial download); whatever it raises aborts
        the download (a free-space check). Non-2xx raises HttpError. Runs on its own
        connection, which is closed afterwards."""
        target = parse_url(url)
        dest = Path(path)
        have = dest.stat().st_size if resume and dest.exists() else 0
        if have > max_bytes:
            have = 0
        hdrs = [("User-Agent", self.user_agent)]
        if have:
            hdrs.append(("Range", f"bytes={have}-"))
        data = build_request("GET", target.path, target.host_header, hdrs, None)
        limit = self.timeout_s if timeout is None else timeout
        self.requests += 1
        with open(dest, "r+b" if have else "wb") as f:
            f.seek(have)
            st: dict[str, Any] = {"written": have, "total": None, "started": False}

            def sink(chunk: bytes) -> None:
                head = parser.head
                assert head is not None
                if not st["started"]:
                    st["started"] = True
                    status = head[0]
                    if status == 200 and st["written"]:
                        f.seek(0)
                        f.truncate()
                        st["written"] = 0
                    elif status == 206:
                        rng = _header(head[2], "content-range") or ""
                        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", rng.strip())
                        if m is None or int(m.group(1)) != st["written"]:
                            raise HttpProtocolError(f"206 with Content-Range {rng!r} does "
                                                    f"not continue at byte {st['written']}")
                        if m.group(3) != "*":
                            st["total"] = int(m.group(3))
                    if status in (200, 206) and st["total"] is None:
                        cl = _header(head[2], "content-length")
                        if cl is not None and cl.isdigit():
                            st["total"] = st["written"] + int(cl)
                    if st["total"] is not None and st["total"] > max_bytes:
                        raise HttpTooLarge(f"{url}: {st['total']} bytes is more than the "
                                           f"bound of {max_bytes}")
                    if on_start is not None and status in (200, 206):
                        on_start(st["total"], st["written"])
                if head[0] not in (200, 206):
                    return
                if st["written"] + len(chunk) > max_bytes:
                    raise HttpTooLarge(f"{url}: more than {max_bytes} bytes")
                f.write(chunk)
                st["written"] += len(chunk)
                if on_progress is not None:
                    on_progress(st["written"], st["total"])

            parser = ResponseParser("GET", max_head_bytes=self.max_head_bytes,
                                    max_body_bytes=max_bytes, on_body=sink)
            try:
                async with asyncio.timeout(limit):
                    conn = await self._connect(target)
                    try:
                        conn.writer.write(data)
                        await conn.writer.drain()
                        while not parser.done:
                            try:
                                chunk = await conn.reader.read(65536)
                            except (ConnectionError, OSError):
                                chunk = b""
                            parser.feed(chunk)
                    except (ConnectionError, OSError) as exc:
                        raise HttpConnectError(f"connection failed: {exc}") from None
                    finally:
                        conn.close()
            except TimeoutError:
                raise HttpTimeout(f"GET {url}: download not complete within {limit:g}s "
                                  f"({st['written']} bytes so far)") from None
            finally:
                f.flush()
        assert parser.response is not None
        status = parser.response.status
        if status == 416 and have:
            return have  # already complete; the caller checks size and hash
        if status not in (200, 206):
            raise HttpError(f"GET {url}: HTTP {status} {parser.response.reason}")
        return int(st["written"])

    async def close(self) -> None:
        for host in self._hosts.values():
            while host.idle:
                host.idle.popleft().close()
        self._hosts.clear()

    def idle_connections(self) -> int:
        return sum(len(h.idle) for h in self._hosts.values())

    # ------------------------------------------------------------------ internals

    def _host(self, t: _Target) -> _Host:
        key = (t.scheme, t.host.lower(), t.port)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(slots=asyncio.Semaphore(self.max_connections_per_host))
        return host

    async def _exchange(self, t: _Target, method: str, data: bytes) -> Response:
        host = self._host(t)
        assert host.slots is not None
        async with host.slots:
            conn = self._take_idle(host)
            if conn is not None:
                try:
                    return await self._on(conn, host, method, data, reused=True)
                except _Stale:
                    conn.close()
                    if method not in IDEMPOTENT:  # the server may have acted on it
                        raise HttpConnectError(f"{method}: kept-alive connection closed "
                                               "before a response; not retried") from None
            conn = await self._connect(t)
            try:
                return await self._on(conn, host, method, data, reused=False)
            except _Stale:
                raise HttpProtocolError("server closed the connection without a response") from None

    def _take_idle(self, host: _Host) -> _Conn | None:
        now = time.monotonic()
        while host.idle:
            conn = host.idle.pop()  # most recently used first: least likely to be stale
            if conn.usable() and now - conn.idle_since < self.idle_timeout_s:
                return conn
            conn.close()
        return None

    async def _connect(self, t: _Target) -> _Conn:
        tls = self._ssl if t.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    t.host, t.port, ssl=tls, server_hostname=t.host if tls else None,
                    limit=self.max_head_bytes + 65536)
        except TimeoutError:
            raise HttpTimeout(f"connect to {t.host}:{t.port} timed out") from None
        except ssl.SSLError as exc:
            raise HttpConnectError(f"TLS with {t.host}:{t.port} failed: {exc.reason or exc}") \
                from None
        except OSError as exc:
            raise HttpConnectError(f"connect to {t.host}:{t.port}: {exc.strerror or exc}") \
                from None
        self.connections_opened += 1
        return _Conn(reader, writer)

    async def _on(self, conn: _Conn, host: _Host, method: str, data: bytes,
                  reused: bool) -> Response:
        parser = ResponseParser(method, max_head_bytes=self.max_head_bytes,
                                max_body_bytes=self.max_response_bytes)
        ok = False
        try:
            try:
                conn.writer.write(data)
                await conn.writer.drain()
            except (ConnectionError, OSError):
                if reused:
                    raise _Stale() from None
                raise
            while not parser.done:
                try:
                    chunk = await conn.reader.read(65536)
                except (ConnectionError, OSError):
                    chunk = b""
                if not chunk and reused and not parser.started:
                    raise _Stale()
                parser.feed(chunk)
            ok = True
        except (ConnectionError, OSError) as exc:
            raise HttpConnectError(f"connection failed: {exc}") from None
        finally:
            if not ok:
                conn.close()  # also on timeout (CancelledError) and parse errors
        conn.uses += 1
        if parser.keep_alive and conn.usable():
            conn.idle_since = time.monotonic()
            host.idle.append(conn)
        else:
            conn.close()
        assert parser.response is not None
        return parser.response


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


class _Stale(Exception):
    """A reused connection turned out to be closed by the server (internal)."""
