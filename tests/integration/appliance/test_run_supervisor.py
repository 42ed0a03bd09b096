"""rootfs/usr/libexec/sipedge/run-supervisor on the host, as init runs it: it starts the proxy
in the background and execs the supervisor, which adopts that proxy (or stops it when the
config runs something else); fast failures of the supervisor fall back to the proxy alone.

`sipedge` is fake_proxy.py behind a wrapper on PATH, `sipedge-supervisor` the real one with
--simulate; state, boot file and data dir are in tmp_path (the script takes them from the
environment), output stays on the test's pipe."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_supervisor_proxy import APP, FAKE, pid_alive, wait_status, write_config

SCRIPT = Path(__file__).resolve().parents[3] / "rootfs/usr/libexec/sipedge/run-supervisor"
SUPERVISOR = f'exec "{sys.executable}" -m sipedge.appliance.supervisor_main --simulate "$@"\n'


class Box:
    def __init__(self, tmp_path, command=("sipedge",), supervisor=SUPERVISOR):
        self.tmp = tmp_path
        self.state, self.run = tmp_path / "state", tmp_path / "run"
        self.data, self.boot = tmp_path / "data", tmp_path / "sipedge.toml"
        self.log = tmp_path / "proxy.log"
        for d in (self.run, self.data, tmp_path / "bin"):
            d.mkdir()
        write_config(self.boot, self.run, command=list(command), config_good_after_s=60)
        self.wrap("sipedge", f'echo "fake sipedge pid=$$"\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.wrap("sipedge-supervisor", supervisor)
        self.env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                        STATE=str(self.state), BOOT_CONFIG=str(self.boot),
                        DATA_DIR=str(self.data), SIPEDGE_INIT_KEEP_OUTPUT="1",
                        FAKE_PROXY_MODE="ok", FAKE_PROXY_LOG=str(self.log), PYTHONPATH=str(APP))
        self.proc = None

    def wrap(self, name, body):
        path = self.tmp / "bin" / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def start(self):
        self.proc = subprocess.Popen([str(SCRIPT)], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        return self.proc

    def marks(self):
        path = self.state / "boot-marks"
        lines = path.read_text().splitlines() if path.exists() else []
        return {ln.split()[0]: int(ln.split()[2]) for ln in lines}

    def starts(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def status(self, cond, timeout=30.0):
        return wait_status(self.run / "supervisor.sock", cond, timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate()
        return self.proc.returncode, out


@pytest.fixture
def box(tmp_path):
    made = []

    def make(**kw):
        b = Box(tmp_path, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        if b.proc is not None and b.proc.poll() is None:
            b.stop()


def wait_gone(pid, timeout=10.0):
    end = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    return not pid_alive(pid)


def test_proxy_started_by_the_script_is_adopted(box):
    b = box()
    b.start()
    st = b.status(lambda st: st["state"] == "RUNNING")
    early = b.marks()["proxy-launched"]
    assert st["pid"] == early and len(b.starts()) == 1
    assert b.starts()[0].startswith(f"{early} cwd={b.data} ")  # in the data dir
    assert (b.state / "supervisor-run").read_text().strip() == "pending"
    rc, out = b.stop()  # the script's pid is the supervisor's (exec)
    assert rc == 0, out
    assert f"proxy launched at boot adopted pid={early}" in out, out
    # the proxy's output reached the supervisor's log through the fifo
    assert f"sipedge.proxy: fake sipedge pid={early}" in out, out
    assert wait_gone(early)
    assert (b.state / "supervisor-run").read_text().strip() == "ok"  # a clean stop


def test_proxy_started_by_the_script_is_replaced_when_the_config_runs_another(box):
    b = box(command=(sys.executable, str(FAKE)))  # [supervisor] command: not `sipedge`
    b.start()
    st = b.status(lambda st: st["state"] == "RUNNING")
    early = b.marks()["proxy-launched"]
    assert st["pid"] != early and wait_gone(early)
    if os.geteuid() == 0:  # back from the script's nice 10 (only root may raise it)
        assert os.getpriority(os.PRIO_PROCESS, b.proc.pid) == 0
    rc, out = b.stop()
    assert rc == 0 and "is not what the boot file runs: stopped" in out, out


def test_fast_failures_fall_back_to_the_proxy_alone(box):
    b = box(supervisor="sleep 0.5\nexit 1\n")
    assert b.start().wait(timeout=30) == 1
    early = b.marks()["proxy-launched"]
    assert wait_gone(early)  # its supervisor died: SIGTERM (SIPEDGE_PARENT_PID)
    assert (b.state / "supervisor-run").read_text().strip() == "pending"
    (b.state / "supervisor-fast-failures").write_text("2\n")  # two more before this one
    b.start()  # init's respawn: the third fast failure, then the proxy alone
    end = time.monotonic() + 30
    while len(b.starts()) < 2 and time.monotonic() < end:
        time.sleep(0.05)
    assert (b.state / "supervisor-fast-failures").read_text().strip() == "3"
    os.killpg(b.proc.pid, signal.SIGTERM)
    out, _ = b.proc.communicate(timeout=15)
    assert "(3 of 3)" in out and "no working supervisor; starting sipedge --config" in out, out
    assert b.starts()[-1].split(" ", 2)[2] == f"--config {b.boot}"
