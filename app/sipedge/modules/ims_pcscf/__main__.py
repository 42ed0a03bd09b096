"""`python3 -m sipedge.modules.ims_pcscf crypto|selftest`: what `ipsec.crypto` and
`ipsec.selftest` report, without a running proxy (a box being commissioned, a test guest).

    python3 -m sipedge.modules.ims_pcscf crypto --probe 127.0.0.1   # needs root
    python3 -m sipedge.modules.ims_pcscf selftest --seconds 0.5

`crypto --probe ADDR` first adds and deletes one short-lived SA per suite on ADDR (tagged
with the default xfrm_mark_mask), so the kernel instantiates ESP's algorithms and
/proc/crypto names the drivers that will serve the SAs. Output: one JSON object."""

from __future__ import annotations

import argparse
import json
import sys

from .crypto import classify_suites, esp_instances, parse_proc_crypto
from .params import ImsPcscfParams
from .secagree import KNOWN_ALGS, KNOWN_EALGS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m sipedge.modules.ims_pcscf")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("crypto", help="which kernel driver serves each sec-agree algorithm")
    c.add_argument("--probe", metavar="ADDR", help="instantiate ESP's algorithms first with "
                   "one short-lived SA per suite on this local address (root)")
    c.add_argument("--algs", default=",".join(ImsPcscfParams().algs))
    c.add_argument("--ealgs", default=",".join(ImsPcscfParams().ealgs))
    c.add_argument("--selftest", type=float, metavar="SECONDS",
                   help="also run the self-test, SECONDS per driver")
    s = sub.add_parser("selftest", help="AF_ALG throughput of every driver of each algorithm")
    s.add_argument("--seconds", type=float, default=0.3)
    args = ap.parse_args(argv)
    from .selftest import read_proc_crypto, selftest

    if args.cmd == "selftest":
        print(json.dumps(selftest(args.seconds), indent=1))
        return 0
    algs = [a for a in args.algs.split(",") if a]
    ealgs = [e for e in args.ealgs.split(",") if e]
    unknown = [a for a in algs if a not in KNOWN_ALGS] + [e for e in ealgs
                                                          if e not in KNOWN_EALGS]
    if unknown:
        ap.error(f"unknown algorithm(s): {', '.join(unknown)}")
    out: dict = {}
    if args.probe:
        from ...io.xfrm import XfrmClient, probe

        p = ImsPcscfParams()
        xc = XfrmClient(mark_mask=p.xfrm_mark_mask)
        try:
            out["probe"] = {f"{a}/{e}": r for (a, e), r in probe(
                xc, args.probe, [(a, e) for e in ealgs for a in algs], p.reqid_base).items()}
        finally:
            xc.close()
    impls = parse_proc_crypto(read_proc_crypto())
    out["algorithms"] = classify_suites(impls, algs + ealgs)
    out["esp_instances"] = esp_instances(impls)
    if args.selftest:
        out["selftest"] = selftest(args.selftest)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
