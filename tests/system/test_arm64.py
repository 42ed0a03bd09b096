"""arm64 smoke test, in `make test`: the product image for the target architecture (same
rootfs, supervisor, read-only FAT /boot, ext4 /data as on amd64) boots under
qemu-system-aarch64 (-M virt, TCG) and answers SIP. The image build is the slow part: its
base tree is made by tools/image/mkbase_foreign.py (host apt/dpkg, only maintainer scripts
under qemu-user) and cached by its inputs beside the .deb cache.

The same boot shows that the image ships the compiled build for aarch64 (issue 15): the
hot modules are cross-built by tools/image/mkimage.py (cross_builder: Debian's
gcc-aarch64-linux-gnu and the image's libpython3.X-dev:arm64 headers), and the running
proxy has their aarch64 extension modules mapped (its /proc/PID/maps), so they are what
loaded. No second boot.
"""
import re

import pytest

from guest_helpers import TIMEOUT_MULTIPLIER, proxy_rss_kib, record, sip_options, wait_sip_ready

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(2400)]


def test_arm64_boots_and_answers_options(sipedge_image_arm64, boot_guest):
    g = boot_guest(sipedge_image_arm64, name="arm64", timeout_s=900 * TIMEOUT_MULTIPLIER)
    seconds = wait_sip_ready(g, timeout=600)
    record("boot-to-SIP-ready arm64", f"{seconds:.1f} s (QEMU start to first 200 OK, TCG)")
    assert sip_options(g.host_port("udp", 5060), "10.0.2.15:5060", timeout=5) == 200
    rss = proxy_rss_kib(g)
    record("proxy RSS arm64", f"{sum(rss.values()) / 1024:.1f} MiB over {len(rss)} Python processes")
    _rc, arch = g.shell("uname -m")
    assert arch.strip() == "aarch64"
    _rc, mounts = g.shell("cat /proc/mounts")
    assert " /boot vfat ro" in mounts and " /data ext4 rw" in mounts
    _check_compiled_build_runs(g, sipedge_image_arm64.manifest.get("app_build", {}), rss)


def _check_compiled_build_runs(g, build: dict, rss: dict[str, int]) -> None:
    if build.get("build") != "compiled":
        pytest.fail(f"the arm64 image ships pure Python, not the compiled build: {build.get('why')}")
    pids = [re.search(r"\[(\d+)\]$", name).group(1) for name in rss]
    # which of the image's aarch64 extension modules of sipedge each Python process has mapped
    _rc, out = g.shell("for p in " + " ".join(pids) + "; do "
                       "grep -o 'dist-packages/sipedge/[^ ]*-aarch64-linux-gnu.so' /proc/$p/maps "
                       "| sort -u | sed \"s|^|$p |\"; done", timeout=60)
    mapped: dict[str, set[str]] = {}
    for line in out.splitlines():
        pid, _, path = line.strip().partition(" ")
        if path.endswith(".so"):
            mapped.setdefault(pid, set()).add(path.split("dist-packages/sipedge/", 1)[1].split(".")[0])
    shipped = {m.split(".")[0] for m in build.get("modules", [])}
    best = max(mapped.values(), key=len, default=set())
    record("compiled modules loaded arm64",
           f"{len(best)}/{len(shipped)} aarch64 extension modules mapped by the proxy "
           f"({', '.join(sorted(best))})")
    # the OPTIONS just answered went through the parser, the URI and Via code and the
    # transport of the compiled build: those at least must be the loaded ones
    for module in ("sip/message", "sip/uri", "sip/headers/via", "io/transport"):
        assert module in best, (module, mapped, out[-2000:])
