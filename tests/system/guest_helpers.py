"""Helpers shared by the system tests (import them from here, never from conftest: several
test directories have a conftest.py, and `from conftest import` picks whichever was imported
first)."""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools/vm"))

from sipedge_vm import Guest, GuestError  # noqa: E402

TIMEOUT_MULTIPLIER = float(os.environ.get("SIPEDGE_TIMEOUT_MULTIPLIER", "1"))
BUILD_TOOLS = ("mmdebstrap", "genimage", "mke2fs", "mcopy", "mkfs.vfat", "chroot", "zstd")
QEMU = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}

# Figures collected by the tests and printed in the terminal summary.
RESULTS: dict[str, str] = {}


def record(key: str, value: str) -> None:
    RESULTS[key] = value



def sip_options(port: int, ruri_host: str, timeout: float = 1.0) -> int | None:
    """Send one SIP OPTIONS over UDP to 127.0.0.1:port; return the status code or None."""
    return sip_request(port, "OPTIONS", f"sip:{ruri_host}", timeout)


def sip_request(port: int, method: str, ruri: str, timeout: float = 1.0) -> int | None:
    """Send one out-of-dialog request without a body over UDP to 127.0.0.1:port (To = the
    Request-URI); return the final status code or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        call_id = uuid.uuid4().hex
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        msg = "\r\n".join([
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:systemtest@127.0.0.1:{lport}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{ruri}>",
            f"Call-ID: {call_id}",
            f"CSeq: 1 {method}",
            f"Contact: <sip:systemtest@127.0.0.1:{lport}>",
            "Content-Length: 0",
            "", ""]).encode()
        s.settimeout(timeout)
        s.sendto(msg, ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except (socket.timeout, ConnectionRefusedError):
                return None
            head = data.split(b"\r\n", 1)[0].split()
            if call_id.encode() in data and len(head) >= 2 and head[0] == b"SIP/2.0":
                code = int(head[1])
                if code >= 200:
                    return code
        return None


def _options(lport: int, ruri: str, call_id: str) -> bytes:
    return "\r\n".join([
        f"OPTIONS {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
        "Max-Forwards: 70",
        f"From: <sip:systemtest@127.0.0.1:{lport}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <{ruri}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:systemtest@127.0.0.1:{lport}>",
        "Content-Length: 0",
        "", ""]).encode()


def wait_sip_ready(guest: Guest, guest_port: int = 5060, ruri_host: str = "10.0.2.15",
                   timeout: float = 240, interval: float = 0.2) -> float:
    """Send an OPTIONS every `interval` seconds (each its own Call-ID) from one socket until a
    200 to any of them arrives; return its arrival in seconds since QEMU started. The answer
    is timed to within `interval` (one request at a time with a 1 s wait, as before, timed
    the first answer up to 1.5 s late)."""
    port = guest.host_port("udp", guest_port)
    deadline = time.monotonic() + timeout * TIMEOUT_MULTIPLIER
    ruri = f"sip:{ruri_host}:{guest_port}"
    sent: set[bytes] = set()
    last = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        next_send = 0.0
        while time.monotonic() < deadline:
            if guest.proc.poll() is not None:
                raise GuestError(f"QEMU exited ({guest.proc.returncode}); console:\n"
                                 + guest.console.tail())
            now = time.monotonic()
            if now >= next_send:
                call_id = uuid.uuid4().hex
                sent.add(call_id.encode())
                s.sendto(_options(lport, ruri, call_id), ("127.0.0.1", port))
                next_send = now + interval
            s.settimeout(max(0.01, next_send - time.monotonic()))
            try:
                data, _ = s.recvfrom(65535)
            except (socket.timeout, ConnectionRefusedError):
                continue
            head = data.split(b"\r\n", 1)[0].split()
            if len(head) < 2 or head[0] != b"SIP/2.0" or not any(c in data for c in sent):
                continue
            last = int(head[1])
            if last == 200:
                return guest.elapsed()
    raise GuestError(f"no 200 to OPTIONS on guest port {guest_port} within {timeout:.0f} s "
                     f"(last answer {last}); console:\n" + guest.console.tail())


def proxy_rss_kib(guest: Guest) -> dict[str, int]:
    """VmRSS (KiB) of every Python process whose command line mentions sipedge."""
    script = ("for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' <$p/cmdline 2>/dev/null); "
              "case $c in *sipedge*) echo \"$(awk '/^VmRSS/ {print $2}' $p/status) ${p#/proc/} $c\";; "
              "esac; done")
    _rc, out = guest.shell(script, timeout=30)
    rss = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit() and "python3" in parts[2]:
            # the pid keeps forked workers apart: they share the main process's command line
            rss[f"{parts[2].strip()} [{parts[1]}]"] = int(parts[0])
    return rss


def status(g, cond=lambda st: True, timeout: float = 120, what: str = "") -> dict:
    """supervisor.status once `cond` holds (the RPC may time out while a TCG guest is busy);
    `what` names the awaited state in the failure message."""
    deadline = time.monotonic() + timeout * TIMEOUT_MULTIPLIER
    st: dict = {}
    while time.monotonic() < deadline:
        rc, out = g.shell("sipedgectl --json supervisor.status", timeout=60)
        if rc == 0 and "{" in out:
            st = json.JSONDecoder().raw_decode(out[out.index("{"):])[0]
            if cond(st):
                return st
        time.sleep(1)
    raise AssertionError(f"supervisor status never became {what or 'as expected'}; "
                         f"last: {st or out}")


def wait_for(g, cmd: str, pattern: str, timeout: float = 120) -> str:
    """Run `cmd` in the guest shell until its output matches `pattern`; return the output."""
    deadline = time.monotonic() + timeout * TIMEOUT_MULTIPLIER
    out = ""
    while time.monotonic() < deadline:
        _rc, out = g.shell(cmd, timeout=60)
        if re.search(pattern, out):
            return out
        time.sleep(1)
    raise AssertionError(f"{cmd!r} never matched {pattern!r}; last output:\n{out}")


def processes(g, word: str) -> list[tuple[int, str]]:
    """(pid, command line) of the guest processes whose command line contains `word`."""
    script = ("for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' <$p/cmdline 2>/dev/null); "
              f"case \"$c\" in *\"{word}\"*) echo \"PID=${{p#/proc/}} CMD=$c\";; esac; done")
    _rc, out = g.shell(script)
    return [(int(m.group(1)), m.group(2).strip())
            for m in re.finditer(r"^PID=(\d+) CMD=(.*)$", out, re.M)]


def cmdlines(g, word: str) -> list[str]:
    return [cmd for _pid, cmd in processes(g, word)]


# Boot stages, from the marks the guest writes (app/sipedge/bootmark.py, rootfs rcS and
# run-supervisor): (label, mark the stage ends at). Each stage starts where the previous ended;
# "kernel" starts at the kernel's start (uptime 0). A mark earlier than the previous one is
# off the path: run-supervisor starts the proxy (proxy-launched) before it execs the
# supervisor, so supervisor-start comes later and is a parallel mark then; images before
# that had the supervisor launch the proxy after its own start.
BOOT_STAGES = (
    ("kernel + initrd", "init"),
    ("init scripts", "rcS-done"),
    ("supervisor start", "supervisor-start"),
    ("proxy launch", "proxy-launched"),
    ("proxy start", "proxy-start"),
    ("proxy imports", "proxy-imported"),
    ("listener ready", "listener-ready-0"),
)
# Work the boot does beside that path (rcS's read-ahead, S00mount's coldplug pass, DHCP, the
# supervisor's start when run-supervisor started the proxy, the init scripts rcS runs behind
# the boot): reported as the uptime at which it was done.
PARALLEL_MARKS = (("readahead done at", "readahead-done"), ("coldplug done at", "coldplug-done"),
                  ("DHCP bound at", "dhcp-bound-eth0"),
                  ("supervisor started at", "supervisor-start"),
                  ("late init scripts done at", "rcS-late-done"))


def kernel_start(guest: Guest, timeout: float = 240) -> float | None:
    """Seconds from QEMU start to the kernel's start: rcS prints 'sipedge-init: init at U s'
    (U = uptime) as soon as init runs; its arrival time minus U. Call right after start().
    None for an image without that line. The guest clock is used only over those few
    seconds: under a loaded host a TCG guest's clock falls behind over a longer run."""
    try:
        m = guest.console.expect(rb"sipedge-init: init at ([\d.]*) s", timeout * TIMEOUT_MULTIPLIER)
    except GuestError:
        return None
    return guest.elapsed() - float(m.group(1)) if m.group(1) else None


def boot_stages(guest: Guest, ready_s: float, kernel_at: float | None = None) -> dict[str, float]:
    """Seconds per boot stage (guest clock, from the boot marks) plus 'first 200 OK after
    kernel' (host clock) and 'QEMU to kernel' (kernel_start(), else estimated from the uptime
    now). Marks missing from the guest (an older image) are left out."""
    before = guest.elapsed()
    rc, out = guest.shell("cat /proc/uptime; cat /run/sipedge/boot-marks 2>/dev/null", timeout=60)
    after = guest.elapsed()
    lines = out.splitlines()
    uptime = next(float(ln.split()[0]) for ln in lines if re.fullmatch(r"[\d.]+ [\d.]+", ln.strip()))
    marks: dict[str, float] = {}
    for ln in lines:
        parts = ln.split()
        if len(parts) == 3 and re.fullmatch(r"[\d.]+", parts[1]) and parts[0] not in marks:
            marks[parts[0]] = float(parts[1])
    if kernel_at is None:
        # the guest read its uptime somewhere between before and after: take the middle
        kernel_at = (before + after) / 2 - uptime
    stages: dict[str, float] = {"QEMU to kernel": kernel_at}
    prev = 0.0
    path = [(label, mark) for label, mark in BOOT_STAGES if mark in marks]
    for i, (label, mark) in enumerate(path):
        if any(marks[later] < marks[mark] for _label, later in path[i + 1:]):
            continue  # beside the path (see BOOT_STAGES)
        stages[label] = marks[mark] - prev
        prev = marks[mark]
    stages["first 200 OK after kernel"] = ready_s - kernel_at
    stages["first 200 after listener"] = ready_s - kernel_at - prev
    for label, mark in PARALLEL_MARKS:
        if mark in marks:
            stages[label] = marks[mark]
    return stages


def sipedge_memory_kib(guest: Guest) -> dict[str, tuple[int, int]]:
    """{command line: (RSS KiB, PSS KiB)} of every sipedge Python process (PSS splits the
    pages forked workers share with their parent)."""
    script = ("for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' <$p/cmdline 2>/dev/null); "
              "case $c in *python3*sipedge*) echo \"$(awk '/^Rss:/ {r=$2} /^Pss:/ {s=$2} "
              "END {print r, s}' $p/smaps_rollup) ${p#/proc/} $c\";; esac; done")
    _rc, out = guest.shell(script, timeout=60)
    mem = {}
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[0].isdigit() and parts[1].isdigit():
            mem[f"{parts[3].strip()} [{parts[2]}]"] = (int(parts[0]), int(parts[1]))
    return mem
