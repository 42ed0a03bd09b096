"""Runs in a fresh network namespace on the host (`unshare -n`), whose kernel has no ESP:
the capability probe must say so, and with on_no_esp = "refuse" a REGISTER gets 503."""

import json
import socket
import subprocess
import sys
from pathlib import Path

from sip_harness import SipEdge, make_config

RESULT = Path(sys.argv[1])
WORK = RESULT.parent
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
cfg = make_config(str(WORK / "p.ctl"), [("udp", "127.0.0.1", 5060)], 1,
                  f'[routing]\nscript = "{Path(__file__).parent / "pcscf_route.py"}"\n'
                  '[ims_pcscf]\naddress = "127.0.0.1"\nslots = 2\non_no_esp = "refuse"\n'
                  ).replace("[core]\n", '[core]\nmodules = ["ims_pcscf"]\n')
edge = SipEdge(WORK, cfg, "p").start(1)
out = {"crypto": edge.rpc("ipsec.crypto"), "list": edge.rpc("ipsec.list")}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.2", 0))  # not the core side (127.0.0.1) of pcscf_route.py
s.settimeout(5)
port = s.getsockname()[1]
s.sendto((f"REGISTER sip:ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bK1\r\n"
          "Max-Forwards: 70\r\nFrom: <sip:a@ims.test>;tag=1\r\nTo: <sip:a@ims.test>\r\n"
          "Call-ID: x@y\r\nCSeq: 1 REGISTER\r\nProxy-Require: sec-agree\r\nRequire: sec-agree\r\n"
          "Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;spi-c=300;spi-s=301;port-c=1;port-s=2\r\n"
          "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", 5060))
out["reply"] = s.recv(4096).decode()
out["log"] = edge.log()[-3000:]
out["rc"] = edge.stop()
# on_no_esp = "disable": a REGISTER whose Proxy-Require names sec-agree gets 420 (the UE
# learns that this first hop has no sec-agree), never a silent forward
cfg2 = cfg.replace('on_no_esp = "refuse"', 'on_no_esp = "disable"').replace("p.ctl", "p2.ctl")
scscf = SipEdge(WORK, make_config(str(WORK / "s.ctl"), [("udp", "127.0.0.1", 5070)], 1,
                                  f'[routing]\nscript = "{Path(__file__).parent / "scscf_route.py"}"\n'),
                "s").start(1)
edge = SipEdge(WORK, cfg2, "p2").start(1)
s.sendto((f"REGISTER sip:ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bK2\r\n"
          "Max-Forwards: 70\r\nFrom: <sip:a@ims.test>;tag=1\r\nTo: <sip:a@ims.test>\r\n"
          "Call-ID: x2@y\r\nCSeq: 1 REGISTER\r\nProxy-Require: sec-agree\r\nRequire: sec-agree\r\n"
          "Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;spi-c=300;spi-s=301;port-c=1;port-s=2\r\n"
          "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", 5060))
out["disabled_reply"] = s.recv(4096).decode()
# ... and a REGISTER without sec-agree goes on to the S-CSCF, whose 401 carries ck/ik: the
# keys are taken out even with sec-agree off (they never reach a UE)
s.sendto((f"REGISTER sip:ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bK3\r\n"
          "Max-Forwards: 70\r\nFrom: <sip:a@ims.test>;tag=1\r\nTo: <sip:a@ims.test>\r\n"
          "Call-ID: x3@y\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@127.0.0.2>\r\n"
          'Authorization: Digest username="a@ims.test", realm="ims.test", nonce="", '
          'uri="sip:ims.test", response=""\r\nContent-Length: 0\r\n\r\n').encode(),
         ("127.0.0.1", 5060))
out["disabled_401"] = s.recv(4096).decode()
out["rc2"] = edge.stop()
scscf.stop()
RESULT.write_text(json.dumps(out, default=str))
