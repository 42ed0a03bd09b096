"""RSS growth of a 1-worker proxy under stateful calls (issue 15: the RSS after 100k
stateful calls at most 1.5x the RSS after 1k; no growth that the transaction timers do
not bound).

One proxy at a time, 1 worker (= 1 Kamailio child), the stateful mode: a warm-up trickle,
then the calls in SIPp runs of at most CHUNK calls at a fixed rate, until the first and then
the last checkpoint count of calls is reached. At each checkpoint the RSS (and PSS) of every
process of the proxy is read twice: right at the end of the load ("loaded": the transactions
of the last seconds are still held) and after `settle` seconds without traffic ("settled":
every transaction timer has fired; sipedge keeps a transaction up to 32 s, Kamailio 5 s).
The check compares like with like: last / first checkpoint, both loaded and both settled.
Every run is bounded in calls and in time (run_uac's deadline); the number of runs by the
checkpoints.
"""
import os
import time

from .sipp import run_uac

CHUNK = 20000  # calls per SIPp run (a run's statistics and deadline stay small)
LIMIT = 1.5    # issue 15


def _kib(pid, path, key):
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _label(pid, root):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        argv = []
    name = os.path.basename(argv[0]) if argv else "?"
    if "-m" in argv[:3]:  # python -m sipedge.io.worker
        name = argv[argv.index("-m") + 1]
    return ("main " if pid == root else "child ") + name


def snapshot(target):
    """{pid: (label, rss_kib, pss_kib)} of every live process of the proxy."""
    out = {}
    root = target.popen.pid if target.popen else None
    for pid in sorted(target.pids()):
        rss = _kib(pid, "status", "VmRSS:")
        if rss is None:
            continue
        out[pid] = (_label(pid, root), rss, _kib(pid, "smaps_rollup", "Pss:") or 0)
    return out


def measure(target, uas, mode, scenario, host, workdir, uac_port, checkpoints, rate, settle_s,
            log):
    """Runs the calls through an already started target (1 worker) and returns
    {"checkpoints": [{"calls", "failed", "loaded": snap, "settled": snap}], ...}."""
    res = {"target": target.name, "rate": rate, "settle_s": settle_s, "checkpoints": [],
           "failed": 0, "successful": 0}
    run_uac(scenario, host, target.port, 20, 20, workdir, f"growth-{target.name}-warm",
            local_port=uac_port)  # imports and first-call costs, not counted
    done = 0
    for goal in checkpoints:  # bounded: len(checkpoints) x (goal / CHUNK + 1) runs
        while done < goal:
            n = min(CHUNK, goal - done)
            t0 = time.monotonic()
            r = run_uac(scenario, host, target.port, rate, n, workdir,
                        f"growth-{target.name}-{done + n}", local_port=uac_port)
            done += n
            res["failed"] += r.failed + (n - r.successful - r.failed)
            res["successful"] += r.successful
            log(f"  {target.name}: {done} calls ({r.successful}/{n} ok in "
                f"{time.monotonic() - t0:.0f} s), RSS sum "
                f"{sum(v[1] for v in snapshot(target).values()) / 1024:.1f} MiB")
            if not target.alive():
                raise RuntimeError(f"{target.name} died; see {target.log}")
        uas.ensure()
        loaded = snapshot(target)
        time.sleep(settle_s)
        res["checkpoints"].append({"calls": done, "loaded": loaded, "settled": snapshot(target),
                                   "failed_so_far": res["failed"]})
    return res


def ratio(first, last, col):
    a = sum(v[col] for v in first.values())
    b = sum(v[col] for v in last.values())
    return b / a if a else None


def print_report(results):
    print()
    print("=" * 78)
    print(f"RSS growth, stateful mode, 1 worker = 1 Kamailio child (issue 15: last <= {LIMIT}x first)")
    for res in results:
        cps = res["checkpoints"]
        if len(cps) < 2:
            print(f"{res['target']}: fewer than 2 checkpoints measured")
            continue
        first, last = cps[0], cps[-1]
        print(f"\n{res['target']} at {res['rate']}/s, settled = after {res['settle_s']:.0f} s without "
              f"traffic; {res['successful']} calls ok, {res['failed']} failed")
        head = f"{'process':30s}"
        for c in (first, last):
            head += f"{'loaded @' + str(c['calls']):>16s}{'settled @' + str(c['calls']):>17s}"
        print(head + f"{'ratio':>8s}")
        pids = sorted(set(first["loaded"]) | set(last["settled"]))
        for pid in pids:
            label = (first["loaded"].get(pid) or last["settled"].get(pid))[0]
            row = f"{(str(pid) + ' ' + label)[:30]:30s}"
            vals = []
            for c in (first, last):
                for k in ("loaded", "settled"):
                    v = c[k].get(pid)
                    vals.append(v and v[1])
                    row += f"{(f'{v[1] / 1024:.1f} MiB' if v else '-'):>{16 if k == 'loaded' else 17}s}"
            r = vals[3] / vals[1] if vals[1] and vals[3] else None
            print(row + f"{(f'{r:.2f}' if r else '-'):>8s}")
        for col, what in ((1, "RSS"), (2, "PSS")):
            row = f"{'sum of ' + what:30s}"
            for c in (first, last):
                for k in ("loaded", "settled"):
                    row += f"{sum(v[col] for v in c[k].values()) / 1024:>{12 if k == 'loaded' else 13}.1f} MiB"
            print(row)
        for k in ("loaded", "settled"):
            r = ratio(first[k], last[k], 1)
            verdict = "-" if r is None else ("ok" if r <= LIMIT else f"OVER {LIMIT}x")
            print(f"  RSS sum {k}: {last['calls']} / {first['calls']} calls = "
                  f"{'-' if r is None else f'{r:.2f}'}x: {verdict}")
    print("-" * 78)
