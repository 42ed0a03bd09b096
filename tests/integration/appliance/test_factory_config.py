"""The shipped sipedge.toml (= factory default): not an open relay, no 0.0.0.0 in headers,
authenticating registrar; the board copy is the package's factory file (issue 11, point 3)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sipedge.config import FACTORY_PATH, load_file

REPO = Path(__file__).resolve().parents[3]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_board_file_is_the_factory_default():
    assert (REPO / "board/common/sipedge.toml").read_text() == FACTORY_PATH.read_text()
    cfg = load_file(FACTORY_PATH)
    assert {lp.address for lp in cfg.listen} == {"0.0.0.0"}
    assert cfg.management.console_device == "auto"
    assert "auth" in cfg.core.modules and cfg.routing.script.startswith("sipedge:")


def test_shipped_config_refuses_relaying_for_strangers(tmp_path):
    port = free_udp_port()
    text = (FACTORY_PATH.read_text().replace("port = 5060", f"port = {port}")
            .replace("/run/sipedge/ctl.sock", str(tmp_path / "ctl.sock"))
            .replace("/data/sipedge/location.sqlite", str(tmp_path / "loc.sqlite")))
    cfg = tmp_path / "sipedge.toml"
    cfg.write_text(text)
    log = open(tmp_path / "proxy.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sipedge", "--config", str(cfg)],
                            stdout=log, stderr=subprocess.STDOUT)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(1.0)
    lp = s.getsockname()[1]

    def ask(method: str, ruri: str, tries: int = 1) -> str:
        for _ in range(tries):
            m = (f"{method} {ruri} SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP 127.0.0.1:{lp};rport;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                 f"Max-Forwards: 70\r\nFrom: <sip:evil@attacker.example>;tag=1\r\n"
                 f"To: <{ruri}>\r\nCall-ID: {uuid.uuid4().hex}\r\nCSeq: 1 {method}\r\n"
                 f"Contact: <sip:evil@127.0.0.1:{lp}>\r\nContent-Length: 0\r\n\r\n")
            s.sendto(m.encode(), ("127.0.0.1", port))
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                try:
                    d = s.recv(65535).decode()
                except TimeoutError:
                    break
                if not d.split(" ", 2)[1].startswith("1"):
                    return d
        raise AssertionError(f"no final answer to {method}")

    try:
        ask("OPTIONS", f"sip:127.0.0.1:{port}", tries=30)  # up
        replies = {}
        for method, ruri in (("MESSAGE", "sip:victim@elsewhere.example"),
                             ("INVITE", "sip:+15551234@198.51.100.9"),
                             ("INVITE", "sip:bob@sipedge.local"),
                             ("REGISTER", "sip:sipedge.local")):
            replies[(method, ruri)] = ask(method, ruri)
    finally:
        proc.terminate()
        proc.wait(10)
        s.close()
    status = {k: v.split("\r\n")[0] for k, v in replies.items()}
    assert status[("MESSAGE", "sip:victim@elsewhere.example")].startswith("SIP/2.0 403")
    assert status[("INVITE", "sip:+15551234@198.51.100.9")].startswith("SIP/2.0 403")
    assert status[("INVITE", "sip:bob@sipedge.local")].split()[1] in ("404", "480"), status
    assert status[("REGISTER", "sip:sipedge.local")].startswith("SIP/2.0 401"), status
    for reply in replies.values():
        assert "0.0.0.0" not in reply, reply
