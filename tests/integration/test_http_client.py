"""The routes' HTTP client against a local stdlib HTTP/1.1 server on 127.0.0.1 (threaded, so a
slow request holds only its own connection): GET, POST, keep-alive reuse, a timeout while
other requests keep flowing, TLS refused without and accepted with the right CA."""

from __future__ import annotations

import asyncio
import http.server
import ssl
import threading
import time
from urllib.parse import parse_qs

import pytest

from tls_certs import TestCA

from sipedge.modules.http_client import (HttpClient, HttpConnectError, HttpTimeout,
                                         HttpTooLarge)
from sipedge.modules.http_client.api import HttpClientApi

pytestmark = pytest.mark.timeout(60)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 1.0  # idle keep-alive connections are closed by the server after this

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        if self.path.startswith("/slow"):
            time.sleep(2.0)
            self._send(200, b"late")
        elif self.path.startswith("/big"):
            self._send(200, b"x" * 5000)
        else:
            user = parse_qs(self.path.partition("?")[2]).get("user", ["nobody"])[0]
            self._send(200, f"route for {user}".encode())

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        self._send(201, b"got " + body + b" as " + self.headers["Content-Type"].encode())


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.connections = 0
        self.seen: list = []
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
        self.thread.join(5)


def run(coro):
    return asyncio.run(coro)


def test_get_post_and_keep_alive():
    with Server() as srv:
        async def go():
            client = HttpClient(timeout_s=3)
            api = HttpClientApi(client)
            try:
                r = await api.http_get(f"{srv.base}/route?user=alice")
                status, headers, body = r
                assert (status, body) == (200, b"route for alice")
                assert r.header("content-type") == "text/plain"
                p = await api.http_post(f"{srv.base}/cdr", "from=alice&to=bob",
                                        "application/x-www-form-urlencoded")
                assert p.status == 201
                assert p.body == b"got from=alice&to=bob as application/x-www-form-urlencoded"
                for i in range(5):
                    assert (await api.http_get(f"{srv.base}/route?user=u{i}")).ok
                g = await api.request("GET", f"{srv.base}/route", {"X-Call-ID": "abc@h"},
                                      timeout=2)
                assert g.body == b"route for nobody"
                return client.connections_opened
            finally:
                await client.close()

        opened = run(go())
    assert opened == 1 and srv.connections == 1  # eight requests, one connection
    method, path, headers = srv.seen[-1]
    assert headers["Host"] == f"127.0.0.1:{srv.server_address[1]}"
    assert headers["User-Agent"] == "sipedge" and headers["X-Call-ID"] == "abc@h"


def test_slow_server_times_out_while_other_requests_flow():
    with Server() as srv:
        async def go():
            client = HttpClient(timeout_s=3)
            try:
                t0 = time.monotonic()
                slow = asyncio.ensure_future(client.get(f"{srv.base}/slow", timeout=0.5))
                await asyncio.sleep(0.05)
                fast = await asyncio.gather(*(client.get(f"{srv.base}/route?user=f{i}")
                                              for i in range(4)))
                fast_done = time.monotonic() - t0
                with pytest.raises(HttpTimeout):
                    await slow
                slow_done = time.monotonic() - t0
                after = await client.get(f"{srv.base}/route?user=after")
                return fast, fast_done, slow_done, after
            finally:
                await client.close()

        fast, fast_done, slow_done, after = run(go())
    assert [r.body for r in fast] == [f"route for f{i}".encode() for i in range(4)]
    assert fast_done < 0.45  # not held up by the slow one
    assert 0.45 < slow_done < 1.5
    assert after.ok


def test_stale_keep_alive_connection_is_replaced():
    with Server() as srv:
        async def go():
            client = HttpClient(timeout_s=3)
            try:
                assert (await client.get(f"{srv.base}/a")).ok
                await asyncio.sleep(1.4)  # the server closes the idle connection after 1 s
                assert (await client.get(f"{srv.base}/b")).ok
                return client.connections_opened
            finally:
                await client.close()

        assert run(go()) == 2


def test_size_limit_and_refused_connection():
    with Server() as srv:
        async def go():
            client = HttpClient(timeout_s=3, max_response_bytes=1024)
            try:
                with pytest.raises(HttpTooLarge):
                    await client.get(f"{srv.base}/big")
                assert (await client.get(f"{srv.base}/ok")).ok  # still usable
            finally:
                await client.close()

        run(go())
        port = srv.server_address[1]
    with pytest.raises(HttpConnectError):
        run(HttpClient(timeout_s=2).get(f"http://127.0.0.1:{port}/"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("http-pki")
    ca = TestCA(d)
    leaf = ca.issue("web", "127.0.0.1", dns_names=("localhost",), ips=("127.0.0.1",))
    other = TestCA(d, "unrelated CA")
    return ca, leaf, other


def test_tls_verified_by_default(pki):
    ca, leaf, other = pki
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(leaf.cert), str(leaf.key))
    with Server(ctx) as srv:
        url = f"https://127.0.0.1:{srv.server_address[1]}/route?user=tls"

        async def go(**kw):
            client = HttpClient(timeout_s=3, **kw)
            try:
                return await client.get(url)
            finally:
                await client.close()

        with pytest.raises(HttpConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            run(go())  # system CAs do not know our test CA
        with pytest.raises(HttpConnectError):
            run(go(ca_file=str(other.pem_path)))  # the wrong CA
        assert run(go(ca_file=str(ca.pem_path))).body == b"route for tls"
        assert run(go(verify_tls=False)).ok  # explicit opt-out
