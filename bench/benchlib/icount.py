"""Instruction counts per call and per forwarded message, under valgrind's callgrind.

CPU seconds on a shared 2-core machine move with whatever else runs; instruction counts do
not (callgrind counts the instructions the proxy executed, not the time they took). So a
change to the hot path can be judged here even while the machine is busy.

How one proxy is counted (`measure`):
  1. the proxy runs under `valgrind --tool=callgrind --trace-children=yes` (sipedge's workers
     are separate interpreters; Kamailio's children are forks, which valgrind follows anyway);
  2. a warm-up of a few calls (imports, first-call costs), then `callgrind_control --dump`
     on every process of the proxy: that dump is thrown away and zeroes the counters;
  3. an idle window of the same length as the load (timers, health checks) is dumped;
  4. the load window: `calls` calls at a low rate (callgrind runs the code ~50x slower), dumped;
  5. instructions per call = (load - idle scaled to the load's wall time) / successful calls;
     per message = per call / the messages the proxy forwards per call.
`perf stat -e instructions` would be cheaper, but the counters are not available in this
machine's VM ("<not supported>"); callgrind works everywhere.
"""
import glob
import os
import shutil
import subprocess
import time

VALGRIND = shutil.which("valgrind")
CALLGRIND_CONTROL = shutil.which("callgrind_control")


def available():
    """None when callgrind can be used here, else why not."""
    if not VALGRIND or not CALLGRIND_CONTROL:
        return "valgrind not installed (Debian package valgrind)"
    return None


def wrapper(workdir):
    """The command prefix that runs a proxy under callgrind, its dumps in workdir."""
    return [VALGRIND, "--tool=callgrind", "--trace-children=yes",
            # a dump per process: cg.<pid>, and cg.<pid>.<n> for each callgrind_control --dump
            f"--callgrind-out-file={os.path.join(workdir, 'cg.%p')}",
            "--dump-line=no", "--compress-strings=no", "--compress-pos=no",
            # interpreters (SIPp is not traced: it is not a child of the proxy)
            "--trace-children-skip=*/sh,*/bash,*/ip,*/ldconfig*,*/uname"]


def _totals(path):
    """The Ir total of one callgrind dump file ('totals:' or 'summary:' line)."""
    total = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                total = int(line.split()[1])
    return total or 0


def dump(pids, workdir, timeout=120):
    """Dump (and zero) the counters of every process in pids; return the summed Ir of the
    new dump files. callgrind_control reaches a process blocked in a system call through
    vgdb (ptrace), so an idle proxy answers too."""
    before = set(glob.glob(os.path.join(workdir, "cg.*.*")))
    for pid in pids:
        subprocess.run([CALLGRIND_CONTROL, "--dump", str(pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout)
    deadline = time.monotonic() + timeout
    want = len(pids)
    while time.monotonic() < deadline:  # bounded: the files appear when each dump is written
        new = set(glob.glob(os.path.join(workdir, "cg.*.*"))) - before
        if len(new) >= want:
            break
        time.sleep(0.2)
    time.sleep(0.5)  # let the last file be written completely
    new = set(glob.glob(os.path.join(workdir, "cg.*.*"))) - before
    return sum(_totals(p) for p in new), len(new)


def per_call(load_ir, load_s, idle_ir, idle_s, calls):
    """Instructions per call: the load window minus the idle rate over the same time."""
    if not calls:
        return None
    idle_rate = idle_ir / idle_s if idle_s else 0.0
    return max(0.0, load_ir - idle_rate * load_s) / calls
