"""Stateless proxy against real SIPp peers on 127.0.0.1 (issue 2)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sip_harness import free_port, needs_sipp

from sipedge.io.rpc import RpcError

EXAMPLE = Path(__file__).parents[2] / "app" / "sipedge" / "examples" / "edge_route.py"


def udp_exchange(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 2.0,
                 expect_reply: bool = True) -> bytes | None:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        try:
            return s.recv(65535)
        except socket.timeout:
            if expect_reply:
                raise
            return None


def request(method: str, ruri: str, extra: str = "", via_host: str = "127.0.0.1:5999",
            cseq_method: str | None = None) -> bytes:
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via_host};rport;branch=z9hG4bK{abs(hash((method, ruri, extra)))}\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            f"To: <{ruri}>\r\n"
            f"Call-ID: test-{time.monotonic_ns()}@127.0.0.1\r\n"
            f"CSeq: 1 {cseq_method or method}\r\n"
            f"{extra}"
            f"Content-Length: 0\r\n\r\n").encode()


def status_of(reply: bytes) -> tuple[int, str]:
    first = reply.split(b"\r\n", 1)[0].decode()
    _, code, reason = first.split(" ", 2)
    return int(code), reason


@needs_sipp
@pytest.mark.parametrize("workers", [1, 2])
def test_calls_through_record_routing_proxy(sipedge_factory, sipp, workers):
    port, uas_port, uac_port = free_port(), free_port(), free_port()
    edge = sipedge_factory([("udp", "127.0.0.1", port)], workers=workers,
                           extra=f'[routing]\ndefault_destination = "sip:127.0.0.1:{uas_port}"\n')
    sipp.uas("uas_rr.xml", uas_port)
    rc, log = sipp.uac("uac_rr.xml", f"127.0.0.1:{port}", uac_port, calls=200, rate=100)
    assert rc == 0, log
    stats = edge.settled_stats()
    assert stats["requests_out"]["INVITE"] == 200
    assert stats["requests_out"]["BYE"] == 200
    assert stats["requests_out"]["ACK"] == 200
    assert stats["parse_errors"] == 0
    # uvloop is a dependency; each worker says which loop it runs
    assert edge.log_path.read_text().count("event loop: uvloop") == workers


@needs_sipp
def test_calls_over_tcp_with_replies_handed_to_the_owning_worker(sipedge_factory, sipp):
    """UAC over TCP, UAS over UDP, two workers: a reply that the kernel gives to the worker
    that does not own the TCP connection is handed over to the one that does."""
    port, uas_port, uac_port = free_port(), free_port(), free_port()
    edge = sipedge_factory([("udp", "127.0.0.1", port), ("tcp", "127.0.0.1", port)], workers=2,
                           extra=f'[routing]\ndefault_destination = "sip:127.0.0.1:{uas_port}"\n')
    sipp.uas("uas_rr.xml", uas_port)
    rc, log = sipp.uac("uac_rr.xml", f"127.0.0.1:{port}", uac_port, calls=100, rate=50,
                       extra=["-t", "tn", "-max_socket", "20"])
    assert rc == 0, log
    total = edge.settled_stats()
    assert total["requests_out"]["INVITE"] == 100
    # with 20 TCP connections spread over two workers, some replies must have changed worker
    assert total.get("handoff_in", 0) > 0


@needs_sipp
def test_calls_over_ipv6(sipedge_factory, sipp):
    port, uas_port, uac_port = free_port(host="::1"), free_port(host="::1"), free_port(host="::1")
    edge = sipedge_factory([("udp", "::1", port)], workers=1,
                           extra=f'[routing]\ndefault_destination = "sip:[::1]:{uas_port}"\n')
    sipp.background.append(subprocess.Popen(
        ["sipp", "-sf", str(Path(__file__).parent / "scenarios" / "uas_rr.xml"), "-i", "::1",
         "-p", str(uas_port), "-nostdin"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.3)
    out = subprocess.run(
        ["sipp", "-sf", str(Path(__file__).parent / "scenarios" / "uac_rr.xml"), "-i", "::1",
         "-p", str(uac_port), "-m", "20", "-r", "20", "-nostdin", "-timeout", "30s",
         "-timeout_error", f"[::1]:{port}"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:]
    assert edge.settled_stats()["requests_out"]["INVITE"] == 20


@needs_sipp
def test_example_script_rewrites_host_and_appends_header(sipedge_factory, sipp, tmp_path):
    port, uas_port, uac_port = free_port(), free_port(), free_port()
    script = tmp_path / "route.py"
    script.write_text(EXAMPLE.read_text().replace("NEXT_HOP_PORT = 5080",
                                                  f"NEXT_HOP_PORT = {uas_port}"))
    sipedge_factory([("udp", "127.0.0.1", port)], workers=2,
                    extra=f'[routing]\nscript = "{script}"\n')
    sipp.uas("uas_rr_script.xml", uas_port)
    rc, log = sipp.uac("uac_rr_script.xml", f"127.0.0.1:{port}", uac_port, calls=50, rate=50,
                       extra=["-s", "someone"])
    assert rc == 0, log
    # R-URI host is ours: REGISTER gets "200 Sure", anything else "500 Got no idea"
    reply = udp_exchange(port, request("REGISTER", f"sip:127.0.0.1:{port}"))
    assert status_of(reply) == (200, "Sure")
    reply = udp_exchange(port, request("MESSAGE", f"sip:bob@127.0.0.1:{port}"))
    assert status_of(reply) == (500, "Got no idea")


@needs_sipp
def test_malformed_datagram_gets_400_and_service_continues(sipedge_factory, sipp):
    port, uas_port, uac_port = free_port(), free_port(), free_port()
    edge = sipedge_factory([("udp", "127.0.0.1", port)], workers=1,
                           extra=f'[routing]\ndefault_destination = "sip:127.0.0.1:{uas_port}"\n')
    bad_cseq = request("INVITE", "sip:bob@127.0.0.1").replace(b"CSeq: 1 INVITE",
                                                              b"CSeq: one INVITE")
    code, reason = status_of(udp_exchange(port, bad_cseq))
    assert code == 400 and reason == "Bad CSeq"
    no_colon = request("OPTIONS", "sip:bob@127.0.0.1", "Subject no colon\r\n")
    assert status_of(udp_exchange(port, no_colon)) == (400, "Header without colon")
    # without a Call-ID no reply can be built: dropped
    no_call_id = request("OPTIONS", "sip:bob@127.0.0.1").replace(b"Call-ID:", b"Call-ID")
    assert udp_exchange(port, no_call_id, timeout=0.5, expect_reply=False) is None
    short_body = request("MESSAGE", "sip:bob@127.0.0.1").replace(b"Content-Length: 0",
                                                                 b"Content-Length: 50")
    assert status_of(udp_exchange(port, short_body)) == (400, "Body shorter than Content-Length")
    # garbage cannot be answered: dropped, and the proxy keeps serving
    assert udp_exchange(port, b"\x00\xff garbage \r\n\r\n", timeout=0.5,
                        expect_reply=False) is None
    sipp.uas("uas_rr.xml", uas_port)
    rc, log = sipp.uac("uac_rr.xml", f"127.0.0.1:{port}", uac_port, calls=10, rate=10)
    assert rc == 0, log
    assert edge.settled_stats()["parse_errors"] >= 4


def test_proxy_rules_answered_statelessly(sipedge_factory):
    port = free_port()
    sipedge_factory([("udp", "127.0.0.1", port)], workers=1,
                    extra=f'[routing]\ndefault_destination = "sip:127.0.0.1:{port}"\n')
    # OPTIONS to the proxy itself
    reply = udp_exchange(port, request("OPTIONS", f"sip:127.0.0.1:{port}"))
    assert status_of(reply) == (200, "OK")
    assert b"Allow: INVITE" in reply and b"Accept: application/sdp" in reply
    assert b";tag=" in reply.split(b"\r\nTo:", 1)[1].split(b"\r\n", 1)[0]
    # received / rport stamped on the Via of the reply
    assert b"received=127.0.0.1" in reply
    # Max-Forwards exhausted
    reply = udp_exchange(port, request("INVITE", "sip:bob@127.0.0.1", "Max-Forwards: 0\r\n"))
    assert status_of(reply) == (483, "Too Many Hops")
    # Proxy-Require we do not support
    reply = udp_exchange(port, request("INVITE", "sip:bob@127.0.0.1", "Proxy-Require: foo\r\n"))
    assert status_of(reply)[0] == 420 and b"Unsupported: foo" in reply
    # unsupported URI scheme
    reply = udp_exchange(port, request("INVITE", "mailto:bob@example.com"))
    assert status_of(reply)[0] == 416
    # default destination is the proxy itself: the request comes back and the loop is seen
    reply = udp_exchange(port, request("MESSAGE", "sip:bob@example.com"))
    assert status_of(reply) == (482, "Loop Detected")


def test_tcp_keepalive_and_idle_timeout(sipedge_factory):
    port = free_port()
    sipedge_factory([("tcp", "127.0.0.1", port)], workers=1,
                    extra="[proxy]\ntcp_idle_timeout_s = 2\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\r\n\r\n")
        assert s.recv(16) == b"\r\n"  # RFC 5626 pong
        s.sendall(request("OPTIONS", f"sip:127.0.0.1:{port}").replace(b"UDP", b"TCP"))
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        assert status_of(buf)[0] == 200
        s.settimeout(10)
        start = time.monotonic()
        assert s.recv(16) == b""  # closed by the idle timer
        assert time.monotonic() - start < 8


def test_control_socket_and_cli(sipedge_factory, tmp_path):
    port = free_port()
    edge = sipedge_factory([("udp", "127.0.0.1", port)], workers=2)
    assert edge.rpc("core.version")["version"]
    assert edge.rpc("core.uptime")["uptime_s"] > 0
    udp_exchange(port, request("OPTIONS", f"sip:127.0.0.1:{port}"))
    assert edge.settled_stats()["requests_in"]["OPTIONS"] == 1
    stats = edge.rpc("stats")
    assert set(stats["workers"]) == {"0", "1"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[core]\nworkers = "two"\n\n[[listen]]\nport = 70000\n')
    result = edge.rpc("config.check", {"file": str(bad)})
    assert result["valid"] is False
    assert f"{bad}:2: core.workers: expected an integer, got a string" in result["errors"]
    assert f"{bad}:5: listen[0].port: must be <= 65535" in result["errors"]
    out = subprocess.run([sys.executable, "-c", "from sipedge.cli import ctl_main; ctl_main()",
                          "-s", edge.ctl, "stats"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "requests_in:" in out.stdout and "OPTIONS: 1" in out.stdout
    out = subprocess.run([sys.executable, "-m", "sipedge", "--check-config", str(bad)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and f"{bad}:5: listen[0].port" in out.stdout
    with pytest.raises(RpcError):
        edge.rpc("no.such.method")


@needs_sipp
def test_script_reload_while_calls_flow(sipedge_factory, sipp, tmp_path):
    port, uas_port, uac_port = free_port(), free_port(), free_port()
    script = tmp_path / "route.py"
    body = EXAMPLE.read_text().replace("NEXT_HOP_PORT = 5080", f"NEXT_HOP_PORT = {uas_port}")
    script.write_text(body)
    edge = sipedge_factory([("udp", "127.0.0.1", port)], workers=2,
                           extra=f'[routing]\nscript = "{script}"\nreload_check_s = 0.2\n')
    sipp.uas("uas_rr_script.xml", uas_port)
    result: dict = {}

    def run_calls():
        result["rc"], result["log"] = sipp.uac("uac_rr_script.xml", f"127.0.0.1:{port}",
                                               uac_port, calls=300, rate=100)

    t = threading.Thread(target=run_calls)
    t.start()
    time.sleep(0.8)
    # 1. the file changes: picked up by the watcher
    script.write_text(body.replace('"X-Edge-Proxy", "sipedge"', '"X-Edge-Proxy", "sipedge v2"'))
    time.sleep(0.6)
    # 2. explicit reload over RPC
    assert edge.rpc("route.reload")["reloaded"] == str(script)
    # 3. a broken script is refused with file:line and the old one keeps running
    script.write_text(body + "\ndef broken(:\n")
    with pytest.raises(RpcError) as exc:
        edge.rpc("route.reload")
    assert f"{script}:" in exc.value.message and "syntax error" in exc.value.message
    t.join(60)
    assert result["rc"] == 0, result["log"]
    assert edge.rpc("core.health")["script_error"] is not None
    assert "routing script refused" in edge.log_path.read_text()


def test_stateless_cancel_carries_the_invite_branch_with_several_workers(sipedge_factory):
    """Stateless forwarding with 4 workers: a CANCEL from the INVITE's own socket matches no
    transaction, goes round the workers and is forwarded by the worker that forwarded the
    INVITE, so it carries the same branch (RFC 3261 16.11: otherwise the UAS answers 481).
    Five calls, each from a fresh socket (so from a different worker)."""
    port = free_port()
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.bind(("127.0.0.1", 0))
    uas.settimeout(3)
    sipedge_factory([("udp", "127.0.0.1", port)], workers=4,
                    extra=f'[routing]\ndefault_destination = "sip:127.0.0.1:{uas.getsockname()[1]}"\n')
    try:
        for i in range(5):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
                ua.bind(("127.0.0.1", 0))
                via = f"SIP/2.0/UDP 127.0.0.1:{ua.getsockname()[1]};rport;branch=z9hG4bKsl{i}"
                common = (f"From: <sip:alice@127.0.0.1>;tag=a{i}\r\nTo: <sip:bob@127.0.0.1>\r\n"
                          f"Call-ID: stateless-cancel-{i}-{time.monotonic_ns()}@127.0.0.1\r\n"
                          "Max-Forwards: 70\r\n")
                for method in ("INVITE", "CANCEL"):
                    ua.sendto((f"{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: {via}\r\n{common}"
                               f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode(),
                              ("127.0.0.1", port))
                got = {}
                for _ in range(10):  # bounded
                    data = uas.recv(65535)
                    method = data.split(b" ", 1)[0].decode()
                    top = next(ln for ln in data.decode().split("\r\n") if ln.startswith("Via:"))
                    got[method] = top.split("branch=", 1)[1].split(";", 1)[0]
                    if len(got) == 2:
                        break
                assert got["INVITE"] == got["CANCEL"], got
    finally:
        uas.close()
