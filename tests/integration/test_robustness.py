"""Issue 14 against a running proxy: odd-but-valid messages are served, broken ones answered
right, statistics and block tables stay bounded and visible, the OPTIONS shortcut is only
for "myself". Every test also runs the standing log check of conftest.py (no traceback)."""

from __future__ import annotations

import socket
import time

import pytest

from sip_harness import SipEdge, free_port, make_config

ROUTE = '''
def request_route(msg):
    if msg.method == "OPTIONS" and msg.ruri_user is None:
        msg.reply(299, "Script Saw " + msg.from_host)
        return
    msg.reply(298, "Routed " + (msg.to_tag or "-"))
'''


def _edge(tmp_path, extra: str = "", modules: str = "", script: bool = True) -> tuple[SipEdge, int]:
    port = free_port()
    ctl = str(tmp_path / "sipedge.ctl")
    if script:
        (tmp_path / "route.py").write_text(ROUTE)
        extra = f'[routing]\nscript = "{tmp_path / "route.py"}"\n' + extra
    cfg = make_config(ctl, [("udp", "127.0.0.1", port), ("tcp", "127.0.0.1", port)], 1, extra)
    if modules:
        cfg = cfg.replace("[core]\n", f"[core]\nmodules = {modules}\n", 1)
    edge = SipEdge(tmp_path, cfg).start(1)
    return edge, port


@pytest.fixture
def edge_factory(tmp_path):
    started: list[SipEdge] = []

    def factory(**kw) -> tuple[SipEdge, int]:
        edge, port = _edge(tmp_path, **kw)
        started.append(edge)
        return edge, port

    yield factory
    for edge in started:
        assert edge.stop() == 0, edge.log()
        assert not edge.log_problems(), edge.log()


def _req(method="INVITE", ruri="sip:bob@example.com", *, from_="<sip:alice@example.org>;tag=f1",
         to="<sip:bob@example.com>", via="SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK{n}",
         extra: bytes = b"", version="SIP/2.0") -> bytes:
    n = time.monotonic_ns()
    return (f"{method} {ruri} {version}\r\nVia: {via.format(n=n)}\r\nFrom: {from_}\r\n"
            f"To: {to}\r\nCall-ID: rb-{n}@127.0.0.1\r\nCSeq: 1 {method}\r\n"
            f"Max-Forwards: 70\r\n").encode() + extra + b"Content-Length: 0\r\n\r\n"


def exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def status(reply: bytes | None) -> tuple[int, str] | None:
    if reply is None:
        return None
    _, code, reason = reply.split(b"\r\n", 1)[0].decode(errors="replace").split(" ", 2)
    return int(code), reason


def test_odd_but_valid_requests_reach_the_script(edge_factory):
    edge, port = edge_factory()
    sws = _req(via="SIP  /  2.0\r\n  /\tUDP   127.0.0.1:5999 ;rport;branch=z9hG4bK{n}")
    assert status(exchange(port, sws)) == (298, "Routed -")
    addr_spec = _req(to="sip:bob@example.com ;tag = 42a", from_="sip:alice@example.org ; tag=1")
    assert status(exchange(port, addr_spec)) == (298, "Routed 42a")
    nul = _req(from_='"Al\\\x00i\\\x07c\\\x7fe" <sip:alice@example.org>;tag=1')
    reply = exchange(port, nul.replace(b"\x00", b"\x00"))
    assert status(reply) == (298, "Routed -")
    assert b'"Al\\\x00i\\\x07c\\\x7fe"' in reply  # the From comes back as it was written


@pytest.mark.parametrize("dup", [b"Call-ID: other@x\r\n", b"i: other@x\r\n",
                                 b"From: <sip:eve@example.org>;tag=2\r\n", b"t: <sip:carol@x>\r\n",
                                 b"CSeq: 2 INVITE\r\n", b"Max-Forwards: 69\r\n"])
def test_duplicated_single_value_headers_get_400(edge_factory, dup):
    edge, port = edge_factory()
    reply = exchange(port, _req(extra=dup))
    code, reason = status(reply)
    assert code == 400 and reason.startswith("Duplicate "), reason
    assert reply.count(b"\r\nCall-ID:") == 1 and b"other@x" not in reply


def test_broken_requests_are_answered_not_raised(edge_factory):
    edge, port = edge_factory()
    holes = _req(via="SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK{n}, , SIP/2.0/UDP 127.0.0.1:5998")
    assert status(exchange(port, holes)) == (400, "Empty list element")
    for from_ in ('"Alice <sip:alice@example.org>;tag=1', "Alice <sip:alice@example.org;tag=1"):
        code, reason = status(exchange(port, _req(from_=from_)))
        assert code == 400 and reason, reason  # not the script's 500
    code, reason = status(exchange(port, _req(to="<sip:bob@exa mple.com")))
    assert code == 400
    assert status(exchange(port, _req(version="SIP/7.0"))) == (505, "Version Not Supported")
    st = edge.settled_stats()
    assert st.get("script_errors", 0) == 0 and st.get("internal_errors", 0) == 0
    assert status(exchange(port, _req())) == (298, "Routed -")  # still serving


def test_options_shortcut_only_for_myself(edge_factory):
    edge, port = edge_factory()
    mine = exchange(port, _req("OPTIONS", f"sip:127.0.0.1:{port}"))
    assert status(mine) == (200, "OK") and b"Allow: INVITE" in mine
    assert status(exchange(port, _req("OPTIONS", "sip:localhost:7000"))) == (200, "OK")  # alias
    other_port = free_port()
    assert status(exchange(port, _req("OPTIONS", f"sip:127.0.0.1:{other_port}"))) == (
        299, "Script Saw example.org")
    assert status(exchange(port, _req("OPTIONS", f"sip:127.0.0.1:{port};transport=tls"))) == (
        299, "Script Saw example.org")


def test_random_method_names_do_not_grow_statistics(edge_factory):
    edge, port = edge_factory()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(300):
            m = f"XM{i}"
            s.sendto(_req(m).replace(b"CSeq: 1 " + m.encode(), b"CSeq: 1 " + m.encode()),
                     ("127.0.0.1", port))
    assert status(exchange(port, _req())) == (298, "Routed -")
    total = edge.settled_stats()
    assert total["requests_in"].get("other", 0) >= 250
    assert not any(k.startswith("XM") for k in total["requests_in"])
    assert len(str(total)) < 4000


def test_flood_block_is_logged_once_counted_and_listed(edge_factory):
    edge, port = edge_factory(
        modules='["security"]',
        extra="[security]\nflood_window_s = 2\nflood_max_requests = 5\nflood_block_s = 2\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for _ in range(40):
            s.sendto(_req("OPTIONS", "sip:bob@example.com"), ("127.0.0.1", port))
    time.sleep(1.0)
    blocked = edge.rpc("sec.blocked")
    assert [b["ip"] for b in blocked] == ["127.0.0.1"]
    text = edge.log_path.read_text()
    assert text.count("blocked src=127.0.0.1 reason=flood duration_s=2") == 1, text[-3000:]
    deadline = time.monotonic() + 8
    while "unblocked src=127.0.0.1" not in edge.log_path.read_text():
        assert time.monotonic() < deadline, edge.log()
        time.sleep(0.3)
    assert edge.log_path.read_text().count("unblocked src=127.0.0.1 reason=flood") == 1
    st = edge.settled_stats()
    assert st["sec_blocks"] == 1 and st["sec_unblocks"] == 1 and st["sec_blocked"] >= 30
