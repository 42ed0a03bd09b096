"""RPC: `ipsec.list`, `ipsec.crypto`, `ipsec.selftest` (served by the worker that owns the
SA sets; `sipedgectl ipsec.list`).

None of them does kernel or crypto work on the event loop: the SA dump goes to the module's
XFRM thread (queued behind any install, so the answer is consistent with what was asked of
the kernel), /proc/crypto is read and the AF_ALG self-test runs in a worker thread (not the
XFRM thread: a self-test of several seconds must not hold up a 401); the formatting, which
reads the core's state, happens back on the loop. One self-test at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .crypto import classify_suites, esp_instances, parse_proc_crypto
from .selftest import read_proc_crypto


def ipsec_list(rt, kernel_sas: list | None = None, kernel_error: str = "") -> dict[str, Any]:
    """Per UE set: SPIs, ports, algorithms, state, expiry, and the kernel counters of each
    of its four SAs (bytes/packets; `missing` when the kernel no longer has it).
    `kernel_sas`: the SA dump (the RPC takes it in the XFRM thread); None dumps here."""
    now = time.monotonic()
    if kernel_sas is None and rt.xfrm is not None:
        try:
            kernel_sas = rt.xfrm.sas()
        except OSError as exc:
            kernel_error = str(exc)
    kernel = {(sa.dst, sa.spi): sa for sa in kernel_sas or ()}
    out = []
    for st in rt.sets():
        row = st.summary(now)
        sas = []
        for sa in st.sa_set.sas:
            k = kernel.get((sa.dst, sa.spi))
            entry = {"src": sa.src, "dst": sa.dst, "spi": sa.spi,
                     "dir": "in" if sa.dst == st.sa_set.sas[0].dst else "out"}
            if k is None:
                entry["kernel"] = "missing"
            else:
                entry.update(bytes=k.bytes, packets=k.packets, hard_lifetime_s=k.hard_seconds)
                if sa.offload_ifindex:
                    entry["offload"] = "active" if k.offload_ifindex else \
                        "requested, not active"
            sas.append(entry)
        row["sas"] = sas
        out.append(row)
    res = {"enabled": rt.enabled, "sets": out,
           "counters": dict(rt.pc.counters) if rt.pc else {}}
    if kernel_error:
        res["kernel_error"] = kernel_error  # the counters above could not be read
    return res


def ipsec_crypto(rt, proc_crypto: str | None = None,
                 kernel_sas: list | None = None) -> dict[str, Any]:
    """For each configured algorithm: the kernel implementation that serves it (from
    /proc/crypto: driver, priority, async) and its kind; plus the probe result and the
    offload state."""
    impls = parse_proc_crypto(proc_crypto if proc_crypto is not None else read_proc_crypto())
    pref = rt.pc.s.preference if rt.pc else None
    names = list(pref.algs) + list(pref.ealgs) if pref else []
    rows = classify_suites(impls, names)
    inst = esp_instances(impls)  # what ESP instantiated (after the first SA)
    offload = None
    if rt.offload_requested:
        st = [r for r in ipsec_list(rt, kernel_sas)["sets"] for sa in r["sas"]
              if "offload" in sa]
        offload = {"dev": rt.offload_requested,
                   "state": "active" if any(sa.get("offload") == "active" for r in st
                                            for sa in r["sas"]) else
                   "requested, not active" if st else "requested (no SA yet)"}
    return {"algorithms": rows, "esp_instances": inst,
            "probe": {f"{a}/{e}": r for (a, e), r in rt.probe_result.items()},
            "prefer_accelerated": bool(pref and pref.prefer_accelerated),
            "offload": offload}


async def _dump(rt) -> tuple[list | None, str]:
    """The kernel's SAs, dumped in the module's XFRM thread."""
    from ...io.xfrm import XfrmError

    if rt.xfrm is None:
        return [], ""
    try:
        return await rt.kernel_sas(), ""
    except (OSError, XfrmError) as exc:
        return [], str(exc)


async def list_async(rt) -> dict[str, Any]:
    sas, err = await _dump(rt)
    return ipsec_list(rt, sas, err)


async def crypto_async(rt) -> dict[str, Any]:
    text = await asyncio.to_thread(read_proc_crypto)
    sas = (await _dump(rt))[0] if rt.offload_requested else None
    return ipsec_crypto(rt, text, sas)


async def selftest_async(rt, params: dict) -> dict[str, Any]:
    from .selftest import selftest  # looked up per call (the tests swap it)

    seconds = float(params.get("seconds", 0.1))
    if rt.selftest_running:
        raise ValueError("a self-test is already running")
    rt.selftest_running = True
    try:
        return await asyncio.to_thread(selftest, seconds)
    finally:
        rt.selftest_running = False


def methods(rt) -> dict[str, Callable[[dict], Any]]:
    """Worker RPC: each returns a coroutine (io/modules.py handle_control awaits it)."""
    return {
        "ipsec.list": lambda params: list_async(rt),
        "ipsec.crypto": lambda params: crypto_async(rt),
        "ipsec.selftest": lambda params: selftest_async(rt, params),
    }


RPC = {"ipsec.list": ipsec_list, "ipsec.crypto": ipsec_crypto}
