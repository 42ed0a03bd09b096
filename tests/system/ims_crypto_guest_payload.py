"""Runs in the QEMU guest (copied onto the FAT boot partition): which driver ESP uses with a
virtio-crypto device, what ipsec.crypto reports, and the AF_ALG self-test."""

import json
import subprocess

subprocess.run("modprobe -a virtio_crypto esp4 xfrm_user authenc echainiv seqiv cbc hmac "
               "sha1_generic md5 des_generic drbg jitterentropy_rng 2>&1; ip link set lo up",
               shell=True)
from sipedge.io.xfrm import XfrmClient, probe
from sipedge.modules.ims_pcscf.alloc import Lease
from sipedge.modules.ims_pcscf.core import build_sa_set
from sipedge.modules.ims_pcscf.crypto import classify_suites, parse_proc_crypto
from sipedge.modules.ims_pcscf.secagree import Offer
from sipedge.modules.ims_pcscf.selftest import selftest

out = {}
xc = XfrmClient()
out["probe"] = {f"{a}/{e}": r for (a, e), r in probe(
    xc, "127.0.0.1", [("hmac-sha-1-96", "aes-cbc")], 0x5E0000).items()}
s = build_sa_set("127.0.0.2", "127.0.0.1", Offer("hmac-sha-1-96", "aes-cbc", 0x3001, 0x3002,
                                                5062, 5064),
                 Lease(0, 5100, 5101, 0x10001, 0x10002), bytes(range(16)), bytes(range(16)),
                 0x5E0000, 60)
xc.apply(s)
impls = parse_proc_crypto(open("/proc/crypto").read())
out["esp_instances"] = sorted({i.driver for i in impls if i.name.startswith("authenc(")})
out["algorithms"] = classify_suites(impls, ["aes-cbc", "hmac-sha-1-96"])
out["cbc_aes_impls"] = [[i.driver, i.priority, i.is_async] for i in impls if i.name == "cbc(aes)"]
out["selftest"] = selftest(0.5)
xc.remove(s)
print("IMSJSON" + json.dumps(out))
