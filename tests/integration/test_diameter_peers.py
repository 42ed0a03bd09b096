"""Diameter peers against real freeDiameter and Kamailio cdp on 127.0.0.1: CER/CEA, election,
DWR/DWA, DPR/DPA, no common application (5010)."""

from __future__ import annotations

import asyncio
import re

import pytest

from diameter_harness import (
    CX,
    RX,
    Cdp,
    FreeDiameter,
    free_port,
    make_cert,
    make_node,
    needs_cdp,
    needs_freediameter,
    port_of,
    start_side,
    wait_for,
)
from sipedge.diameter.peer import State

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
        assert fd.proc.returncode == 0

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
            assert re.search(r"Disconnect-Peer-Answer|'STATE_CLOSING'\s+-> 'STATE_CLOSED'",
                             log), log[-3000:]
            assert "Timeout" not in log.split("Disconnect-Peer-Request")[-1][:2000]
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
        # both know each other's address and connect at once
        node = make_node("zz.test", "test", [("fd1.srv", fdport)])
        fd = FreeDiameter(tmp_path, "fd1.srv", "srv", [("zz.test", ourport)], cert,
                          port=fdport)
        fd.start()
        svc = await start_side(node, ourport)
        try:
            peer = node.peers["fd1.srv"]
            await wait_for(lambda: peer.usable and fd.is_open("zz.test"), 20, "open")
            await asyncio.sleep(2.5)  # let any second connection settle
            assert peer.usable and len(svc._transports) == 1
            assert node.stats["rx DWA"] >= 0  # still serving
        finally:
            await svc.stop(timeout=3)
            fd.stop()

    asyncio.run(body())
