"""`make bench BENCH_ARGS="--mode diameter"`: the DRA against freeDiameter as a relay.

    load.cli (diameter_load.py) ──► relay under test ──► srv1.srv (freeDiameter, answers)
                                    sipedge DRA  (python -m sipedge.modules.diameter)
                                    fdrelay      (freeDiameterd, realm routing)

The server is a freeDiameter without applications: it answers every request with 3002 from
its own identity, which is cheap and the same for both relays. For each relay, interleaved and
repeated: relay CPU time per request (utime+stime from /proc) at fixed rates, the closed-loop
throughput (window of outstanding requests), latency percentiles and RSS. `--soak-s N` adds a
soak of the sipedge DRA with two servers killed and restarted at random under load, reporting
RSS over time and whether the DRA stayed up. All traffic is on 127.0.0.1; every run is
bounded in requests and seconds.
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


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Fd:
    def __init__(self, work: Path, identity: str, realm: str, port: int, peers) -> None:
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

    def start(self) -> Fd:
        self.proc = subprocess.Popen([FD_BIN, "-c", str(self.conf)],
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
    def __init__(self, work: Path, port: int, servers) -> None:
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
tw_s = 30
request_timeout_s = 5
[[diameter.listen]]
address = "127.0.0.1"
port = {port}
[[diameter.peer]]
host = "load.cli"
{peers}""")
        self.port = port
        self.work = work
        self.proc = None

    def start(self) -> Dra:
        env = dict(os.environ, PYTHONPATH=str(REPO / "app"))
        self.proc = subprocess.Popen([sys.executable, "-m", "sipedge.modules.diameter",
                                      str(self.cfg), "--log-level", "warning"], env=env,
                                     stdout=open(self.work / "dra.log", "ab"),
                                     stderr=subprocess.STDOUT)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def load(port: int, **kw) -> dict:
    args = [sys.executable, str(HERE / "diameter_load.py"), "--port", str(port)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(args, check=False, capture_output=True, text=True,
                         timeout=kw.get("duration", 10) + kw.get("drain", 5) + 30)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": out.stderr[-2000:]}


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
    ap.add_argument("--soak-s", type=float, default=0.0,
                    help="soak the sipedge DRA this long with random server restarts")
    ap.add_argument("--soak-only", action="store_true",
                    help="only the soak (make soak-diameter), no relay comparison")
    ap.add_argument("--failover", type=int, metavar="N",
                    help="failover latency rounds (default 5, 2 with --quick; 0: none)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", action="store_true")
    a, _ = ap.parse_known_args(argv)
    a.reps = a.reps or (1 if a.quick else 3)
    if a.failover is None:
        a.failover = 2 if a.quick else 5
    a.duration_s = a.duration_s or (2.0 if a.quick else 10.0)
    a.rates = [int(x) for x in a.rates.split(",") if x] or ([300] if a.quick else [500, 1000])
    return a


def soak(work: Path, seconds: float) -> dict:
    p1, p2, dport = free_port(), free_port(), free_port()
    servers = {h: Fd(work, h, "srv", p, [("dra.bench", None)]).start()
               for h, p in (("soak1.srv", p1), ("soak2.srv", p2))}
    dra = Dra(work, dport, [("soak1.srv", p1), ("soak2.srv", p2)]).start()
    time.sleep(3)
    rng = random.Random(11)
    samples, answered, sent, restarts = [], 0, 0, 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            r = load(dport, rate=200, duration=5, requests=1000, drain=3, settle=0.2)
            answered += r.get("answered", 0)
            sent += r.get("sent", 0)
            name = rng.choice(sorted(servers))
            servers[name].kill()
            time.sleep(rng.uniform(0.2, 2.0))
            servers[name].start()
            restarts += 1
            if dra.proc.poll() is not None:
                break
            samples.append((round(time.monotonic() - t0), rss_kb(dra.proc.pid)))
        alive = dra.proc.poll() is None
    finally:
        dra.stop()
        for s in servers.values():
            s.stop()
    return {"seconds": round(time.monotonic() - t0), "restarts": restarts, "sent": sent,
            "answered": answered, "dra_alive": alive, "rss_kb": samples}


def failover(work: Path, n: int) -> dict:
    """Failover latency: srv1 (route metric 1) is frozen (SIGSTOP) with a request pending,
    then SIGKILLed; the time from the kill to the client's answer from srv2 (metric 50), which
    the DRA got with the T flag. `n` rounds, srv1 restarted between them."""
    import asyncio

    sys.path.insert(0, str(REPO / "app"))
    from sipedge.diameter import dictionary as dd
    from sipedge.diameter.base import Identity
    from sipedge.diameter.peer import PeerSettings
    from sipedge.modules.diameter.aio import DiameterService
    from sipedge.modules.diameter.core import Node, NodeSettings, PeerConfig
    from sipedge.modules.diameter.routing import Route, RoutingTable

    p1, p2, dport = free_port(), free_port(), free_port()
    servers = {h: Fd(work, h, "srv", p, [("dra.bench", None)]).start()
               for h, p in (("fo1.srv", p1), ("fo2.srv", p2))}
    dra = Dra(work, dport, [("fo1.srv", p1, 1), ("fo2.srv", p2, 50)]).start()
    latencies: list[float] = []
    origins: list[str] = []

    async def rounds() -> None:
        cli = Node(Identity("load.cli", "cli", ("127.0.0.1",), auth_apps=(16777216,)),
                   [PeerConfig("dra.bench", "127.0.0.1", dport,
                               settings=PeerSettings(connect=True, tc_s=1.0, tw_s=30.0))],
                   RoutingTable([Route("*", "dra.bench")]),
                   NodeSettings(relay=False, request_timeout_s=20.0))
        svc = DiameterService(cli, [("127.0.0.1", 0, "tcp")])
        await svc.start()
        try:
            for i in range(n):
                deadline = time.monotonic() + 20
                while not cli.peers["dra.bench"].usable and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(3)  # the DRA reopens fo1 (its Tc is 1 s)
                servers["fo1.srv"].proc.send_signal(signal.SIGSTOP)
                avps = [dd.avp("Session-Id", f"load.cli;fo;{i}"),
                        dd.avp("Auth-Session-State", 1), dd.avp("User-Name", f"fo{i}@ims.test")]
                task = asyncio.ensure_future(svc.request(16777216, 300, avps, dest_realm="srv",
                                                         timeout=20.0))
                await asyncio.sleep(0.5)  # the request is held by the frozen fo1
                t_kill = time.monotonic()
                servers["fo1.srv"].kill()
                ans = await task
                latencies.append((time.monotonic() - t_kill) * 1000)
                origins.append(str(dd.get(ans.avps, "Origin-Host")))
                servers["fo1.srv"].start()
        finally:
            await svc.stop(timeout=2)

    try:
        asyncio.run(rounds())
    finally:
        dra.stop()
        for s in servers.values():
            s.stop()
    return {"rounds": n, "failover_ms": [round(x, 1) for x in latencies], "origins": origins}


def compare(work: Path, a: argparse.Namespace) -> tuple[dict, list[dict]]:
    """The sipedge DRA and a freeDiameter relay under the same load, interleaved."""
    sport, dport, fport = free_port(), free_port(), free_port()
    server = Fd(work, "srv1.srv", "srv", sport, [("dra.bench", None), ("fdrelay.bench", None)])
    server.start()
    dra = Dra(work, dport, [("srv1.srv", sport)]).start()
    fdr = Fd(work, "fdrelay.bench", "mid", fport, [("load.cli", None), ("srv1.srv", sport)])
    fdr.start()
    time.sleep(3)
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


def main(argv) -> int:
    a = parse(argv)
    if not Path(FD_BIN).exists():
        log("freeDiameterd not found: install the Debian package freediameterd")
        return 2
    work = Path(tempfile.mkdtemp(prefix="sipedge-diameter-bench-"))
    log(f"work dir: {work}")
    targets, runs = ({}, []) if a.soak_only else compare(work, a)
    fo_result = failover(work, a.failover) if a.failover and not a.soak_only else None
    soak_result = soak(work, a.soak_s or 600.0) if a.soak_s or a.soak_only else None
    if runs:
        print("\nDiameter relay: sipedge DRA vs freeDiameter (medians over "
              f"{a.reps} repetition(s); loopback, 1 load process, server = freeDiameter)")
        print(f"{'measurement':24} {'target':13} {'answered/s':>10} {'cpu ms/req':>10} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7}")
        for kind in dict.fromkeys(r["kind"] for r in runs):
            for name in targets:
                rs = [r for r in runs
                      if r["kind"] == kind and r["target"] == name and "rate" in r]
                if not rs:
                    continue

                def med(key, rs=rs):
                    vals = [r[key] for r in rs if r.get(key) is not None]
                    return statistics.median(vals) if vals else float("nan")
                print(f"{kind:24} {name:13} {med('rate'):10.0f} {med('cpu_ms_per_req'):10.3f} "
                      f"{med('p50_ms'):7.2f} {med('p99_ms'):7.2f} {med('rss_kb') / 1024:7.1f}")
    if fo_result:
        ms = fo_result["failover_ms"]
        print(f"\nfailover (frozen server SIGKILLed -> answer from the alternate, T flag): "
              f"{len(ms)} rounds, median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms, "
              f"answered by {sorted(set(fo_result['origins']))}")
    if soak_result:
        rss = [v for _, v in soak_result["rss_kb"]]
        print(f"\nsoak {soak_result['seconds']} s, {soak_result['restarts']} server restarts: "
              f"DRA alive={soak_result['dra_alive']}, answered {soak_result['answered']}/"
              f"{soak_result['sent']}, RSS MB first/max/last "
              f"{rss[0] / 1024 if rss else 0:.1f}/{max(rss, default=0) / 1024:.1f}/"
              f"{rss[-1] / 1024 if rss else 0:.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": runs, "failover": fo_result,
                                              "soak": soak_result}, indent=1))
    if not a.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main(sys.argv[1:]))
