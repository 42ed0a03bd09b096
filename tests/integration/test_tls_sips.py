"""SIP over TLS with certificates made for this session: an openssl s_client to sipedge,
sipedge -> sipedge (transport=tls and sips:, server verification, connection reuse, mutual TLS),
and client certificates that are refused. SIPp from Debian has no TLS, so the TLS client is
`openssl s_client`."""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dns_harness import SipResponder, wait_for
from sip_harness import free_port
from tls_certs import TestCA

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")

A_IP, B_IP, C_IP, UAS_IP, UAC_IP = "127.0.54.1", "127.0.54.2", "127.0.54.3", "127.0.54.5", "127.0.54.9"


class Pki:
    pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    p = Pki()
    p.ca = TestCA(d)
    p.a = p.ca.issue("edge-a", "edge-a.test", dns_names=("edge-a.test",), ips=(A_IP,))
    p.b = p.ca.issue("edge-b", "edge-b.test", dns_names=("edge-b.test",), ips=(B_IP,))
    p.client = p.ca.issue("alice", "alice.test", dns_names=("alice.test",))
    p.evil_ca = TestCA(d, "untrusted CA")
    p.evil = p.evil_ca.issue("mallory", "alice.test", dns_names=("alice.test",))
    return p


@pytest.fixture(scope="module")
def uas():
    r = SipResponder(UAS_IP, free_port("udp", UAS_IP)).start()
    yield r
    r.stop()


def tls_section(cert, *, ca: str = "", inline: bool = False, **flags) -> str:
    def val(path) -> str:
        return f"'''{path.read_text()}'''" if inline else f'"{path}"'

    lines = ["[tls]", f"certificate = {val(cert.cert)}", f"private_key = {val(cert.key)}"]
    if ca:
        lines.append(f"ca_bundle = {val(ca) if inline else chr(34) + str(ca) + chr(34)}")
    lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {str(v).lower()}"
              for k, v in flags.items()]
    return "\n".join(lines) + "\n"


def request(method: str, ruri: str, via: str, transport: str = "TLS") -> bytes:
    n = time.monotonic_ns()
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {via};rport;branch=z9hG4bK{n}\r\n"
            f"From: <sip:alice@alice.test>;tag=a{n}\r\nTo: <{ruri}>\r\n"
            f"Call-ID: tls-{n}@alice.test\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
            + ("Contact: <sip:alice@127.0.54.9;transport=tls>\r\n" if method == "INVITE" else "")
            + "Content-Length: 0\r\n\r\n").encode()


def s_client(port: int, ip: str, pki, cert=None, requests: tuple[bytes, ...] = (),
             replies: int = 1, timeout: float = 5.0) -> tuple[str, bool]:
    """Send requests over one TLS connection with `openssl s_client`. Returns what came back
    once `replies` SIP responses arrived, the server closed, or `timeout`; and whether the
    connection was closed (by the server, or because the handshake failed)."""
    cmd = ["openssl", "s_client", "-connect", f"{ip}:{port}", "-quiet", "-no_ign_eof",
           "-CAfile", str(pki.ca.pem_path), "-verify_return_error", "-verify_ip", ip]
    if cert is not None:
        cmd += ["-cert", str(cert.cert), "-key", str(cert.key)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out = b""
    closed = False
    try:
        for data in requests:
            p.stdin.write(data)
            p.stdin.flush()
        deadline = time.monotonic() + timeout
        while out.count(b"SIP/2.0 ") < replies and time.monotonic() < deadline:
            ready, _, _ = select.select([p.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    closed = True
                    break
                out += chunk
    finally:
        p.kill()
        err = p.communicate(timeout=5)[1]
    return out.decode(errors="replace") + "\n--stderr--\n" + err.decode(errors="replace"), closed


def statuses(text: str) -> list[str]:
    return re.findall(r"^SIP/2\.0 (\d{3})", text, re.M)


@needs_openssl
def test_openssl_client_sends_options_and_invite_over_tls(sipedge_factory, pki, uas):
    port = free_port("tcp", A_IP)
    sipedge_factory([("tls", A_IP, port), ("udp", A_IP, port)], name="edge-a",
                    extra=tls_section(pki.a, ca=pki.ca.pem_path))
    n = len(uas.received)
    text, _ = s_client(port, A_IP, pki, requests=(
        request("OPTIONS", f"sip:{A_IP}:{port};transport=tls", f"{UAC_IP}:5061"),
        request("INVITE", f"sip:bob@{UAS_IP}:{uas.port}", f"{UAC_IP}:5061")), replies=2)
    assert sorted(statuses(text)) == ["200", "200"], text
    got = uas.received[n:]
    assert [r.method for r in got] == ["INVITE"]
    assert f"SIP/2.0/UDP {A_IP}:{port}" in got[0].data.decode()


@needs_openssl
@pytest.mark.parametrize("dest", ["sip:{ip}:{port};transport=tls", "sips:{ip}:{port}"])
def test_sipedge_to_sipedge_over_tls_with_reuse_and_mutual_auth(sipedge_factory, pki, uas,
                                                                  dest):
    """UDP client -> A --TLS--> B -> UDP UAS. B requires a client certificate (A's, from the
    shared CA) and has its certificate and CA inline in the config. A verifies B's
    certificate against the IP it connects to. Three requests share one TLS connection."""
    a_port, b_port = free_port("udp", A_IP), free_port("tcp", B_IP)
    sipedge_factory([("tls", B_IP, b_port), ("udp", B_IP, b_port)], name="edge-b",
                    extra=tls_section(pki.b, ca=pki.ca.pem_path, inline=True,
                                      require_certificate=True))
    sipedge_factory([("udp", A_IP, a_port), ("tls", A_IP, a_port)], name="edge-a",
                    extra=tls_section(pki.a, ca=pki.ca.pem_path)
                    + f'[routing]\ndefault_destination = "{dest.format(ip=B_IP, port=b_port)}"\n')
    n = len(uas.received)
    for _ in range(3):
        assert udp_request(a_port, f"sip:bob@{UAS_IP}:{uas.port}").startswith("SIP/2.0 200")
    got = uas.received[n:]
    assert len(got) == 3
    tls_vias = [re.search(rf"Via: SIP/2.0/TLS {A_IP}:{a_port};[^\r]*", g.data.decode()).group(0)
                for g in got]
    ports = {re.search(r"rport=(\d+)", v).group(1) for v in tls_vias}
    assert len(ports) == 1, tls_vias  # one connection A -> B, reused
    # B's inline key went to a private temporary file only while OpenSSL read it
    assert not list(Path(tempfile.gettempdir()).glob("sipedge-tls-*"))


def udp_request(port: int, ruri: str, ip: str = A_IP, timeout: float = 3.0) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((UAC_IP, 0))
        s.settimeout(timeout)
        s.sendto(request("OPTIONS", ruri, f"{UAC_IP}:{s.getsockname()[1]}", "UDP"), (ip, port))
        try:
            return s.recv(65535).decode(errors="replace")
        except socket.timeout:
            return "no reply"


def test_server_certificate_for_another_address_is_not_trusted(sipedge_factory, pki, uas):
    """C presents B's certificate (valid for 127.0.54.2 only) on 127.0.54.3: A refuses the
    connection, nothing is forwarded."""
    a_port, c_port = free_port("udp", A_IP), free_port("tcp", C_IP)
    c = sipedge_factory([("tls", C_IP, c_port), ("udp", C_IP, c_port)], name="edge-c",
                        extra=tls_section(pki.b))
    a = sipedge_factory([("udp", A_IP, a_port), ("tls", A_IP, a_port)], name="edge-a",
                        extra=tls_section(pki.a, ca=pki.ca.pem_path)
                        + f'[routing]\ndefault_destination = "sips:{C_IP}:{c_port}"\n')
    n = len(uas.received)
    assert udp_request(a_port, f"sip:bob@{UAS_IP}:{uas.port}", timeout=1.0) == "no reply"
    assert wait_for(lambda: "certificate verify failed" in a.log() or
                    "CERTIFICATE_VERIFY_FAILED" in a.log(), timeout=3), a.log()
    assert uas.received[n:] == []
    del c


@needs_openssl
def test_client_certificates_required(sipedge_factory, pki, uas):
    port = free_port("tcp", B_IP)
    sipedge_factory([("tls", B_IP, port), ("udp", B_IP, port)], name="edge-b",
                    extra=tls_section(pki.b, ca=pki.ca.pem_path, require_certificate=True,
                                      min_version="1.3"))
    ruri = f"sip:bob@{UAS_IP}:{uas.port}"
    n = len(uas.received)
    # trusted certificate: served
    text, _ = s_client(port, B_IP, pki, pki.client, (request("OPTIONS", ruri, f"{UAC_IP}:5061"),))
    assert statuses(text) == ["200"], text
    assert len(uas.received) == n + 1
    # certificate from a CA sipedge does not trust, and no certificate at all: refused
    for cert in (pki.evil, None):
        text, closed = s_client(port, B_IP, pki, cert,
                                (request("OPTIONS", ruri, f"{UAC_IP}:5061"),))
        assert statuses(text) == [] and closed, text
    assert len(uas.received) == n + 1
