"""The UE's half of the kernel tests (also run as `ip netns exec ue python ue_side.py CMD`).

`install SETJSON`: install the mirror of the P-CSCF's SA set (same SAs, policy directions
swapped). `plain DST UEPORT PORT`: drop the UE's outbound policy for that flow and send one
datagram in clear (the P-CSCF side checks it never arrives). Flow helpers run the four
TS 33.203 flows over UDP and TCP between the namespaces.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading

from sipedge.io.xfrm import XfrmClient
from sipedge.xfrm.model import DIR_IN, DIR_OUT, PolicySpec, SaSet, SaSpec, Selector

UE_SIDE = os.path.abspath(__file__)


def set_to_json(s: SaSet) -> dict:
    def sa(x: SaSpec):
        return {"src": x.src, "dst": x.dst, "spi": x.spi, "reqid": x.reqid, "auth": x.auth,
                "ka": base64.b64encode(x.auth_key).decode(), "enc": x.enc,
                "ke": base64.b64encode(x.enc_key).decode(),
                "sel": [x.selector.src, x.selector.dst, x.selector.sport, x.selector.dport],
                "hard": x.hard_seconds}

    def pol(p: PolicySpec):
        s = p.selector
        return {"sel": [s.src, s.dst, s.sport, s.dport], "dir": p.direction,
                "reqid": p.reqid, "hard": p.hard_seconds}

    return {"sas": [sa(x) for x in s.sas], "policies": [pol(p) for p in s.policies]}


def mirror_from_json(d: dict, reqid_offset: int = 0x100) -> SaSet:
    sas = tuple(SaSpec(x["src"], x["dst"], x["spi"], x["reqid"] + reqid_offset, x["auth"],
                       base64.b64decode(x["ka"]), x["enc"], base64.b64decode(x["ke"]),
                       Selector(*x["sel"]), x["hard"]) for x in d["sas"])
    pols = tuple(PolicySpec(Selector(*p["sel"]), DIR_OUT if p["dir"] == DIR_IN else DIR_IN,
                            p["reqid"] + reqid_offset, p["sel"][0], p["sel"][1], p["hard"])
                 for p in d["policies"])
    return SaSet(sas, pols)


def counters(xc: XfrmClient) -> dict[int, int]:
    return {s.spi: s.packets for s in xc.sas()}


def _fam(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _udp(ip: str, port: int) -> socket.socket:
    s = socket.socket(_fam(ip), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.settimeout(3)
    return s


def _in_ue(code: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", "ue", sys.executable, "-c", code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def flows_udp(p_ip: str, u_ip: str, lease, offer) -> dict:
    """MO request (UE uc -> P ps), its reply (P ps -> UE uc), MT request (P pc -> UE us),
    its reply (UE us -> P pc). Returns what each receiver got."""
    ps, pc = _udp(p_ip, lease.port_ps), _udp(p_ip, lease.port_pc)
    code = f"""
import socket, sys
fam = {int(_fam(u_ip))}
uc = socket.socket(fam, socket.SOCK_DGRAM); uc.bind(({u_ip!r}, {offer.port_c})); uc.settimeout(3)
us = socket.socket(fam, socket.SOCK_DGRAM); us.bind(({u_ip!r}, {offer.port_s})); us.settimeout(3)
print("ready", flush=True)
uc.sendto(b"MO-REQUEST", ({p_ip!r}, {lease.port_ps}))
d1, _ = uc.recvfrom(100)
d2, a = us.recvfrom(100)
us.sendto(b"MT-REPLY", a)
print(d1.decode(), d2.decode(), flush=True)
"""
    proc = _in_ue(code)
    try:
        assert proc.stdout.readline().strip() == "ready"
        got = {}
        data, addr = ps.recvfrom(100)
        got["mo_request"] = [data.decode(), addr[1]]
        ps.sendto(b"MO-REPLY", addr)
        pc.sendto(b"MT-REQUEST", (u_ip, offer.port_s))
        data, addr = pc.recvfrom(100)
        got["mt_reply"] = [data.decode(), addr[1]]
        out, err = proc.communicate(timeout=10)
        got["ue_got"] = out.split()
        return got
    finally:
        ps.close()
        pc.close()
        if proc.poll() is None:
            proc.kill()


def flows_tcp(p_ip: str, u_ip: str, lease, offer) -> dict:
    """The same four flows over TCP: the UE connects from port_uc to port_ps; the P-CSCF
    connects from port_pc to the UE's port_us."""
    fam = _fam(p_ip)
    lps = socket.socket(fam, socket.SOCK_STREAM)
    lps.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lps.bind((p_ip, lease.port_ps))
    lps.listen(4)
    lps.settimeout(5)
    code = f"""
import socket
fam = {int(fam)}
ls = socket.socket(fam, socket.SOCK_STREAM); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(({u_ip!r}, {offer.port_s})); ls.listen(1); ls.settimeout(5)
c = socket.socket(fam, socket.SOCK_STREAM); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.bind(({u_ip!r}, {offer.port_c})); c.settimeout(5)
print("ready", flush=True)
c.connect(({p_ip!r}, {lease.port_ps}))
c.sendall(b"MO-REQUEST"); r1 = c.recv(100)
m, _ = ls.accept(); m.settimeout(5); r2 = m.recv(100); m.sendall(b"MT-REPLY")
print(r1.decode(), r2.decode(), flush=True)
m.close(); c.close()
"""
    proc = _in_ue(code)
    try:
        assert proc.stdout.readline().strip() == "ready"
        got = {}
        conn, addr = lps.accept()
        conn.settimeout(5)
        got["mo_request"] = [conn.recv(100).decode(), addr[1]]
        conn.sendall(b"MO-REPLY")
        out_c = socket.socket(fam, socket.SOCK_STREAM)
        out_c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        out_c.bind((p_ip, lease.port_pc))
        out_c.settimeout(5)
        out_c.connect((u_ip, offer.port_s))
        out_c.sendall(b"MT-REQUEST")
        got["mt_reply"] = [out_c.recv(100).decode(), out_c.getsockname()[1]]
        out, err = proc.communicate(timeout=10)
        got["ue_got"] = out.split()
        conn.close()
        out_c.close()
        return got
    finally:
        lps.close()
        if proc.poll() is None:
            proc.kill()


def main() -> None:
    cmd = sys.argv[1]
    xc = XfrmClient()
    if cmd == "install":
        xc.apply(mirror_from_json(json.loads(sys.argv[2])))
        print(json.dumps({"ok": True}))
    elif cmd == "remove":
        print(json.dumps({"problems": xc.remove(mirror_from_json(json.loads(sys.argv[2])))}))
    elif cmd == "plain":
        dst, uport, port = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        me = [p for p in xc.policies() if p.selector.dport == port and
              p.selector.sport == uport and p.direction == DIR_OUT]
        for p in me:
            xc.del_policy(p.selector, p.direction)
        s = socket.socket(_fam(dst), socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::" if ":" in dst else "0.0.0.0", uport))
        for _ in range(3):
            s.sendto(b"PLAINTEXT", (dst, port))
        s.close()
        print(json.dumps({"removed_policies": len(me), "sent": 3}))
    else:
        raise SystemExit(f"unknown {cmd}")
    threading.Event().wait(0)


if __name__ == "__main__":
    main()
