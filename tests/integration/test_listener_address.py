"""A listener whose address does not exist yet starts once the address appears (DHCP, VLANs).

Runs sipedge inside a network namespace the test creates; the address lives only there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from sipedge.io.rpc import RpcError, rpc_call

pytestmark = [pytest.mark.needs_root,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                 reason="needs root and iproute2 for a network namespace")]

ADDR = "198.18.77.1"  # RFC 2544 benchmarking range, configured only inside the namespace

OPTIONS_CLIENT = r"""
import socket, sys, uuid
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 0)); s.settimeout(1.0)
lp = s.getsockname()[1]
m = (f"OPTIONS sip:{addr}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {addr}:{lp};rport;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
     f"From: <sip:t@{addr}>;tag=1\r\nTo: <sip:{addr}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
     "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
s.sendto(m.encode(), (addr, port))
print(s.recv(4096).split(b"\r\n", 1)[0].decode())
"""


@pytest.fixture
def netns():
    name = f"sipedge-la-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_listener_starts_when_its_address_appears(netns, tmp_path):
    ctl = str(tmp_path / "ctl.sock")
    cfg = tmp_path / "sipedge.toml"
    cfg.write_text(f'[core]\nworkers = 1\nctl_socket = "{ctl}"\n\n'
                   f'[[listen]]\nproto = "udp"\naddress = "{ADDR}"\nport = 5060\n')
    log = open(tmp_path / "sipedge.log", "wb")
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "sipedge",
                             "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if rpc_call(ctl, "core.health")["workers_alive"] == 1:
                    break
            except RpcError:
                pass
            assert proc.poll() is None, (tmp_path / "sipedge.log").read_text()
            time.sleep(0.2)
        else:
            pytest.fail("sipedge did not start:\n" + (tmp_path / "sipedge.log").read_text())
        assert "waits for its address" in (tmp_path / "sipedge.log").read_text()
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{ADDR}/32", "dev", "lo"], check=True)
        status = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not status.startswith("SIP/2.0 200"):
            out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c",
                                  OPTIONS_CLIENT, ADDR, "5060"], capture_output=True, text=True)
            status = out.stdout.strip()
        assert status == "SIP/2.0 200 OK", (tmp_path / "sipedge.log").read_text()
        assert "its address appeared" in (tmp_path / "sipedge.log").read_text()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


MESSAGE_CLIENT = r"""
import socket, sys, uuid
ruri_host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); s.settimeout(2.0)
lp = s.getsockname()[1]
codes = []
for method in ("OPTIONS", "MESSAGE"):
    m = (f"{method} sip:{ruri_host}:{port} SIP/2.0\r\n"
         f"Via: SIP/2.0/UDP 127.0.0.1:{lp};rport;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
         f"From: <sip:t@elsewhere.example>;tag=1\r\nTo: <sip:{ruri_host}>\r\n"
         f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
         "Content-Length: 0\r\n\r\n")
    s.sendto(m.encode(), ("127.0.0.1", port))
    while True:
        d = s.recv(4096).decode()
        if not d.split(" ", 2)[1].startswith("1"):
            break
    codes.append(d.split(" ", 2)[1])
print(" ".join(codes))
"""


def test_wildcard_listener_knows_an_address_that_appears_after_start(netns, tmp_path):
    """Issue 11, point 10: a DHCP address arriving after the proxy started is "myself" at
    once; before, requests for it got 403 Relaying Denied or 482 Loop Detected."""
    from sipedge.config import FACTORY_PATH

    ctl = str(tmp_path / "ctl.sock")
    cfg = tmp_path / "sipedge.toml"
    cfg.write_text(FACTORY_PATH.read_text().replace("/run/sipedge/ctl.sock", ctl)
                   .replace("/data/sipedge/location.sqlite", str(tmp_path / "loc.sqlite")))
    log = open(tmp_path / "sipedge.log", "wb")
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "sipedge",
                             "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        codes = ""
        while time.monotonic() < deadline:
            out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c",
                                  MESSAGE_CLIENT, "127.0.0.1", "5060"], capture_output=True,
                                 text=True, timeout=20)
            codes = out.stdout.strip()
            if codes.startswith("200"):
                break
        assert codes.startswith("200"), (tmp_path / "sipedge.log").read_text()
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{ADDR}/32", "dev", "lo"], check=True)
        out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c",
                              MESSAGE_CLIENT, ADDR, "5060"], capture_output=True, text=True,
                             timeout=20)
        options, message = out.stdout.split()
        assert options == "200", out.stdout
        assert message not in ("403", "482"), out.stdout  # myself: the registrar answers
        assert "learned own address 198.18.77.1" in (tmp_path / "sipedge.log").read_text()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
