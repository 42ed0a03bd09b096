"""Process accounting from /proc: CPU ticks and memory of a whole process tree.

CPU is utime+stime from /proc/<pid>/stat (all threads of the process), in
clock ticks.  Memory is VmRSS from /proc/<pid>/status and Pss from
/proc/<pid>/smaps_rollup; RSS summed over forked workers counts shared pages
once per process, PSS splits them, so the PSS sum is the honest total.
"""
import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    """Fields of /proc/<pid>/stat after the command name, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # the command name is in parentheses and may itself contain spaces or ')'
    return raw[raw.rindex(b")") + 2:].split()


def cpu_ticks(pid):
    """utime+stime of one process in clock ticks, or None if it is gone."""
    f = _stat_fields(pid)
    if f is None:
        return None
    # after the name: state(0) ppid(1) ... utime(11) stime(12)
    return int(f[11]) + int(f[12])


def descendants(root):
    """root and every live process below it (pids), found through the ppid links."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(name)
        if f is None:
            continue
        children.setdefault(int(f[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:  # bounded by the number of processes on the machine
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return [p for p in out if _stat_fields(p) is not None]


def tree_cpu(pids):
    """{pid: ticks} for the given pids that are still alive."""
    out = {}
    for pid in pids:
        t = cpu_ticks(pid)
        if t is not None:
            out[pid] = t
    return out


def cpu_delta_seconds(before, after):
    """CPU seconds spent between two tree_cpu() snapshots.

    A process that appeared in between counts from zero; one that vanished
    loses its last interval (its time goes to the parent's cutime, which we
    do not read), so keep worker churn out of measurement windows."""
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items())
    return ticks / CLK_TCK


@dataclass(frozen=True)
class Memory:
    rss_kib: int
    pss_kib: int
    processes: int


def _kib(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(pids):
    rss = pss = n = 0
    for pid in pids:
        r = _kib(f"/proc/{pid}/status", "VmRSS:")
        if r:
            n += 1
            rss += r
            pss += _kib(f"/proc/{pid}/smaps_rollup", "Pss:")
    return Memory(rss, pss, n)


def udp_sockets_on(port, host_hex="0100007F"):
    """How many UDP sockets are bound to 127.0.0.1:port (SO_REUSEPORT gives several)."""
    want = f"{host_hex}:{port:04X}"
    n = 0
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                if line.split()[1] == want:
                    n += 1
    except OSError:
        pass
    return n


def udp_drops():
    """Datagrams the kernel dropped for a full receive buffer, machine-wide
    (RcvbufErrors in /proc/net/snmp).  Nearly all UDP here is ours during a run."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [ln.split() for ln in f if ln.startswith("Udp:")]
        return int(dict(zip(rows[0][1:], rows[1][1:]))["RcvbufErrors"])
    except (OSError, IndexError, KeyError, ValueError):
        return 0


def udp_drops_by_port():
    """{local port: datagrams dropped} over the UDP sockets now open (the last
    column of /proc/net/udp; the count dies with its socket)."""
    out = {}
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                cols = line.split()
                port = int(cols[1].rsplit(":", 1)[1], 16)
                out[port] = out.get(port, 0) + int(cols[-1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def machine_busy_ticks():
    """Non-idle CPU of the whole machine (all cores) in clock ticks, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            cols = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0
    # user nice system idle iowait irq softirq steal ...
    return sum(cols[:8]) - cols[3] - cols[4]
