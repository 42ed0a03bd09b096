"""Diameter peers against real freeDiameter and Kamailio cdp on 127.0.0.1: CER/CEA, election,
DWR/DWA, DPR/DPA, no common application (5010)."""

from __future__ import annotations

import asyncio
import re
import signal
import socket

import pytest
from diameter_harness import (
    CX,
    CX_3GPP,
    RX_3GPP,
    Cdp,
    FreeDiameter,
    free_port,
    make_node,
    needs_cdp,
    needs_freediameter,
    port_of,
    start_side,
    wait_for,
)
from sipedge.diameter.peer import State
from sipedge.modules.diameter.aio import DiameterService

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return tmp_path_factory.mktemp("fdcert")


@needs_freediameter
def test_freediameter_connects_cer_dwr_dpr(tmp_path, cert):
    async def body():
        node = make_node("dra.test", "test", [("fd1.srv", None)], tw=1.0)
        svc = await start_side(node)
        fd = FreeDiameter(tmp_path, "fd1.srv", "srv", [("dra.test", port_of(svc))], cert).start()
        try:
            peer = node.peers["fd1.srv"]
            await wait_for(lambda: peer.usable, 15, "fd1 open on our side")
            await wait_for(lambda: fd.is_open("dra.test"), 5, "us open on freeDiameter's side")
            assert peer.state == State.R_OPEN and peer.caps.product_name == "freeDiameter"
            # our Tw is ~1 s (jitter 0.25): DWRs go out, freeDiameter's DWAs come back
            await wait_for(lambda: node.stats["rx DWA"] >= 2, 10, "DWAs from freeDiameter")
            # quiet on our side: freeDiameter's own DWR (its Tw 6 s) is answered
            peer.settings.tw_s = 60
            await wait_for(lambda: node.stats["rx DWR"] >= 1 and node.stats["tx DWA"] >= 1,
                           20, "DWR from freeDiameter answered")
            assert peer.usable
            # our DPR: freeDiameter answers with a DPA, both sides close
            await svc.stop(timeout=5)
            assert node.stats["rx DPA"] == 1 and peer.state == State.CLOSED
            await wait_for(lambda: re.search(r"'STATE_CLOSING\w*'\s+-> '\w+'\s+'dra.test'",
                                             fd.log()) or "DPR" in fd.log(), 5, "fd saw DPR")
        finally:
            await svc.stop(timeout=1)
            fd.stop()
        # freeDiameter 1.2.1 itself may abort in its own shutdown on a starved machine: its
        # fd_fifo_del() waits a fixed 20 rounds for blocked threads (seen once with 8 helpers
        # on 2 cores). That is its exit, after the DPR/DPA checked above, not ours.
        assert fd.proc.returncode == 0 or (
            fd.proc.returncode == -signal.SIGABRT and "fd_fifo_del: Assertion" in fd.log()), \
            fd.log()[-2000:]

    asyncio.run(body())


@needs_freediameter
def test_we_connect_and_answer_freediameter_dpr(tmp_path, cert):
    async def body():
        fdport = free_port("tcp")
        node = make_node("dra.test", "test", [("fd1.srv", fdport)])
        svc = await start_side(node)
        fd = FreeDiameter(tmp_path, "fd1.srv", "srv", [("dra.test", None)], cert,
                          port=fdport).start()
        try:
            peer = node.peers["fd1.srv"]
            await wait_for(lambda: peer.usable, 20, "open towards freeDiameter")
            assert peer.state == State.I_OPEN
            await wait_for(lambda: fd.is_open("dra.test"), 5, "open on freeDiameter's side")
            # freeDiameter shuts down: it sends a DPR; our DPA must reach it before we close
            fd.signal(15)
            await wait_for(lambda: node.stats["rx DPR"] == 1, 10, "DPR from freeDiameter")
            await wait_for(lambda: fd.proc.poll() is not None, 10, "freeDiameter exit")
            assert node.stats["tx DPA"] == 1
            log = fd.log()
            # the DPA reached freeDiameter's socket before we closed
            assert re.search(r"RCV from 'dra.test':\n.*'Disconnect-Peer-Answer'", log), \
                log[-3000:]
            assert peer.state == State.CLOSED
        finally:
            await svc.stop(timeout=1)
            fd.stop()

    asyncio.run(body())


@needs_freediameter
def test_election_simultaneous_connects_one_survives(tmp_path, cert):
    async def body():
        fdport = free_port("tcp")
        ourport = free_port("tcp")
        # both know each other's address. Our listening socket exists but accepts nothing
        # yet: freeDiameter connects (the kernel completes it), sends its CER and waits for
        # the CEA; then we connect and send ours; then we start accepting. Each side sees
        # the other's CER while waiting for its own CEA: the RFC 6733 5.6.4 election.
        node = make_node("zz.test", "test", [("fd1.srv", fdport)])
        held = socket.socket()
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", ourport))
        held.listen(8)
        fd = FreeDiameter(tmp_path, "fd1.srv", "srv", [("zz.test", ourport)], cert,
                          port=fdport)
        fd.start()
        await wait_for(lambda: "'STATE_WAITCEA'\t'zz.test'" in fd.log(), 10, "fd waits CEA")
        svc = DiameterService(node, [])
        await svc.start()
        await wait_for(lambda: node.peers["fd1.srv"].state != State.WAIT_CONN_ACK, 5, "conn")
        await asyncio.sleep(0.3)
        await svc.add_listener(held)
        try:
            peer = node.peers["fd1.srv"]
            await wait_for(lambda: peer.usable and fd.is_open("zz.test"), 20, "open")
            await asyncio.sleep(2.5)  # let any second connection settle
            assert peer.usable and len(svc._transports) == 1
            assert "Election LOST against peer 'zz.test'" in fd.log()
            # both connections existed: each side sent a CER and got the other's
            assert node.stats["rx CER"] == 1 and node.stats["tx CER"] == 1, node.stats
        finally:
            await svc.stop(timeout=3)
            fd.stop()

    asyncio.run(body())


# cdp resolves peer FQDNs with DNS (no address attribute): "localhost" is the one name that
# resolves to 127.0.0.1 everywhere, so our node is called that in the cdp tests
ME = "localhost"


@needs_cdp
def test_cdp_connects_cer_dwr_and_our_dpr_times_out(tmp_path):
    async def body():
        node = make_node(ME, "test", [("cdp.kam", None)], apps=(), vendor_apps=CX_3GPP,
                         tw=1.0, dpr=1.0)
        svc = await start_side(node)
        cdp = Cdp(tmp_path, "cdp.kam", "kam", ME, port_of(svc)).start()
        try:
            peer = node.peers["cdp.kam"]
            await wait_for(lambda: peer.usable, 20, "cdp open on our side")
            assert peer.caps.product_name == "CDiameterPeer" and CX in peer.applications
            await wait_for(lambda: node.stats["rx DWA"] >= 2, 10, "DWAs from cdp")
            # cdp never answers a DPR with a DPA (kamailio#3092): we close after dpr_timeout
            t0 = asyncio.get_running_loop().time()
            await svc.stop(timeout=5)
            assert peer.state == State.CLOSED
            assert asyncio.get_running_loop().time() - t0 < 4
            assert cdp.proc.poll() is None  # cdp itself survives
            # cdp's own state machine (debug=3): open, our DWRs, our DPR
            await wait_for(lambda: "Peer localhost State I_Open Event I_Rcv_DWR" in cdp.log()
                           and "Peer localhost State I_Open Event I_Rcv_DPR" in cdp.log(), 5,
                           "cdp open, with our DWR and DPR")
        finally:
            await svc.stop(timeout=1)
            cdp.stop()

    asyncio.run(body())


@needs_cdp
def test_cdp_sends_dpr_and_gets_our_dpa(tmp_path):
    """The other direction of DPR/DPA with cdp. cdp sends a DPR only when a peer is disabled
    (RPC cdp.disable_peer); stopping Kamailio closes the connection without one. Our DPA
    reaches cdp before we close, and our side is CLOSED without counting a failure."""
    async def body():
        node = make_node(ME, "test", [("cdp.kam", None)], apps=(), vendor_apps=CX_3GPP)
        svc = await start_side(node)
        cdp = Cdp(tmp_path, "cdp.kam", "kam", ME, port_of(svc)).start()
        try:
            peer = node.peers["cdp.kam"]
            await wait_for(lambda: peer.usable, 20, "cdp open on our side")
            await asyncio.to_thread(cdp.rpc, "cdp.disable_peer", ME)
            await wait_for(lambda: node.stats["rx DPR"] == 1, 15, "DPR from cdp")
            assert node.stats["tx DPA"] == 1
            await wait_for(lambda: peer.state == State.CLOSED, 5, "closed after our DPA")
            assert peer.failures == 0
            # cdp reads our DPA (282) off the socket, but ignores it: "Received msg while
            # peer in state 7 (Closing) -ignored"; it closes when we do
            await wait_for(lambda: "[localhost] Recv msg 282" in cdp.log(), 5,
                           "our DPA read by cdp")
        finally:
            await svc.stop(timeout=1)
            cdp.stop()

    asyncio.run(body())


@needs_cdp
def test_we_connect_to_cdp_and_no_common_application_5010(tmp_path):
    async def body():
        cdport = free_port("tcp")
        node = make_node(ME, "test", [("cdp.kam", cdport)], apps=(),
                         vendor_apps=CX_3GPP)
        cdp = Cdp(tmp_path, "cdp.kam", "kam", ME, free_port("tcp"), port=cdport).start()
        svc = await start_side(node)
        try:
            peer = node.peers["cdp.kam"]
            await wait_for(lambda: peer.usable, 20, "open towards cdp")
            assert peer.state == State.I_OPEN
            await wait_for(lambda: "Peer localhost State Closed Event R_Conn_CER" in cdp.log(),
                           5, "cdp took our CER")
            await svc.stop(timeout=3)
            await wait_for(lambda: "State R_Open Event R_Rcv_DPR" in cdp.log(), 5,
                           "cdp open (R side) and got our DPR")
        finally:
            await svc.stop(timeout=1)
        # now with only Rx on our side: cdp (Cx) and we share nothing
        node2 = make_node(ME, "test", [("cdp.kam", cdport)], apps=(),
                          vendor_apps=RX_3GPP)
        node2.peers["cdp.kam"].settings.tc_s = 60  # no reconnect while we look
        svc2 = await start_side(node2)
        try:
            peer2 = node2.peers["cdp.kam"]
            await wait_for(lambda: node2.stats["rx CEA"] >= 1, 20, "CEA from cdp")
            await wait_for(lambda: not svc2._transports, 3, "connection closed")
            assert not peer2.usable and peer2.state == State.CLOSED and peer2.failures >= 1
        finally:
            await svc2.stop(timeout=1)
            cdp.stop()

    asyncio.run(body())


@needs_cdp
def test_cdp_cer_without_common_application_gets_5010_and_close(tmp_path):
    async def body():
        node = make_node(ME, "test", [("cdp.kam", None)], apps=(),
                         vendor_apps=RX_3GPP)
        svc = await start_side(node)
        cdp = Cdp(tmp_path, "cdp.kam", "kam", ME, port_of(svc)).start()
        try:
            await wait_for(lambda: node.stats["tx CEA"] >= 1, 20, "CER from cdp answered")
            # cdp took our CEA (5010) and never opened; we closed the connection
            await wait_for(lambda: "Event I_Rcv_CEA" in cdp.log(), 5, "cdp got the CEA")
            assert not node.peers["cdp.kam"].usable
            assert node.peers["cdp.kam"].state == State.CLOSED
            assert "State I_Open" not in cdp.log()
        finally:
            await svc.stop(timeout=1)
            cdp.stop()

    asyncio.run(body())


def test_garbage_from_peers_never_stops_the_node(tmp_path):
    """Raw sockets against our node: non-CER first, unframeable bytes, a bad AVP length
    (5014 + Failed-AVP), a bad message length (5015); the connection survives what can be
    answered and the node keeps serving."""
    from sipedge.diameter import base
    from sipedge.diameter import dictionary as dd
    from sipedge.diameter.base import Identity
    from sipedge.diameter.codec import FLAG_P, FLAG_R, Framer, Message, decode

    async def body():
        node = make_node("dra.test", "test", [("raw.cli", None)], relay=True)
        svc = await start_side(node)
        port = port_of(svc)

        async def conn():
            return await asyncio.open_connection("127.0.0.1", port)

        async def closed(reader):
            return await asyncio.wait_for(reader.read(65536), 3) == b""

        try:
            # 1. not a CER first: closed
            r, w = await conn()
            w.write(Message(280, FLAG_R, 0, 1, 1, []).encode())
            assert await closed(r)
            # 2. unframeable: closed
            r, w = await conn()
            w.write(b"\x07" + b"\xff" * 40)
            assert await closed(r)
            # 3. open properly, then malformed requests are answered, not fatal
            me = Identity("raw.cli", "cli", auth_apps=(CX,))
            r, w = await conn()
            w.write(base.request(257, 0, me, base.capabilities_avps(me, "127.0.0.1")[2:],
                                 1, 1).encode())
            f = Framer()

            async def next_msg():
                while True:
                    got = f.feed(await asyncio.wait_for(r.read(65536), 3))
                    if got:
                        return decode(got[0])
            assert base.result_code(await next_msg()) == 2001
            good = Message(300, FLAG_R | FLAG_P, CX, 50, 51,
                           [dd.avp("Session-Id", "raw;1"), dd.avp("Origin-Host", "raw.cli"),
                            dd.avp("Origin-Realm", "cli"), dd.avp("Destination-Realm", "x")])
            bad = bytearray(good.encode())
            bad[25:28] = (999).to_bytes(3, "big")  # first AVP's length beyond the message
            w.write(bytes(bad))
            ans = await next_msg()
            assert base.result_code(ans) == 5014 and ans.hop_by_hop == 50 and ans.find(279)
            odd = bytearray(good.encode()) + b"\0\0"
            odd[1:4] = len(odd).to_bytes(3, "big")  # length not a multiple of 4
            w.write(bytes(odd))
            ans = await next_msg()
            assert base.result_code(ans) == 5015
            w.write(good.encode())  # still served: unknown realm -> 3002
            ans = await next_msg()
            assert base.result_code(ans) == 3002 and ans.hop_by_hop == 50
            assert node.peers["raw.cli"].usable
            w.close()
        finally:
            await svc.stop(timeout=1)

    asyncio.run(body())


def _have_sctp() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _have_sctp(), reason="the kernel has no SCTP (modprobe sctp)")
def test_two_nodes_over_sctp(tmp_path):
    from sipedge.modules.diameter.core import PeerConfig

    async def body():
        port = free_port("tcp")
        b = make_node("b.test", "test", [("a.test", None)])
        bsvc = DiameterService(b, [("127.0.0.1", port, "sctp")])
        await bsvc.start()
        a = make_node("a.test", "test", [])
        a.peer_configs["b.test"] = PeerConfig("b.test", "127.0.0.1", port, "sctp")
        from sipedge.diameter.peer import Peer
        a.peers["b.test"] = Peer("b.test", a.me, a.peer_configs["b.test"].settings)
        asvc = await start_side(a)
        try:
            await wait_for(lambda: a.peers["b.test"].usable and b.peers["a.test"].usable, 10,
                           "open over SCTP")
        finally:
            await asvc.stop(timeout=2)
            await bsvc.stop(timeout=1)

    asyncio.run(body())
