"""ipsec.list / ipsec.crypto formatting over a runtime whose kernel dump is given (the real
kernel is exercised in tests/integration/ims)."""

from __future__ import annotations

from types import SimpleNamespace

from sipedge.io.xfrm import KernelSa
from sipedge.modules.ims_pcscf.alloc import Lease
from sipedge.modules.ims_pcscf.core import PCSCF, Settings, UeSet, build_sa_set
from sipedge.modules.ims_pcscf.rpc import ipsec_crypto, ipsec_list
from sipedge.modules.ims_pcscf.secagree import Offer
from test_crypto_layers import PROC


def runtime(offload: int = 0, kernel_offload: int = 0):
    pc = PCSCF(Settings(pcscf_ip="192.0.2.1", slots=2, offload_ifindex=offload))
    offer = Offer("hmac-sha-1-96", "aes-cbc", 3001, 3002, 5062, 5064)
    lease = Lease(0, 5100, 5101, 65536, 65537)
    s = build_sa_set("192.0.2.20", "192.0.2.1", offer, lease, bytes(16), bytes(16), 0x5E0000,
                     60, offload)
    pc.sets.append(UeSet("192.0.2.20", offer, lease, s, offer, created=0.0, state="active"))
    dump = [KernelSa(sa.src, sa.dst, sa.spi, sa.reqid, 2, "hmac(sha1)", "cbc(aes)", 100 * i,
                     i, 0, 90, kernel_offload if sa.offload_ifindex else 0)
            for i, sa in enumerate(s.sas[:3], 1)]  # the 4th is gone from the kernel
    xfrm = SimpleNamespace(sas=lambda: dump)
    return SimpleNamespace(pc=pc, xfrm=xfrm, enabled=True, sets=lambda: list(pc.sets),
                           probe_result={("hmac-sha-1-96", "aes-cbc"): "ok"},
                           offload_requested="eth0" if offload else "")


def test_list_counters_and_missing():
    out = ipsec_list(runtime())
    (row,) = out["sets"]
    assert row["spi_ps"] == 65536 and row["port_pc"] == 5101 and row["state"] == "active"
    assert [sa.get("packets") for sa in row["sas"]] == [1, 2, 3, None]
    assert row["sas"][3]["kernel"] == "missing"
    assert [sa["dir"] for sa in row["sas"]] == ["in", "out", "out", "in"]


def test_offload_requested_not_active():
    rows = ipsec_list(runtime(offload=3, kernel_offload=0))["sets"][0]["sas"]
    assert [sa.get("offload") for sa in rows] == [None, "requested, not active",
                                                  "requested, not active", None]
    rows = ipsec_list(runtime(offload=3, kernel_offload=3))["sets"][0]["sas"]
    assert rows[1]["offload"] == "active"
    c = ipsec_crypto(runtime(offload=3), PROC)
    assert c["offload"]["state"] == "requested, not active"


def test_crypto_report():
    c = ipsec_crypto(runtime(), PROC)
    assert c["algorithms"]["aes-cbc"]["kind"] == "hardware engine"
    assert c["probe"] == {"hmac-sha-1-96/aes-cbc": "ok"} and c["offload"] is None


def test_rpc_work_runs_off_the_loop():
    """ipsec.list's SA dump runs in the module's XFRM thread and ipsec.selftest in another
    thread: the control handler gets a coroutine, the loop keeps turning meanwhile, and the
    reply carries the request id (io/modules.py handle_control)."""
    import asyncio
    import concurrent.futures
    import json
    import threading
    import time as _time

    from sipedge.io.modules import handle_control
    from sipedge.modules.ims_pcscf import selftest as st_mod
    from sipedge.modules.ims_pcscf.aio import ImsPcscfRuntime
    from sipedge.modules.ims_pcscf.rpc import methods

    base = runtime()
    threads: dict[str, str] = {}

    def slow_dump():
        threads["dump"] = threading.current_thread().name
        _time.sleep(0.3)
        return base.xfrm.sas()

    rt = ImsPcscfRuntime()
    rt.pc, rt.enabled = base.pc, True
    rt.xfrm = SimpleNamespace(sas=slow_dump)
    rt._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="xfrm")
    real_selftest = st_mod.selftest

    def slow_selftest(seconds):
        threads["selftest"] = threading.current_thread().name
        _time.sleep(0.3)
        return {"seconds": seconds}

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.get_running_loop().create_task(ticker())
        m = methods(rt)
        pending = handle_control(m, b'{"id": "a", "method": "ipsec.list"}')
        assert not isinstance(pending, bytes)
        listed = json.loads(await pending)
        during_list = ticks
        st_mod.selftest = slow_selftest
        try:
            one = handle_control(m, b'{"id": "b", "method": "ipsec.selftest", '
                                    b'"params": {"seconds": 0.2}}')
            two = handle_control(m, b'{"id": "c", "method": "ipsec.selftest"}')
            r1, r2 = await asyncio.gather(one, two)
        finally:
            st_mod.selftest = real_selftest
        t.cancel()
        return listed, during_list, json.loads(r1), json.loads(r2)

    listed, ticks, r1, r2 = asyncio.run(main())
    rt._pool.shutdown()
    assert listed["id"] == "a" and listed["result"]["sets"][0]["sas"][0]["packets"] == 1
    assert ticks >= 10  # the loop ran while the dump slept 0.3 s
    assert threads["dump"].startswith("xfrm") and threads["selftest"] != "MainThread"
    assert not threads["selftest"].startswith("xfrm")  # never holds up an install
    assert r1 == {"id": "b", "result": {"seconds": 0.2}}
    assert "already running" in r2["error"]
