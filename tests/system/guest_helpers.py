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
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        call_id = uuid.uuid4().hex
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        msg = "\r\n".join([
            f"OPTIONS sip:{ruri_host} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:systemtest@127.0.0.1:{lport}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <sip:{ruri_host}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 OPTIONS",
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


def wait_sip_ready(guest: Guest, guest_port: int = 5060, ruri_host: str = "10.0.2.15",
                   timeout: float = 240) -> float:
    """Poll with OPTIONS until a 200 arrives; return seconds since QEMU started."""
    port = guest.host_port("udp", guest_port)
    deadline = time.monotonic() + timeout * TIMEOUT_MULTIPLIER
    last = None
    while time.monotonic() < deadline:
        if guest.proc.poll() is not None:
            raise GuestError(f"QEMU exited ({guest.proc.returncode}); console:\n" + guest.console.tail())
        last = sip_options(port, f"{ruri_host}:{guest_port}", timeout=1.0)
        if last == 200:
            return guest.elapsed()
        time.sleep(0.5)
    raise GuestError(f"no 200 to OPTIONS on guest port {guest_port} within {timeout:.0f} s "
                     f"(last answer {last}); console:\n" + guest.console.tail())


def proxy_rss_kib(guest: Guest) -> dict[str, int]:
    """VmRSS (KiB) of every Python process whose command line mentions sipedge."""
    script = ("for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' <$p/cmdline 2>/dev/null); "
              "case $c in *sipedge*) echo \"$(awk '/^VmRSS/ {print $2}' $p/status) $c\";; esac; done")
    _rc, out = guest.shell(script, timeout=30)
    rss = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].isdigit() and "python3" in parts[1]:
            rss[parts[1].strip()] = int(parts[0])
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
