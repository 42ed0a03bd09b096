"""The relay agent (DRA) between a client of ours and freeDiameter servers on 127.0.0.1:
Route-Record, hop-by-hop rewrite, loops, unknown realms, failover with the T flag to a peer
that came up late, a client gone before its answer, a black-holed peer under 10k requests, and
a short soak with random server restarts (the long one is `make bench`).

freeDiameter (Debian build, no test_app) cannot originate application requests, so the client
is our own node; the servers are freeDiameter. A freeDiameter server with no application for
the request answers it with 3002 from its own Origin-Host: that answer, relayed back, is what
the client checks. SIGSTOP makes a server a black hole; SIGKILL makes it vanish.
"""

from __future__ import annotations

import asyncio
import gc
import random
import re
import signal
import time

import pytest
from diameter_harness import (
    CX,
    FreeDiameter,
    Route,
    dra_process,
    free_port,
    make_node,
    needs_freediameter,
    port_of,
    rss_kb,
    start_side,
    uar,
    wait_for,
)
from sipedge.diameter import dictionary as dd
from sipedge.modules.diameter.aio import DiameterError

pytestmark = [needs_freediameter, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def certdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fdcert")


class Lab:
    """client.cli (ours) -> dra.test (ours, relay) -> fd1.srv / fd2.srv (freeDiameter)."""

    def __init__(self, tmp, certdir, timeout=5.0, tw=30.0, start_fd2=True, routes=None):
        self.tmp, self.certdir = tmp, certdir
        self.p1, self.p2 = free_port("tcp"), free_port("tcp")
        self.routes = routes or [Route("srv", "fd1.srv", 1), Route("srv", "fd2.srv", 50)]
        self.dra = make_node("dra.test", "mid", [("client.cli", None), ("fd1.srv", self.p1),
                                                ("fd2.srv", self.p2)], apps=(), relay=True,
                             routes=self.routes, timeout=timeout, tw=tw)
        self.fd1 = self.fd2 = None
        self.start_fd2 = start_fd2

    def fd(self, name, port):
        return FreeDiameter(self.tmp, name, "srv", [("dra.test", None)], self.certdir,
                            port=port).start()

    async def __aenter__(self):
        self.fd1 = self.fd("fd1.srv", self.p1)
        if self.start_fd2:
            self.fd2 = self.fd("fd2.srv", self.p2)
        self.dsvc = await start_side(self.dra)
        self.cli = make_node("client.cli", "cli", [("dra.test", port_of(self.dsvc))],
                             routes=[Route("*", "dra.test")], timeout=20.0)
        self.csvc = await start_side(self.cli)
        names = ["client.cli", "fd1.srv"] + (["fd2.srv"] if self.start_fd2 else [])
        await wait_for(lambda: all(self.dra.peers[n].usable for n in names), 20, "all open")
        return self

    async def __aexit__(self, *exc):
        await self.csvc.stop(timeout=1)
        await self.dsvc.stop(timeout=1)
        for fd in (self.fd1, self.fd2):
            if fd is not None:
                fd.stop()

    async def ask(self, user="alice", realm="srv", extra=(), timeout=10.0):
        return await self.csvc.request(CX, 300, uar(user) + list(extra), dest_realm=realm,
                                       timeout=timeout)

    def pending_ids(self):
        return [(pe.out_hbh, pe.msg.end_to_end)
                for per in self.cli.pending.values() for pe in per.values()]


def rcv_dumps(fd, code=300):
    """The header dumps of messages freeDiameter received with this command code."""
    return re.findall(r"RCV from '[^']+':\n(?:.*\n){0,3}?.*Flags: 0x\w+ \((\S+)\)\n"
                      rf".*Command Code: {code}\n.*\n.*Hop-by-Hop Identifier: (0x\w+)\n"
                      r".*End-to-End Identifier: (0x\w+)", fd.log())


def test_relay_route_record_hbh_rewrite_loop_and_unknown_realm(tmp_path, certdir):
    async def body():
        async with Lab(tmp_path, certdir) as lab:
            task = asyncio.ensure_future(lab.ask())
            await asyncio.sleep(0)  # the request is sent, its answer not read yet
            (hbh, e2e), = lab.pending_ids()
            ans = await task
            # the answer is fd1's, relayed back to us with our own hop-by-hop id
            assert dd.get(ans.avps, "Origin-Host") == "fd1.srv"
            assert ans.hop_by_hop == hbh and ans.end_to_end == e2e
            await wait_for(lambda: rcv_dumps(lab.fd1), 5, "fd1's dump of the request")
            dumps = rcv_dumps(lab.fd1)
            assert dumps, lab.fd1.log()[-4000:]
            flags, fd_hbh, fd_e2e = dumps[-1]
            assert int(fd_e2e, 16) == e2e and int(fd_hbh, 16) != hbh and "T" not in flags
            await wait_for(lambda: re.search(r"'Route-Record'\(282\) l=\d+ f=-M "
                                             r"val=\"client.cli\"", lab.fd1.log()), 5,
                           "Route-Record with the client's identity at fd1")
            seen = len(rcv_dumps(lab.fd1)) + len(rcv_dumps(lab.fd2))
            # a request already carrying our identity: 3005 from us, E bit, not forwarded
            ans = await lab.ask(extra=[dd.avp("Route-Record", "dra.test")])
            assert dd.get(ans.avps, "Result-Code") == 3005 and ans.is_error
            assert dd.get(ans.avps, "Origin-Host") == "dra.test"
            # unknown realm: 3002 at once from us
            t0 = time.monotonic()
            ans = await lab.ask(realm="nowhere.example")
            assert dd.get(ans.avps, "Result-Code") == 3002 and ans.is_error
            assert dd.get(ans.avps, "Origin-Host") == "dra.test"
            assert time.monotonic() - t0 < 2.0
            await asyncio.sleep(0.3)
            assert len(rcv_dumps(lab.fd1)) + len(rcv_dumps(lab.fd2)) == seen
            # the base protocol kept running alongside
            assert lab.dra.stats["rx CER"] + lab.dra.stats["rx CEA"] >= 3

    asyncio.run(body())


def test_failover_with_t_flag_when_server_dies(tmp_path, certdir):
    async def body():
        async with Lab(tmp_path, certdir) as lab:
            lab.fd1.signal(signal.SIGSTOP)  # black hole
            task = asyncio.ensure_future(lab.ask(user="bob"))
            await wait_for(lambda: lab.dra.npending == 1, 10, "request pending at fd1")
            (hbh, e2e), = lab.pending_ids()
            await asyncio.sleep(0.3)
            t_kill = time.monotonic()
            lab.fd1.kill()
            ans = await task
            latency = time.monotonic() - t_kill
            assert dd.get(ans.avps, "Origin-Host") == "fd2.srv"
            assert ans.hop_by_hop == hbh and ans.end_to_end == e2e
            await wait_for(lambda: rcv_dumps(lab.fd2), 5, "fd2's dump of the request")
            flags = [f for f, _, e in rcv_dumps(lab.fd2) if int(e, 16) == e2e]
            assert flags == ["RP-T"], lab.fd2.log()[-3000:]
            assert lab.dra.stats["failovers"] == 1 and lab.dra.npending == 0
            print(f"failover latency after SIGKILL: {latency * 1000:.0f} ms")

    asyncio.run(body())


def test_watchdog_suspect_fails_over_then_late_answer_is_dropped(tmp_path, certdir):
    """fd1 is frozen, not killed: no DWA within Tw makes it SUSPECT and its pending request
    moves to fd2 (T flag); when fd1 thaws, its late answer is dropped and it is used again."""
    async def body():
        async with Lab(tmp_path, certdir, tw=1.0) as lab:
            lab.fd1.signal(signal.SIGSTOP)
            t0 = time.monotonic()
            ans = await lab.ask(user="frank")
            assert dd.get(ans.avps, "Origin-Host") == "fd2.srv"
            assert time.monotonic() - t0 < 6  # about two Tw (1 s each), with slack for CI
            await wait_for(lambda: rcv_dumps(lab.fd2), 5, "fd2's dump of the request")
            assert [f for f, _, _ in rcv_dumps(lab.fd2)] == ["RP-T"]
            assert lab.dra.peers["fd1.srv"].watchdog.value in ("SUSPECT", "DOWN", "REOPEN")
            lab.fd1.signal(signal.SIGCONT)
            await wait_for(lambda: lab.dra.peers["fd1.srv"].usable, 15, "fd1 usable again")
            ans = await lab.ask(user="gina")
            assert dd.get(ans.avps, "Origin-Host") == "fd1.srv"

    asyncio.run(body())


def test_failover_uses_server_that_connected_after_first_routing(tmp_path, certdir):
    async def body():
        async with Lab(tmp_path, certdir, start_fd2=False) as lab:
            assert not lab.dra.peers["fd2.srv"].usable
            lab.fd1.signal(signal.SIGSTOP)
            task = asyncio.ensure_future(lab.ask(user="carol"))
            await wait_for(lambda: lab.dra.npending == 1, 10, "request pending at fd1")
            lab.fd2 = lab.fd("fd2.srv", lab.p2)  # comes up only now
            await wait_for(lambda: lab.dra.peers["fd2.srv"].usable, 15, "fd2 open")
            lab.fd1.kill()
            ans = await task
            assert dd.get(ans.avps, "Origin-Host") == "fd2.srv"
            await wait_for(lambda: rcv_dumps(lab.fd2), 5, "fd2's dump of the request")
            assert [f for f, _, _ in rcv_dumps(lab.fd2)] == ["RP-T"]

    asyncio.run(body())


def test_client_gone_before_answer_is_dropped_and_dra_keeps_serving(tmp_path, certdir):
    async def body():
        async with Lab(tmp_path, certdir, routes=[Route("srv", "fd1.srv", 1)]) as lab:
            lab.fd1.signal(signal.SIGSTOP)
            task = asyncio.ensure_future(lab.ask(user="dave", timeout=3))
            await wait_for(lambda: lab.dra.npending == 1, 10, "request pending at fd1")
            for tr in list(lab.csvc._transports.values()):
                tr.abort()  # the client vanishes
            await wait_for(lambda: not lab.dra.peers["client.cli"].usable, 3, "client gone")
            lab.fd1.signal(signal.SIGCONT)  # fd1 answers now
            await wait_for(lambda: lab.dra.stats["answers_dropped_origin_gone"] == 1, 5,
                           "answer dropped")
            assert lab.dra.npending == 0
            with pytest.raises(DiameterError):
                await task
            # the client reconnects (Tc) and is served again
            await wait_for(lambda: lab.cli.peers["dra.test"].usable, 10, "client back")
            ans = await lab.ask(user="erin")
            assert dd.get(ans.avps, "Origin-Host") == "fd1.srv"

    asyncio.run(body())


def test_10k_requests_to_black_hole_leave_no_growth(tmp_path, certdir):
    async def body():
        async with Lab(tmp_path, certdir, timeout=1.5,
                       routes=[Route("srv", "fd1.srv", 1)]) as lab:
            lab.fd1.signal(signal.SIGSTOP)
            lab.cli.settings.max_pending = 20000

            async def burst(n):
                tasks = [asyncio.ensure_future(lab.ask(user=f"u{i}", timeout=30))
                         for i in range(n)]
                results = await asyncio.gather(*tasks, return_exceptions=True)
                return [dd.get(r.avps, "Result-Code") if not isinstance(r, Exception) else r
                        for r in results]

            codes = await burst(5000)
            assert set(codes) == {3002}
            lab.dsvc.node.get_timer()
            gc.collect()
            base = len(gc.get_objects())
            codes = await burst(5000)
            assert set(codes) == {3002}
            assert lab.dra.npending == 0 and not lab.dra.pending
            lab.dra.get_timer()
            assert not lab.dra._deadlines
            gc.collect()
            grown = len(gc.get_objects()) - base
            assert grown < 2000, f"{grown} objects more after the second 5000"
            assert lab.dra.stats["timeouts"] == 10000
            lab.fd1.signal(signal.SIGCONT)

    asyncio.run(body())


def test_short_soak_random_server_restarts(tmp_path, certdir):
    """~25 s: both servers are killed and restarted at random while the client sends a
    bounded stream of requests through a DRA process; every request gets an answer, the DRA
    never restarts and its RSS stays flat."""
    p1, p2 = free_port("tcp"), free_port("tcp")
    dport = free_port("tcp")
    proc = dra_process(tmp_path, f"""
[diameter]
identity = "dra.test"
realm = "mid"
relay = true
tc_s = 0.5
tw_s = 6
request_timeout_s = 2
[[diameter.listen]]
address = "127.0.0.1"
port = {dport}
[[diameter.peer]]
host = "client.cli"
[[diameter.peer]]
host = "fd1.srv"
address = "127.0.0.1"
port = {p1}
[[diameter.peer]]
host = "fd2.srv"
address = "127.0.0.1"
port = {p2}
[[diameter.route]]
realm = "srv"
peer = "fd1.srv"
[[diameter.route]]
realm = "srv"
peer = "fd2.srv"
""")
    fds = {n: FreeDiameter(tmp_path, n, "srv", [("dra.test", None)], certdir, port=p).start()
           for n, p in (("fd1.srv", p1), ("fd2.srv", p2))}
    rng = random.Random(7)

    async def body():
        cli = make_node("client.cli", "cli", [("dra.test", dport)],
                        routes=[Route("*", "dra.test")], timeout=10.0)
        csvc = await start_side(cli)
        await wait_for(lambda: cli.peers["dra.test"].usable, 15, "client open")
        answered = errors = 0
        rss = []
        end = time.monotonic() + 25
        next_restart = time.monotonic() + 2
        while time.monotonic() < end:
            batch = [asyncio.ensure_future(csvc.request(CX, 300, uar(f"s{answered}"),
                                                        dest_realm="srv", timeout=8))
                     for _ in range(20)]
            for r in await asyncio.gather(*batch, return_exceptions=True):
                if isinstance(r, Exception):
                    errors += 1
                else:
                    answered += 1
            if time.monotonic() > next_restart:
                name = rng.choice(sorted(fds))
                fds[name].kill()
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                fds[name] = FreeDiameter(tmp_path, name, "srv", [("dra.test", None)], certdir,
                                         port=p1 if name == "fd1.srv" else p2).start()
                next_restart = time.monotonic() + rng.uniform(1, 3)
            assert proc.poll() is None, (tmp_path / "dra.log").read_text()[-3000:]
            rss.append(rss_kb(proc.pid))
            await asyncio.sleep(0.1)
        await csvc.stop(timeout=1)
        return answered, errors, rss

    try:
        answered, errors, rss = asyncio.run(body())
    finally:
        for fd in fds.values():
            fd.stop()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
    assert rc == 0
    assert errors == 0 and answered > 500
    warm = max(rss[len(rss) // 4:len(rss) // 2])
    assert max(rss[len(rss) // 2:]) - warm < 8 * 1024, rss
    print(f"soak: {answered} answered, RSS {rss[0]} -> {rss[-1]} kB")
