"""An IMS UE for the kernel tests (run inside netns `ue`): sec-agree REGISTER with its own
SAs (installed with the same XFRM adapter), MO MESSAGE, answering an MT request.

    python ue_sip.py STATE.json register [--proto udp|tcp] [--expires N] [--user U]
    python ue_sip.py STATE.json rereg N
    python ue_sip.py STATE.json message [--proto udp|tcp]
    python ue_sip.py STATE.json mt [--proto udp|tcp]        (answers one request with 200)
    python ue_sip.py STATE.json deregister [--proto udp|tcp]
    python ue_sip.py STATE.json plain

Prints one JSON object. STATE.json keeps the current SA set between invocations.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
import time

from aka_double import keys_for
from sipedge.io.xfrm import XfrmClient
from sipedge.modules.ims_pcscf.alloc import Lease
from sipedge.modules.ims_pcscf.core import build_sa_set
from sipedge.modules.ims_pcscf.secagree import Offer, parse_mechanism
from sipedge.sip.message import parse_message
from sipedge.xfrm.model import DIR_IN, DIR_OUT, PolicySpec, SaSet

U, P = os.environ.get("UE_IP", "10.99.0.2"), os.environ.get("PCSCF_IP", "10.99.0.1")
FAM = socket.AF_INET6 if ":" in U else socket.AF_INET


def host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def mirror(s: SaSet, reqid: int) -> SaSet:
    from dataclasses import replace

    sas = tuple(replace(x, reqid=reqid) for x in s.sas)
    pols = tuple(PolicySpec(p.selector, DIR_OUT if p.direction == DIR_IN else DIR_IN, reqid,
                            p.tmpl_src, p.tmpl_dst, p.hard_seconds) for p in s.policies)
    return SaSet(sas, pols)


class Ue:
    def __init__(self, state_path: str) -> None:
        self.path = state_path
        try:
            self.st = json.load(open(state_path))
        except (OSError, ValueError):
            self.st = None
        self.xc = XfrmClient()
        if self.st is None:  # a fresh UE: forget SAs an earlier one left in this netns
            self.xc.cleanup(range(0x700000, 0x800000))
            self.st = {"call_id": secrets.token_hex(8) + "@ue", "cseq": 0, "set": None,
                       "n": 0}

    def save(self) -> None:
        json.dump(self.st, open(self.path, "w"))

    # -- wire
    def _request(self, method, ruri, sport, proto, extra, to="<sip:alice@ims.test>",
                 call_id=None, cseq=None):
        if cseq is None:
            self.st["cseq"] += 1
            cseq = self.st["cseq"]
        branch = "z9hG4bK" + secrets.token_hex(6)
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/{proto.upper()} {host(U)}:{sport};branch={branch};rport",
                 "Max-Forwards: 70", f"From: {to};tag={secrets.token_hex(4)}", f"To: {to}",
                 f"Call-ID: {call_id or self.st['call_id']}", f"CSeq: {cseq} {method}",
                 *extra, "Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()

    def _exchange(self, data, sport, dst_port, proto, timeout=3.0, want_final=True):
        """Send from our port `sport` to P:dst_port; return the final reply (or None)."""
        if proto == "udp":
            s = socket.socket(FAM, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((U, sport))
            s.settimeout(timeout)
            try:
                s.sendto(data, (P, dst_port))
                end = time.monotonic() + timeout
                while time.monotonic() < end:
                    try:
                        raw, _ = s.recvfrom(65535)
                    except TimeoutError:
                        return None
                    msg = parse_message(raw)
                    if msg.status >= 200 or not want_final:
                        return msg
                return None
            finally:
                s.close()
        s = socket.socket(FAM, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((U, sport))
        s.settimeout(timeout)
        try:
            s.connect((P, dst_port))
            s.sendall(data)
            buf = b""
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                try:
                    chunk = s.recv(65535)
                except TimeoutError:
                    return None
                if not chunk:
                    return None
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    msg = parse_message(head + b"\r\n\r\n", datagram=False)
                    if msg.status >= 200:
                        return msg
            return None
        finally:
            s.close()

    # -- sec-agree
    def _offer_headers(self, spi_c, spi_s, port_c, port_s):
        return [f"Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c={spi_c};"
                f"spi-s={spi_s};port-c={port_c};port-s={port_s}, ipsec-3gpp;alg=hmac-md5-96;"
                f"ealg=des-ede3-cbc;spi-c={spi_c};spi-s={spi_s};port-c={port_c};"
                f"port-s={port_s};x-unknown=1"]

    def _reg_headers(self, expires, port_s, proto, nonce="", response="", user="alice"):
        t = ";transport=tcp" if proto == "tcp" else ""
        return [f"Contact: <sip:{user}@{host(U)}:{port_s}{t}>;expires={expires}",
                f"Expires: {expires}", "Require: sec-agree", "Proxy-Require: sec-agree",
                "Supported: path, sec-agree",
                f'Authorization: Digest username="{user}@ims.test", realm="ims.test", '
                f'nonce="{nonce}", uri="sip:ims.test", response="{response}"']

    def register(self, proto="udp", expires=600, user="alice") -> dict:
        out = {}
        cur = self.st["set"]
        n = self.st["n"] = self.st["n"] + 1
        port_c = 5062 + 4 * (n % 2)  # a new protected client port per set
        port_s = 5064
        spi_c, spi_s = 0x40000 + 2 * n, 0x40001 + 2 * n
        to = f"<sip:{user}@ims.test>"
        sc = self._offer_headers(spi_c, spi_s, port_c, port_s)
        if cur is None:  # initial: unprotected, UDP, to 5060
            r1 = self._request("REGISTER", "sip:ims.test", port_c, "udp",
                               self._reg_headers(expires, port_s, proto, user=user) + sc, to=to)
            resp = self._exchange(r1, port_c, 5060, "udp")
        else:  # re-registration: through the current set
            r1 = self._request("REGISTER", "sip:ims.test", cur["port_c"], cur["proto"],
                               self._reg_headers(expires, port_s, cur["proto"], user=user) + sc
                               + [f"Security-Verify: {cur['server']}"], to=to)
            resp = self._exchange(r1, cur["port_c"], cur["port_ps"], cur["proto"])
        out["first"] = resp.status if resp else None
        if resp is None or resp.status != 401:
            out["first_reason"] = resp.reason if resp else "timeout"
            out["first_headers"] = dict((h[1], h[2]) for h in resp.headers) if resp else {}
            return out
        www = resp.get_all("www-authenticate")
        out["www_authenticate"] = www
        servers = resp.get_all("security-server")
        out["security_server"] = servers
        nonce = www[0].split('nonce="')[1].split('"')[0]
        ck, ik = (bytes.fromhex(k) for k in keys_for(nonce))
        server = parse_mechanism(servers[0])
        mine = Offer(server.alg, server.ealg, spi_c, spi_s, port_c, port_s)
        lease = Lease(0, server.port_s, server.port_c, server.spi_s, server.spi_c)
        p_side = build_sa_set(U, P, mine, lease, ck, ik, 0x700000 + n, 3600)
        self.xc.apply(mirror(p_side, 0x700000 + n))
        r2 = self._request("REGISTER", "sip:ims.test", port_c, proto,
                           self._reg_headers(expires, port_s, proto, nonce, "0badc0de",
                                             user=user)
                           + sc + [f"Security-Verify: {servers[0]}"], to=to)
        resp2 = self._exchange(r2, port_c, server.port_s, proto)
        out["second"] = resp2.status if resp2 else None
        if resp2 is not None and resp2.status == 200:
            if cur is not None:  # the UE drops its old set once the new one works
                self.xc.remove(SaSet(*self._set_from(cur)))
            self.st["set"] = {"proto": proto, "port_c": port_c, "port_s": port_s,
                              "port_ps": server.port_s, "port_pc": server.port_c,
                              "spi_uc": spi_c, "spi_us": spi_s, "spi_ps": server.spi_s,
                              "spi_pc": server.spi_c, "server": servers[0], "ck": ck.hex(),
                              "ik": ik.hex(), "alg": server.alg, "ealg": server.ealg,
                              "reqid": 0x700000 + n}
            self.save()
        out["set"] = self.st["set"]
        return out

    def _set_from(self, cur):
        mine = Offer(cur["alg"], cur["ealg"], cur["spi_uc"], cur["spi_us"], cur["port_c"],
                     cur["port_s"])
        lease = Lease(0, cur["port_ps"], cur["port_pc"], cur["spi_ps"], cur["spi_pc"])
        s = mirror(build_sa_set(U, P, mine, lease, bytes.fromhex(cur["ck"]),
                                bytes.fromhex(cur["ik"]), cur["reqid"], 3600), cur["reqid"])
        return s.sas, s.policies

    def message(self, proto=None) -> dict:
        cur = self.st["set"]
        proto = proto or cur["proto"]
        r = self._request("MESSAGE", "sip:bob@ims.test", cur["port_c"], proto, [])
        resp = self._exchange(r, cur["port_c"], cur["port_ps"], proto)
        return {"status": resp.status if resp else None}

    def deregister(self) -> dict:
        cur = self.st["set"]
        r = self._request("REGISTER", "sip:ims.test", cur["port_c"], cur["proto"],
                          self._reg_headers(0, cur["port_s"], cur["proto"], "n", "x")
                          + self._offer_headers(cur["spi_uc"], cur["spi_us"], cur["port_c"],
                                                cur["port_s"])
                          + [f"Security-Verify: {cur['server']}"])
        before = {s.spi: s.packets for s in self.xc.sas()}
        resp = self._exchange(r, cur["port_c"], cur["port_ps"], cur["proto"])
        after = {s.spi: s.packets for s in self.xc.sas()}
        time.sleep(0.3)
        self.xc.remove(SaSet(*self._set_from(cur)))
        self.st["set"] = None
        self.save()
        # the 200 came in through the UE's inbound SA spi_uc (a plaintext 200 would have
        # been dropped by the UE's inbound policy)
        return {"status": resp.status if resp else None,
                "ue_in_spi_uc_delta": after.get(cur["spi_uc"], 0) - before.get(cur["spi_uc"], 0)}

    def mt(self, proto="udp", timeout=8.0) -> dict:
        cur = self.st["set"]
        if proto == "udp":
            s = socket.socket(FAM, socket.SOCK_DGRAM)
            s.bind((U, cur["port_s"]))
            s.settimeout(timeout)
            print("ready", flush=True)
            raw, addr = s.recvfrom(65535)
            req = parse_message(raw)
            s.sendto(_reply_to(req), addr)
            return {"method": req.method, "from_port": addr[1]}
        ls = socket.socket(FAM, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((U, cur["port_s"]))
        ls.listen(2)
        ls.settimeout(timeout)
        print("ready", flush=True)
        c, addr = ls.accept()
        c.settimeout(timeout)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(65535)
        req = parse_message(buf.split(b"\r\n\r\n")[0] + b"\r\n\r\n", datagram=False)
        c.sendall(_reply_to(req))
        time.sleep(0.3)
        c.close()
        return {"method": req.method, "from_port": addr[1]}

    def plain(self) -> dict:
        """Plaintext to our protected server port from an unregistered port: the kernel
        must drop it (block policy); 5060 still answers a new REGISTER (bob)."""
        cur = self.st["set"]
        r = self._request("REGISTER", "sip:ims.test", 7000, "udp",
                          self._reg_headers(600, 7000, "udp"), call_id="plain@ue", cseq=1)
        got = self._exchange(r, 7000, cur["port_ps"], "udp", timeout=1.5, want_final=False)
        r2 = self._request("REGISTER", "sip:ims.test", 7002, "udp",
                           self._reg_headers(600, 7002, "udp", user="bob")
                           + self._offer_headers(0x50000, 0x50001, 7002, 7004),
                           to="<sip:bob@ims.test>", call_id="bob@ue", cseq=1)
        got2 = self._exchange(r2, 7002, 5060, "udp")
        return {"protected_port_answer": got.status if got else None,
                "port_5060_answer": got2.status if got2 else None}


def _reply_to(req) -> bytes:
    lines = ["SIP/2.0 200 OK"] + [f"Via: {v}" for v in req.get_all("via")] + [
        f"From: {req.get('from')}", f"To: {req.get('to')};tag=ue1",
        f"Call-ID: {req.call_id}", f"CSeq: {req.get('cseq')}", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("cmd")
    ap.add_argument("n", nargs="?", type=int, default=1)
    ap.add_argument("--proto", default="udp")
    ap.add_argument("--expires", type=int, default=600)
    ap.add_argument("--user", default="alice")
    a = ap.parse_args()
    ue = Ue(a.state)
    if a.cmd == "register":
        out = ue.register(a.proto, a.expires, a.user)
    elif a.cmd == "rereg":
        res = [ue.register("udp", a.expires) for _ in range(a.n)]
        out = {"seconds": [r.get("second") for r in res], "firsts": [r.get("first") for r in res],
               "problems": [dict(r, index=i) for i, r in enumerate(res)
                            if r.get("first") != 401 or r.get("second") != 200]}
    elif a.cmd == "message":
        out = ue.message(a.proto if a.proto != "udp" else None)
    elif a.cmd == "mt":
        out = ue.mt(a.proto)
    elif a.cmd == "deregister":
        out = ue.deregister()
    elif a.cmd == "plain":
        out = ue.plain()
    else:
        raise SystemExit(f"unknown {a.cmd}")
    print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    sys.exit(main())
