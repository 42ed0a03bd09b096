"""arm64 smoke test, in `make test`: the product image for the target architecture (same
rootfs, supervisor, read-only FAT /boot, ext4 /data as on amd64) boots under
qemu-system-aarch64 (-M virt, TCG) and answers SIP. The image build is the slow part: its
base tree is made by tools/image/mkbase_foreign.py (host apt/dpkg, only maintainer scripts
under qemu-user) and cached by its inputs beside the .deb cache.
"""
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
