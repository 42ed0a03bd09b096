"""RPC: `ipsec.list`, `ipsec.crypto`, `ipsec.selftest` (served by the worker that owns the
SA sets; `sipedgectl ipsec.list`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .crypto import classify_suites, parse_proc_crypto


def ipsec_list(rt) -> dict[str, Any]:
    """Per UE set: SPIs, ports, algorithms, state, expiry, and the kernel counters of each
    of its four SAs (bytes/packets; `missing` when the kernel no longer has it)."""
    now = time.monotonic()
    kernel = {}
    if rt.xfrm is not None:
        try:
            kernel = {(sa.dst, sa.spi): sa for sa in rt.xfrm.sas()}
        except OSError:
            kernel = {}
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
    return {"enabled": rt.enabled, "sets": out,
            "counters": dict(rt.pc.counters) if rt.pc else {}}


def ipsec_crypto(rt, proc_crypto: str | None = None) -> dict[str, Any]:
    """For each configured algorithm: the kernel implementation that serves it (from
    /proc/crypto: driver, priority, async) and its kind; plus the probe result and the
    offload state."""
    from .aio import read_proc_crypto

    impls = parse_proc_crypto(proc_crypto if proc_crypto is not None else read_proc_crypto())
    pref = rt.pc.s.preference if rt.pc else None
    names = list(pref.algs) + list(pref.ealgs) if pref else []
    rows = classify_suites(impls, names)
    # authenc templates actually instantiated by ESP (after the first SA): name the drivers
    inst = sorted({i.driver for i in impls if i.name.startswith(("authenc(", "echainiv(",
                                                                  "seqiv("))})
    offload = None
    if rt.offload_requested:
        st = [r for r in ipsec_list(rt)["sets"] for sa in r["sas"] if "offload" in sa]
        offload = {"dev": rt.offload_requested,
                   "state": "active" if any(sa.get("offload") == "active" for r in st
                                            for sa in r["sas"]) else
                   "requested, not active" if st else "requested (no SA yet)"}
    return {"algorithms": rows, "esp_instances": inst,
            "probe": {f"{a}/{e}": r for (a, e), r in rt.probe_result.items()},
            "prefer_accelerated": bool(pref and pref.prefer_accelerated),
            "offload": offload}


def methods(rt) -> dict[str, Callable[[dict], Any]]:
    from .selftest import selftest

    return {
        "ipsec.list": lambda params: ipsec_list(rt),
        "ipsec.crypto": lambda params: ipsec_crypto(rt),
        "ipsec.selftest": lambda params: selftest(float(params.get("seconds", 0.1))),
    }


RPC = {"ipsec.list": ipsec_list, "ipsec.crypto": ipsec_crypto}
