"""ims_pcscf on a hardware crypto engine: the QEMU guest with a virtio-crypto device (the
engine the kernel picks for ESP), `ipsec.crypto`'s classification and the self-test
difference against the generic software driver.

One more TCG boot (3-5 min on a busy 2-core host), so it runs only with
SIPEDGE_TEST_VIRTIO_CRYPTO=1 (the UML tests in tests/integration/ims cover ESP itself)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from guest_helpers import TIMEOUT_MULTIPLIER, record

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(900),
              pytest.mark.skipif(os.environ.get("SIPEDGE_TEST_VIRTIO_CRYPTO") != "1",
                                 reason="one more guest boot: SIPEDGE_TEST_VIRTIO_CRYPTO=1")]
PAYLOAD = Path(__file__).with_name("ims_crypto_guest_payload.py")


def test_virtio_crypto_serves_esp(sipedge_image, boot_guest):
    g = boot_guest(sipedge_image, boot_files={"ims_crypto.py": PAYLOAD.read_text()},
                   extra_args=["-object", "cryptodev-backend-builtin,id=cryptodev0",
                               "-device", "virtio-crypto-pci,cryptodev=cryptodev0"])
    g.wait_shell(timeout=600 * TIMEOUT_MULTIPLIER)  # TCG boot on a busy host is slow
    rc, text = g.shell("python3 /boot/ims_crypto.py", timeout=300 * TIMEOUT_MULTIPLIER)
    assert rc == 0 and "IMSJSON" in text, text[-3000:]
    out = json.loads(text.split("IMSJSON", 1)[1].strip().splitlines()[0])
    assert out["probe"] == {"hmac-sha-1-96/aes-cbc": "ok"}
    aes = out["algorithms"]["aes-cbc"]
    assert aes["driver"].startswith("virtio_crypto"), out
    assert aes["kind"] == "hardware engine" and aes["async"] is True
    assert any("virtio_crypto" in d for d in out["esp_instances"]), out["esp_instances"]
    st = out["selftest"]["cbc(aes)"]
    hw, sw = st["kernel_choice"]["mb_per_s"], st["generic"]["mb_per_s"]
    assert hw > 0 and sw > 0
    record("ipsec.selftest cbc(aes) virtio-crypto MB/s", str(hw))
    record("ipsec.selftest cbc(aes) generic MB/s", str(sw))
    record("ESP instances with virtio-crypto", ", ".join(out["esp_instances"]))
