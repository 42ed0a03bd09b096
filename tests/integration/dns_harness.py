"""Helpers for the DNS and TLS integration tests: a real bind9 (`named -g`) serving zone files
the test writes, and a small SIP responder (UDP, TCP, TLS) that answers every request with 200
and records what it received.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

NAMED = shutil.which("named") or shutil.which("named", path="/usr/sbin:/sbin")
needs_named = pytest.mark.skipif(NAMED is None, reason="bind9 (named) not installed")


class Bind9:
    """`named -g` authoritative for one zone, recursion off, every query logged (to stderr:
    with -g named ignores the logging statement)."""

    def __init__(self, workdir: Path, address: str, port: int, zone: str, records: str,
                 extra_ports: tuple[int, ...] = ()) -> None:
        self.dir = workdir
        self.address = address
        self.port = port
        self.zone = zone
        self.log_path = workdir / "named.stderr"
        self._log_start = 0
        listen = "".join(f"  listen-on port {p} {{ {address}; }};\n" for p in (port, *extra_ports))
        (workdir / f"{zone}.zone").write_text(
            f"$ORIGIN {zone}.\n$TTL 300\n"
            f"@ 300 IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 5\n"
            f"@ 300 IN NS ns.{zone}.\nns 300 IN A {address}\n{records}\n")
        self.conf = workdir / "named.conf"
        self.conf.write_text(f"""options {{
  directory "{workdir}";
  pid-file "{workdir}/named.pid";
  session-keyfile "{workdir}/session.key";
  managed-keys-directory "{workdir}";
{listen}  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
  querylog yes;
}};
controls {{ }};
zone "{zone}" {{ type primary; file "{workdir}/{zone}.zone"; }};
""")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> "Bind9":
        self.stderr = open(self.log_path, "wb")
        self.proc = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", str(self.conf)],
                                     stdout=self.stderr, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        q = dns.message.make_query(f"{self.zone}.", dns.rdatatype.SOA)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"named exited rc={self.proc.returncode}: {self.output()}")
            try:
                r = dns.query.udp(q, self.address, port=self.port, timeout=0.3)
                if r.answer:
                    self._log_start = len(self.log_path.read_bytes())  # probe not counted
                    return self
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"named not ready within {timeout}s: {self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def queries(self) -> list[tuple[str, str]]:
        """(name, type) of every query named received since start, in order."""
        out = []
        text = self.log_path.read_bytes()[self._log_start:].decode(errors="replace")
        for line in text.splitlines():
            _, sep, rest = line.partition("query: ")
            if sep:
                parts = rest.split()
                out.append((parts[0].lower().rstrip("."), parts[2]))
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Received:
    transport: str
    method: str
    ruri: str
    data: bytes


def _reply_to(data: bytes, status: str = "200 OK") -> bytes | None:
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
    if not head or head[0].startswith("SIP/2.0") or head[0].startswith("ACK "):
        return None
    keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower()
            in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")]
    return ("\r\n".join([f"SIP/2.0 {status}", *keep, "Content-Length: 0"]) + "\r\n\r\n").encode()


@dataclass
class SipResponder:
    """Answers 200 OK to every request on `ip:port` over UDP and TCP (and TLS on `tls_port`
    with `tls_context`). Runs its own event loop in a thread."""

    ip: str
    port: int
    tls_port: int | None = None
    tls_context: ssl.SSLContext | None = None
    received: list[Received] = field(default_factory=list)

    def start(self) -> "SipResponder":
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("responder did not start")
        if self._error:
            raise self._error
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._error: Exception | None = None
        try:
            self._loop.run_until_complete(self._serve())
        except Exception as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            ready.set()
            return
        ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        responder = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.t = transport

            def datagram_received(self, data, addr):
                responder._record("udp", data)
                reply = _reply_to(data)
                if reply:
                    self.t.sendto(reply, addr)

        self._udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.ip, self.port))
        self._servers = [await asyncio.start_server(
            lambda r, w: self._stream(r, w, "tcp"), self.ip, self.port)]
        if self.tls_port:
            self._servers.append(await asyncio.start_server(
                lambda r, w: self._stream(r, w, "tls"), self.ip, self.tls_port,
                ssl=self.tls_context))

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      transport: str) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                head = head.lstrip(b"\r\n")
                if not head.strip():
                    continue
                clen = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        clen = int(value.strip())
                body = await reader.readexactly(clen) if clen else b""
                data = head + body
                self._record(transport, data)
                reply = _reply_to(data)
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def _record(self, transport: str, data: bytes) -> None:
        first = data.split(b"\r\n", 1)[0].decode(errors="replace").split(" ")
        if len(first) == 3 and not first[0].startswith("SIP/"):
            self.received.append(Received(transport, first[0], first[1], data))

    def stop(self) -> None:
        async def close():
            self._udp.close()
            for s in self._servers:
                s.close()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
