"""The proxies under test.  Each driver starts one proxy in the foreground
as a child of the bench, so every process of it (main, workers, timers) is
found below one pid, and stops it again.
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

from . import proc
from .modes import render


class TargetError(RuntimeError):
    pass


class Target:
    name = "?"
    max_workers = None       # None: any number
    single_caller_only = False  # True: cannot serve several SIPp callers

    def __init__(self, host, port, next_hop):
        self.host, self.port, self.next_hop = host, port, next_hop
        self.popen = None
        self.workers = 1
        self.log = None
        self.workdir = None

    # -- to implement ---------------------------------------------------
    def available(self):
        """None if it can run here, else why not."""
        return None

    def command(self, mode, workdir, workers):
        raise NotImplementedError

    def expected_sockets(self, workers):
        return 1

    # -- common -----------------------------------------------------------
    def supports(self, mode, workers, transport):
        if self.max_workers is not None and workers > self.max_workers:
            return False
        if self.single_caller_only and transport != "u1":
            return False
        return self.name == "relay" or mode.config_template(self.name) is not None

    def start(self, mode, workdir, workers, timeout=30):
        self.workdir, self.workers = workdir, workers
        os.makedirs(workdir, exist_ok=True)
        if proc.udp_sockets_on(self.port):
            raise TargetError(f"{self.name}: UDP port {self.port} is already in use")
        cmd = self.command(mode, workdir, workers)
        self.log = os.path.join(workdir, f"{self.name}.log")
        with open(self.log, "ab") as out:
            out.write(f"# {' '.join(cmd)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, cwd=workdir,
                                          start_new_session=True)
        want = self.expected_sockets(workers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise TargetError(f"{self.name} exited with {self.popen.returncode}; see {self.log}")
            if proc.udp_sockets_on(self.port) >= want:
                time.sleep(0.3)  # let the last workers finish their start-up
                return
            time.sleep(0.05)
        self.stop()
        raise TargetError(f"{self.name} did not bind {want} socket(s) on {self.host}:{self.port} "
                          f"within {timeout}s; see {self.log}")

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def pids(self):
        return proc.descendants(self.popen.pid) if self.alive() else []

    def stop(self, timeout=10):
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self.popen = None


class Kamailio(Target):
    name = "kamailio"

    def binary(self):
        return shutil.which("kamailio") or ("/usr/sbin/kamailio" if os.path.exists("/usr/sbin/kamailio") else None)

    def module_path(self):
        found = sorted(glob.glob("/usr/lib/*/kamailio/modules/sl.so") + glob.glob("/usr/lib/kamailio/modules/sl.so"))
        return os.path.dirname(found[0]) + "/" if found else None

    def available(self):
        if not self.binary():
            return "kamailio not installed (Debian package kamailio)"
        if not self.module_path():
            return "kamailio modules not found under /usr/lib/*/kamailio/modules"
        return None

    def command(self, mode, workdir, workers):
        cfg = os.path.join(workdir, "kamailio.cfg")
        with open(cfg, "w") as f:
            f.write(render(mode.config_template("kamailio"), {
                "CHILDREN": workers, "HOST": self.host, "PORT": self.port,
                "MODPATH": self.module_path(),
                "NEXT_HOST": self.next_hop[0], "NEXT_PORT": self.next_hop[1]}))
        # f_malloc, 256 MB shared and 16 MB private memory: Kamailio at its best.
        # -DD keeps the main process in the foreground (children are forked),
        # -E logs to stderr, -Y/-P keep runtime files in the work dir.
        return [self.binary(), "-f", cfg, "-x", "fm", "-m", "256", "-M", "16",
                "-DD", "-E", "-Y", workdir, "-P", os.path.join(workdir, "kamailio.pid")]


class Sipedge(Target):
    name = "sipedge"

    def __init__(self, host, port, next_hop, binary):
        super().__init__(host, port, next_hop)
        self.bin = binary

    def available(self):
        if not os.access(self.bin, os.X_OK):
            return f"{self.bin} not found (run `make venv` once app/sipedge/cli.py exists)"
        return None

    def expected_sockets(self, workers):
        return workers  # one SO_REUSEPORT socket per worker

    def command(self, mode, workdir, workers):
        cfg = os.path.join(workdir, "sipedge.toml")
        values = {"WORKERS": workers, "WORKDIR": workdir, "HOST": self.host, "PORT": self.port,
                  "NEXT_HOST": self.next_hop[0], "NEXT_PORT": self.next_hop[1]}
        with open(cfg, "w") as f:
            f.write(render(mode.config_template("sipedge"), values))
        for template in mode.sipedge_files:
            name = os.path.basename(template).replace("sipedge-stateful-", "")
            with open(os.path.join(workdir, name), "w") as f:
                f.write(render(template, values))
        return [self.bin, "--config", cfg]


class Relay(Target):
    """bench/relay.py: a blocking-socket UDP relay that parses nothing (the floor)."""
    name = "relay"
    max_workers = 1
    single_caller_only = True   # it remembers one caller address

    def command(self, mode, workdir, workers):
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return [sys.executable, os.path.join(here, "relay.py"),
                "--listen", f"{self.host}:{self.port}",
                "--callee", f"{self.next_hop[0]}:{self.next_hop[1]}"]
