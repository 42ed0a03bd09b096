#!/usr/bin/env python3
"""sipedge benchmark: SIPp calls through sipedge, Kamailio and a bare Python relay.

For every proxy, in the same run and interleaved so machine noise hits all:
  (a) proxy CPU time per call (utime+stime of all its processes, /proc) at fixed rates,
  (b) the highest sustained call rate with no failed calls (bounded search),
      and what limited it (the proxy, a SIPp process, or the two cores),
  (c) the proxy's memory (RSS and PSS summed over its processes),
and the sipedge/Kamailio ratios.  Medians over repetitions.  See bench/README.md.

All traffic stays on 127.0.0.1; every load is bounded in calls and in time.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import growth, icount, proc  # noqa: E402
from benchlib.modes import ALIASES, MODES, write_users_csv  # noqa: E402
from benchlib.sipp import Uas, UasGroup, run_uac, sipp_binary  # noqa: E402
from benchlib.targets import Kamailio, Relay, Sipedge, TargetError  # noqa: E402

HOST = "127.0.0.1"
# Offsets from --port-base.  Away from 5060-5090 on purpose: other SIPp users on a
# shared machine bind those, and SIPp's SO_REUSEADDR lets two processes share a UDP port.
# Each proxy has its own SIPp callee, so no callee state carries over from one proxy to the next.
PORT_OFFSETS = {"uac": 40, "sipedge": 10, "sipedge-c": 11, "relay": 15, "kamailio": 30,
                "uas-kamailio": 20, "uas-relay": 21, "uas-sipedge": 22, "uas-sipedge-c": 23,
                # the dispatcher modes' 3 callees per proxy
                "uas-kamailio-1": 60, "uas-kamailio-2": 61, "uas-kamailio-3": 62,
                "uas-sipedge-1": 63, "uas-sipedge-2": 64, "uas-sipedge-3": 65,
                "uas-sipedge-c-1": 66, "uas-sipedge-c-2": 67, "uas-sipedge-c-3": 68}
PORTS = {}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# sipedge-c: the compiled build beside the pure one (`--build pure,compiled`, the default)
ALL_TARGETS = ("kamailio", "relay", "sipedge", "sipedge-c")
# Measured on the 2-core development machine (issue 2), for the reader's orientation.
REFERENCE = "reference here: Kamailio -x fm 1 child ~63 us/call; bare Python relay ~50-56 us/call"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default=None,
                    help="comma list of worker counts (sipedge workers = Kamailio children); "
                         "default 1,2 (--quick: 1)")
    ap.add_argument("--only", action="append", choices=ALL_TARGETS,
                    help="measure only this proxy (repeatable); default all")
    ap.add_argument("--mode", default=None,
                    help=f"comma list of modes: {', '.join(MODES)} "
                         f"(registration = registration; dispatcher = dispatcher-rr,dispatcher-hash); "
                         f"default stateless,stateful (--quick: stateless)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 worker, 1 repetition, short runs (< 1 minute)")
    ap.add_argument("--reps", type=int, help="repetitions of every measurement (default 3)")
    ap.add_argument("--rates", default="",
                    help="fixed call rates for CPU per call (default 500,2000; registration 200,500)")
    ap.add_argument("--calls", type=int,
                    help="calls per fixed-rate measurement (default: 10 s worth, 5000..10000)")
    ap.add_argument("--no-max-rate", action="store_true", help="skip the maximum rate search")
    ap.add_argument("--max-rate-cap", type=int, default=20000,
                    help="highest rate the search tries (calls/s); default 20000")
    ap.add_argument("--callers", type=int, default=0,
                    help="SIPp caller processes, one socket each (several spread calls over "
                         "SO_REUSEPORT workers); default 1 for 1 worker, else 4 per worker")
    ap.add_argument("--port-base", type=int, default=0,
                    help="UDP ports: sipedge base+10, relay +15, callees +20..22, Kamailio +30, "
                         "callers +40..59; "
                         "default: the first of 25060, 25160, ... whose ports are all free")
    ap.add_argument("--kamailio-shm", type=int, default=0, metavar="MB",
                    help="Kamailio -m (shared memory, MB); default per mode: 256, and 4096 where "
                         "tm keeps transactions (stateful, dispatcher; see benchlib/modes.py)")
    ap.add_argument("--sipedge-bin", default=os.path.join(REPO, ".venv", "bin", "sipedge"))
    ap.add_argument("--json", metavar="FILE", help="write all runs and the summary as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory with logs")
    ap.add_argument("--overload", default="",
                    help="after the maximum rate search, offer these multiples of the measured "
                         "maximum (e.g. 1.5,2) and report goodput, 503s sent and recovery time "
                         "(issue 14; with --quick: 1.5,2 when given as 'on')")
    ap.add_argument("--overload-s", type=float, default=10.0,
                    help="duration of each overload run in seconds (default 10)")
    ap.add_argument("--profile", action="store_true",
                    help="also record a py-spy profile of sipedge at the highest fixed rate "
                         "(needs py-spy in the venv or on PATH)")
    ap.add_argument("--instructions", action="store_true",
                    help="instead of CPU seconds: instructions per call and per forwarded message "
                         "under callgrind (1 worker, low rate; immune to machine noise)")
    ap.add_argument("--icount-calls", type=int, default=60,
                    help="calls counted per proxy with --instructions (default 60)")
    ap.add_argument("--icount-rate", type=float, default=2,
                    help="call rate with --instructions (default 2/s: callgrind runs sipedge ~50-100x "
                         "slower; a proxy that falls behind retransmits and fails calls)")
    ap.add_argument("--rss-growth", action="store_true",
                    help="instead of the tables: RSS per process of a 1-worker proxy after the "
                         "first and the last of --growth-calls stateful calls (issue 15: <= 1.5x)")
    ap.add_argument("--growth-calls", default="1000,100000",
                    help="checkpoints for --rss-growth, calls (default 1000,100000)")
    ap.add_argument("--growth-rate", type=int, default=300,
                    help="call rate for --rss-growth (default 300/s: 100000 calls take ~6 min)")
    ap.add_argument("--growth-settle", type=float, default=40.0,
                    help="seconds without traffic before the 'settled' reading (default 40: "
                         "sipedge keeps a transaction up to 32 s)")
    ap.add_argument("--boot", type=int, metavar="N",
                    help="instead of calls: boot the offline image N times (5 for the issue 13 "
                         "target) and report boot stages and idle memory (benchlib/boot.py)")
    ap.add_argument("--boot-arch", default="amd64", choices=("amd64", "arm64"))
    ap.add_argument("--build", default=None,
                    help="sipedge as pure Python (this tree's app/), `compiled` (the "
                         "compiled build, tools/compile/build.py --cached, put first on "
                         "PYTHONPATH) or the path of a tree built by tools/compile/build.py --out; "
                         "`pure,compiled` (the default; --quick: pure) runs both side by side in "
                         "the same run, the compiled one as the proxy `sipedge-c`")
    a = ap.parse_args(argv)
    a.workers = [int(x) for x in (a.workers or ("1" if a.quick else "1,2")).split(",") if x]
    if a.mode is None:
        a.mode = "stateless" if a.quick else "stateless,stateful"
    if a.build is None:
        a.build = "pure" if (a.quick or a.instructions or a.boot) else "pure,compiled"
    a.builds = [b for b in a.build.split(",") if b]
    if len(a.builds) > 2 or (len(a.builds) == 2 and a.builds[0] != "pure"):
        ap.error("--build: one build, or pure,<compiled|DIR>")
    a.overload = [1.5, 2.0] if a.overload == "on" else [float(x) for x in a.overload.split(",") if x]
    if a.overload and a.no_max_rate:
        ap.error("--overload needs the maximum rate search (drop --no-max-rate)")
    a.rates = [int(x) for x in a.rates.split(",") if x]
    a.growth_calls = sorted(int(x) for x in a.growth_calls.split(",") if x)
    if a.rss_growth and len(a.growth_calls) < 2:
        ap.error("--growth-calls needs two counts or more (first,last)")
    names = []
    for m in a.mode.split(","):
        for n in ALIASES.get(m, [m] if m else []):
            if n not in MODES:
                ap.error(f"unknown mode {n!r}: one of {', '.join(MODES)}")
            if n not in names:
                names.append(n)
    a.modes = [MODES[n] for n in names]
    a.targets = a.only or list(ALL_TARGETS)
    base = a.port_base
    if not base:
        for base in range(25060, 26060, 100):  # bounded: 10 candidates
            if not any(proc.udp_sockets_on(base + off) for off in [*PORT_OFFSETS.values(), *range(40, 69)]):
                break
    PORTS.update({k: base + v for k, v in PORT_OFFSETS.items()})
    if a.quick:
        a.reps = a.reps or 1
        a.trial_s, a.max_trials, a.search_start = 1.5, 3, 2000
        a.warm_calls, a.idle_s, a.pause_s = 300, 0.5, 1.1
    else:
        a.reps = a.reps or 3
        a.trial_s, a.max_trials, a.search_start = 4.0, 8, 1000
        a.warm_calls, a.idle_s, a.pause_s = 1000, 2.0, 1.5
    return a


def calls_for(rate, args, mode=None):
    if args.calls:
        return args.calls
    if args.quick:
        return max(500, min(2000, rate))  # ~1 s per measurement
    if mode is not None and mode.unit != "call":
        return max(1000, min(10000, rate * 10))  # 10 s worth at the lower registration rates
    return max(5000, min(10000, rate * 10))


def rates_for(mode, args):
    return args.rates or list(mode.rates) or [500, 2000]


def uac_extra(mode, workdir):
    """Extra SIPp caller arguments of a mode: the registration users, one injection file
    per caller (run_uac puts the caller's index where {i} is), so no two callers
    register the same user at the same time."""
    if not mode.subscribers:
        return ()
    return ("-inf", os.path.join(workdir, "users-{i}.csv"))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, args, workdir):
        self.args, self.workdir = args, workdir
        self.runs = []
        self.failures = []
        self.profiles = []
        self.skipped = []
        self.overloads = []
        self.mode_dir = workdir

    # -- one measurement ------------------------------------------------------
    def measure(self, mode, target, uas, workers, transport, rate, calls, kind, rep):
        """One bounded SIPp run; repeated once if the callee died or a foreign socket
        shared one of our ports (both seen on a shared machine)."""
        for attempt in (1, 2):
            uas.ensure()
            intruder = self.foreign_sockets(target, uas)
            run = self._measure(mode, target, uas, workers, transport, rate, calls, kind, rep)
            if kind == "warmup":
                return run
            intruder = intruder or self.foreign_sockets(target, uas)
            died = uas.died()
            if not (died or intruder):
                break
            why = (died + " " if died else "") + (intruder or "")
            run["disturbed"] = why.strip()
            log(f"  ! {kind} run of {target.name} at {rate}/s disturbed: {why.strip()}"
                + ("; repeating it" if attempt == 1 else ""))
        return run

    def foreign_sockets(self, target, uas):
        n_t = proc.udp_sockets_on(target.port)
        want = target.expected_sockets(target.workers)
        for port in uas.ports:
            n_uas = proc.udp_sockets_on(port)
            if n_uas > 1:
                return (f"port {port} has {n_uas} sockets (expected 1): another process shares it")
        if n_t > want:
            return (f"port {target.port} has {n_t} sockets (expected {want}): "
                    f"another process shares it")
        return ""

    def _measure(self, mode, target, uas, workers, transport, rate, calls, kind, rep):
        uas.ensure()
        if not target.alive():
            raise TargetError(f"{target.name} is not running any more; see {target.log}")
        pids = target.pids()
        cpu0 = proc.tree_cpu(pids)
        uas0 = uas.cpu_ticks()
        each0 = uas.cpu_ticks_each() if hasattr(uas, "cpu_ticks_each") else []
        drops0 = proc.udp_drops()
        busy0 = proc.machine_busy_ticks()
        port_drops0 = proc.udp_drops_by_port()
        mem_errors0 = target.memory_errors()
        tag = f"{mode.name}-w{workers}-{target.name}-{kind}-{rate}-r{rep}"
        callers = 1 if transport == "u1" else int(transport.split("x")[1])
        res = run_uac(mode.uac_scenario, HOST, target.port, rate, calls, self.workdir, tag,
                      callers=callers, local_port=PORTS["uac"],
                      extra=uac_extra(mode, self.mode_dir))
        pids_after = target.pids()
        cpu1 = proc.tree_cpu(set(pids) | set(pids_after))
        uas1 = uas.cpu_ticks()
        each1 = uas.cpu_ticks_each() if hasattr(uas, "cpu_ticks_each") else []
        mem = proc.tree_memory(pids_after)
        proxy_cpu = proc.cpu_delta_seconds(cpu0, cpu1)
        span = res.sipp_elapsed_s or res.wall_s
        uas_cpu = ((uas1 - uas0) / proc.CLK_TCK) if (uas0 is not None and uas1 is not None) else None
        run = {
            "mode": mode.name, "workers": workers, "transport": transport, "target": target.name,
            "kind": kind, "rep": rep, "rate": rate, "calls": calls,
            "successful": res.successful, "failed": res.failed,
            "retransmissions": res.retransmissions, "dead_msgs": res.dead_msgs,
            "timed_out": res.timed_out, "sipp_rc": res.returncode,
            "wall_s": round(res.wall_s, 3), "sipp_elapsed_s": round(span, 3),
            "achieved_rate": round(res.achieved_rate, 1),
            "proxy_cpu_s": round(proxy_cpu, 3),
            "us_per_call": round(proxy_cpu / res.successful * 1e6, 1) if res.successful else None,
            "proxy_cores": round(proxy_cpu / span, 3) if span else None,
            "uac_cores": round(res.cpu_s / res.wall_s, 3) if res.wall_s else None,
            "uas_cores": round(uas_cpu / span, 3) if (uas_cpu is not None and span) else None,
            "rss_kib": mem.rss_kib, "pss_kib": mem.pss_kib, "processes": mem.processes,
            "setup_ms": res.setup_ms, "uac_log": res.log,
        }
        run["ok"] = res.complete and res.achieved_rate >= 0.9 * rate
        if len(each1) > 1 and None not in each0 + each1:
            # several callees (dispatcher): how the work spread over them, as shares of
            # their CPU time (SIPp spends about the same per call on each)
            d = [b - a for a, b in zip(each0, each1)]
            run["callee_cpu_share"] = [round(x / sum(d), 2) if sum(d) else None for x in d]
        run["udp_drops"] = proc.udp_drops() - drops0
        # what everything else on the machine used meanwhile: the noise in this run
        busy = (proc.machine_busy_ticks() - busy0) / proc.CLK_TCK
        ours = proxy_cpu + res.cpu_s + (uas_cpu or 0)
        run["other_cores"] = round(max(0.0, busy - ours) / res.wall_s, 3) if res.wall_s else None
        port_drops1 = proc.udp_drops_by_port()
        for who, ports in (("proxy", [target.port]), ("callee", uas.ports),
                           ("caller", range(PORTS["uac"], PORTS["uac"] + callers))):
            run[f"drops_{who}"] = sum(port_drops1.get(p, 0) - port_drops0.get(p, 0) for p in ports)
        # Kamailio out of shared memory (-m) serves no transaction and sends no reply: the
        # caller's "receive timeout"; a limit of the set-up, not of the proxy
        run["proxy_memory_errors"] = target.memory_errors() - mem_errors0
        self.runs.append(run)
        if not res.complete and kind in ("fixed", "profiled"):  # probes are meant to fail
            self.failures.append(f"{tag}: {res.failed} failed, {res.successful}/{calls} ok "
                                 f"(SIPp caller log {res.log}, callee log {uas.log}, proxy log {target.log})")
        if kind == "overload":  # the caller measures the recovery itself
            return run
        time.sleep(self.args.pause_s)  # let the last calls and queued datagrams drain
        if not run["ok"]:
            run["drain_s"] = self.drain(target)
        return run

    def drain(self, target, limit_s=20.0):
        """After a run the proxy could not keep up with, wait (bounded) until it is idle:
        requests still queued in its socket buffer (SIPp gave up on them) would otherwise
        be served during the next run and lower its rate."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:  # bounded
            c0 = proc.tree_cpu(target.pids())
            time.sleep(0.25)
            if proc.cpu_delta_seconds(c0, proc.tree_cpu(target.pids())) < 0.25 * 0.05:
                break
        return round(time.monotonic() - t0, 2)

    def idle_cpu(self, target):
        pids = target.pids()
        c0 = proc.tree_cpu(pids)
        time.sleep(self.args.idle_s)
        return proc.cpu_delta_seconds(c0, proc.tree_cpu(target.pids())) / self.args.idle_s

    # -- maximum sustained rate -----------------------------------------------------
    def max_rate(self, mode, target, uas, workers, transport, rep):
        a = self.args
        lo, hi, hi_run, lo_run = 0, None, None, None
        rate = mode.search_start or a.search_start
        stop = "trial budget used up"
        for _ in range(a.max_trials):  # bounded search
            calls = int(rate * a.trial_s)
            r = self.measure(mode, target, uas, workers, transport, rate, calls, "probe", rep)
            log(f"  probe {target.name:8s} {rate:6d}/s: {'ok ' if r['ok'] else 'NOT'} "
                f"achieved {r['achieved_rate']:.0f}/s failed {r['failed']} retrans {r['retransmissions']} "
                f"drops {r['udp_drops']} (proxy {r['drops_proxy']} callee {r['drops_callee']} "
                f"caller {r['drops_caller']}) "
                f"cores proxy {r['proxy_cores']} uac {r['uac_cores']} uas {r['uas_cores']}")
            if r["ok"]:
                lo, lo_run = rate, r
            else:
                hi, hi_run = rate, r
                if not target.alive():
                    break
            if hi is None:
                nxt = rate * 2
                if nxt > a.max_rate_cap:
                    nxt = a.max_rate_cap if rate < a.max_rate_cap else None
                    stop = "search cap reached"
            else:
                step = 100 if hi > 1000 else 10  # registration rates are in the hundreds
                nxt = (lo + hi) // 2 // step * step
                if hi - lo <= max(step, hi // 10) or nxt <= lo:
                    nxt = None
            if nxt is None:
                break
            rate = nxt
        return {"mode": mode.name, "workers": workers, "target": target.name, "rep": rep,
                "max_rate": lo, "first_failing_rate": hi,
                "limit": (limiter(hi_run, workers) + busy_note(hi_run)) if hi_run else stop,
                "at_limit": {k: (hi_run or lo_run or {}).get(k) for k in
                             ("rate", "achieved_rate", "failed", "retransmissions",
                              "proxy_cores", "uac_cores", "uas_cores")}}

    # -- overload (issue 14) ----------------------------------------------------------------
    def overload(self, mode, target, uas, workers, transport, rep, max_rate, factor):
        """Offer `factor` x the measured maximum for --overload-s seconds. Goodput: calls
        completed per second of the run (as a share of the maximum). 503s: what sipedge
        says it shed (its `overload_503` counter). Recovery: from the end of the run until
        the proxy is idle again (its queue drained), then a run at half the maximum must
        complete without a failure."""
        a = self.args
        rate = int(max_rate * factor)
        shed0 = self.proxy_counter(target, "overload_503")
        r = self.measure(mode, target, uas, workers, transport, rate, int(rate * a.overload_s),
                         "overload", rep)
        t_end = time.monotonic()
        self.drain(target)
        recovery = time.monotonic() - t_end
        after_rate = max(10, max_rate // 2)
        after = self.measure(mode, target, uas, workers, transport, after_rate,
                             int(after_rate * 3), "after-overload", rep)
        shed1 = self.proxy_counter(target, "overload_503")
        span = r["sipp_elapsed_s"] or r["wall_s"]
        goodput = r["successful"] / span if span else 0.0
        out = {"mode": mode.name, "workers": workers, "target": target.name, "rep": rep,
               "max_rate": max_rate, "factor": factor, "offered_rate": rate,
               "goodput_cps": round(goodput, 1),
               "goodput_share": round(goodput / max_rate, 3) if max_rate else None,
               "failed": r["failed"], "retransmissions": r["retransmissions"],
               "proxy_drops": r["drops_proxy"],
               "shed_503": (shed1 - shed0) if None not in (shed0, shed1) else None,
               "recovery_s": round(recovery, 2),
               "after_ok": after["failed"] == 0 and after["successful"] == after["calls"]}
        log(f"  overload {target.name:8s} {factor}x = {rate}/s: goodput {goodput:.0f}/s "
            f"({out['goodput_share']} of max {max_rate}), failed {r['failed']}, "
            f"503 sent {out['shed_503']}, retrans {r['retransmissions']}, "
            f"proxy drops {r['drops_proxy']}, recovery {out['recovery_s']} s, "
            f"then {after_rate}/s {'all ok' if out['after_ok'] else 'NOT ok'}")
        return out

    def proxy_counter(self, target, name):
        """A counter from sipedge's `stats` RPC (None for the other proxies)."""
        if not target.name.startswith("sipedge"):
            return None
        time.sleep(0.6)  # the workers publish their counters twice a second
        try:
            from sipedge.io.rpc import RpcError, rpc_call
            total = rpc_call(os.path.join(target.workdir, "ctl.sock"), "stats", None,
                             timeout=5)["total"]
        except (ImportError, OSError, KeyError, RpcError):
            return None
        return total.get(name, 0)

    # -- optional profile -----------------------------------------------------------------
    def profile(self, mode, target, uas, workers, transport, rate):
        pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
        if not pyspy:
            log("  --profile: py-spy not found (pip install py-spy into .venv)")
            return
        calls = calls_for(rate, self.args, mode)
        procs = []
        for pid in target.pids():
            out = os.path.join(self.workdir, f"pyspy-{mode.name}-w{workers}-{pid}")
            procs.append((subprocess.Popen(
                [pyspy, "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", out + ".txt",
                 "-d", str(int(calls / rate) + 3), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out + ".txt"))
        time.sleep(1.0)
        self.measure(mode, target, uas, workers, transport, rate, calls, "profiled", 0)
        for p, out in procs:
            try:
                p.wait(int(calls / rate) + 20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if os.path.exists(out):
                self.profiles.append(out)
                log(f"  profile: {out}")

    # -- one worker count -------------------------------------------------------------
    def run_workers(self, mode, workers):
        a = self.args
        callers = min(a.callers or (1 if workers == 1 else 4 * workers), 20)  # ports base+40..59
        transport = "u1" if callers == 1 else f"u1x{callers}"
        targets = []
        for name in a.targets:
            t = make_target(name, a)
            why = t.available()
            if why:
                log(f"skip {name}: {why}")
                continue
            if not t.supports(mode, workers, transport):
                if mode.config_template(name) is None and name not in mode.configs:
                    log(f"skip {name}: not part of mode {mode.name}")
                else:
                    log(f"skip {name} at {workers} worker(s) with SIPp -t {transport}")
                continue
            why = t.unsupported(mode)
            if why:
                log(f"skip {name} in mode {mode.name}: {why}")
                self.skipped.append(f"{mode.name}: {name} not measured: {why}")
                continue
            targets.append(t)
        if not targets:
            return [], []
        wdir = os.path.join(self.workdir, f"{mode.name}-w{workers}")
        os.makedirs(wdir, exist_ok=True)
        self.mode_dir = wdir
        if mode.subscribers:
            for i in range(callers):  # disjoint slices of the users, one file per caller
                write_users_csv(os.path.join(wdir, f"users-{i}.csv"), mode.subscribers,
                                part=i, parts=callers)
        rates = rates_for(mode, a)
        warm_rate = min(500, min(rates))

        def callees(name):
            if mode.uas_count == 0:
                return UasGroup([])
            if mode.uas_count == 1:
                return Uas(mode.uas_scenario, HOST, PORTS["uas-" + name], wdir)
            return UasGroup([Uas(mode.uas_scenario, HOST, PORTS[f"uas-{name}-{i}"], wdir)
                             for i in range(1, mode.uas_count + 1)])
        uases = {t.name: callees(t.name) for t in targets}
        info = {}
        results = []
        try:
            live = []
            for t in targets:
                uas = uases[t.name]
                try:
                    uas.start()
                    t.start(mode, os.path.join(wdir, t.name), workers)
                except (RuntimeError, ValueError) as e:  # TargetError, or SIPp would not start
                    log(f"FAILED to start {t.name}: {e}")
                    self.failures.append(str(e))
                    continue
                idle = self.idle_cpu(t)
                # first a trickle (a proxy that is still importing must not drop the
                # first datagrams), then a short run at a fixed-rate level
                self.measure(mode, t, uas, workers, transport, 20, 20, "warmup", 0)
                warm = self.measure(mode, t, uas, workers, transport, warm_rate, a.warm_calls, "warmup", 0)
                if warm["failed"]:
                    log(f"  warm-up of {t.name}: {warm['failed']} of {warm['calls']} calls failed "
                        f"(proxy socket drops {warm['drops_proxy']})")
                if warm["successful"] == 0:
                    msg = (f"{t.name}: warm-up calls all failed; proxy log {t.log}, "
                           f"SIPp logs {warm['uac_log']} {uas.log}")
                    log("FAILED " + msg)
                    t.stop()
                    continue
                info[t.name] = {"idle_cores": round(idle, 4), "processes": len(t.pids()),
                                "log": t.log}
                log(f"{t.name}: up, {len(t.pids())} processes, idle CPU {idle * 100:.2f}% of a core")
                live.append(t)
            for rep in range(1, a.reps + 1):
                order = live[rep % len(live):] + live[:rep % len(live)] if live else []
                for rate in rates:
                    for t in order:
                        if not t.alive():
                            continue
                        r = self.measure(mode, t, uases[t.name], workers, transport, rate,
                                         calls_for(rate, a, mode), "fixed", rep)
                        log(f"rep {rep} {mode.name} w{workers} {t.name:8s} @{rate:5d}/s: "
                            f"{r['us_per_call'] if r['us_per_call'] is not None else '-':>7} us/call, "
                            f"{r['successful']}/{r['calls']} ok, failed {r['failed']}, drops {r['udp_drops']}, "
                            f"proxy {r['proxy_cores']} cores, SIPp uac {r['uac_cores']} uas {r['uas_cores']}"
                            + (f", callee shares {r['callee_cpu_share']}" if r.get("callee_cpu_share") else ""))
            if a.profile:
                for t in live:
                    if t.name.startswith("sipedge") and t.alive():
                        self.profile(mode, t, uases[t.name], workers, transport, max(rates))
            if not a.no_max_rate:
                for rep in range(1, a.reps + 1):
                    order = live[rep % len(live):] + live[:rep % len(live)] if live else []
                    for t in order:
                        if t.alive():
                            log(f"rep {rep} {mode.name} w{workers} {t.name}: max rate search")
                            results.append(self.max_rate(mode, t, uases[t.name], workers, transport, rep))
                            if a.overload and results[-1]["max_rate"]:
                                for factor in a.overload:
                                    self.overloads.append(self.overload(
                                        mode, t, uases[t.name], workers, transport, rep,
                                        results[-1]["max_rate"], factor))
            for t in live:
                if not t.alive():
                    self.failures.append(f"{t.name} died during the run; see {t.log}")
        finally:
            for t in targets:
                t.stop()
            for uas in uases.values():
                uas.stop()
        return results, [dict(info=info, mode=mode.name, workers=workers, transport=transport)]


def make_target(name, a):
    nxt = (HOST, PORTS["uas-" + name])
    hops = [(HOST, PORTS[f"uas-{name}-{i}"]) for i in (1, 2, 3) if f"uas-{name}-{i}" in PORTS]
    if name == "kamailio":
        k = Kamailio(HOST, PORTS["kamailio"], nxt, hops)
        k.shm_mb = a.kamailio_shm
        return k
    if name == "relay":
        return Relay(HOST, PORTS["relay"], nxt)
    if name == "sipedge-c":  # the second build (--build pure,compiled)
        return Sipedge(HOST, PORTS[name], nxt, a.sipedge_bin, hops, name=name,
                       pythonpath=a.second_build_path)
    return Sipedge(HOST, PORTS["sipedge"], nxt, a.sipedge_bin, hops)


def limiter(run, workers):
    """What stopped a failing probe: the proxy, a SIPp process or the machine.

    Socket overflows (per-socket drops in /proc/net/udp) name the process that
    fell behind first; failing that, the CPU figures say who was saturated."""
    p, c, s = (run.get("proxy_cores") or 0), (run.get("uac_cores") or 0), (run.get("uas_cores") or 0)
    dp, dc, ds = run.get("drops_proxy", 0), run.get("drops_caller", 0), run.get("drops_callee", 0)
    if run.get("proxy_memory_errors"):
        return "proxy out of memory (its log; Kamailio: raise --kamailio-shm)"
    if dp and dp >= max(dc, ds):
        return "proxy fell behind (its socket overflowed)"
    if ds and ds >= dc:
        return "SIPp callee fell behind (its socket overflowed)"
    if dc:
        return "SIPp caller fell behind (its socket overflowed)"
    if p >= 0.85 * workers:
        return "proxy CPU"
    if c >= 0.85:
        return "SIPp caller CPU"
    if s >= 0.85:
        return "SIPp callee CPU"
    if p + c + s >= 0.85 * (os.cpu_count() or 2):
        return f"all {os.cpu_count()} cores busy"
    if run.get("failed") == 0 and run.get("achieved_rate", 0) < 0.9 * run.get("rate", 0):
        if (run.get("setup_ms") or 0) >= 100:
            # requests queue in the proxy's socket buffer: SIPp's open calls pile up
            # (answers take 100 ms or more), so SIPp cannot start new ones at the rate
            return "proxy answered too slowly (requests queued)"
        return "SIPp did not reach the rate"
    return "losses below saturation"


def busy_note(run):
    """Flag a limit found while other processes held half the machine or more."""
    other = run.get("other_cores") or 0
    if other >= 0.5 * (os.cpu_count() or 2):
        return f"; other load on the machine {other * 100:.0f}% of a core"
    return ""


SHORT_LIMIT = {"proxy fell behind (its socket overflowed)": "proxy",
               "SIPp callee fell behind (its socket overflowed)": "SIPp uas",
               "SIPp caller fell behind (its socket overflowed)": "SIPp uac",
               "proxy CPU": "proxy CPU", "SIPp caller CPU": "uac CPU", "SIPp callee CPU": "uas CPU",
               "SIPp did not reach the rate": "SIPp rate",
               "proxy answered too slowly (requests queued)": "proxy queue", "losses below saturation": "losses",
               "proxy out of memory (its log; Kamailio: raise --kamailio-shm)": "proxy mem",
               "search cap reached": "cap", "trial budget used up": "budget"}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs, maxes, meta):
    """Medians per (mode, workers, target)."""
    out = []
    for m in meta:
        mode, workers = m["mode"], m["workers"]
        for name, info in m["info"].items():
            sel = [r for r in runs if r["mode"] == mode and r["workers"] == workers
                   and r["target"] == name and not r.get("disturbed")]
            fixed = [r for r in sel if r["kind"] == "fixed"]
            row = {"mode": mode, "workers": workers, "transport": m["transport"], "target": name,
                   "idle_cores": info["idle_cores"], "processes": info["processes"], "rates": {}}
            for rate in sorted({r["rate"] for r in fixed}):
                rr = [r for r in fixed if r["rate"] == rate]
                row["rates"][rate] = {
                    "us_per_call": med([r["us_per_call"] for r in rr]),
                    "us_per_call_all": [r["us_per_call"] for r in rr],
                    "all_calls_ok": all(r["failed"] == 0 and r["successful"] == r["calls"] for r in rr),
                    "uac_cores": med([r["uac_cores"] for r in rr]),
                    "uas_cores": med([r["uas_cores"] for r in rr]),
                    "proxy_cores": med([r["proxy_cores"] for r in rr]),
                    "setup_ms": med([r["setup_ms"] for r in rr]),
                    "other_cores": med([r.get("other_cores") for r in rr]),
                }
            row["memory_errors"] = sum(r.get("proxy_memory_errors", 0) for r in fixed)
            top = max(sorted({r["rate"] for r in fixed}), default=None)
            mem_runs = [r for r in fixed if r["rate"] == top] or sel
            row["rss_mib"] = med([r["rss_kib"] / 1024 for r in mem_runs])
            row["pss_mib"] = med([r["pss_kib"] / 1024 for r in mem_runs])
            mx = [x for x in maxes if x["mode"] == mode and x["workers"] == workers and x["target"] == name]
            if mx:
                row["max_rate"] = med([x["max_rate"] for x in mx])
                row["max_rate_all"] = [x["max_rate"] for x in mx]
                limits = [x["limit"] for x in mx]
                row["limit"] = max(set(limits), key=limits.count)
                row["limit_all"] = limits
            out.append(row)
    return out


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def ratio(a, b):
    return None if (a is None or not b) else a / b


def print_table(summary, reps):
    groups = {}
    for row in summary:
        groups.setdefault((row["mode"], row["workers"], row["transport"]), {})[row["target"]] = row
    print()
    print("=" * 78)
    for (mode, workers, transport), rows in groups.items():
        names = [n for n in ALL_TARGETS if n in rows]
        ours = [n for n in names if n.startswith("sipedge")] if "kamailio" in rows else []
        cols = names + [f"{n}/kam" for n in ours]
        unit = MODES[mode].unit if mode in MODES else "call"
        per = "reg" if unit == "registration" else "call"
        print(f"mode {mode}, {workers} worker(s) = Kamailio children, SIPp callers {transport}; "
              f"medians of {reps} run(s)")
        if unit != "call":
            print(f"  (one SIPp 'call' is one {unit}; rates are {unit}s/s)")
        print(f"{'':34s}" + "".join(f"{c:>{14 if '/' in c else 12}s}" for c in cols))

        def line(label, getter, spec, lower_better=True):
            vals = [getter(rows[n]) for n in names]
            cells = [fmt(v, spec) for v in vals]
            for n in ours:
                cells.append(fmt(ratio(getter(rows[n]), getter(rows["kamailio"])), ".2f"))
            print(f"{label:34s}" + "".join(f"{c:>{14 if i >= len(names) else 12}s}"
                                           for i, c in enumerate(cells)))

        rates = sorted({rate for r in rows.values() for rate in r["rates"]})
        for rate in rates:
            def cpu(r, rate=rate):
                x = r["rates"].get(rate)
                return x and x["us_per_call"]
            line(f"CPU per {per} @{rate}/s (us)", cpu, ".1f")
        if any("max_rate" in r for r in rows.values()):
            line(f"max sustained rate ({per}s/s)", lambda r: r.get("max_rate"), ".0f")
            def short(limit):
                head = limit.split(";")[0]
                return SHORT_LIMIT.get(head, head[:10]) + ("*" if ";" in limit else "")
            print(f"{'  limited by':34s}" + "".join(f"{short(rows[n].get('limit', '-')):>12s}" for n in names))
        line("RSS, sum over processes (MiB)", lambda r: r["rss_mib"], ".1f")
        line("PSS, sum over processes (MiB)", lambda r: r["pss_mib"], ".1f")
        line("processes", lambda r: r["processes"], "d")
        line("idle CPU (% of a core)", lambda r: r["idle_cores"] * 100, ".2f")
        if rates:
            top = rates[-1]

            def get(key, scale=1.0, top=top):
                return lambda r: (r["rates"].get(top) or {}).get(key) and r["rates"][top][key] * scale
            line(f"proxy CPU @{top}/s (% of a core)", get("proxy_cores", 100), ".0f")
            line(f"SIPp caller CPU @{top}/s (%)", get("uac_cores", 100), ".0f")
            line(f"SIPp callee CPU @{top}/s (%)", get("uas_cores", 100), ".0f")
            line(f"other load @{top}/s (% of a core)", get("other_cores", 100), ".0f")
        oom = [n for n in names if rows[n].get("memory_errors")]
        if oom:
            print(f"  ! out of memory in fixed-rate runs (see the proxy log): {', '.join(oom)}")
        bad = [f"{n}@{rate}" for n in names for rate, x in rows[n]["rates"].items() if not x["all_calls_ok"]]
        if bad:
            print(f"  ! calls failed in fixed-rate runs: {', '.join(bad)} (CPU per call counts successful calls)")
        for n in names:
            lim = rows[n].get("limit", "")
            if lim and not lim.startswith("proxy"):
                print(f"  ! {n}: max rate limited by {lim.split(';')[0]}, not by the proxy: a lower bound")
        if any(";" in rows[n].get("limit", "") for n in names):
            print("  * limit found while other processes used half the machine or more: noisy")
        print("-" * 78)
    print(REFERENCE)


# issue 15's targets, as (mode, what, rate or None for the maximum, bound, lower is better)
ISSUE15 = (("stateless", "CPU per call", 500, 2.0, True),
           ("stateless", "CPU per call", 2000, 2.0, True),
           ("stateless", "max calls/s", None, 0.5, False),
           ("stateful", "CPU per call", 500, 2.5, True),
           ("stateful", "CPU per call", 2000, None, True),
           ("stateful", "max calls/s", None, None, False),
           ("registration", "CPU per reg", 500, 3.0, True),
           ("dispatcher-rr", "CPU per call", 500, 2.5, True))


def _issue_table(by, names, ours):
    print()
    print("issue 15 summary, 1 worker = 1 Kamailio child, medians "
          "(sipedge = pure Python, sipedge-c = compiled build)")
    print(f"{'':36s}" + "".join(f"{n:>11s}" for n in names)
          + "".join(f"{n + '/kam':>15s}" for n in ours) + f"{'target':>10s}")
    for mode, what, rate, bound, lower in ISSUE15:
        rows = {n: by.get((mode, 1, n)) for n in names}
        if not rows["kamailio"] or not any(rows[n] for n in ours):
            continue

        def val(r):
            if not r:
                return None
            return r.get("max_rate") if rate is None else (r["rates"].get(rate) or {}).get("us_per_call")
        label = f"{mode} {what}" + (f" @{rate}/s" if rate else "")
        cells = [fmt(val(rows[n]), ".0f" if rate is None else ".1f") for n in names]
        ratios = [ratio(val(rows[n]), val(rows["kamailio"])) for n in ours]
        cells += [fmt(x, ".2f") + ("" if x is None or bound is None else
                                   (" ok" if (x <= bound if lower else x >= bound) else " NO"))
                  for x in ratios]
        target = "" if bound is None else ("<= " if lower else ">= ") + f"{bound}"
        print(f"{label:36s}" + "".join(f"{c:>11s}" for c in cells[:len(names)])
              + "".join(f"{c:>15s}" for c in cells[len(names):]) + f"{target:>10s}")
    mem = [(m, {n: by.get((m, 1, n)) for n in names}) for m in ("stateless", "stateful")]
    for m, rows in mem:
        if rows["kamailio"] and any(rows[n] for n in ours):
            cells = [fmt(rows[n] and rows[n]["rss_mib"], ".1f") + "/"
                     + fmt(rows[n] and rows[n]["pss_mib"], ".1f") for n in names]
            print(f"{m + ' RSS / PSS (MiB)':36s}" + "".join(f"{c:>11s}" for c in cells))


def print_issue_summary(summary):
    """The table issue 15 asks to quote: 1 worker, every sipedge build against Kamailio in
    the same run, and the scaling from 1 to 2 workers (calls/s carried with 0 failures)."""
    by = {(r["mode"], r["workers"], r["target"]): r for r in summary}
    ours = [t for t in ("sipedge", "sipedge-c") if any(k[2] == t for k in by)]
    names = ["kamailio"] + ours
    if ours and any(k[2] == "kamailio" for k in by):
        _issue_table(by, names, ours)
    scale = [(m, n, by.get((m, 1, n)), by.get((m, 2, n)))
             for m in dict.fromkeys(k[0] for k in by) for n in ALL_TARGETS]
    scale = [x for x in scale if x[2] and x[3] and x[2].get("max_rate") is not None]
    if scale:
        print()
        print("scaling: calls/s carried with 0 failed calls (maximum rate search), 1 vs 2 workers "
              "(issue 15: >= 1.7x)")
        print(f"{'mode':16s}{'proxy':11s}{'1 worker':>10s}{'2 workers':>11s}{'ratio':>9s}"
              f"{'limited by (1 / 2)':>28s}")
        for m, n, one, two in scale:
            x = ratio(two.get("max_rate"), one.get("max_rate"))
            ok = "" if x is None or n == "kamailio" else (" ok" if x >= 1.7 else " NO")
            lim = f"{SHORT_LIMIT.get(one.get('limit', '').split(';')[0], '-')} / " \
                  f"{SHORT_LIMIT.get(two.get('limit', '').split(';')[0], '-')}"
            print(f"{m:16s}{n:11s}{fmt(one.get('max_rate'), '.0f'):>10s}"
                  f"{fmt(two.get('max_rate'), '.0f'):>11s}{fmt(x, '.2f') + ok:>9s}{lim:>28s}")
        print("  a maximum limited by a SIPp process or the machine (not 'proxy ...') is a lower "
              "bound, and so is its ratio")
    print("-" * 78)


def instruction_counts(args, workdir):
    """--instructions: every proxy under callgrind, 1 worker, a low fixed rate; instructions
    per call and per forwarded message, net of the idle rate (see benchlib/icount.py)."""
    rows = []
    rate, calls = args.icount_rate, args.icount_calls
    for mode in args.modes:
        for name in args.targets:
            t = make_target(name, args)
            why = t.available() or icount.available()
            if not why and not t.supports(mode, 1, "u1"):
                why = f"not part of mode {mode.name}"
            why = why or t.unsupported(mode)
            if why:
                log(f"skip {name}: {why}")
                continue
            tdir = os.path.join(workdir, f"icount-{mode.name}-{name}")
            os.makedirs(tdir, exist_ok=True)
            uas = (Uas(mode.uas_scenario, HOST, PORTS["uas-" + name], tdir) if mode.uas_count == 1
                   else UasGroup([Uas(mode.uas_scenario, HOST, PORTS[f"uas-{name}-{i}"], tdir)
                                  for i in range(1, mode.uas_count + 1)]))
            extra = uac_extra(mode, tdir)
            if mode.subscribers:
                write_users_csv(os.path.join(tdir, "users-0.csv"), mode.subscribers, part=0, parts=1)
            t.prefix = icount.wrapper(tdir)
            try:
                uas.start()
                t0 = time.monotonic()
                t.start(mode, tdir, 1, timeout=600)  # interpreters start ~50x slower
                log(f"{name}: up under callgrind in {time.monotonic() - t0:.0f} s")
                run_uac(mode.uac_scenario, HOST, t.port, 5, 20, tdir, f"{name}-warm",
                        local_port=PORTS["uac"], recv_timeout_ms=30000, extra=extra)
                icount.dump(t.pids(), tdir)  # thrown away: zeroes the counters
                window = calls / rate
                t0 = time.monotonic()
                time.sleep(window)
                idle_ir, _ = icount.dump(t.pids(), tdir)
                idle_s = time.monotonic() - t0
                t0 = time.monotonic()
                res = run_uac(mode.uac_scenario, HOST, t.port, rate, calls, tdir, f"{name}-count",
                              local_port=PORTS["uac"], recv_timeout_ms=30000, extra=extra)
                load_ir, files = icount.dump(t.pids(), tdir)
                load_s = time.monotonic() - t0
            except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
                log(f"FAILED {name} under callgrind: {e}")
                continue
            finally:
                t.stop(timeout=60)
                uas.stop()
            per = icount.per_call(load_ir, load_s, idle_ir, idle_s, res.successful)
            rows.append({"mode": mode.name, "target": name, "calls": calls,
                         "successful": res.successful, "failed": res.failed,
                         "processes": files, "load_ir": load_ir, "load_s": round(load_s, 2),
                         "idle_ir": idle_ir, "idle_s": round(idle_s, 2),
                         "ir_per_call": per and round(per),
                         "ir_per_msg": per and round(per / mode.messages_per_call)})
            log(f"{mode.name} {name}: {rows[-1]['ir_per_call']} instructions per call "
                f"({res.successful}/{calls} calls ok, {files} process dump(s))")
    print()
    print("=" * 78)
    print("instructions (callgrind Ir), 1 worker = 1 Kamailio child, net of idle")
    print(f"{'mode':14s}{'proxy':10s}{'per call':>14s}{'per message':>14s}{'x kamailio':>12s}{'calls ok':>10s}")
    for r in rows:
        kam = next((k for k in rows if k["mode"] == r["mode"] and k["target"] == "kamailio"), None)
        x = ratio(r["ir_per_call"], kam and kam["ir_per_call"])
        print(f"{r['mode']:14s}{r['target']:10s}{fmt(r['ir_per_call'], ',d'):>14s}"
              f"{fmt(r['ir_per_msg'], ',d'):>14s}{fmt(x, '.2f'):>12s}"
              f"{r['successful']:>6d}/{r['calls']}")
    return rows


def rss_growth(args, workdir):
    """--rss-growth: benchlib/growth.py for every proxy of the stateful mode, one at a time."""
    mode = MODES["stateful"]
    results = []
    for name in args.targets:
        t = make_target(name, args)
        why = t.available() or (None if t.supports(mode, 1, "u1") else "not part of mode stateful")
        if why:
            log(f"skip {name}: {why}")
            continue
        tdir = os.path.join(workdir, f"growth-{name}")
        os.makedirs(tdir, exist_ok=True)
        uas = Uas(mode.uas_scenario, HOST, PORTS["uas-" + name], tdir)
        log(f"{name}: RSS growth over {args.growth_calls} stateful calls at {args.growth_rate}/s")
        try:
            uas.start()
            t.start(mode, tdir, 1)
            results.append(growth.measure(t, uas, mode, mode.uac_scenario, HOST, tdir,
                                          PORTS["uac"], args.growth_calls, args.growth_rate,
                                          args.growth_settle, log))
        except (RuntimeError, ValueError, OSError) as e:
            log(f"FAILED {name}: {e}")
        finally:
            t.stop()
            uas.stop()
    growth.print_report(results)
    return results


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def build_path(build):
    """PYTHONPATH for a --build: this tree's app/, the compiled tree (built once per source
    state under out/compiled/, bench/README.md "Compiled build") or a given tree."""
    if build == "pure":
        return os.path.join(REPO, "app")
    if build != "compiled":
        if not os.path.isdir(os.path.join(build, "sipedge")):
            raise SystemExit(f"--build {build}: not pure, compiled or a directory with sipedge/")
        return os.path.abspath(build)
    tool = os.path.join(REPO, "tools", "compile", "build.py")
    res = subprocess.run([sys.executable, tool, "--cached"], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"the compiled build failed: {(res.stderr or res.stdout).strip()[-300:]}")
    return res.stdout.split()[-1]


def build_summary(path):
    return subprocess.run([sys.executable, "-c", "import sipedge.compiled as c; print(c.summary())"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}
                          ).stdout.strip()


def use_builds(args):
    """--build: the first build is inherited by every sipedge process (PYTHONPATH); a second
    one (pure,compiled) runs as the proxy sipedge-c with its own PYTHONPATH."""
    os.environ["PYTHONPATH"] = build_path(args.builds[0])
    log(f"sipedge build: {args.builds[0]}: {build_summary(os.environ['PYTHONPATH'])} "
        f"(PYTHONPATH={os.environ['PYTHONPATH']})")
    args.second_build_path = None
    args.build_notes = []
    if len(args.builds) == 2:
        try:
            args.second_build_path = build_path(args.builds[1])
            log(f"sipedge-c build: {args.builds[1]}: {build_summary(args.second_build_path)} "
                f"(PYTHONPATH={args.second_build_path})")
        except RuntimeError as e:
            args.build_notes.append(f"sipedge-c ({args.builds[1]}) not measured: {e}")
            log("skip sipedge-c: " + args.build_notes[-1])
    if args.second_build_path is None:
        if args.only and "sipedge-c" in args.only:
            raise SystemExit("--only sipedge-c needs a second build (--build pure,compiled)")
        args.targets = [t for t in args.targets if t != "sipedge-c"]


def main(argv=None):
    raw = sys.argv[1:] if argv is None else argv
    if any(m == "diameter" for i, a in enumerate(raw) if a == "--mode" and i + 1 < len(raw)
           for m in raw[i + 1].split(",")):
        from benchlib import diameter  # the Diameter relay benchmark (bench/README.md)

        return diameter.main(raw)
    args = parse_args(raw)
    use_builds(args)
    if args.boot:
        from benchlib import boot

        return boot.run(args.boot, args.boot_arch, json_path=args.json)
    signal.signal(signal.SIGTERM, _interrupt)  # so the proxies and SIPp are stopped
    if not sipp_binary():
        print("sipp not found: install the Debian package sip-tester (make test-deps)", file=sys.stderr)
        return 2
    for name, port in PORTS.items():
        if proc.udp_sockets_on(port) and (name == "uac" or name in args.targets
                                          or name.split("-")[1] in args.targets):
            print(f"UDP port 127.0.0.1:{port} ({name}) is in use; stop whatever holds it", file=sys.stderr)
            return 2
    workdir = tempfile.mkdtemp(prefix="sipedge-bench-")
    log(f"work dir (logs, configs, SIPp statistics): {workdir}")
    if args.rss_growth:
        results = rss_growth(args, workdir)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rss_growth": results}, f, indent=1, default=str)
        ok = bool(results) and all(r["failed"] == 0 and len(r["checkpoints"]) >= 2 for r in results)
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
        return 0 if ok else 1
    if args.instructions:
        rows = instruction_counts(args, workdir)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"instructions": rows}, f, indent=1)
        ok = bool(rows) and all(r["failed"] == 0 for r in rows)
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
        return 0 if ok else 1
    bench = Bench(args, workdir)
    maxes, meta = [], []
    t0 = time.monotonic()
    try:
        for mode in args.modes:
            for workers in args.workers:
                log(f"== mode {mode.name}, {workers} worker(s)")
                mx, mt = bench.run_workers(mode, workers)
                maxes += mx
                meta += mt
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    summary = summarize(bench.runs, maxes, meta)
    print_table(summary, args.reps)
    print_issue_summary(summary)
    for note in args.build_notes + bench.skipped:
        print("  ! " + note)
    if bench.overloads:
        print("\noverload (offered a multiple of the measured maximum; goodput = completed "
              "calls/s)")
        for o in bench.overloads:
            print(f"  {o['mode']} w{o['workers']} {o['target']:8s} {o['factor']}x "
                  f"({o['offered_rate']}/s): goodput {o['goodput_cps']}/s = "
                  f"{o['goodput_share']} of max {o['max_rate']}, 503 sent {o['shed_503']}, "
                  f"failed {o['failed']}, retrans {o['retransmissions']}, "
                  f"recovery {o['recovery_s']} s, after: {'ok' if o['after_ok'] else 'NOT ok'}")
    log(f"total time {time.monotonic() - t0:.0f} s")
    if args.json:
        doc = {"meta": {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "host": platform.node(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "args": {k: v for k, v in vars(args).items() if k != "modes"},
                        "modes": [m.name for m in args.modes], "workdir": workdir,
                        "groups": meta, "profiles": bench.profiles, "skipped": bench.skipped},
               "summary": summary, "max_rate": maxes, "runs": bench.runs,
               "overload": bench.overloads,
               "failures": bench.failures}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        log(f"JSON written to {args.json}")
    if bench.failures:
        print("\nfailures (logs kept in the work dir):", file=sys.stderr)
        for f in bench.failures:
            print("  " + f, file=sys.stderr)
        return 1
    if args.keep or args.profile:
        log(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
