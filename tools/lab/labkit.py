"""Process management for the SIP lab: N SIPp UAS instances on loopback ports (and optionally a
sipedge in front of them), started, stopped and restarted one by one, and always cleaned up.

Used by `tools/lab/lab` (the interactive tool) and by the integration tests::

    with Lab(workdir, uas=3) as lab:        # sipp -sn uas -aa on 127.0.0.1:<free ports>
        lab.uas[0].stop()                   # the box goes down ...
        lab.uas[0].start()                  # ... and comes back on the same port

Every wait is bounded; `Lab.close()` (also on exit of the `with` block, on SIGINT/SIGTERM in
the tool, and from `atexit`) terminates every child, escalating to SIGKILL.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SIPP = shutil.which("sipp")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` (SIPp UAS binds both for some modes)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(fam, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(fam, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def options_ping(ip: str, port: int, timeout: float = 0.5) -> int | None:
    """Send one OPTIONS over UDP and return the reply's status code (None: no reply)."""
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        host = f"[{ip}]" if ":" in ip else ip
        tag = uuid.uuid4().hex[:12]
        msg = (f"OPTIONS sip:ping@{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {host}:{lport};branch=z9hG4bK-lab{tag};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:lab@{host}>;tag={tag}\r\n"
               f"To: <sip:ping@{host}:{port}>\r\nCall-ID: lab-{tag}@{host}\r\n"
               f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        deadline = time.monotonic() + timeout
        s.sendto(msg, (ip, port))
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except (TimeoutError, socket.timeout, ConnectionRefusedError):
                return None
            first = data.split(b"\r\n", 1)[0].split(b" ")
            if len(first) >= 2 and first[0] == b"SIP/2.0" and first[1].isdigit() \
                    and int(first[1]) >= 200 and tag.encode() in data:
                return int(first[1])
        return None


def _terminate(proc: subprocess.Popen, timeout: float = 3.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


@dataclass
class SippUas:
    """One `sipp -sn uas -aa` (answers INVITE with 180/200 and OPTIONS/INFO/... with 200)."""

    workdir: Path
    ip: str
    port: int
    name: str
    scenario: str = "uas"  # built-in name or a path to a scenario XML
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"sip:{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        if SIPP is None:
            raise RuntimeError("SIPp not installed (Debian package sip-tester)")
        scen = ["-sn", self.scenario] if self.scenario in ("uas", "uac") else ["-sf", self.scenario]
        return [SIPP, *scen, "-aa", "-i", self.ip, "-p", str(self.port), "-nostdin",
                "-trace_err", "-error_file", str(self.workdir / f"{self.name}-errors.log"),
                *self.extra]

    def start(self, ready_timeout: float = 5.0) -> "SippUas":
        if self.running:
            return self
        out = open(self.workdir / f"{self.name}.out", "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        finally:
            out.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited rc={self.proc.returncode}: "
                                   f"{self.output()}")
            if options_ping(self.ip, self.port, 0.2) is not None:
                return self
        self.stop()
        raise RuntimeError(f"{self.name} did not answer OPTIONS within {ready_timeout}s")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        return _terminate(self.proc)

    def output(self) -> str:
        try:
            return (self.workdir / f"{self.name}.out").read_text(errors="replace")[-2000:]
        except OSError:
            return ""


class Lab:
    """N UAS instances on `ip` (ports from `base_port` upwards, or free ones)."""

    def __init__(self, workdir: str | Path, uas: int = 3, *, ip: str = "127.0.0.1",
                 base_port: int | None = None, scenario: str = "uas",
                 extra: list[str] | None = None) -> None:
        if not 1 <= uas <= 64:
            raise ValueError("uas must be 1..64")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ip = ip
        self.uas = [SippUas(self.workdir, ip, base_port + i if base_port else free_port(ip),
                            f"uas{i}", scenario, list(extra or [])) for i in range(uas)]
        self.others: list[subprocess.Popen] = []
        atexit.register(self.close)

    def start(self) -> "Lab":
        try:
            for u in self.uas:
                u.start()
        except BaseException:
            self.close()
            raise
        return self

    def spawn(self, cmd: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        """Start another process (e.g. sipedge) that `close()` will stop."""
        out = open(self.workdir / f"{name}.out", "ab")
        try:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=self.workdir, env=env)
        finally:
            out.close()
        self.others.append(p)
        return p

    def close(self) -> None:
        for p in reversed(self.others):
            _terminate(p)
        for u in self.uas:
            u.stop()
        atexit.unregister(self.close)

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def dispatcher_list(self, set_id: int = 1, flags: int = 8) -> str:
        """A Kamailio-style dispatcher list file with every UAS in one set."""
        lines = ["# set uri flags priority attrs  (written by tools/lab)"]
        lines += [f"{set_id} {u.uri} {flags} 0 weight=1;duid={u.name}" for u in self.uas]
        return "\n".join(lines) + "\n"
