"""The management console like a technician with a USB-serial cable: over a pty, against a
running `sipedge-supervisor` (with the fake proxy)."""

import os
import re
import select
import time

import pytest

from sipedge.appliance.auth import hash_password

from test_supervisor_proxy import Sup


class Terminal:
    def __init__(self, master):
        self.fd = master
        self.seen = b""

    def expect(self, pattern, timeout=10.0):
        end = time.monotonic() + timeout
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        while True:
            m = rx.search(self.seen)
            if m:
                before, self.seen = self.seen[:m.end()], self.seen[m.end():]
                return before.decode("utf-8", "replace")
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen; got {self.seen[-500:]!r}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                self.seen += os.read(self.fd, 4096)

    def send(self, text):
        os.write(self.fd, text.encode())


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_technician_session(tmp_path, pty_pair):
    master, slave_path = pty_pair
    s = Sup(tmp_path, "ok", extra=(
        "\n[management]\n"
        f'console_device = "{slave_path}"\n'
        f'password_hash = "{hash_password("techpw", iterations=1000)}"\n'
        "max_failures = 2\n"))
    try:
        t = Terminal(master)
        t.expect("password: ")
        s.wait_for(lambda st: st["state"] == "RUNNING")
        t.send("wrong\r")
        t.expect("login incorrect")
        t.expect("password: ")
        t.send("techpw\r")
        t.expect("sipedge> ")
        t.send("status\r")
        out = t.expect("sipedge> ")
        assert "state:    RUNNING" in out and "config:   boot" in out
        t.send("config set supervisor.respawn_retry 4\r")
        out = t.expect(r"write it\? \[y/N\] ")
        assert "+respawn_retry = 4" in out
        t.send("y\r")
        assert "written" in t.expect("sipedge> ")
        assert "respawn_retry = 4" in s.boot.read_text()
        t.send("apply\r")
        t.expect("sipedge> ")
        st = s.wait_for(lambda st: st["restarts"] >= 1 and st["state"] == "RUNNING")
        assert st["crashes"] == 0  # a planned restart for the new config
        t.send("ctl supervisor.status\r")
        assert '"state": "RUNNING"' in t.expect("sipedge> ")
        t.send("logs 50\r")
        assert "config changed" in t.expect("sipedge> ")
        t.send("config set watchdog.timeout_s 0\r")
        assert "not changed" in t.expect("sipedge> ")
        t.send("logout\r")
        t.expect("password: ")
    finally:
        rc, out = s.stop()
    assert rc == 0, out
