"""Helpers for integration tests: a real sipedge process and real SIPp peers on 127.0.0.1.

`SipEdge` starts `python -m sipedge --config FILE` and waits until every
worker reports alive on the control socket. `sipp` runs SIPp scenarios.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipedge.io.rpc import RpcError, rpc_call

sys.path.insert(0, str(Path(__file__).parents[2] / "tools" / "lab"))
from labkit import free_port as _lab_free_port  # noqa: E402 - one helper for tests and the lab

SCENARIOS = Path(__file__).parent / "scenarios"
# an exception that escaped its handler: asyncio's "Unhandled exception" / "Exception in
# callback", any traceback, or the per-message boundary's internal error
LOG_PROBLEMS = ("Traceback (most recent call last)", "Unhandled exception",
                "Exception in callback", "internal error handling message")
HAVE_SIPP = shutil.which("sipp") is not None

needs_sipp = pytest.mark.skipif(not HAVE_SIPP, reason="SIPp (Debian sip-tester) not installed")


def free_port(proto: str = "udp", host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` (`proto` is accepted for readability)."""
    return _lab_free_port(host)


def udp_socket(timeout: float) -> socket.socket:
    """A UDP socket on 127.0.0.1 (kernel-chosen port) for a test's own UA."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


def reply_to(request: bytes, status: str, to_tag: str) -> bytes:
    """What a simple UAS answers to a raw request: `status` ("486 Busy Here") with the
    request's Via, From, Call-ID and CSeq, and its To with `to_tag`."""
    head = request.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
    keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower()
            in ("via", "from", "call-id", "cseq")]
    to = next((h for h in head[1:] if h.lower().startswith("to:")), "To: <sip:x@y>")
    return ("\r\n".join([f"SIP/2.0 {status}", *keep, f"{to};tag={to_tag}",
                          "Content-Length: 0"]) + "\r\n\r\n").encode()


class SipEdge:
    """A running sipedge process."""

    def __init__(self, workdir: Path, config: str, name: str = "sipedge") -> None:
        self.workdir = workdir
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / f"{name}.log"
        self.ctl = str(workdir / f"{name}.ctl")
        self.proc: subprocess.Popen | None = None

    def start(self, workers: int, timeout: float = 20.0) -> "SipEdge":
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipedge", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sipedge exited rc={self.proc.returncode}:\n{self.log()}")
            try:
                health = self.rpc("core.health")
                if health["workers_alive"] == workers:
                    return self
            except RpcError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sipedge not ready within {timeout}s:\n{self.log()}")

    def rpc(self, method: str, params: dict | list | None = None):
        return rpc_call(self.ctl, method, params, timeout=5)

    def settled_stats(self, timeout: float = 5.0) -> dict:
        """Totals once the workers have published their latest counters (twice a second)."""
        time.sleep(0.6)
        deadline = time.monotonic() + timeout
        last = self.rpc("stats")["total"]
        while time.monotonic() < deadline:
            time.sleep(0.6)
            now = self.rpc("stats")["total"]
            if now == last:
                return now
            last = now
        return last

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def log_problems(self) -> list[str]:
        """Log lines that show an exception escaped a handler: a test failure wherever it
        happens (issue 14: the per-message boundary must hold for any input)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines()
                if any(bad in line for bad in LOG_PROBLEMS)]

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def make_config(ctl: str, listeners: list[tuple[str, str, int]], workers: int = 1,
                extra: str = "", log_level: str = "info") -> str:
    out = [f'[core]\nworkers = {workers}\nctl_socket = "{ctl}"\nlog_level = "{log_level}"\n']
    for proto, addr, port in listeners:
        out.append(f'[[listen]]\nproto = "{proto}"\naddress = "{addr}"\nport = {port}\n')
    out.append(extra)
    return "\n".join(out)


class Sipp:
    """Runs SIPp as a subprocess; UAS instances in the background, UAC to completion."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.background: list[subprocess.Popen] = []

    def _cmd(self, scenario: str, port: int, extra: list[str]) -> list[str]:
        sf = scenario if scenario in ("uac", "uas") else str(SCENARIOS / scenario)
        opt = ["-sn", sf] if scenario in ("uac", "uas") else ["-sf", sf]
        return ["sipp", *opt, "-i", "127.0.0.1", "-p", str(port), "-nostdin",
                "-trace_err", "-error_file", str(self.workdir / f"sipp-{port}-errors.log"),
                *extra]

    def uas(self, scenario: str, port: int, extra: list[str] | None = None) -> subprocess.Popen:
        out = open(self.workdir / f"sipp-uas-{port}.out", "wb")
        p = subprocess.Popen(self._cmd(scenario, port, extra or []), stdout=out,
                             stderr=subprocess.STDOUT, cwd=self.workdir)
        self.background.append(p)
        time.sleep(0.3)
        assert p.poll() is None, (self.workdir / f"sipp-uas-{port}.out").read_text(errors="replace")
        return p

    def uac(self, scenario: str, target: str, port: int, calls: int, rate: int = 50,
            extra: list[str] | None = None, timeout: float = 60.0) -> tuple[int, str]:
        """Run a UAC to completion. Returns (exit code, error log). SIPp exits 0 when every
        call succeeded."""
        cmd = self._cmd(scenario, port, ["-m", str(calls), "-r", str(rate), "-l", str(calls),
                                         "-timeout", f"{int(timeout)}s", "-timeout_error",
                                         "-recv_timeout", "10s", *(extra or []), target])
        out = self.workdir / f"sipp-uac-{port}.out"
        with open(out, "wb") as f:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=self.workdir,
                               timeout=timeout + 30)
        err = self.workdir / f"sipp-{port}-errors.log"
        text = err.read_text(errors="replace")[-4000:] if err.exists() else ""
        return p.returncode, text + out.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for p in self.background:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
