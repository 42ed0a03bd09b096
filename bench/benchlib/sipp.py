"""Driving SIPp: one long-lived callee (UAS) and one caller (UAC) per measurement.

Caller and callee are separate SIPp processes so each has a core's worth of
event loop; their CPU is measured too, because on a 2-core machine SIPp can
be what limits the call rate.
"""
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

from . import proc


def sipp_binary():
    return shutil.which("sipp")


def _parse_stat_csv(path):
    """Last row of a SIPp -trace_stat file as {column: value}."""
    try:
        with open(path, encoding="latin-1") as f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    head = lines[0].split(";")
    return dict(zip(head, lines[-1].split(";")))


def _hms_us_to_ms(text):
    """SIPp's 'HH:MM:SS:uuuuuu' response times to milliseconds."""
    try:
        h, m, s, us = (int(x) for x in text.split(":"))
    except (ValueError, AttributeError):
        return None
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


def _epoch(text):
    """SIPp time stamps are 'date<TAB>time<TAB>epoch.us'; return the epoch seconds."""
    try:
        return float((text or "").split("\t")[-1])
    except ValueError:
        return 0.0


class Uas:
    """A SIPp callee on host:port, restarted when it dies."""

    def __init__(self, scenario, host, port, workdir, extra=()):
        self.scenario, self.host, self.port = scenario, host, port
        self.workdir, self.extra = workdir, list(extra)
        self.popen = None
        self.log = os.path.join(workdir, f"sipp-uas-{port}.log")
        self.starts = 0

    def start(self):
        self.starts += 1
        cmd = [sipp_binary(), "-sf", self.scenario, "-i", self.host, "-p", str(self.port),
               "-t", "u1", "-nostdin", "-nr", "-buff_size", str(4 << 20),
               # a call whose ACK or BYE was lost must not stay open for ever: SIPp
               # stops taking new calls once too many are open
               "-recv_timeout", "8000",
               "-trace_err", "-error_file", os.path.join(self.workdir, f"sipp-uas-{self.port}-errors.log"),
               *self.extra]
        with open(self.log, "ab") as out:
            out.write(f"\n# start {self.starts}: {' '.join(cmd)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"SIPp UAS exited with {self.popen.returncode}; see {self.log}")
            if proc.udp_sockets_on(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"SIPp UAS did not bind {self.host}:{self.port}; see {self.log}")

    def ensure(self):
        if self.popen is None or self.popen.poll() is not None:
            self.start()

    def cpu_ticks(self):
        return proc.cpu_ticks(self.popen.pid) if self.popen else None

    @property
    def ports(self):
        return [self.port]

    def died(self):
        """'' while running, else a note for the run record."""
        if self.popen is not None and self.popen.poll() is None:
            return ""
        return f"callee SIPp on {self.port} exited ({self.popen.returncode if self.popen else '?'})"

    def stop(self):
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.popen = None


class UasGroup:
    """Several callees behind one proxy (the dispatcher's destinations), or none (REGISTER:
    the proxy answers itself), with the interface of one Uas."""

    def __init__(self, members):
        self.members = list(members)
        self.log = " ".join(u.log for u in self.members) or "-"

    @property
    def ports(self):
        return [u.port for u in self.members]

    def start(self):
        for u in self.members:
            u.start()

    def ensure(self):
        for u in self.members:
            u.ensure()

    def cpu_ticks(self):
        ticks = self.cpu_ticks_each()
        return None if any(t is None for t in ticks) else sum(ticks)

    def cpu_ticks_each(self):
        return [u.cpu_ticks() for u in self.members]

    def died(self):
        return "; ".join(filter(None, (u.died() for u in self.members)))

    def stop(self):
        for u in self.members:
            u.stop()


@dataclass
class UacResult:
    rate: float              # requested calls/s
    calls: int               # requested calls
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    dead_msgs: int = 0
    wall_s: float = 0.0      # SIPp caller start to exit
    cpu_s: float = 0.0       # the caller's own CPU (rusage)
    returncode: int = 0
    setup_ms: float | None = None   # mean INVITE->200 time, from SIPp
    timed_out: bool = False
    log: str = ""
    stats: dict = field(default_factory=dict, repr=False)

    sipp_elapsed_s: float = 0.0  # first to last call, SIPp's own clock (slowest caller)
    callers: int = 1

    @property
    def achieved_rate(self):
        span = self.sipp_elapsed_s or self.wall_s
        return self.successful / span if span else 0.0

    @property
    def complete(self):
        return self.failed == 0 and self.successful == self.calls and not self.timed_out


def run_uac(scenario, target_host, target_port, rate, calls, workdir, tag,
            callers=1, local_port=5061, recv_timeout_ms=5000, on_start=None, extra=()):
    """Place `calls` calls at `rate` calls/s through target; bounded in count and time.

    callers > 1 runs that many SIPp callers side by side, each with one socket
    (-t u1) on its own port (local_port, local_port+1, ...) and its share of rate
    and calls: several source ports let SO_REUSEPORT spread calls over a proxy's
    workers.  (SIPp's own -t un put, under load, the wrong port in some Vias.)"""
    base = os.path.join(workdir, f"sipp-uac-{tag}")
    budget_s = calls / rate + recv_timeout_ms / 1000 + 15
    res = UacResult(rate=rate, calls=calls, log=base + ".log")
    procs = []
    with open(res.log, "wb") as out:
        t0 = time.monotonic()
        try:
            for i in range(callers):
                n = calls // callers + (1 if i < calls % callers else 0)
                stat_file = f"{base}-{i}.csv"
                if os.path.exists(stat_file):
                    os.unlink(stat_file)
                cmd = [sipp_binary(), "-sf", scenario, f"{target_host}:{target_port}",
                       "-i", "127.0.0.1", "-p", str(local_port + i), "-t", "u1",
                       "-r", f"{rate / callers:.3f}".rstrip("0").rstrip("."), "-rp", "1000",
                       "-m", str(n), "-l", str(max(1000, int(rate / callers))),
                       "-nostdin", "-nr", "-buff_size", str(4 << 20),
                       "-recv_timeout", str(recv_timeout_ms), "-timeout", f"{int(budget_s)}s",
                       "-trace_stat", "-stf", stat_file, "-fd", "3600",
                       "-trace_err", "-error_file", f"{base}-{i}-errors.log",
                       *(x.replace("{i}", str(i)) for x in extra)]
                out.write((" ".join(cmd) + "\n").encode())
                out.flush()
                p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, cwd=workdir)
                procs.append([p, stat_file, None, None])
                if on_start:
                    on_start(p.pid)
            deadline = t0 + budget_s + 10
            while any(x[2] is None for x in procs):  # bounded by deadline
                for x in procs:
                    if x[2] is None:
                        pid, status, rusage = os.wait4(x[0].pid, os.WNOHANG)
                        if pid:
                            x[2], x[3] = status, rusage
                if time.monotonic() > deadline:
                    res.timed_out = True
                    for x in procs:
                        if x[2] is None:
                            x[0].kill()
                            _, x[2], x[3] = os.wait4(x[0].pid, 0)
                    break
                time.sleep(0.01)
        except BaseException:  # interrupted: do not leave callers running
            for x in procs:
                if x[2] is None:
                    x[0].kill()
                    os.wait4(x[0].pid, 0)
            raise
        res.wall_s = time.monotonic() - t0

    def num(st, key):
        try:
            return int(st.get(key, "0") or 0)
        except ValueError:
            return 0

    setups = []
    for p, stat_file, status, rusage in procs:
        p.returncode = os.waitstatus_to_exitcode(status)
        res.returncode = res.returncode or p.returncode
        res.cpu_s += rusage.ru_utime + rusage.ru_stime
        st = _parse_stat_csv(stat_file)
        res.stats[stat_file] = st
        if not st:  # no statistics at all: every call of this caller failed
            res.failed += calls // callers
            continue
        res.successful += num(st, "SuccessfulCall(C)")
        res.failed += num(st, "FailedCall(C)")
        res.retransmissions += num(st, "Retransmissions(C)")
        res.dead_msgs += num(st, "DeadCallMsgs(C)")
        setups.append(_hms_us_to_ms(st.get("ResponseTimesetup(C)")))
        elapsed = _epoch(st.get("CurrentTime")) - _epoch(st.get("StartTime"))
        res.sipp_elapsed_s = max(res.sipp_elapsed_s, elapsed)
    setups = [x for x in setups if x is not None]
    res.setup_ms = sum(setups) / len(setups) if setups else None
    res.callers = callers
    return res
