"""HttpClient.download() against a local HTTP/1.1 server on 127.0.0.1 that honours Range:
streamed to a file, resumed after a cut, restarted when the server ignores Range, bounded."""

from __future__ import annotations

import asyncio
import http.server
import re
import threading

import pytest

from sipedge.modules.http_client import HttpClient, HttpError, HttpTooLarge

pytestmark = pytest.mark.timeout(60)

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.ranges.append(self.headers.get("Range"))
        if self.path == "/missing":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, start = PAYLOAD, 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and self.path != "/norange":
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        if self.path == "/cut":  # the connection dies after 1000 bytes
            self.wfile.write(part[:1000])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.ranges = []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def dl(url, path, **kw):
    async def go():
        c = HttpClient(timeout_s=10)
        try:
            return await c.download(url, path, **kw)
        finally:
            await c.close()
    return asyncio.run(go())


def test_download_resume_restart_and_bounds(server, tmp_path):
    srv, base = server
    dest = tmp_path / "b.raucb"
    seen = []
    assert dl(base + "/b", dest, max_bytes=1 << 20, on_progress=lambda d, t: seen.append((d, t))) \
        == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD and seen[-1] == (len(PAYLOAD), len(PAYLOAD))

    # a cut connection leaves a partial file; the next call resumes it with Range
    dest.unlink()
    with pytest.raises(HttpError):
        dl(base + "/cut", dest, max_bytes=1 << 20)
    assert dest.stat().st_size == 1000
    assert dl(base + "/b", dest, max_bytes=1 << 20) == len(PAYLOAD)
    assert srv.ranges[-1] == "bytes=1000-" and dest.read_bytes() == PAYLOAD

    # a server that ignores Range: the file is restarted, not appended to
    dest.write_bytes(PAYLOAD[:5000])
    assert dl(base + "/norange", dest, max_bytes=1 << 20) == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD

    # the size bound: announced size refused before writing a byte
    dest.unlink()
    with pytest.raises(HttpTooLarge):
        dl(base + "/b", dest, max_bytes=1000)
    assert dest.stat().st_size == 0

    with pytest.raises(HttpError, match="404"):
        dl(base + "/missing", tmp_path / "m", max_bytes=1000)
