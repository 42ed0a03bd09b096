"""The DRA with real Diameter clients around it, not only our own node:

- freeDiameter as the client: Debian's freeDiameterd has no test_app, so the tests compile a
  small extension of ours (fdpeer/fdpeer.c, needs libfreediameter-dev) that makes
  freeDiameterd originate Cx UARs (client mode) or answer them with 2001 (server mode);
- Kamailio as the client: cdp + ims_diameter_server (`diameter_request()` from a SIP route),
  with a Kamailio cdp server behind the DRA answering from event_route[diameter:request].

Each client's own matching proves the hop-by-hop restore: freeDiameter and cdp match an
answer to their request by hop-by-hop id, so an answer they accept came back with theirs.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time

import pytest
from diameter_harness import (
    CX_3GPP,
    RX_3GPP,
    KAM_CLIENT_ROUTE,
    KAM_SERVER_ROUTE,
    FdClient,
    FD_EXT,
    FreeDiameter,
    KamDiameter,
    Route,
    build_fdpeer,
    fd_requests,
    fd_server,
    free_port,
    make_node,
    needs_cdp,
    needs_freediameter,
    port_of,
    start_side,
    uar_json,
    wait_for,
)
from sipedge.diameter import dictionary as dd
from sipedge.diameter.peer import State

pytestmark = [needs_freediameter, pytest.mark.timeout(150)]

T_FLAG = 0x10
DRA_LOCAL = "localhost"
E_FLAG = 0x20


@pytest.fixture(scope="module")
def certdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fdcert")


@pytest.fixture(scope="module")
def fdpeer(tmp_path_factory):
    ext = build_fdpeer(tmp_path_factory.mktemp("fdpeer"))
    if ext is None:
        pytest.skip("cc or freeDiameter headers (Debian libfreediameter-dev) missing")
    return ext


class FdLab:
    """fdc.cli (freeDiameter client) -> dra.test (ours, relay) -> fd1.srv / fd2.srv
    (freeDiameter servers answering 2001)."""

    def __init__(self, tmp, certdir, ext, start_fd2=True, tw=30.0):
        self.tmp, self.certdir, self.ext = tmp, certdir, ext
        self.p1, self.p2 = free_port("tcp"), free_port("tcp")
        self.dra = make_node("dra.test", "mid", [("fdc.cli", None), ("fd1.srv", self.p1),
                                                ("fd2.srv", self.p2)], apps=(), relay=True,
                             routes=[Route("srv", "fd1.srv", 1), Route("srv", "fd2.srv", 50)],
                             timeout=10.0, tw=tw)
        self.start_fd2 = start_fd2
        self.fd1 = self.fd2 = self.cli = None

    def server(self, name, port):
        return fd_server(self.tmp, self.ext, name, "srv", "dra.test", self.certdir,
                         port).start()

    async def __aenter__(self):
        self.fd1 = self.server("fd1.srv", self.p1)
        if self.start_fd2:
            self.fd2 = self.server("fd2.srv", self.p2)
        self.dsvc = await start_side(self.dra)
        self.cli = FdClient(self.tmp, self.ext, "fdc.cli", "cli", "dra.test",
                            port_of(self.dsvc), self.certdir).start()
        names = ["fdc.cli", "fd1.srv"] + (["fd2.srv"] if self.start_fd2 else [])
        await wait_for(lambda: all(self.dra.peers[n].usable for n in names), 25, "all open")
        # we are open once our CEA is sent, the client once it has read it: a request it sent
        # before would get 3002 from the client itself
        await wait_for(lambda: self.cli.fd.is_open("dra.test"), 10, "open on the client's side")
        return self

    async def __aexit__(self, *exc):
        # the DRA first: a freeDiameter stopped while the (in-process) DRA cannot run would
        # wait for the DPA to its DPR
        await self.dsvc.stop(timeout=2)
        if self.cli is not None:
            self.cli.stop()
        for fd in (self.fd1, self.fd2):
            if fd is not None:
                fd.stop()

    async def answers(self, n, timeout=15):
        await wait_for(lambda: len(self.cli.answers()) >= n, timeout, f"{n} answers at fdc.cli")
        return self.cli.answers()


def test_freediameter_client_relayed_to_freediameter_servers(tmp_path, certdir, fdpeer):
    """Real traffic: Route-Record, hop-by-hop rewrite (the client matched its answers), end-to-end
    kept; an unknown realm -> 3002 with the E bit from the DRA, forwarded nowhere."""
    async def body():
        async with FdLab(tmp_path, certdir, fdpeer) as lab:
            lab.cli.send("a", "srv", 5)
            ans = await lab.answers(5)
            assert {a["kind"] for a in ans.values()} == {"ANS"}, ans
            assert {a["rc"] for a in ans.values()} == {"2001"}
            assert {a["origin"] for a in ans.values()} == {"fd1.srv"}  # metric 1 wins
            assert all(a["e2e"] == a["req_e2e"] for a in ans.values())
            reqs = fd_requests(tmp_path, "fd1.srv")
            assert sorted(reqs) == [f"a-{i}" for i in range(5)]
            assert all(int(r["flags"], 16) & T_FLAG == 0 for r in reqs.values())
            assert {r["e2e"] for r in reqs.values()} == {a["e2e"] for a in ans.values()}
            # fd1 saw the DRA's own hop-by-hop ids, not the ones the client sent
            client_hbh = set(re.findall(r"Command Code: 300\n.*\n.*Hop-by-Hop Identifier: "
                                        r"(0x\w+)", lab.cli.fd.log()))
            assert len(client_hbh) == 5, lab.cli.fd.log()[-3000:]
            assert not client_hbh & {r["hbh"] for r in reqs.values()}
            await wait_for(lambda: re.search(r"'Route-Record'\(282\) l=\d+ f=-M "
                                             r"val=\"fdc.cli\"", lab.fd1.log()), 5,
                           "Route-Record with the client's identity at fd1")
            # unknown realm: 3002 at once from the DRA, E bit, nothing forwarded
            lab.cli.send("b", "nowhere.example", 1)
            ans = await lab.answers(6)
            b = ans["b-0"]
            assert b["rc"] == "3002" and b["origin"] == "dra.test"
            assert int(b["flags"], 16) & E_FLAG
            assert len(fd_requests(tmp_path, "fd1.srv")) == 5 and \
                not fd_requests(tmp_path, "fd2.srv")
            # predictive loop avoidance: fd1 (the better route) is already in Route-Record,
            # so the DRA sends the request to fd2
            lab.cli.send("p", "srv", 1, route_record="fd1.srv")
            ans = await lab.answers(7)
            assert ans["p-0"]["rc"] == "2001" and ans["p-0"]["origin"] == "fd2.srv"
            assert "p-0" in fd_requests(tmp_path, "fd2.srv")
            assert lab.dra.stats["tx UAA"] == 7

    asyncio.run(body())


def test_freediameter_client_failover_to_late_server_with_t_flag(tmp_path, certdir, fdpeer):
    """fd1 black-holes the client's request; fd2 comes up only after the request was routed;
    fd1 is killed -> the request goes to fd2 with the T flag, the client gets fd2's 2001."""
    async def body():
        async with FdLab(tmp_path, certdir, fdpeer, start_fd2=False) as lab:
            lab.fd1.signal(signal.SIGSTOP)
            lab.cli.send("c", "srv", 1)
            await wait_for(lambda: lab.dra.npending == 1, 10, "request pending at fd1")
            lab.fd2 = lab.server("fd2.srv", lab.p2)
            await wait_for(lambda: lab.dra.peers["fd2.srv"].usable, 20, "fd2 open")
            t_kill = time.monotonic()
            lab.fd1.kill()
            ans = await lab.answers(1)
            latency = time.monotonic() - t_kill
            assert ans["c-0"]["kind"] == "ANS" and ans["c-0"]["rc"] == "2001"
            assert ans["c-0"]["origin"] == "fd2.srv"
            req = fd_requests(tmp_path, "fd2.srv")["c-0"]
            assert int(req["flags"], 16) & T_FLAG and req["e2e"] == ans["c-0"]["e2e"]
            assert lab.dra.stats["failovers"] == 1 and lab.dra.npending == 0
            print(f"failover (freeDiameter client) after SIGKILL: {latency * 1000:.0f} ms")

    asyncio.run(body())


def test_freediameter_client_killed_before_answer(tmp_path, certdir, fdpeer):
    """The client vanishes while its request is held by a frozen server: the answer is dropped
    and counted, the DRA keeps serving a new client."""
    async def body():
        async with FdLab(tmp_path, certdir, fdpeer) as lab:
            lab.fd1.signal(signal.SIGSTOP)
            lab.cli.send("d", "srv", 3)
            await wait_for(lambda: lab.dra.npending == 3, 10, "3 requests pending at fd1")
            lab.cli.fd.kill()
            await wait_for(lambda: not lab.dra.peers["fdc.cli"].usable, 5, "client gone")
            lab.fd1.signal(signal.SIGCONT)
            await wait_for(lambda: lab.dra.stats["answers_dropped_origin_gone"] == 3, 10,
                           "answers dropped")
            assert lab.dra.npending == 0
            await asyncio.to_thread(lab.cli.stop)
            lab.cli = FdClient(tmp_path, fdpeer, "fdc.cli", "cli", "dra.test",
                               port_of(lab.dsvc), certdir).start()
            lab.cli.out.unlink(missing_ok=True)
            await wait_for(lambda: lab.dra.peers["fdc.cli"].usable
                           and lab.cli.fd.is_open("dra.test"), 20, "client back")
            lab.cli.send("e", "srv", 1)
            ans = await lab.answers(1)
            assert ans["e-0"]["rc"] == "2001" and ans["e-0"]["origin"] == "fd1.srv"

    asyncio.run(body())


def test_5010_against_freediameter_with_an_application(tmp_path, certdir, fdpeer):
    """freeDiameter announces the relay application unless told `NoRelay;`; with fdpeer and
    NoRelay it announces only Cx, so a node that does only Rx has nothing in common with it:
    CEA 5010 and close, in both directions."""
    async def body():
        # freeDiameter connects: we answer its CER with 5010 and close
        rx1 = make_node("rx.test", "test", [("fd1.srv", None)], apps=(), vendor_apps=RX_3GPP)
        svc = await start_side(rx1)
        fd = FreeDiameter(tmp_path, "fd1.srv", "srv", [("rx.test", port_of(svc))], certdir,
                          extensions=[(fdpeer, f"server {tmp_path / 'fd1.out'}")],
                          relay=False).start()
        try:
            await wait_for(lambda: "'DIAMETER_NO_COMMON_APPLICATION' (5010" in fd.log(), 20,
                           "our CEA 5010 at freeDiameter")
            await wait_for(lambda: not svc._transports, 5, "connection closed")
            assert rx1.stats["tx CEA"] >= 1 and not rx1.peers["fd1.srv"].usable
            assert "STATE_OPEN" not in fd.log()
        finally:
            await svc.stop(timeout=1)
            fd.stop()
        # we connect: freeDiameter answers our CER with 5010, we close and stay closed until Tc
        fdport = free_port("tcp")
        fd2 = FreeDiameter(tmp_path, "fd2.srv", "srv", [("rx2.test", None)], certdir,
                           port=fdport, extensions=[(fdpeer, f"server {tmp_path / 'fd2.out'}")],
                           relay=False).start()
        await wait_for(fd2.ready, 20, "freeDiameter listening")
        rx2 = make_node("rx2.test", "test", [("fd2.srv", fdport)], apps=(), vendor_apps=RX_3GPP)
        rx2.peers["fd2.srv"].settings.tc_s = 60
        svc2 = await start_side(rx2)
        try:
            await wait_for(lambda: rx2.stats["rx CEA"] >= 1, 20, "CEA from freeDiameter")
            await wait_for(lambda: not svc2._transports, 5, "connection closed")
            assert "sending DIAMETER_NO_COMMON_APPLICATION" in fd2.log()
            peer = rx2.peers["fd2.srv"]
            assert not peer.usable and peer.state == State.CLOSED and peer.failures >= 1
        finally:
            await svc2.stop(timeout=1)
            fd2.stop()

    asyncio.run(body())


@needs_cdp
def test_kamailio_cdp_client_through_dra_with_failover(tmp_path, certdir, fdpeer):
    """Kamailio (cdp + ims_diameter_server) sends Cx UARs from a SIP route through the DRA to a
    Kamailio cdp server; the cdp server is frozen then killed -> the pending UAR reaches a
    freeDiameter server with the T flag and Kamailio's diameter_request() gets the answer."""
    # cdp resolves its peer's FQDN (no address attribute): the DRA is "localhost" here, which
    # /etc/hosts answers, so no DNS query leaves the box
    async def body():
        fd2_port = free_port("tcp")
        dra = make_node(DRA_LOCAL, "mid", [("kcli.kam", None), ("ksrv.srv", None),
                                           ("fd2.srv", fd2_port)], apps=(), relay=True,
                        vendor_apps=CX_3GPP, routes=[Route("srv", "ksrv.srv", 1),
                                                     Route("srv", "fd2.srv", 50)],
                        timeout=10.0, tw=30.0)
        dsvc = await start_side(dra)
        dport = port_of(dsvc)
        ksrv = KamDiameter(tmp_path, "ksrv.srv", "srv", DRA_LOCAL, dport,
                           KAM_SERVER_ROUTE).start()
        fd2 = fd_server(tmp_path, fdpeer, "fd2.srv", "srv", DRA_LOCAL, certdir, fd2_port).start()
        kcli = KamDiameter(tmp_path, "kcli.kam", "kam", DRA_LOCAL, dport, KAM_CLIENT_ROUTE,
                           timeout_s=15).start()
        try:
            await wait_for(lambda: all(dra.peers[n].usable for n in
                                       ("kcli.kam", "ksrv.srv", "fd2.srv")), 30, "all open")
            status = await asyncio.to_thread(kcli.request, DRA_LOCAL, uar_json("alice", "srv"))
            assert status.startswith("SIP/2.0 200"), (status, kcli.log()[-3000:])
            await wait_for(lambda: "DIAMETER-REQUEST cmd=300 app=16777216" in ksrv.log(), 5,
                           "the cdp server got the UAR")
            assert dra.stats["rx UAA"] == 1 and dra.stats["tx UAA"] == 1
            # the cdp server freezes (all its processes), the next UAR is held there
            ksrv.signal(signal.SIGSTOP)
            result = {}
            th = threading.Thread(target=lambda: result.update(
                status=kcli.request(DRA_LOCAL, uar_json("bob", "srv"))))
            th.start()
            await wait_for(lambda: dra.npending == 1, 10, "UAR pending at the cdp server")
            await asyncio.sleep(0.3)
            ksrv.kill()
            await asyncio.to_thread(th.join, 30)
            assert result.get("status", "").startswith("SIP/2.0 200"), result
            req = fd_requests(tmp_path, "fd2.srv")["bob"]
            assert int(req["flags"], 16) & T_FLAG
            assert dra.stats["failovers"] == 1 and dra.stats["tx UAA"] == 2
            assert dra.npending == 0
            # what Kamailio got back: both answers 2001 (its PV cannot show the answer after a
            # synchronous diameter_request in 5.6, so the DRA's per-result count says it)
            assert dra.result_stats[2001] == 2 and set(dra.result_stats) == {2001}, \
                dra.result_stats
            # cdp does no loop avoidance of its own: a UAR whose Route-Record already names
            # the DRA gets 3005 from the DRA and goes nowhere
            seen = len(fd_requests(tmp_path, "fd2.srv"))
            looped = uar_json("carol", "srv")[:-1] + \
                ', {"avpCode": 282, "vendorId": 0, "Flags": 64, "string": "localhost"}]'
            status = await asyncio.to_thread(kcli.request, DRA_LOCAL, looped)
            assert status.startswith("SIP/2.0 200"), status  # an answer came back
            assert dra.stats["loops"] == 1 and dra.result_stats[3005] == 1
            assert len(fd_requests(tmp_path, "fd2.srv")) == seen
        finally:
            await dsvc.stop(timeout=2)
            kcli.stop()
            ksrv.stop()
            fd2.stop()

    asyncio.run(body())


def test_dictionary_agrees_with_freediameter(tmp_path, certdir, fdpeer):
    """Our dictionary against freeDiameter's (base, nasreq, dcca and dict_dcca_3gpp, the last
    covering Cx/Sh/Rx/Gx/S6a): for every AVP both define, the same name, the same M-bit rule
    where freeDiameter fixes it, and the same base and derived type."""
    exts = [(FD_EXT / f"{n}.fdx", "") for n in ("dict_nasreq", "dict_dcca", "dict_dcca_3gpp")]
    out = tmp_path / "dict.out"
    fd = FreeDiameter(tmp_path, "dict.fd", "fd", [], certdir, dumps=False,
                      extensions=exts + [(fdpeer, f"dict {out}")]).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (out.exists() and "END" in out.read_text()):
            time.sleep(0.1)
    finally:
        fd.stop()
    theirs = {}
    for line in out.read_text().splitlines():
        if line.startswith("AVP "):
            _, vendor, code, name, mask, val, base, typ = line.split()
            theirs[(int(code), int(vendor))] = (name, int(mask, 16), int(val, 16), int(base), typ)
    assert len(theirs) > 500, fd.log()[-2000:]
    base_of = {dd.GROUPED: 0, dd.OCTETS: 1, dd.UTF8: 1, dd.IDENT: 1, dd.URI: 1, dd.ADDRESS: 1,
               dd.TIME: 1, dd.IPFILTER: 1, dd.I32: 2, dd.ENUM: 2, dd.I64: 3, dd.U32: 4, dd.U64: 5,
               dd.F32: 6, dd.F64: 7}
    derived = {dd.UTF8, dd.IDENT, dd.URI, dd.ADDRESS, dd.TIME, dd.IPFILTER}
    compared, problems = 0, []
    for key, a in dd.BY_CODE.items():
        if key not in theirs:
            continue
        compared += 1
        name, mask, val, base, typ = theirs[key]
        if name.lower() != a.name.lower():
            problems.append(f"{a.name} {key}: freeDiameter calls it {name}")
        if mask & 0x40 and bool(val & 0x40) != a.mandatory:
            problems.append(f"{a.name} {key}: M bit freeDiameter {bool(val & 0x40)}, "
                            f"ours {a.mandatory}")
        if base_of[a.type] != base:
            problems.append(f"{a.name} {key}: base type freeDiameter {base}, ours {a.type}")
        elif a.type in derived and typ != a.type:
            problems.append(f"{a.name} {key}: type freeDiameter {typ}, ours {a.type}")
        elif a.type == dd.ENUM and "Enumerated" not in typ:
            problems.append(f"{a.name} {key}: type freeDiameter {typ}, ours Enumerated")
    assert compared > 200
    assert not problems, "\n".join(problems)
