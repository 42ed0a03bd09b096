"""`bench/run.py --boot N`: boot time and idle memory of the offline image under TCG.

Boots out/image-ARCH (tools/image/mkimage.py; built when missing or stale) N times, waits for
the first 200 OK to a SIP OPTIONS through the forwarded UDP port, splits the time into stages
from the guest's boot marks (app/sipedge/bootmark.py) and, after an idle pause, sums RSS and
PSS of every sipedge process. Prints each boot and the medians. Targets (issue 13): first
200 OK <= 10 s after the kernel starts (median of 5 on amd64), sum of RSS <= 64 MiB.
Traffic goes only to the 127.0.0.1 forwards of QEMU's user network.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests/system"), str(REPO / "tools/vm")]

TARGET_READY_S = 10.0
TARGET_RSS_MIB = 64.0


def ensure_image(arch: str) -> Path:
    import os

    if os.environ.get("SIPEDGE_IMAGE_DIR"):  # an image built elsewhere, as in tests/system
        return Path(os.environ["SIPEDGE_IMAGE_DIR"])
    out = REPO / "out" / f"image-{arch}"
    check = subprocess.run([sys.executable, str(REPO / "tools/image/mkimage.py"), "--arch", arch,
                            "--check"], capture_output=True)
    if check.returncode != 0:
        print(f"boot: building {out} (log {out}-build.log)", flush=True)
        with open(f"{out}-build.log", "w") as fh:
            subprocess.run([sys.executable, str(REPO / "tools/image/mkimage.py"), "--arch", arch],
                           stdout=fh, stderr=subprocess.STDOUT, check=True)
    return out


def boot_once(image, workdir: Path, name: str, idle_s: float) -> dict:
    from guest_helpers import (TIMEOUT_MULTIPLIER, boot_stages, kernel_start,
                               sipedge_memory_kib, wait_sip_ready)
    from sipedge_vm import Guest

    with Guest(image, workdir, name=name, forward=(("udp", 5060),),
               timeout_s=600 * TIMEOUT_MULTIPLIER) as g:
        kernel_at = kernel_start(g)
        ready = wait_sip_ready(g, timeout=300 * TIMEOUT_MULTIPLIER)
        stages = boot_stages(g, ready, kernel_at)
        time.sleep(idle_s)
        mem = sipedge_memory_kib(g)
    return {"ready_from_qemu_s": ready, "stages": stages,
            "rss_mib": sum(r for r, _ in mem.values()) / 1024,
            "pss_mib": sum(p for _, p in mem.values()) / 1024,
            "processes": {c: {"rss_kib": r, "pss_kib": p} for c, (r, p) in mem.items()}}


def run(boots: int, arch: str = "amd64", idle_s: float = 10.0, json_path: str | None = None) -> int:
    from sipedge_vm import load_image

    image = load_image(ensure_image(arch))
    workdir = Path(tempfile.mkdtemp(prefix="sipedge-bench-boot-"))
    print(f"boot: {boots} boots of {image.arch}, logs in {workdir}", flush=True)
    from sipedge_vm import GuestError

    results = []
    failed = 0
    for i in range(boots):
        try:
            r = boot_once(image, workdir, f"boot{i}", idle_s)
        except GuestError as exc:  # a boot that never answered: say so, keep the others
            failed += 1
            print(f"boot {i}: FAILED: {str(exc).splitlines()[0]}", flush=True)
            continue
        results.append(r)
        s = r["stages"]
        print(f"boot {i}: first 200 OK {s['first 200 OK after kernel']:.1f} s after the kernel "
              f"({r['ready_from_qemu_s']:.1f} s after QEMU start); "
              + ", ".join(f"{k} {v:.2f}" for k, v in s.items()
                          if k not in ("first 200 OK after kernel",))
              + f"; RSS {r['rss_mib']:.1f} MiB, PSS {r['pss_mib']:.1f} MiB", flush=True)
    if not results:
        print("boot: no boot answered", flush=True)
        return 1
    keys = list(results[0]["stages"])
    print(f"\nboot-time medians over {len(results)} boots ({arch}, TCG; seconds)"
          + (f"; {failed} boot(s) never answered" if failed else ""))
    for k in keys:
        vals = [r["stages"][k] for r in results if k in r["stages"]]
        print(f"  {k:28s} {statistics.median(vals):6.2f}   (min {min(vals):.2f}, max {max(vals):.2f})")
    ready = statistics.median(r["stages"]["first 200 OK after kernel"] for r in results)
    rss = statistics.median(r["rss_mib"] for r in results)
    pss = statistics.median(r["pss_mib"] for r in results)
    print(f"  first 200 OK after kernel    {ready:6.2f}   target <= {TARGET_READY_S:.0f}: "
          f"{'met' if ready <= TARGET_READY_S else 'NOT met'}")
    print(f"  idle RSS sum (MiB)           {rss:6.1f}   target <= {TARGET_RSS_MIB:.0f}: "
          f"{'met' if rss <= TARGET_RSS_MIB else 'NOT met'}; PSS sum {pss:.1f}")
    for c, m in results[-1]["processes"].items():
        print(f"    {m['rss_kib'] / 1024:5.1f} MiB RSS {m['pss_kib'] / 1024:5.1f} MiB PSS  {c[:90]}")
    if json_path:
        Path(json_path).write_text(json.dumps({"boots": results, "median_ready_s": ready,
                                               "median_rss_mib": rss, "median_pss_mib": pss},
                                              indent=2))
    return 1 if failed else 0
