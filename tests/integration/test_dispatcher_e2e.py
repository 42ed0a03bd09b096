"""The dispatcher module end to end: sipedge (2 workers, `[core] modules = ["dispatcher"]`)
in front of three SIPp UAS started with the lab helper (tools/lab/labkit.py), a UAS that
answers 503 and a port that never answers, all on 127.0.0.1. Calls come from a small UDP UAC
(sipcall.py); the answering UAS is told by the port in its Contact."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sip_harness import SipEdge, free_port, make_config, needs_sipp, reply_to
from sipcall import call

sys.path.insert(0, str(Path(__file__).parents[2] / "tools" / "lab"))
from labkit import Lab  # noqa: E402

pytestmark = [needs_sipp, pytest.mark.timeout(60)]

SCRIPT = '''
def request_route(msg):
    if msg.in_dialog:
        msg.t_relay()
        return
    user = msg.ruri_user or ""
    set_id, alg = 1, "round_robin"
    if user.startswith("hash"):
        alg = "hash_to"
    elif user == "fail503":
        set_id, alg = 2, "priority"
    elif user == "failtimeout":
        set_id, alg = 3, "priority"
    if not ksr.dispatcher.select(msg, set_id, alg):
        msg.reply(503, "No Destination Available")
        return
    msg.t_on_failure("failover")
    msg.t_relay()


def failover(msg):
    if msg.t_check_status("408|5[0-9][0-9]") and not msg.t_is_canceled():
        if ksr.dispatcher.next_destination(msg):
            msg.t_relay()
'''


class Answer503:
    """A UAS that answers every request with 503 (and counts the INVITEs it saw)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.invites = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
            if head[0].startswith(("SIP/2.0", "ACK ")):
                continue
            self.invites += head[0].startswith("INVITE ")
            self.sock.sendto(reply_to(data, "503 Service Unavailable", "busy"), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    work = tmp_path_factory.mktemp("dispatcher")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    busy = Answer503()
    with Lab(work / "lab", 3) as lab:
        u = lab.uas
        (work / "ds.list").write_text(
            lab.dispatcher_list(1, flags=8)
            + f"2 sip:127.0.0.1:{busy.port} 0 10\n2 {u[0].uri} 0 0\n"
            + f"3 sip:127.0.0.1:{silent.getsockname()[1]} 0 10\n3 {u[1].uri} 0 0\n")
        (work / "route.py").write_text(SCRIPT)
        port = free_port()
        cfg = make_config(str(work / "edge.ctl"), [("udp", "127.0.0.1", port)], workers=2,
                          extra='[routing]\nscript = "route.py"\n[tm]\nfr_timeout_s = 0.5\n'
                          '[dispatcher]\nlist_file = "ds.list"\nprobe_interval_s = 0.3\n'
                          'probe_timeout_s = 0.25\ninactive_after = 2\nactive_after = 2\n'
                          'probe_mode = "flagged"\nreload_min_interval_s = 0\n')
        cfg = cfg.replace("[core]\n", '[core]\nmodules = ["dispatcher"]\n', 1)
        edge = SipEdge(work, cfg, "edge")
        edge.port = port
        try:
            edge.start(workers=2)
            yield edge, lab, busy, work
        finally:
            edge.stop()
            busy.close()
            silent.close()


def _rows(edge, set_id: int = 1) -> dict[str, dict]:
    listing = edge.rpc("dispatcher.list")
    for s in listing["sets"]:
        if s["set"] == set_id:
            return {d["uri"]: d for d in s["destinations"]}
    return {}


def _wait_state(edge, uri: str, state: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    row: dict = {}
    while time.monotonic() < deadline:
        row = _rows(edge).get(uri, {})
        if row.get("state") == state and "worker_states" not in row:
            return row
        time.sleep(0.05)
    raise AssertionError(f"{uri} not {state}: {row}")


def test_round_robin_spreads_calls_over_three_uas(bed):
    edge, lab, _, _ = bed
    for u in lab.uas:
        _wait_state(edge, u.uri, "active")
    ports = Counter()
    src = free_port()  # one source: one worker, whose round-robin cursor we watch
    for i in range(9):
        r = call(edge.port, f"rr{i}", src_port=src)
        assert r.status == 200, (r, edge.log())
        ports[r.contact_port] += 1
    assert ports == {u.port: 3 for u in lab.uas}


def test_hash_over_to_keeps_a_users_calls_on_one_backend(bed):
    edge, lab, _, _ = bed
    alice = {call(edge.port, "hash-alice").contact_port for _ in range(5)}
    assert len(alice) == 1 and None not in alice
    spread = {call(edge.port, f"hash-user{i}").contact_port for i in range(12)}
    assert len(spread) >= 2 and spread <= {u.port for u in lab.uas}


def test_failover_on_503_with_next_destination(bed):
    edge, lab, busy, _ = bed
    before = busy.invites
    r = call(edge.port, "fail503")
    assert r.status == 200 and r.contact_port == lab.uas[0].port, (r, edge.log())
    assert busy.invites == before + 1


def test_failover_on_timeout_with_next_destination(bed):
    edge, lab, _, _ = bed
    t0 = time.monotonic()
    r = call(edge.port, "failtimeout", timeout=6)
    assert r.status == 200 and r.contact_port == lab.uas[1].port, (r, edge.log())
    assert 0.4 < time.monotonic() - t0 < 4
    rows = _rows(edge, 3)
    dead = next(d for uri, d in rows.items() if lab.uas[1].uri != uri)
    assert dead["relays_failed"] == 1  # counted by the tm driver before the failure route


def test_dead_uas_goes_inactive_and_calls_avoid_it_then_it_comes_back(bed):
    edge, lab, _, _ = bed
    down = lab.uas[2]
    down.stop()
    try:
        _wait_state(edge, down.uri, "inactive")
        ports = Counter(call(edge.port, f"rr-down{i}").contact_port for i in range(6))
        assert set(ports) == {lab.uas[0].port, lab.uas[1].port}, ports
    finally:
        down.start()
    _wait_state(edge, down.uri, "active")


def test_sipedgectl_dispatcher_list_set_state_reload(bed):
    edge, lab, _, work = bed
    ctl = [sys.executable, "-c", "from sipedge.cli import ctl_main; ctl_main()", "-s", edge.ctl]
    p = subprocess.run(ctl + ["--json", "dispatcher.list"], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    listing = json.loads(p.stdout)
    assert listing["workers"] == 2 and listing["probing_workers"] == [0]
    rows = {d["uri"]: d for s in listing["sets"] if s["set"] == 1 for d in s["destinations"]}
    assert set(rows) == {u.uri for u in lab.uas}
    for row in rows.values():
        assert row["state"] == "active" and row["selected"] >= 3
        assert row["probes_ok"] >= 2 and row["rtt_ms"] is not None
    # admin-disable one box: no call goes there
    uri = lab.uas[0].uri
    p = subprocess.run(ctl + ["dispatcher.set_state", "set=1", f"uri={uri}", "state=disabled"],
                       capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    _wait_state(edge, uri, "disabled", 2)
    ports = {call(edge.port, f"rr-dis{i}").contact_port for i in range(4)}
    assert lab.uas[0].port not in ports
    edge.rpc("dispatcher.set_state", {"set": 1, "uri": uri, "state": "active"})
    # reload: a bad list file is refused with its line number, the old table stays
    good = (work / "ds.list").read_text()
    (work / "ds.list").write_text(good + "1 not-a-uri\n")
    p = subprocess.run(ctl + ["dispatcher.reload"], capture_output=True, timeout=20)
    assert p.returncode != 0 and b"ds.list:" in p.stdout + p.stderr
    (work / "ds.list").write_text(good)
    result = edge.rpc("dispatcher.reload")
    assert result["kept"] == result["destinations"] == 7 and result["workers"] == 2


def test_bad_list_file_stops_the_start_with_line_numbers(tmp_path):
    (tmp_path / "ds.list").write_text("1 sip:127.0.0.1:5070\n1 sip:127.0.0.1:5070\nx y\n")
    cfg = make_config(str(tmp_path / "edge.ctl"), [("udp", "127.0.0.1", free_port())],
                      extra='[dispatcher]\nlist_file = "ds.list"\n')
    cfg = cfg.replace("[core]\n", '[core]\nmodules = ["dispatcher"]\n', 1)
    edge = SipEdge(tmp_path, cfg, "edge")
    with pytest.raises(RuntimeError, match="exited rc=2"):
        edge.start(workers=1, timeout=15)
    log = edge.log()
    assert f"{tmp_path / 'ds.list'}:2: uri: duplicate of line 1" in log
    assert f"{tmp_path / 'ds.list'}:3: set: expected an integer" in log
