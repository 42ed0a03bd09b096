"""`make bench BENCH_ARGS="--mode diameter"`: the DRA against freeDiameter as a relay.

    load.cli (diameter_load.py) ──► relay under test ──► srv1.srv (freeDiameter + fdpeer)
                                    sipedge DRA  (python -m sipedge.modules.diameter)
                                    fdrelay      (freeDiameterd, realm routing)

The servers are freeDiameterd with the test-only extension tests/integration/fdpeer/fdpeer.c
(compiled here against libfreediameter-dev, the same source the tests build) in server mode:
a Cx application that answers every UAR with 2001, so both relays carry real request/answer
pairs. For each relay, interleaved and repeated: relay CPU time per request (utime+stime from
/proc) at fixed rates, the closed-loop throughput (window of outstanding requests), latency
percentiles and RSS. Failover latency: a frozen server SIGKILLed with a request pending, to the
answer from the alternate. The soak (`--soak-s N`; `make soak-diameter`: 600 s) keeps 200
requests/s going through the sipedge DRA for the whole time while its two servers are killed,
frozen-then-killed or stopped (DPR) and restarted at random, and samples the DRA's RSS. All
traffic is on 127.0.0.1; every run is bounded in requests and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FD_BIN = "/usr/bin/freeDiameterd"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[diameter-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pinned(cpus: str) -> list[str]:
    """The command prefix that keeps a process on `cpus` (taskset), or nothing."""
    return ["taskset", "-c", cpus] if cpus else []


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


sys.path.insert(0, str(REPO / "tests" / "integration"))
from fdpeer_build import FD_HEADERS, build_fdpeer  # noqa: E402  the tests' extension


class Fd:
    def __init__(self, work: Path, identity: str, realm: str, port: int, peers,
                 server_ext: Path | None = None, out: str = "/dev/null") -> None:
        """`server_ext`: fdpeer.fdx, loaded in server mode (a Cx application answering 2001;
        each request is written to `out`); NoRelay then, like a real HSS."""
        key, cert = work / f"{identity}.key", work / f"{identity}.pem"
        if not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
                            "-out", str(cert), "-days", "2", "-subj", f"/CN={identity}"],
                           check=True, capture_output=True, timeout=60)
        lines = [f'Identity = "{identity}";', f'Realm = "{realm}";', f"Port = {port};",
                 f"SecPort = {free_port()};", "No_SCTP;", "No_IPv6;", 'ListenOn = "127.0.0.1";',
                 "TcTimer = 1;", "TwTimer = 30;", f'TLS_Cred = "{cert}", "{key}";',
                 f'TLS_CA = "{cert}";']
        if server_ext:
            lines += ["NoRelay;", f'LoadExtension = "{server_ext}" : "server {out}";']
        for host, pport in peers:
            # Always an address: without ConnectTo freeDiameter resolves the peer's name in
            # DNS (a query off the box). Accept-only peers point at 127.0.0.1:9, where nothing
            # listens: its attempts are refused locally and the peer's own connection is taken.
            lines.append(f'ConnectPeer = "{host}" {{ ConnectTo = "127.0.0.1"; '
                         f'Port = {pport or 9}; No_TLS; }};')
        self.conf = work / f"{identity}.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.logfile = work / f"{identity}.log"
        self.port = port
        self.proc = None
        self.cpus = ""  # taskset CPU list, or "" (anywhere)

    def start(self) -> Fd:
        self.proc = subprocess.Popen(pinned(self.cpus) + [FD_BIN, "-c", str(self.conf)],
                                     stdout=open(self.logfile, "ab"), stderr=subprocess.STDOUT)
        wait_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class Dra:
    def __init__(self, work: Path, port: int, servers, tw_s: float = 30.0,
                 request_timeout_s: float = 5.0, reopen_dwa: int = 3) -> None:
        # servers: (identity, port) or (identity, port, route metric)
        peers = "\n".join(f'[[diameter.peer]]\nhost = "{h}"\naddress = "127.0.0.1"\nport = {p}\n'
                          f'[[diameter.route]]\nrealm = "srv"\npeer = "{h}"\n'
                          f'metric = {m[0] if m else 100}\n'
                          for h, p, *m in servers)
        self.cfg = work / "dra.toml"
        self.cfg.write_text(f"""[diameter]
identity = "dra.bench"
realm = "mid"
relay = true
tc_s = 1
tw_s = {tw_s}
reopen_dwa = {reopen_dwa}
request_timeout_s = {request_timeout_s}
[[diameter.listen]]
address = "127.0.0.1"
port = {port}
[[diameter.peer]]
host = "load.cli"
{peers}""")
        self.port = port
        self.work = work
        self.ctl = work / "dra.ctl"
        self.proc = None
        self.cpus = ""

    def start(self) -> Dra:
        env = dict(os.environ, PYTHONPATH=str(REPO / "app"))
        self.proc = subprocess.Popen(pinned(self.cpus) + [sys.executable, "-m",
                                      "sipedge.modules.diameter",
                                      str(self.cfg), "--log-level", "warning", "--ctl",
                                      str(self.ctl)], env=env,
                                     stdout=open(self.work / "dra.log", "ab"),
                                     stderr=subprocess.STDOUT)
        wait_port(self.port)
        return self

    def rpc(self, method: str):
        if str(REPO / "app") not in sys.path:
            sys.path.insert(0, str(REPO / "app"))
        from sipedge.io.rpc import rpc_call
        return rpc_call(self.ctl, method)

    def peers(self) -> dict:
        return {p["host"]: p for p in self.rpc("diameter.peers")["peers"]}

    def wait_usable(self, hosts, timeout: float = 60.0) -> bool:
        """Until every peer in `hosts` is usable (OKAY: after a failure, reopen_dwa DWAs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ps = self.peers()
                if all(ps.get(h, {}).get("usable") for h in hosts):
                    return True
            except Exception:  # the control socket not there yet
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def load_args(port: int, **kw) -> list[str]:
    args = [sys.executable, str(HERE / "diameter_load.py"), "--port", str(port)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def load_result(stdout: str, stderr: str) -> dict:
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": stderr[-2000:]}


def load(port: int, **kw) -> dict:
    out = subprocess.run(load_args(port, **kw), check=False, capture_output=True, text=True,
                         timeout=kw.get("duration", 10) + kw.get("drain", 5) + 30)
    return load_result(out.stdout, out.stderr)


def measure(pid: int, port: int, **kw) -> dict:
    c0 = cpu_s(pid)
    r = load(port, **kw)
    c1 = cpu_s(pid)
    if r.get("answered"):
        r["cpu_ms_per_req"] = round((c1 - c0) * 1000 / r["answered"], 4)
    r["cpu_s"] = round(c1 - c0, 2)
    r["rss_kb"] = rss_kb(pid)
    return r


def parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/run.py --mode diameter")
    ap.add_argument("--mode")
    ap.add_argument("--quick", action="store_true", help="one short repetition (smoke check)")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--rates", default="", help="fixed request rates, e.g. 500,1000")
    ap.add_argument("--duration-s", type=float, help="seconds per measurement")
    ap.add_argument("--window", type=int, default=200, help="outstanding requests (max run)")
    ap.add_argument("--soak-s", type=float,
                    help="soak the sipedge DRA this long with random server restarts "
                    "(default 60 s after the comparison, 10 s with --quick; 0: none)")
    ap.add_argument("--soak-rate", type=float, default=200.0, help="requests/s in the soak")
    ap.add_argument("--soak-only", action="store_true",
                    help="only the soak (make soak-diameter), no relay comparison")
    ap.add_argument("--failover", type=int, metavar="N",
                    help="failover latency rounds (default 5, 2 with --quick; 0: none)")
    ap.add_argument("--relay-cpus", default="", metavar="LIST",
                    help="run each relay under test on these CPUs only (taskset -c LIST, "
                    "e.g. 1: one core each, like for like with the single-threaded DRA)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", action="store_true")
    a, _ = ap.parse_known_args(argv)
    a.reps = a.reps or (1 if a.quick else 3)
    if a.failover is None:
        a.failover = 2 if a.quick else 5
    if a.soak_s is None:
        a.soak_s = 600.0 if a.soak_only else (10.0 if a.quick else 60.0)
    a.duration_s = a.duration_s or (2.0 if a.quick else 8.0)
    a.rates = [int(x) for x in a.rates.split(",") if x] or ([300] if a.quick else [500, 1000])
    return a


SOAK_TIMEOUT_S = 5.0  # the DRA's request timeout in the soak: no answer after it -> 3002


def soak(work: Path, ext: Path, seconds: float, rate: float) -> dict:
    """200 requests/s through the DRA for `seconds`, one load process for the whole time,
    while the two servers are disturbed at random: SIGKILL, SIGSTOP for 1 s then SIGKILL
    (requests pending on a dead peer), SIGTERM (freeDiameter's DPR), or both at once (no
    route: 3002 at once); each restarted after 0.2-2 s. Before each disturbance both servers
    are usable again (the DRA's REOPEN needs 3 DWAs, Tw 6 s) and then 1-4 s pass. The DRA's
    RSS is sampled every 10 s from 10 s on. Every request must get an answer (2001 or an
    error) within the DRA's request timeout; the DRA process must stay the same one."""
    p1, p2, dport = free_port(), free_port(), free_port()
    servers = {h: Fd(work, h, "srv", p, [("dra.bench", None)], server_ext=ext).start()
               for h, p in (("soak1.srv", p1), ("soak2.srv", p2))}
    dra = Dra(work, dport, [("soak1.srv", p1), ("soak2.srv", p2)], tw_s=6,
              request_timeout_s=SOAK_TIMEOUT_S).start()
    dra_pid = dra.proc.pid
    dra.wait_usable(servers)
    rng = random.Random(11)
    actions: dict[str, int] = {}
    samples: list[tuple[int, int]] = []
    n_requests = int(rate * seconds)
    drain = SOAK_TIMEOUT_S + 5
    loadp = subprocess.Popen(load_args(dport, rate=rate, duration=seconds, requests=n_requests,
                                       drain=drain, settle=0.5, slow_ms=SOAK_TIMEOUT_S * 1000
                                       + 500),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    next_sample = t0 + 10  # under load from the first sample on
    reopen_waits: list[float] = []

    def sample() -> None:
        nonlocal next_sample
        if time.monotonic() >= next_sample and dra.proc.poll() is None:
            samples.append((round(time.monotonic() - t0), rss_kb(dra.proc.pid)))
            next_sample += 10

    def pause(secs: float) -> None:
        end = time.monotonic() + secs
        while time.monotonic() < end:
            sample()
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    try:
        while time.monotonic() - t0 < seconds - 3 and dra.proc.poll() is None:
            w0 = time.monotonic()
            while not dra.wait_usable(servers, timeout=0.5):
                sample()
                if time.monotonic() - w0 > 60 or time.monotonic() - t0 > seconds - 3:
                    break
            reopen_waits.append(time.monotonic() - w0)
            pause(rng.uniform(1.0, 4.0))
            if time.monotonic() - t0 > seconds - 3:
                break
            kind = rng.choices(["kill", "freeze-kill", "term", "kill-both"], [4, 3, 2, 1])[0]
            victims = sorted(servers) if kind == "kill-both" else [rng.choice(sorted(servers))]
            for name in victims:
                fd = servers[name]
                if kind == "freeze-kill":
                    fd.proc.send_signal(signal.SIGSTOP)
                    pause(1.0)
                    fd.kill()
                elif kind == "term":
                    fd.stop()
                else:
                    fd.kill()
            pause(rng.uniform(0.2, 2.0))
            for name in victims:
                servers[name].start()
            actions[kind] = actions.get(kind, 0) + 1
        while loadp.poll() is None and time.monotonic() - t0 < seconds + drain + 30:
            pause(1.0)
        stdout, stderr = loadp.communicate(timeout=30)
        result = load_result(stdout, stderr)
        alive = dra.proc.poll() is None and dra.proc.pid == dra_pid
        try:
            stats = dra.rpc("diameter.stats")
        except Exception as exc:  # noqa: BLE001 - reported
            stats = {"error": str(exc)}
    finally:
        if loadp.poll() is None:
            loadp.kill()
        dra.stop()
        for s in servers.values():
            s.stop()
    log_text = (work / "dra.log").read_text(errors="replace")
    return {"seconds": round(time.monotonic() - t0), "rate": rate, "actions": actions,
            "restarts": sum(actions.values()) + actions.get("kill-both", 0),
            "load": result, "dra_alive": alive, "dra_tracebacks": log_text.count("Traceback"),
            "dra_pending_end": stats.get("pending"), "dra_result_codes":
            stats.get("result_codes"), "reopen_wait_s_max": round(max(reopen_waits,
                                                                         default=0), 1),
            "rss_kb": samples}


def failover(work: Path, ext: Path, n: int) -> dict:
    """Failover latency: fo1.srv (route metric 1) is frozen (SIGSTOP) with a request pending
    on it (checked with diameter.peers), then SIGKILLed; the time from the kill to the client's
    answer, which must come from fo2.srv (metric 50) with 2001, fo2 having got the request
    with the T flag (its fdpeer output). `n` rounds; before each, fo1 is usable again."""
    import asyncio

    sys.path.insert(0, str(REPO / "app"))
    from sipedge.diameter import dictionary as dd
    from sipedge.diameter.base import Identity, result_code
    from sipedge.diameter.peer import PeerSettings
    from sipedge.modules.diameter.aio import DiameterService
    from sipedge.modules.diameter.core import Node, NodeSettings, PeerConfig
    from sipedge.modules.diameter.routing import Route, RoutingTable

    p1, p2, dport = free_port(), free_port(), free_port()
    out2 = work / "fo2.srv.out"
    servers = {h: Fd(work, h, "srv", p, [("dra.bench", None)], server_ext=ext, out=str(o))
               .start() for h, p, o in (("fo1.srv", p1, "/dev/null"), ("fo2.srv", p2, out2))}
    # reopen_dwa 1: a restarted fo1 is used again after one DWA, not three (saves ~12 s a
    # round; the latency measured is from the kill on, the same either way)
    dra = Dra(work, dport, [("fo1.srv", p1, 1), ("fo2.srv", p2, 50)], tw_s=6,
              request_timeout_s=20, reopen_dwa=1).start()
    latencies: list[float] = []
    origins: list[str] = []
    codes: list[int] = []
    t_flags: list[bool] = []
    skipped: list[str] = []  # rounds whose request was not pending on fo1: who answered

    async def rounds() -> None:
        cli = Node(Identity("load.cli", "cli", ("127.0.0.1",), auth_apps=(16777216,)),
                   [PeerConfig("dra.bench", "127.0.0.1", dport,
                               settings=PeerSettings(connect=True, tc_s=1.0, tw_s=30.0))],
                   RoutingTable([Route("*", "dra.bench")]),
                   NodeSettings(relay=False, request_timeout_s=20.0))
        svc = DiameterService(cli, [("127.0.0.1", 0, "tcp")])
        await svc.start()
        loop = asyncio.get_running_loop()
        try:
            for i in range(n):
                deadline = time.monotonic() + 20
                while not cli.peers["dra.bench"].usable and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                # fo1 reopened (after a failure: 3 DWAs, Tw 6 s) before the round
                await loop.run_in_executor(None, dra.wait_usable, ["fo1.srv", "fo2.srv"], 60.0)
                fo1 = servers["fo1.srv"].proc
                fo1.send_signal(signal.SIGSTOP)
                for _ in range(40):  # until the kernel shows it stopped ("T")
                    if proc_state(fo1.pid) == "T":
                        break
                    await asyncio.sleep(0.05)
                user = f"fo{i}@ims.test"
                avps = [dd.avp("Session-Id", f"load.cli;fo;{i}"),
                        dd.avp("Auth-Session-State", 1), dd.avp("User-Name", user)]
                task = asyncio.ensure_future(svc.request(16777216, 300, avps, dest_realm="srv",
                                                         timeout=20.0))
                await asyncio.sleep(0.5)  # the request is held by the frozen fo1
                peers = await loop.run_in_executor(None, dra.peers)
                held = peers["fo1.srv"]["pending"] == 1
                t_kill = time.monotonic()
                servers["fo1.srv"].kill()
                ans = await task
                if not held:  # not held by fo1: no failover to measure
                    skipped.append(str(dd.get(ans.avps, "Origin-Host")))
                    servers["fo1.srv"].start()
                    continue
                latencies.append((time.monotonic() - t_kill) * 1000)
                origins.append(str(dd.get(ans.avps, "Origin-Host")))
                codes.append(result_code(ans) or 0)
                got = [line for line in out2.read_text().splitlines()
                       if line.split()[1:2] == [user]] if out2.exists() else []
                t_flags.append(bool(got) and int(got[-1].rsplit("flags=", 1)[1], 16) & 0x10 != 0)
                servers["fo1.srv"].start()
        finally:
            await svc.stop(timeout=2)

    try:
        asyncio.run(rounds())
    finally:
        dra.stop()
        for s in servers.values():
            s.stop()
    return {"rounds": n, "failover_ms": [round(x, 1) for x in latencies], "origins": origins,
            "result_codes": codes, "t_flag": t_flags, "not_held_by_fo1_answered_by": skipped}


def compare(work: Path, ext: Path, a: argparse.Namespace) -> tuple[dict, list[dict]]:
    """The sipedge DRA and a freeDiameter relay under the same load, interleaved."""
    sport, dport, fport = free_port(), free_port(), free_port()
    server = Fd(work, "srv1.srv", "srv", sport, [("dra.bench", None), ("fdrelay.bench", None)],
                server_ext=ext)
    server.start()
    dra = Dra(work, dport, [("srv1.srv", sport)])
    dra.cpus = a.relay_cpus
    dra.start()
    fdr = Fd(work, "fdrelay.bench", "mid", fport, [("load.cli", None), ("srv1.srv", sport)])
    fdr.cpus = a.relay_cpus
    fdr.start()
    dra.wait_usable(["srv1.srv"], 20)
    time.sleep(2)  # fdrelay's connection to srv1 (Tc 1 s)
    targets = {"sipedge": (dra.proc.pid, dport), "freediameter": (fdr.proc.pid, fport)}
    runs: list[dict] = []
    try:
        for rep in range(a.reps):
            for rate in a.rates:
                for name, (pid, port) in targets.items():
                    r = measure(pid, port, rate=rate, duration=a.duration_s,
                                requests=int(rate * a.duration_s), drain=3)
                    r.update(target=name, kind=f"rate {rate}/s", rep=rep)
                    runs.append(r)
                    log(json.dumps(r))
            for name, (pid, port) in targets.items():
                r = measure(pid, port, window=a.window, duration=a.duration_s,
                            requests=10_000_000, drain=3)
                r.update(target=name, kind=f"max (window {a.window})", rep=rep)
                runs.append(r)
                log(json.dumps(r))
    finally:
        dra.stop()
        fdr.stop()
        server.stop()
    return targets, runs


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(a, targets, runs, fo_result, soak_result, loads) -> None:
    if runs:
        print("\nDiameter relay: sipedge DRA vs freeDiameter 1.2.1, same load, same run "
              f"(medians over {a.reps} repetition(s); loopback, 1 load process; server = "
              "freeDiameter + fdpeer answering 2001; relays on CPUs "
              f"{a.relay_cpus or 'any'})")
        print(f"{'measurement':22} {'relay':13} {'answered/s':>10} {'cpu ms/req':>10} "
              f"{'2001 %':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7}")
        for kind in dict.fromkeys(r["kind"] for r in runs):
            for name in targets:
                rs = [r for r in runs
                      if r["kind"] == kind and r["target"] == name and "rate" in r]
                if not rs:
                    print(f"{kind:22} {name:13} (no result: "
                          f"{[r.get('error', '')[-200:] for r in runs][:1]})")
                    continue

                def med(key, rs=rs):
                    vals = [r[key] for r in rs if r.get(key) is not None]
                    return statistics.median(vals) if vals else float("nan")
                ok = statistics.median(r.get("codes", {}).get("2001", 0) * 100 /
                                       max(1, r.get("answered", 0)) for r in rs)
                print(f"{kind:22} {name:13} {med('rate'):10.0f} "
                      f"{med('cpu_ms_per_req'):10.3f} {ok:7.1f} {med('p50_ms'):7.2f} "
                      f"{med('p99_ms'):7.2f} {med('rss_kb') / 1024:7.1f}")
    if fo_result and fo_result["failover_ms"]:
        ms = fo_result["failover_ms"]
        print(f"\nfailover (fo1 frozen with the request, SIGKILLed -> answer via fo2, T flag): "
              f"{len(ms)} rounds, median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms; "
              f"answered by {sorted(set(fo_result['origins']))}, result codes "
              f"{sorted(set(fo_result['result_codes']))}, T flag at fo2 "
              f"{sum(fo_result['t_flag'])}/{len(ms)}; rounds left out (request not pending on "
              f"the frozen fo1): {len(fo_result['not_held_by_fo1_answered_by'])} "
              f"{fo_result['not_held_by_fo1_answered_by'] or ''}")
    if soak_result:
        r = soak_result
        ld = r["load"]
        rss = r["rss_kb"]
        mid = rss[len(rss) // 2][1] if rss else 0
        print(f"\nsoak {r['seconds']} s at {r['rate']:.0f} requests/s through the sipedge DRA, "
              f"{r['restarts']} server restarts {r['actions']}:")
        print(f"  DRA same process alive: {r['dra_alive']}, tracebacks in its log: "
              f"{r['dra_tracebacks']}, pending at the end: {r['dra_pending_end']}")
        print(f"  sent {ld.get('sent')}, answered {ld.get('answered')}, unanswered "
              f"{ld.get('unanswered')}, result codes {ld.get('codes')}, p50/p99/max "
              f"{ld.get('p50_ms')}/{ld.get('p99_ms')}/{ld.get('max_ms')} ms, slower than "
              f"{SOAK_TIMEOUT_S + 0.5:.1f} s: {ld.get('slow')}"
              + (f", load error: {ld['error'][-300:]}" if "error" in ld else ""))
        print(f"  DRA RSS MB start/middle/end/max: {rss[0][1] / 1024 if rss else 0:.1f}/"
              f"{mid / 1024:.1f}/{rss[-1][1] / 1024 if rss else 0:.1f}/"
              f"{max((v for _, v in rss), default=0) / 1024:.1f} ({len(rss)} samples, "
              f"every 10 s)")
    print(f"\nload average (1/5/15 min) at start {loads[0]}, at end {loads[-1]}")


def main(argv) -> int:
    a = parse(argv)
    if not Path(FD_BIN).exists():
        log("freeDiameterd not found: install the Debian package freediameterd")
        return 2
    if not FD_HEADERS.exists():
        log("freeDiameter headers not found: install the Debian package libfreediameter-dev")
        return 2
    work = Path(tempfile.mkdtemp(prefix="sipedge-diameter-bench-"))
    log(f"work dir: {work}")
    loads = [loadavg()]
    t0 = time.monotonic()
    ext = build_fdpeer(work)
    if ext is None:
        log("cannot build fdpeer: a C compiler (Debian gcc) is needed")
        return 2
    targets, runs = ({}, []) if a.soak_only else compare(work, ext, a)
    fo_result = failover(work, ext, a.failover) if a.failover and not a.soak_only else None
    soak_result = soak(work, ext, a.soak_s, a.soak_rate) if a.soak_s else None
    loads.append(loadavg())
    report(a, targets, runs, fo_result, soak_result, loads)
    print(f"total {time.monotonic() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": runs, "failover": fo_result,
                                            "soak": soak_result, "loadavg": loads}, indent=1))
    if not a.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main(sys.argv[1:]))
