"""http_client from a routing script, end to end: sipedge (`[core] modules =
["http_client"]`, one worker, an async request_route) fetches from a local HTTP server the
test starts and answers the SIP request with the body in the reason phrase (the seed's
example); a POST carries SIP values; a slow server hits the timeout while other requests
keep flowing through the same worker."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from sip_harness import SipEdge, free_port, make_config
from sipcall import request

pytestmark = pytest.mark.timeout(60)

SCRIPT = '''
BASE = "{base}"


async def request_route(msg):
    user = msg.ruri_user or ""
    http = ksr.http_client
    try:
        if user == "post":
            r = await http.http_post(BASE + "/post", f"from={{msg.from_user}}&to={{user}}",
                                     "application/x-www-form-urlencoded")
        elif user == "slow":
            r = await http.http_get(BASE + "/slow", timeout=1.0)
        else:
            r = await http.http_get(f"{{BASE}}/who?user={{user}}",
                                    headers={{"X-Call-ID": msg.call_id}})
    except http.HttpError as exc:
        msg.reply(503, "HTTP " + type(exc).__name__)
        return
    msg.reply(200 if r.ok else 500, http.reason_phrase(r.text))
'''


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    slow_release = threading.Event()
    seen: list[tuple[str, str, bytes]] = []

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        url = urlsplit(self.path)
        self.seen.append(("GET", self.path, self.headers.get("X-Call-ID", "").encode()))
        if url.path == "/slow":
            self.slow_release.wait(5)
            self._send(b"too late")
            return
        user = parse_qs(url.query).get("user", ["?"])[0]
        self._send(f"hello {user}, box A".encode())

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append(("POST", self.path, body))
        self._send(b"posted " + body)

    def log_message(self, *args) -> None:
        return None


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    work = tmp_path_factory.mktemp("http")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    (work / "route.py").write_text(SCRIPT.format(base=base))
    port = free_port()
    cfg = make_config(str(work / "edge.ctl"), [("udp", "127.0.0.1", port)], workers=1,
                      extra='[routing]\nscript = "route.py"\n[http_client]\ntimeout_s = 2\n')
    cfg = cfg.replace("[core]\n", '[core]\nmodules = ["http_client"]\n', 1)
    proxy = SipEdge(work, cfg, "edge")
    proxy.port = port
    try:
        proxy.start(workers=1)
        yield proxy
    finally:
        proxy.stop()
        Handler.slow_release.set()
        httpd.shutdown()
        httpd.server_close()


def test_reason_phrase_is_the_fetched_body(edge):
    r = request(edge.port, "alice")
    assert (r.status, r.reason) == (200, "hello alice, box A"), edge.log()
    assert any(m == "GET" and p == "/who?user=alice" and cid for m, p, cid in Handler.seen)


def test_post_with_sip_values(edge):
    r = request(edge.port, "post", from_user="carol")
    assert (r.status, r.reason) == (200, "posted from=carol&to=post")


def test_slow_server_times_out_while_other_calls_flow(edge):
    Handler.slow_release.clear()
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        slow = pool.submit(request, edge.port, "slow", timeout=5)
        time.sleep(0.1)
        fast = []
        for i in range(5):
            t = time.monotonic()
            r = request(edge.port, f"user{i}", timeout=2)
            fast.append((r.status, time.monotonic() - t))
        assert all(s == 200 and dt < 0.5 for s, dt in fast), fast
        assert not slow.done()  # the slow one is still waiting for its HTTP answer
        r = slow.result(5)
        assert (r.status, r.reason) == (503, "HTTP HttpTimeout")
        assert 0.9 < time.monotonic() - t0 < 3
    Handler.slow_release.set()
    stats = edge.rpc("http_client.stats")
    assert stats["requests"] >= 7 and stats["connections_opened"] >= 1
