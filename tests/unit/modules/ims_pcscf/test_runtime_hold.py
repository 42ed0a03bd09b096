"""The runtime's kernel requests run in their own thread, in order, and the 401 that carries
a Security-Server waits for its set: the event loop keeps serving meanwhile.

The kernel side is a stand-in here (this host's kernel has no ESP) whose `apply` blocks until
the test lets it go; the real XFRM path runs in user-mode-linux
(tests/integration/ims/test_ims_register_kernel.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from sipedge.modules.ims_pcscf.aio import ImsPcscfRuntime
from sipedge.modules.ims_pcscf.core import PCSCF, Settings
from test_core import P_IP, UE_IP, challenge, register, reply, sc


class GatedKernel:
    """Records the requests in the order the thread makes them; `apply` waits for `gate`."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.gate = threading.Event()
        self.calls: list[tuple[str, str]] = []
        self.threads: set[str] = set()
        self.fail = fail

    def apply(self, sa_set) -> None:
        self.threads.add(threading.current_thread().name)
        assert self.gate.wait(10)
        self.calls.append(("apply", threading.current_thread().name))
        if self.fail is not None:
            raise self.fail

    def update_lifetime(self, sa_set, hard) -> None:
        self.calls.append(("update", threading.current_thread().name))

    def sas(self) -> list:
        self.calls.append(("dump", threading.current_thread().name))
        return []

    def remove(self, sa_set) -> list[str]:
        self.calls.append(("remove", threading.current_thread().name))
        return []


def runtime(kernel) -> tuple[ImsPcscfRuntime, list]:
    rt = ImsPcscfRuntime()
    rt.pc = PCSCF(Settings(pcscf_ip=P_IP, port_base=5100, slots=4))
    rt.enabled = True
    rt.xfrm = kernel
    rt._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="xfrm")
    resumed: list = []
    rt._resume = lambda resp, src: resumed.append((resp, src))
    return rt, resumed


def test_401_held_until_installed_loop_not_blocked():
    async def scenario():
        kernel = GatedKernel()
        rt, resumed = runtime(kernel)
        r1 = register(1, [sc()])
        assert rt.pc.on_request(r1, UE_IP, 5062, 5060, 0.0).reply is None
        c = challenge(r1)
        assert rt.hold_response(c, "src") is True  # held
        ticks = 0
        for _ in range(20):  # the loop keeps running while the thread waits in the kernel
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 20 and resumed == []
        # the S-CSCF answers a retransmission meanwhile: dropped, the first one will go
        again = challenge(r1)
        assert rt.hold_response(again, "src") is True
        kernel.gate.set()
        for _ in range(200):
            if resumed:
                break
            await asyncio.sleep(0.005)
        assert resumed == [(c, "src")] and c.status == 401
        assert len(c.get_all("security-server")) == 1 and "ik=" not in c.get("www-authenticate")
        assert kernel.threads == {"xfrm_0"} and rt.pc.counters["sets_installed"] == 1
        # the script's on_reply for the resumed reply is a no-op
        rt._handled = c

        class M:
            raw = c
        rt.on_reply(M())
        assert rt.pc.counters["sets_installed"] == 1
        rt._pool.shutdown(wait=True)

    asyncio.run(scenario())


def test_install_refused_turns_the_held_401_into_the_configured_error():
    async def scenario():
        kernel = GatedKernel(fail=OSError(17, "File exists"))
        kernel.gate.set()
        rt, resumed = runtime(kernel)
        rt.pc.kernel_spis = set()
        r1 = register(1, [sc()])
        rt.pc.on_request(r1, UE_IP, 5062, 5060, 0.0)
        c = challenge(r1)
        assert rt.hold_response(c, "src") is True
        for _ in range(200):
            if resumed:
                break
            await asyncio.sleep(0.005)
        assert resumed and c.status == 500 and not c.has("www-authenticate")
        assert not c.has("security-server") and rt.pc.sets == [] and rt.pc.alloc.in_use == 0
        for _ in range(200):  # EEXIST: the foreign SPIs are read again, in the thread
            if ("dump", "xfrm_0") in kernel.calls:
                break
            await asyncio.sleep(0.005)
        assert kernel.calls == [("apply", "xfrm_0"), ("dump", "xfrm_0")]
        rt._pool.shutdown(wait=True)

    asyncio.run(scenario())


def test_kernel_requests_keep_their_order_in_one_thread():
    """install, then the lifetime update of the 200, then (next loop turn) the removal of a
    de-REGISTER: the kernel sees them in that order, all from the one XFRM thread."""
    async def scenario():
        kernel = GatedKernel()
        kernel.gate.set()
        rt, resumed = runtime(kernel)
        r1 = register(1, [sc()])
        rt.pc.on_request(r1, UE_IP, 5062, 5060, 0.0)
        c = challenge(r1)
        rt.hold_response(c, "src")
        st = rt.pc.sets[0]
        server = c.get_all("security-server")[0]
        r2 = register(2, [sc(), f"Security-Verify: {server}"])
        for _ in range(200):
            if resumed:
                break
            await asyncio.sleep(0.005)
        rt.pc.on_request(r2, UE_IP, 5062, st.lease.port_ps, 1.0)
        ok = reply(r2, 200, [f"Contact: <sip:alice@{UE_IP}:5064>;expires=600"])
        assert rt.hold_response(ok, "src") is False  # a 200 is never held
        r3 = register(3, [sc(), f"Security-Verify: {server}"])
        r3.set("contact", f"<sip:alice@{UE_IP}:5064>;expires=0")
        rt.pc.on_request(r3, UE_IP, 5062, st.lease.port_ps, 2.0)
        assert rt.hold_response(reply(r3, 200), "src") is False
        for _ in range(200):  # the removal is queued on the next loop turn
            await asyncio.sleep(0.005)
            if len(kernel.calls) == 3 and not rt._pending:
                break
        assert [k for k, _ in kernel.calls] == ["apply", "update", "remove"]
        assert {t for _, t in kernel.calls} == {"xfrm_0"}
        assert rt.pc.alloc.in_use == 0  # released once the thread reported the removal
        rt._pool.shutdown(wait=True)

    asyncio.run(scenario())
