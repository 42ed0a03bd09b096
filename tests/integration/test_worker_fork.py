"""Workers forked from the main process (issue 13: no second interpreter start and import).

The main process imports everything a worker runs, then forks; SIPEDGE_WORKER_EXEC=1 (or a
second thread in the main process) falls back to a fresh `python -m sipedge.io.worker`.
With `workers = 1` the worker runs in the main process itself (one Python process);
SIPEDGE_WORKER_FORK=1 forks it instead.
"""
import os
import signal
import time
from pathlib import Path

import pytest

from sip_harness import free_port, udp_socket


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_workers_are_forked_restarted_and_stopped(sipedge_factory):
    port = free_port()
    edge = sipedge_factory([("udp", "127.0.0.1", port)], workers=2)
    main = edge.proc.pid
    workers = wait_for(lambda: len(children(main)) == 2 and children(main))
    # forked: same program and arguments as the main process, no `-m sipedge.io.worker`
    assert all(cmdline(w) == cmdline(main) for w in workers)
    os.kill(workers[0], signal.SIGKILL)
    # the main process notices the exit and forks a new worker (restart back-off 0.2 s)
    wait_for(lambda: edge.rpc("core.health")["workers_alive"] == 2
             and workers[0] not in children(main), timeout=30)
    new = [w for w in children(main) if w not in workers]
    assert new and cmdline(new[0]) == cmdline(main)
    assert "(forked)" in edge.log()
    alive = children(main)
    assert edge.stop() == 0
    for w in alive:  # SIGTERM to the main process stops every worker
        assert not Path(f"/proc/{w}").exists() or b"Z" in Path(f"/proc/{w}/stat").read_bytes().split()[2:3]


def test_exec_fallback_still_works(sipedge_factory, monkeypatch):
    monkeypatch.setenv("SIPEDGE_WORKER_EXEC", "1")
    edge = sipedge_factory([("udp", "127.0.0.1", free_port())], workers=1)
    workers = wait_for(lambda: children(edge.proc.pid))
    assert b"sipedge.io.worker" in cmdline(workers[0])


def options(port: int) -> bytes:
    sock = udp_socket(5.0)
    try:
        me = sock.getsockname()[1]
        sock.sendto((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-lw{me}\r\n"
                     "From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
                     f"Call-ID: lw-{me}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                     "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
        return sock.recv(65536)
    finally:
        sock.close()


def test_one_worker_runs_in_the_main_process(sipedge_factory, tmp_path):
    """workers = 1: no child process; the main process answers SIP, reports its worker
    alive, reloads the routing script on route.reload and stops cleanly on SIGTERM."""
    script = tmp_path / "route.py"
    script.write_text("def request_route(msg):\n    msg.reply(200, \"OK\")\n")
    port = free_port()
    edge = sipedge_factory([("udp", "127.0.0.1", port)], workers=1,
                           extra=f'[routing]\nscript = "{script}"\n')
    assert children(edge.proc.pid) == []
    assert "started in the main process" in edge.log()
    assert options(port).startswith(b"SIP/2.0 200 ")
    health = edge.rpc("core.health")
    assert health["workers_alive"] == 1 and health["workers_expected"] == 1
    assert edge.rpc("stats")["workers"]["0"]["pid"] == edge.proc.pid
    assert edge.rpc("route.reload")["workers"] == 1
    wait_for(lambda: "worker=0 routing script reloaded" in edge.log())
    assert edge.stop() == 0
    assert "Traceback" not in edge.log()


def test_one_worker_forked_on_request(sipedge_factory, monkeypatch):
    monkeypatch.setenv("SIPEDGE_WORKER_FORK", "1")
    edge = sipedge_factory([("udp", "127.0.0.1", free_port())], workers=1)
    workers = wait_for(lambda: children(edge.proc.pid))
    assert cmdline(workers[0]) == cmdline(edge.proc.pid) and "(forked)" in edge.log()


@pytest.fixture(autouse=True)
def _no_exec_env(monkeypatch):
    monkeypatch.delenv("SIPEDGE_WORKER_EXEC", raising=False)
    monkeypatch.delenv("SIPEDGE_WORKER_FORK", raising=False)
