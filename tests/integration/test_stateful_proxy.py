"""Transaction-stateful proxy (t_relay, failure/reply routes) against real SIPp peers on
127.0.0.1 (issue 4, transactions part). Timers are shortened through [tm] so that every
transaction ends within a few seconds and `tm.stats` can be checked back at zero."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dns_harness import Bind9, needs_named
from sip_harness import SCENARIOS, free_port, needs_sipp, udp_socket

SCRIPT = '''
UAS1 = "{uas1_uri}"
UAS2 = "sip:127.0.0.1:{uas2}"
MODE = "{mode}"


def request_route(msg):
    if msg.in_dialog or msg.method in ("ACK", "CANCEL"):
        msg.t_relay()  # BYE statefully; ACK and unmatched CANCEL go statelessly
        return
    msg.t_on_reply("mark_reply")
    if MODE in ("failover", "tcpdown"):
        msg.t_on_failure("next_destination")
    elif MODE == "timeout":
        msg.t_on_failure("saw_timeout")
    elif MODE == "fork":
        msg.append_branch("sip:fork@127.0.0.1:{uas2}")
        msg.t_on_branch("per_branch")
    msg.t_relay(UAS1)


def mark_reply(reply):
    if not reply.has_hf("X-Proxied"):
        reply.append_hf("X-Proxied: For the reply")


if MODE == "loss":
    # 2xx retransmissions that outlive the INVITE transaction (the UAS's T1 is 10x ours)
    # are forwarded statelessly: the global reply route marks those too
    reply_route = mark_reply


def per_branch(msg):
    msg.append_hf("X-Branch", str(msg.branch_index))
    msg.log.info("branch %d ruri=%s", msg.branch_index, msg.ruri)


def next_destination(msg):
    if msg.t_check_status("404|503") and not msg.t_is_canceled():
        msg.log.info("failover after %d", msg.reply_status)
        msg.set_dst_uri(UAS2)
        msg.t_relay()


def saw_timeout(msg):
    if msg.t_check_status("408"):
        msg.t_reply(480, "Failure Route Saw 408")
'''

TM = """
[tm]
t1_ms = {t1}
t2_ms = 400
t4_ms = 200
timer_d_s = 0.5
wait_timer_s = 0.5
fr_timeout_s = {fr}
fr_inv_timeout_s = 10
"""


def start(sipedge_factory, tmp_path, mode, uas1, uas2, workers=1, fr=5.0, t1=50, tcp=False,
          extra=""):
    script = tmp_path / f"route_{mode}.py"
    uas1_uri = uas1 if isinstance(uas1, str) else f"sip:127.0.0.1:{uas1}"
    script.write_text(SCRIPT.format(uas1_uri=uas1_uri, uas2=uas2, mode=mode))
    port = free_port()
    listeners = [("udp", "127.0.0.1", port)] + ([("tcp", "127.0.0.1", port)] if tcp else [])
    edge = sipedge_factory(listeners, workers=workers,
                           extra=f'[routing]\nscript = "{script}"\n' + TM.format(fr=fr, t1=t1)
                           + extra)
    return edge, port


def wait_idle(edge, timeout=12.0) -> dict:
    """Poll tm.stats until no transaction is left (workers publish twice a second). Only
    snapshots taken after the call count: one from before the last call began can show an
    idle proxy too (between two calls), without that call's transactions."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        stats = edge.rpc("tm.stats")
        assert "exited rc" not in edge.log(), edge.log()  # no worker died (counters reset)
        assert stats["absorbing"] == sum(w.get("absorbing", 0) for w in stats["workers"].values())
        fresh = stats["age_s"] < time.monotonic() - started
        if fresh and stats["active_total"] == 0 and stats["contexts"] == 0 \
                and stats["workers_reporting"] == len(stats["workers"]):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"transactions left: {stats}\n{edge.log()}")
        time.sleep(0.25)


class LossyRelay:
    """A UDP relay that drops every fifth datagram in each direction (20 %, deterministic).

    Whatever reaches `port` from a client goes to `target` from a second socket; what comes
    back to that socket goes to the last client. Runs in a thread; bounded by stop()."""

    def __init__(self, target: int, drop_every: int = 5) -> None:
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.target = ("127.0.0.1", target)
        self.drop_every = drop_every
        self.client: tuple[str, int] | None = None
        self.counts = {"up": 0, "down": 0}
        self.dropped = {"up": 0, "down": 0}
        self.lost: list[str] = []  # first line of every dropped datagram, for diagnosis
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _pass(self, direction: str) -> bool:
        self.counts[direction] += 1
        if self.counts[direction] % self.drop_every == 1:
            self.dropped[direction] += 1
            return False
        return True

    def _keep(self, direction: str, data: bytes) -> bool:
        if self._pass(direction):
            return True
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        self.lost.append(f"{direction}: {first}")
        return False

    def _run(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self.front, self.back], [], [], 0.1)
            for s in ready:
                data, addr = s.recvfrom(65535)
                if s is self.front:
                    self.client = addr
                    if self._keep("up", data):
                        self.back.sendto(data, self.target)
                elif self.client is not None and self._keep("down", data):
                    self.front.sendto(data, self.client)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.front.close()
        self.back.close()


class BlackHole:
    """A 'UAS' that takes INVITEs and never answers; counts what it got."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.received.append(self.sock.recv(65535))
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@needs_sipp
@pytest.mark.parametrize("workers", [1, 2])
def test_404_failure_route_relays_to_second_uas(sipedge_factory, sipp, tmp_path, workers):
    uas1, uas2, uac = free_port(), free_port(), free_port()
    edge, port = start(sipedge_factory, tmp_path, "failover", uas1, uas2, workers=workers)
    sipp.uas("stateful/uas_404.xml", uas1)
    sipp.uas("uas_rr.xml", uas2)
    rc, log = sipp.uac("stateful/uac_call.xml", f"127.0.0.1:{port}", uac, calls=20, rate=20)
    assert rc == 0, log + edge.log()
    assert "failover after 404" in edge.log()
    stats = wait_idle(edge)
    assert stats["total"]["ist"] == 20 and stats["total"]["ict"] == 40  # two tries per call
    assert stats["total"]["nist"] == 20  # the BYEs


@needs_sipp
def test_failover_with_caller_over_tcp(sipedge_factory, sipp, tmp_path):
    """Caller over TCP (reliable: no retransmission timers upstream), callees over UDP, two
    workers: replies to the UDP branches are handed to the worker owning the transaction
    and the TCP connection."""
    uas1, uas2, uac = free_port(), free_port(), free_port()
    edge, port = start(sipedge_factory, tmp_path, "failover", uas1, uas2, workers=2, tcp=True)
    sipp.uas("stateful/uas_404.xml", uas1)
    sipp.uas("uas_rr.xml", uas2)
    rc, log = sipp.uac("stateful/uac_call.xml", f"127.0.0.1:{port}", uac, calls=10, rate=20,
                       extra=["-t", "t1"])
    assert rc == 0, log + edge.log()
    stats = wait_idle(edge)
    assert stats["total"]["ist"] == 10 and stats["total"]["ict"] == 20


@needs_sipp
def test_tcp_connect_refused_is_a_503_for_the_failure_route_at_once(sipedge_factory, sipp,
                                                                   tmp_path):
    """The first destination is TCP on a port where nothing listens: the refused connect
    ends that branch with a 503 (RFC 3261 16.9) and the failure route relays to the second
    UAS right away, not after fr_timeout_s (30 s here)."""
    closed = free_port()  # nothing listens on it (TCP)
    uas2, uac = free_port(), free_port()
    edge, port = start(sipedge_factory, tmp_path, "tcpdown",
                       f"sip:127.0.0.1:{closed};transport=tcp", uas2, fr=30.0, tcp=True)
    sipp.uas("uas_rr.xml", uas2)
    t0 = time.monotonic()
    rc, log = sipp.uac("stateful/uac_call.xml", f"127.0.0.1:{port}", uac, calls=10, rate=20)
    elapsed = time.monotonic() - t0
    assert rc == 0, log + edge.log()
    assert elapsed < 10, elapsed
    assert edge.log().count("failover after 503") == 10, edge.log()
    stats = wait_idle(edge)
    assert stats["total"]["ict"] == 20  # the refused branch and the one that worked


@needs_sipp
def test_no_answer_408_reaches_failure_route_within_fr_timer(sipedge_factory, sipp, tmp_path):
    hole = BlackHole()
    try:
        uac = free_port()
        edge, port = start(sipedge_factory, tmp_path, "timeout", hole.port, 9, fr=1.0)
        t0 = time.monotonic()
        rc, log = sipp.uac("stateful/uac_no_answer.xml", f"127.0.0.1:{port}", uac, calls=3,
                           rate=10)
        elapsed = time.monotonic() - t0
        assert rc == 0, log + edge.log()
        assert 1.0 <= elapsed < 5.0, elapsed  # fr_timeout_s = 1, not Timer B (3.2 s)
        invites = [m for m in hole.received if m.startswith(b"INVITE")]
        assert len(invites) >= 3 * 3  # retransmitted every T1, 2 T1, ... until the timeout
        assert not any(m.startswith(b"CANCEL") for m in hole.received)  # no provisional
        wait_idle(edge)
    finally:
        hole.stop()


@needs_sipp
@pytest.mark.parametrize("workers", [2])
def test_cancel_while_ringing_487_and_no_transaction_left(sipedge_factory, sipp, tmp_path,
                                                          workers):
    uas1, uac = free_port(), free_port()
    edge, port = start(sipedge_factory, tmp_path, "plain", uas1, 9, workers=workers)
    uas = sipp.uas("stateful/uas_ring_cancel.xml", uas1)
    rc, log = sipp.uac("stateful/uac_cancel.xml", f"127.0.0.1:{port}", uac, calls=10, rate=20)
    assert rc == 0, log + edge.log()
    stats = wait_idle(edge)
    assert stats["total"]["ist"] == 10 and stats["total"]["ict"] == 10
    assert stats["total"]["nist"] == 10 and stats["total"]["nict"] == 10  # the CANCELs
    # the same through the CLI
    out = subprocess.run([sys.executable, "-c", "from sipedge.cli import ctl_main; ctl_main()",
                          "-s", edge.ctl, "--json", "tm.stats"], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 0, out.stderr
    assert '"active_total": 0' in out.stdout
    # the UAS got every CANCEL (its scenario fails a call otherwise)
    time.sleep(0.3)
    uas_out = Path(sipp.workdir / f"sipp-uas-{uas1}.out")
    assert uas.poll() is None, uas_out.read_text(errors="replace")


def _wait_for(socks, pattern: bytes, timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in socks:
            try:
                data = s.recv(65535)
            except socket.timeout:
                continue
            if data.startswith(pattern):
                return s, data
    raise AssertionError(f"no {pattern!r} within {timeout} s")


@needs_sipp
def test_cancel_from_another_source_port_reaches_the_invite_worker(sipedge_factory, sipp,
                                                                     tmp_path):
    """A UA sends each CANCEL from a fresh socket (another source port than its INVITE), so
    with 4 workers the kernel usually delivers it to a worker that does not own the INVITE:
    the CANCEL is passed round the workers, the owner answers 200, CANCELs downstream and
    the caller gets 487. Eight calls: without the hand-off about 3 in 4 would get 481."""
    uas1 = free_port()
    edge, port = start(sipedge_factory, tmp_path, "plain", uas1, 9, workers=4)
    uas = sipp.uas("stateful/uas_ring_cancel.xml", uas1)
    proxy = ("127.0.0.1", port)
    for i in range(8):
        a = udp_socket(0.2)
        b = udp_socket(0.2)
        try:
            pa = a.getsockname()[1]
            via = f"SIP/2.0/UDP 127.0.0.1:{pa};branch=z9hG4bKport{i}x{pa};rport"
            common = (f"From: <sip:a@127.0.0.1:{pa}>;tag=f{i}\r\nTo: <sip:b@127.0.0.1>\r\n"
                      f"Call-ID: cancel-port-{i}-{pa}@127.0.0.1\r\n")
            a.sendto((f"INVITE sip:b@127.0.0.1:{uas1} SIP/2.0\r\nVia: {via}\r\n"
                      "Max-Forwards: 70\r\n" + common + "CSeq: 1 INVITE\r\n"
                      f"Contact: <sip:a@127.0.0.1:{pa}>\r\nContent-Length: 0\r\n\r\n").encode(),
                     proxy)
            _wait_for([a], b"SIP/2.0 180")
            b.sendto((f"CANCEL sip:b@127.0.0.1:{uas1} SIP/2.0\r\nVia: {via}\r\n"
                      "Max-Forwards: 70\r\n" + common + "CSeq: 1 CANCEL\r\n"
                      "Content-Length: 0\r\n\r\n").encode(), proxy)
            _sock, ok = _wait_for([a, b], b"SIP/2.0 200")
            assert b"CSeq: 1 CANCEL" in ok, ok
            _sock, final = _wait_for([a], b"SIP/2.0 487")
            to = next(ln for ln in final.decode().split("\r\n") if ln.startswith("To:"))
            a.sendto((f"ACK sip:b@127.0.0.1:{uas1} SIP/2.0\r\nVia: {via}\r\n"
                      "Max-Forwards: 70\r\n"
                      + common.replace("To: <sip:b@127.0.0.1>", to) + "CSeq: 1 ACK\r\n"
                      "Content-Length: 0\r\n\r\n").encode(), proxy)
        finally:
            a.close()
            b.close()
    stats = wait_idle(edge)
    assert stats["total"]["ist"] == 8 and stats["total"]["nist"] == 8  # INVITEs and CANCELs
    assert stats["total"]["nict"] == 8  # every CANCEL went downstream once
    time.sleep(0.3)
    assert uas.poll() is None, (sipp.workdir / f"sipp-uas-{uas1}.out").read_text(errors="replace")


@needs_sipp
@pytest.mark.parametrize("workers", [2])
def test_parallel_fork_first_200_wins_other_branch_cancelled(sipedge_factory, sipp, tmp_path,
                                                             workers):
    uas1, uas2, uac = free_port(), free_port(), free_port()
    edge, port = start(sipedge_factory, tmp_path, "fork", uas1, uas2, workers=workers)
    sipp.uas("uas_rr.xml", uas1)
    sipp.uas("stateful/uas_ring_cancel.xml", uas2)
    rc, log = sipp.uac("stateful/uac_call.xml", f"127.0.0.1:{port}", uac, calls=10, rate=20)
    assert rc == 0, log + edge.log()
    stats = wait_idle(edge)
    assert stats["total"]["ict"] == 20  # two branches per call
    assert "branch 1 ruri=sip:fork@127.0.0.1" in edge.log()  # t_on_branch ran per branch
    assert stats["total"]["nict"] >= 20  # 10 BYEs + 10 CANCELs to the losing branch
    errors = sipp.workdir / f"sipp-{uas2}-errors.log"
    assert not errors.exists() or "Aborting call" not in errors.read_text(errors="replace")


def with_t1(tmp_path, scenario: str, t1_ms: int) -> str:
    """A copy of a scenario whose retransmissions start at `t1_ms` (RFC 3261 assumes one T1
    on both sides: our transactions expire after 64*T1 of the proxy's T1)."""
    path = SCENARIOS / scenario
    out = tmp_path / f"t1_{path.name}"
    out.write_text(path.read_text().replace('retrans="500"', f'retrans="{t1_ms}"'))
    return str(out)


@needs_sipp
def test_loss_retransmissions_absorbed_calls_complete(sipedge_factory, sipp, tmp_path):
    """UAC -> lossy relay -> sipedge -> lossy relay -> UAS, 20 % loss each way on each hop
    (SIPp sends every request of the call to the relay, so BYE and ACK are lossy too)."""
    uas1, uac = free_port(), free_port()
    down = LossyRelay(uas1)
    edge, port = start(sipedge_factory, tmp_path, "loss", down.port, 9, t1=100)
    up = LossyRelay(port)
    try:
        # the UAS stays in the call for 4 s after its 200 for the BYE: when that 200 is lost,
        # our BYE retransmissions (every T1..T2 for 64*T1 = 6.4 s) must still find the call
        # (SIPp answers a retransmission with its last reply only while the call exists)
        uas = Path(with_t1(tmp_path, "uas_rr.xml", 100))
        uas.write_text(uas.read_text().replace('<timewait milliseconds="500"/>',
                                               '<timewait milliseconds="4000"/>'))
        sipp.uas(str(uas), uas1)
        rc, log = sipp.uac(with_t1(tmp_path, "stateful/uac_call.xml", 100),
                           f"127.0.0.1:{up.port}", uac, calls=20, rate=10)
        assert rc == 0, f"{log}\n{edge.log()}\nlost up: {up.lost}\nlost down: {down.lost}"
        assert up.dropped["up"] >= 4 and down.dropped["up"] >= 4  # losses really happened
        assert down.dropped["down"] >= 4
        stats = wait_idle(edge, timeout=20)
        assert stats["total"]["ist"] == 20  # every INVITE retransmission was absorbed
    finally:
        up.stop()
        down.stop()


@needs_sipp
@needs_named
def test_rfc3263_failover_to_next_srv_target_on_timeout(sipedge_factory, sipp, tmp_path):
    """t_relay to a name whose first SRV target never answers: after fr_timeout the branch
    fails over to the next SRV target (RFC 3263 4.3) and the call completes."""
    hole = BlackHole()
    uas, uac, dns_port = free_port(), free_port(), free_port()
    zone = "tm.test"
    (tmp_path / "bind").mkdir()
    bind = Bind9(tmp_path / "bind", "127.0.0.1", dns_port, zone,
                 f"_sip._udp.fo IN SRV 10 0 {hole.port} host\n"
                 f"_sip._udp.fo IN SRV 20 0 {uas} host\n"
                 "host IN A 127.0.0.1\n")
    bind.start()
    try:
        edge, port = start(sipedge_factory, tmp_path, "plain", f"sip:fo.{zone}", 9, fr=1.0,
                           extra=f'[dns]\nservers = ["127.0.0.1:{dns_port}"]\ntimeout_s = 0.5\n')
        sipp.uas("uas_rr.xml", uas)
        rc, log = sipp.uac("stateful/uac_call.xml", f"127.0.0.1:{port}", uac, calls=3, rate=5)
        assert rc == 0, log + edge.log()
        assert edge.log().count("trying the next server of fo.tm.test") == 3
        assert sum(m.startswith(b"INVITE") for m in hole.received) >= 3
        wait_idle(edge)
    finally:
        bind.stop()
        hole.stop()
