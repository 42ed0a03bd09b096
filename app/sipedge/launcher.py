"""`sipedge --config FILE` for a file with several [instances] on a host without the appliance
supervisor: one proxy process tree per instance (`sipedge --config FILE --instance NAME`),
like one init script per Kamailio instance.

The launcher only starts, restarts and stops: an instance that exits is started again after
a delay that doubles per quick exit (1 s .. 30 s); after 5 quick exits in a row it is left down
(logged). SIGTERM/SIGINT stop every instance (SIGKILL after 10 s), SIGHUP is passed on (each
reloads its routing script). Health probes, the watchdog, the panel and per-instance restarts on
config change are the appliance supervisor's (`sipedge-supervisor`, docs/instances.md).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

log = logging.getLogger("sipedge.launcher")

QUICK_EXIT_S = 60.0
MAX_QUICK_EXITS = 5
TERM_TIMEOUT_S = 10.0


class _Child:
    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.quick_exits = 0
        self.next_start = 0.0
        self.given_up = False


def run_instances(path: str, names: list[str]) -> int:
    children = [_Child(n) for n in names]
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signals.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    log.info("running instances=%s config=%s", ",".join(names), path)
    while True:
        while signals:
            sig = signals.pop(0)
            if sig == signal.SIGHUP:
                for c in children:
                    if c.proc is not None and c.proc.poll() is None:
                        c.proc.send_signal(signal.SIGHUP)
                continue
            return _stop_all(children)
        now = time.monotonic()
        for c in children:
            if c.proc is not None:
                rc = c.proc.poll()
                if rc is None:
                    continue
                runtime = now - c.started
                c.proc = None
                c.quick_exits = c.quick_exits + 1 if runtime < QUICK_EXIT_S else 1
                if c.quick_exits >= MAX_QUICK_EXITS:
                    c.given_up = True
                    log.error("instance %s exited rc=%s %d times in a row: left down",
                              c.name, rc, c.quick_exits)
                    continue
                delay = min(30.0, 2.0 ** (c.quick_exits - 1))
                c.next_start = now + delay
                log.error("instance %s exited rc=%s runtime_s=%.1f: restart in %.0fs",
                          c.name, rc, runtime, delay)
            if c.proc is None and not c.given_up and now >= c.next_start:
                c.proc = subprocess.Popen([sys.executable, "-m", "sipedge", "--config", path,
                                           "--instance", c.name])
                c.started = now
                log.info("instance %s started pid=%d", c.name, c.proc.pid)
        if all(c.given_up for c in children):
            log.error("every instance is down")
            return 1
        time.sleep(0.2)


def _stop_all(children: list[_Child]) -> int:
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for p in running:
        p.terminate()
    end = time.monotonic() + TERM_TIMEOUT_S
    for p in running:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    log.info("stopped")
    return 0
