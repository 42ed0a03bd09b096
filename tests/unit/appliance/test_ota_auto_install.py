"""`[update] auto_install` with a `window`: a release the channel offered is installed by
itself only inside the window (local time), and a release that was tried once (refused
here) is not tried again on every supervisor tick. The bundle is served over HTTP from
127.0.0.1; `rauc` is the stand-in of test_ota_manager."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time

from sipedge.appliance.ota import OtaManager
from sipedge.appliance.params import UpdateParams
from test_ota_manager import fake_rauc


def local(h, m):
    return time.mktime((2026, 12, 7, h, m, 0, 0, 0, -1))


def serve(root):
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(root), **kw)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def wait_done(m, timeout=30.0):
    end = time.monotonic() + timeout
    while m.installing:
        assert time.monotonic() < end
        time.sleep(0.05)


def test_installs_only_inside_the_window_and_only_once(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    blob = b"not a bundle\n" * 1000
    (www / "r.raucb").write_bytes(blob)
    srv = serve(www)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/r.raucb"
        params = UpdateParams(url=f"http://127.0.0.1:{srv.server_address[1]}",
                              auto_install=True, window="02:00-04:00", mark_good_after_s=1)
        rauc, _log = fake_rauc(tmp_path)
        rel = tmp_path / "release"
        rel.write_text("VERSION=0.2.0\n")
        wall = [local(12, 0)]
        m = OtaManager(params, data_dir=tmp_path / "data", rauc=rauc, release_file=rel,
                       system_conf=tmp_path / "none", clock=lambda: 0.0,
                       wall_clock=lambda: wall[0], reboot_cmd=["true"], booted="A")
        m._next_check = 1e12  # no periodic channel check in this test
        m.state["last_check"] = {"ok": True, "time": wall[0], "available": {
            "version": "0.3.0", "url": url, "size": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest()}}
        m.on_supervisor_tick(0.0, "RUNNING", 5.0)  # marks good: checks start after that
        assert m.policy.marked
        for hm in ((12, 0), (1, 59), (4, 0), (23, 0)):  # outside 02:00-04:00
            wall[0] = local(*hm)
            m.on_supervisor_tick(0.0, "RUNNING", 5.0)
            assert m.job is None, hm
        wall[0] = local(3, 0)
        m.on_supervisor_tick(0.0, "DEGRADED", 5.0)  # never while the proxy is not RUNNING
        assert m.job is None
        m.on_supervisor_tick(0.0, "RUNNING", 5.0)
        first = m.job
        assert first is not None and first.source in (url, str(m.dir / "download.raucb"))
        wait_done(m)
        assert not first.ok and "refused" in first.error, first.error
        assert m.state["last_install"]["url"] == url
        for _ in range(3):  # the same release is not tried again
            m.on_supervisor_tick(0.0, "RUNNING", 5.0)
            assert m.job is first
    finally:
        srv.shutdown()
        srv.server_close()
