"""The proxies under test.  Each driver starts one proxy in the foreground
as a child of the bench, so every process of it (main, workers, timers) is
found below one pid, and stops it again.
"""
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

from . import proc
from .modes import render, users

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TargetError(RuntimeError):
    pass


class Target:
    name = "?"
    kind = None  # whose config templates and files it uses (None: its name)
    max_workers = None       # None: any number
    single_caller_only = False  # True: cannot serve several SIPp callers

    def __init__(self, host, port, next_hop, next_hops=None):
        self.host, self.port, self.next_hop = host, port, next_hop
        self.next_hops = list(next_hops or [next_hop])  # the dispatcher's destinations
        self.popen = None
        self.workers = 1
        self.log = None
        self.workdir = None
        self.prefix = []  # a command prefix, e.g. valgrind for the instruction counts
        self.env = None   # environment of the proxy (None: the bench's)

    # -- to implement ---------------------------------------------------
    def available(self):
        """None if it can run here, else why not."""
        return None

    def command(self, mode, workdir, workers):
        raise NotImplementedError

    def expected_sockets(self, workers):
        return 1

    def unsupported(self, mode):
        """None if this proxy can run the mode, else why not (printed when skipped)."""
        return None

    def memory_errors(self):
        """Log lines so far saying the proxy ran out of memory (Kamailio's shm pool)."""
        return 0

    # -- common -----------------------------------------------------------
    def values(self, mode, workdir, workers):
        """Placeholders for the config templates of this proxy."""
        v = {"WORKERS": workers, "CHILDREN": workers, "WORKDIR": workdir, "HOST": self.host,
             "PORT": self.port, "NEXT_HOST": self.next_hop[0], "NEXT_PORT": self.next_hop[1],
             "REPO": os.path.dirname(HERE)}
        for i, (h, p) in enumerate(self.next_hops, 1):
            v[f"NEXT_HOST_{i}"], v[f"NEXT_PORT_{i}"] = h, p
        v.update(dict(mode.values))
        return v

    def render_files(self, mode, workdir, values):
        """Extra templates of the mode, next to the config: 'sipedge-stateful-route.py'
        becomes 'route.py', 'kamailio-dispatcher.list' becomes 'dispatcher.list'."""
        for template in mode.files(self.kind or self.name):
            name = os.path.basename(template).split("-", 1)[1]
            name = name.rsplit("-", 1)[-1]
            with open(os.path.join(workdir, name), "w") as f:
                f.write(render(template, values))

    def supports(self, mode, workers, transport):
        if self.max_workers is not None and workers > self.max_workers:
            return False
        if self.single_caller_only and transport != "u1":
            return False
        if self.name == "relay":  # configless: only where the mode lists it
            return "relay" in mode.configs
        return mode.config_template(self.kind or self.name) is not None

    def start(self, mode, workdir, workers, timeout=30):
        self.workdir, self.workers = workdir, workers
        os.makedirs(workdir, exist_ok=True)
        if proc.udp_sockets_on(self.port):
            raise TargetError(f"{self.name}: UDP port {self.port} is already in use")
        cmd = self.prefix + self.command(mode, workdir, workers)
        self.log = os.path.join(workdir, f"{self.name}.log")
        with open(self.log, "ab") as out:
            out.write(f"# {' '.join(cmd)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, cwd=workdir,
                                          start_new_session=True, env=self.env)
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
    shm_mb = 0  # --kamailio-shm: overrides the mode's -m
    # log lines of a request Kamailio could not serve for lack of memory (no reply sent)
    MEMORY_ERRORS = ("could not allocate shared memory", "out of mem", "Free fragment not found")

    def memory_errors(self):
        """Lines of its log so far saying it ran out of (shared) memory."""
        try:
            with open(self.log, errors="replace") as f:
                return sum(1 for line in f if any(e in line for e in self.MEMORY_ERRORS))
        except (OSError, TypeError):
            return 0

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

    def unsupported(self, mode):
        if mode.subscribers and not os.path.exists(os.path.join(self.module_path() or "", "db_sqlite.so")):
            return "db_sqlite.so missing (Debian package kamailio-sqlite-modules)"
        return None

    def command(self, mode, workdir, workers):
        cfg = os.path.join(workdir, "kamailio.cfg")
        values = self.values(mode, workdir, workers)
        values["MODPATH"] = self.module_path()
        values["DB_PATH"] = os.path.join(workdir, "kamailio.sqlite")
        if mode.subscribers:
            make_kamailio_db(values["DB_PATH"], mode.subscribers)
        with open(cfg, "w") as f:
            f.write(render(mode.config_template("kamailio"), values))
        self.render_files(mode, workdir, values)
        # f_malloc, the mode's shared memory (256 MB; 4096 MB where tm keeps transactions,
        # see modes.STATEFUL_SHM_MB) and 16 MB private memory: Kamailio at its best.
        # -DD keeps the main process in the foreground (children are forked),
        # -E logs to stderr, -Y/-P keep runtime files in the work dir.
        shm = self.shm_mb or mode.kamailio_shm_mb
        return [self.binary(), "-f", cfg, "-x", "fm", "-m", str(shm), "-M", "16",
                "-DD", "-E", "-Y", workdir, "-P", os.path.join(workdir, "kamailio.pid")]


class Sipedge(Target):
    name = "sipedge"
    kind = "sipedge"

    def __init__(self, host, port, next_hop, binary, next_hops=None, name=None, pythonpath=None):
        super().__init__(host, port, next_hop, next_hops)
        self.bin = binary
        if name:  # "sipedge-c": the compiled build beside the pure one, in the same run
            self.name = name
        if pythonpath:
            self.env = {**os.environ, "PYTHONPATH": pythonpath}

    def available(self):
        if not os.access(self.bin, os.X_OK):
            return f"{self.bin} not found (run `make venv` once app/sipedge/cli.py exists)"
        return None

    def expected_sockets(self, workers):
        return workers  # one SO_REUSEPORT socket per worker

    def unsupported(self, mode):
        """The modules the mode needs must be loadable by this sipedge (asked of the venv's
        python, so the bench itself need not import sipedge)."""
        if not mode.sipedge_modules:
            return None
        py = os.path.join(os.path.dirname(self.bin), "python")
        try:
            out = subprocess.run(
                [py, "-c", "from sipedge.io.modules import RUNTIMES; print(' '.join(RUNTIMES))"],
                capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"cannot ask {py} for sipedge's modules: {e}"
        have = set(out.stdout.split())
        missing = [m for m in mode.sipedge_modules if m not in have]
        if missing:
            return (f"sipedge cannot load the module(s) {', '.join(missing)} yet "
                    f"(not in sipedge.io.modules.RUNTIMES: {' '.join(sorted(have)) or out.stderr.strip()[-200:]})")
        return None

    def command(self, mode, workdir, workers):
        cfg = os.path.join(workdir, "sipedge.toml")
        values = self.values(mode, workdir, workers)
        values["DB_PATH"] = os.path.join(workdir, "location.sqlite")
        if mode.subscribers:
            self.preload(values["DB_PATH"], mode.subscribers)
        with open(cfg, "w") as f:
            f.write(render(mode.config_template("sipedge"), values))
        self.render_files(mode, workdir, values)
        return [self.bin, "--config", cfg]

    def preload(self, db_path, n):
        """Subscribers straight into the registrar database with sipedge's own Store, before
        sipedge starts (synchronous=normal for the load: 0.2 s for 2000 users, where
        `sipedgectl subscriber.add` costs a process start and an RPC per user)."""
        py = os.path.join(os.path.dirname(self.bin), "python")
        code = (
            "import sys, hashlib\n"
            "from sipedge.modules.registrar.store import Store\n"
            "s = Store(sys.argv[1], synchronous='normal')\n"
            "for line in sys.stdin:\n"
            "    u, pw = line.split()\n"
            "    s.add_subscriber(u, 'localhost', "
            "ha1_md5=hashlib.md5(f'{u}:localhost:{pw}'.encode()).hexdigest())\n"
            "s.close()\n")
        data = "".join(f"{u} {pw}\n" for u, pw in users(n))
        p = subprocess.run([py, "-c", code, db_path], input=data, capture_output=True,
                           text=True, timeout=300)
        if p.returncode:
            raise TargetError(f"sipedge: preloading {n} subscribers failed: {p.stderr[-500:]}")


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


def make_kamailio_db(path, n):
    """A fresh SQLite database for Kamailio's auth_db and usrloc: the schema from
    configs/kamailio-sqlite-schema.sql, WAL (a property of the file, so Kamailio's
    connections use it too), and n subscribers with their MD5 HA1 for realm localhost."""
    import sqlite3
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    db = sqlite3.connect(path)
    with open(os.path.join(HERE, "configs", "kamailio-sqlite-schema.sql")) as f:
        db.executescript(f.read())
    db.execute("PRAGMA journal_mode=WAL")
    db.executemany("INSERT INTO subscriber (username, domain, ha1) VALUES (?, 'localhost', ?)",
                   [(u, hashlib.md5(f"{u}:localhost:{pw}".encode()).hexdigest())
                    for u, pw in users(n)])
    db.commit()
    db.close()
