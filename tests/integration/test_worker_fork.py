"""Workers forked from the main process (issue 13: no second interpreter start and import).

The main process imports everything a worker runs, then forks; SIPEDGE_WORKER_EXEC=1 (or a
second thread in the main process) falls back to a fresh `python -m sipedge.io.worker`.
"""
import os
import signal
import time
from pathlib import Path

import pytest

from sip_harness import free_port


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


@pytest.fixture(autouse=True)
def _no_exec_env(monkeypatch):
    monkeypatch.delenv("SIPEDGE_WORKER_EXEC", raising=False)
