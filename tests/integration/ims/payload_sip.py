"""Runs inside UML: REGISTER through a real sipedge P-CSCF (ims_pcscf) to a sipedge S-CSCF,
with the UE (ue_sip.py) in netns `ue`. Writes its findings to argv[1] as JSON.

The P-CSCF listens on 10.99.0.1:5060 (UE side) and 127.0.0.1:5060 (core side); the S-CSCF
on 127.0.0.1:5070. Everything exists only inside UML."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

from sip_harness import SipEdge, make_config
from sipedge.io.xfrm import BLOCK_PRIORITY, XfrmClient

RESULT = Path(sys.argv[1])
WORK = RESULT.parent
HERE = Path(__file__).resolve().parent
P4, U4 = "10.99.0.1", "10.99.0.2"
BASE = 0x5E0000
SLOTS = 4
MARK = (0, 0x5E000000)  # [ims_pcscf] xfrm_mark_mask's default: the tag on our objects
STATE = WORK / "ue-state.json"
# Start-up inside UML reads every module over hostfs (pyroute2 alone takes seconds); on CI's
# two shared cores the P-CSCF once needed more than the harness's default 20 s.
START_S = 120
out: dict = {}


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def ue(*args: str, timeout: float = 120, state: Path = STATE, env: dict | None = None) -> dict:
    r = subprocess.run(["ip", "netns", "exec", "ue", sys.executable, str(HERE / "ue_sip.py"),
                        str(state), *args], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    if r.returncode != 0:
        raise RuntimeError(f"ue {args} failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def ue_bg(*args: str) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", "ue", sys.executable, str(HERE / "ue_sip.py"),
                          str(STATE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def step(name):
    def deco(fn):
        t = time.monotonic()
        try:
            out[name] = fn()
        except Exception:  # noqa: BLE001 - record and go on
            out[name] = {"error": traceback.format_exc()}
        out.setdefault("seconds", {})[name] = round(time.monotonic() - t, 2)
        RESULT.write_text(json.dumps(out, indent=1, default=str))
        return fn
    return deco


xc = XfrmClient()


def ours():
    sas = [s for s in xc.sas() if s.reqid in range(BASE, BASE + SLOTS) and s.mark == MARK]
    pols = [p for p in xc.policies() if p.reqid in range(BASE, BASE + SLOTS)
            and p.mark == MARK]
    return sas, pols


def spi_packets() -> dict[int, int]:
    return {s.spi: s.packets for s in xc.sas()}


def stat() -> dict:
    return {k: int(v) for k, v in (ln.split() for ln in open("/proc/net/xfrm_stat"))}


sh("ip netns add ue")
sh("ip link add pc0 type veth peer name ue0 netns ue")
sh(f"ip addr add {P4}/24 dev pc0; ip -6 addr add fd00:99::1/64 dev pc0 nodad; "
   "ip link set pc0 up")
sh(f"ip -n ue addr add {U4}/24 dev ue0; ip -n ue -6 addr add fd00:99::2/64 dev ue0 nodad; "
   "ip -n ue link set ue0 up; ip -n ue link set lo up")
# a foreign IPsec user on the box (reqid 7)
sh(f"ip xfrm state add src {P4} dst 10.99.0.9 proto esp spi 0x4242 reqid 7 mode transport "
   "enc 'cbc(aes)' 0x000102030405060708090a0b0c0d0e0f auth-trunc 'hmac(sha1)' "
   "0x000102030405060708090a0b0c0d0e0f10111213 96")
sh(f"ip xfrm policy add src {P4} dst 10.99.0.9 dir out tmpl src {P4} dst 10.99.0.9 "
   "proto esp reqid 7 mode transport")

scscf = SipEdge(WORK, make_config(str(WORK / "scscf.ctl"), [("udp", "127.0.0.1", 5070)], 1,
                                  f'[routing]\nscript = "{HERE / "scscf_route.py"}"\n'),
                "scscf").start(1, timeout=START_S)
PCSCF_CFG = make_config(
    str(WORK / "pcscf.ctl"),
    [("udp", P4, 5060), ("tcp", P4, 5060), ("udp", "127.0.0.1", 5060)], 1,
    f'[routing]\nscript = "{HERE / "pcscf_route.py"}"\n'
    f'[ims_pcscf]\naddress = "{P4}"\nport_base = 5100\nslots = {SLOTS}\n'
    'pending_lifetime_s = 20\nlifetime_margin_s = 2\n', "debug").replace(
    "[core]\n", '[core]\nmodules = ["ims_pcscf"]\n')
pcscf = SipEdge(WORK, PCSCF_CFG, "pcscf").start(1, timeout=START_S)


@step("startup")
def _():
    pols = xc.policies()
    blocks = [p for p in pols if p.priority == BLOCK_PRIORITY]
    return {"block_policies": len(blocks), "crypto": pcscf.rpc("ipsec.crypto"),
            "selftest": pcscf.rpc("ipsec.selftest")}


@step("register_udp")
def _():
    before = spi_packets()
    r = ue("register", "--expires", "600")
    after = spi_packets()
    sas, pols = ours()
    s = r.get("set") or {}
    return {"ue": r, "sas": len(sas), "policies": len(pols),
            "sa_tuples": sorted([x.src, x.dst, x.spi] for x in sas),
            "policy_sel": sorted([p.selector.src, p.selector.sport, p.selector.dst,
                                  p.selector.dport, p.direction] for p in pols),
            "delta_in_ps": after.get(s.get("spi_ps"), 0) - before.get(s.get("spi_ps"), 0),
            "delta_out_uc": after.get(s.get("spi_uc"), 0) - before.get(s.get("spi_uc"), 0),
            "ipsec_list": pcscf.rpc("ipsec.list")}


@step("mo_mt_udp")
def _():
    s = json.loads(STATE.read_text())["set"]
    before = spi_packets()
    mo = ue("message")
    bg = ue_bg("mt")
    core = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    core.bind(("127.0.0.1", 0))
    core.settimeout(5)
    port = core.getsockname()[1]
    req = (f"MESSAGE sip:alice@{U4}:{s['port_s']} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKmt1\r\nMax-Forwards: 70\r\n"
           "From: <sip:bob@ims.test>;tag=b1\r\nTo: <sip:alice@ims.test>\r\n"
           "Call-ID: mt1@core\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n")
    core.sendto(req.encode(), ("127.0.0.1", 5060))
    final = None
    try:
        while True:
            data = core.recv(65535).decode()
            if not data.startswith("SIP/2.0 1"):
                final = data.split("\r\n", 1)[0]
                break
    except TimeoutError:
        pass
    mt = json.loads(bg.communicate(timeout=10)[0].strip().splitlines()[-1])
    after = spi_packets()
    delta = {k: after.get(s[k], 0) - before.get(s[k], 0)
             for k in ("spi_ps", "spi_uc", "spi_us", "spi_pc")}
    return {"mo": mo, "mt": mt, "mt_final_at_core": final, "delta": delta,
            "port_pc": s["port_pc"]}


@step("plaintext")
def _():
    before = stat()
    r = ue("plain")
    after = stat()
    return {"ue": r, "stat_delta": {k: after[k] - before[k] for k in after
                                    if after[k] != before[k]}}


@step("rereg50")
def _():
    peak = 0
    r = ue("rereg", "50", timeout=300)
    sas_after, pols_after = ours()
    mo = ue("message")  # the first request on the newest set retires the older one
    time.sleep(0.3)
    sas_final, pols_final = ours()
    lst = pcscf.rpc("ipsec.list")
    peak = max(peak, len(sas_after))
    return {"seconds": r["seconds"], "firsts": r["firsts"], "problems": r["problems"],
            "after_loop": [len(sas_after), len(pols_after)], "message": mo,
            "final": [len(sas_final), len(pols_final)], "sets": len(lst["sets"]),
            "counters": lst["counters"]}


@step("deregister_udp")
def _():
    r = ue("deregister")
    time.sleep(0.5)
    sas, pols = ours()
    return {"ue": r, "after": [len(sas), len(pols)], "sets": len(pcscf.rpc("ipsec.list")["sets"])}


@step("tcp")
def _():
    before = spi_packets()
    reg = ue("register", "--proto", "tcp")
    s = json.loads(STATE.read_text())["set"]
    mo = ue("message", "--proto", "tcp")
    bg = ue_bg("mt", "--proto", "tcp")
    core = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    core.bind(("127.0.0.1", 0))
    core.settimeout(8)
    port = core.getsockname()[1]
    req = (f"MESSAGE sip:alice@{U4}:{s['port_s']};transport=tcp SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKmt2\r\nMax-Forwards: 70\r\n"
           "From: <sip:bob@ims.test>;tag=b2\r\nTo: <sip:alice@ims.test>\r\n"
           "Call-ID: mt2@core\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n")
    core.sendto(req.encode(), ("127.0.0.1", 5060))
    final = None
    try:
        while True:
            data = core.recv(65535).decode()
            if not data.startswith("SIP/2.0 1"):
                final = data.split("\r\n", 1)[0]
                break
    except TimeoutError:
        pass
    try:
        mt = json.loads(bg.communicate(timeout=10)[0].strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001
        bg.kill()
        mt = {"error": str(exc)}
    after = spi_packets()
    delta = {k: after.get(s[k], 0) - before.get(s[k], 0)
             for k in ("spi_ps", "spi_uc", "spi_us", "spi_pc")}
    dereg = ue("deregister")
    time.sleep(0.5)
    return {"register": reg, "mo": mo, "mt": mt, "mt_final_at_core": final, "delta": delta,
            "port_pc": s["port_pc"],
            "dereg": dereg, "after_dereg": [len(x) for x in ours()]}


@step("missing_ik")
def _():
    STATE.unlink(missing_ok=True)
    r = ue("register", "--user", "noik")
    STATE.unlink(missing_ok=True)
    return {"ue": r, "after": [len(x) for x in ours()]}


@step("expiry")
def _():
    r = ue("register", "--expires", "4")
    n0 = [len(x) for x in ours()]
    time.sleep(7)
    n1 = [len(x) for x in ours()]
    STATE.unlink(missing_ok=True)
    return {"ue": r.get("second"), "before": n0, "after": n1}


@step("kill9")
def _():
    global pcscf
    r = ue("register", "--expires", "6")
    n0 = [len(x) for x in ours()]
    main = pcscf.proc.pid
    kids = [int(p) for p in sh(f"pgrep -P {main} || true").split()]
    for pid in kids + [main]:
        os.kill(pid, signal.SIGKILL)
    pcscf.proc.wait(5)
    time.sleep(0.5)
    n1 = [len(x) for x in ours()]
    time.sleep(10)
    n2 = [len(x) for x in ours()]
    blocks_left = len([p for p in xc.policies() if p.priority == BLOCK_PRIORITY])
    STATE.unlink(missing_ok=True)
    # foreign look-alikes without our mark: an SA and a policy with our first reqid, and a
    # block policy with the selector of our first one (accepted next to ours: the kernel
    # keys policies by selector and mark)
    sh(f"ip xfrm state add src {P4} dst 10.99.0.8 proto esp spi 0x4343 reqid {BASE} "
       "mode transport enc 'cbc(aes)' 0x000102030405060708090a0b0c0d0e0f auth-trunc "
       "'hmac(sha1)' 0x000102030405060708090a0b0c0d0e0f10111213 96")
    sh(f"ip xfrm policy add src {P4} dst 10.99.0.8 dir out tmpl src {P4} dst 10.99.0.8 "
       f"proto esp reqid {BASE} mode transport")
    xc.add_block(P4, 5100)
    # restart: start-up cleanup of our leftovers, foreign ones stay
    pcscf = SipEdge(WORK, PCSCF_CFG, "pcscf").start(1, timeout=START_S)  # same ctl socket, log appended
    pols = xc.policies()
    foreign = sorted([s.dst, s.spi, s.reqid] for s in xc.sas() if s.mark is None)
    return {"ue": r.get("second"), "registered": n0, "right_after_kill": n1,
            "after_lifetime": n2, "block_policies_left_by_killed": blocks_left,
            "block_policies_after_restart": len([p for p in pols if p.mark == MARK
                                                 and p.priority == BLOCK_PRIORITY]),
            "foreign_sas": foreign,
            "foreign_policies": sorted([p.reqid, p.action, p.selector.dport]
                                       for p in pols if p.mark is None)}


@step("ipv6")
def _():
    """A second P-CSCF on fd00:99::1 (its own slots and reqid range), UE on fd00:99::2."""
    os.environ["PCSCF_CORE_SOCKET"] = "udp:127.0.0.1:5061"
    cfg = make_config(
        str(WORK / "pcscf6.ctl"), [("udp", "fd00:99::1", 5060), ("udp", "127.0.0.1", 5061)], 1,
        f'[routing]\nscript = "{HERE / "pcscf_route.py"}"\n'
        '[ims_pcscf]\naddress = "fd00:99::1"\nport_base = 5200\nslots = 2\n'
        'reqid_base = 6291456\n').replace("[core]\n", '[core]\nmodules = ["ims_pcscf"]\n')
    p6 = SipEdge(WORK, cfg, "pcscf6").start(1, timeout=START_S)
    env = {"UE_IP": "fd00:99::2", "PCSCF_IP": "fd00:99::1"}
    st6 = WORK / "ue6-state.json"
    try:
        reg = ue("register", state=st6, env=env)
        sas6 = [s for s in xc.sas() if s.family == 10 and s.reqid in range(6291456, 6291458)]
        pols6 = [p for p in xc.policies() if p.reqid in range(6291456, 6291458)]
        before = spi_packets()
        mo = ue("message", state=st6, env=env)
        after = spi_packets()
        s = reg.get("set") or {}
        dereg = ue("deregister", state=st6, env=env)
        time.sleep(0.5)
        left = [s for s in xc.sas() if s.reqid in range(6291456, 6291458)]
        return {"register": [reg.get("first"), reg.get("second")], "sas": len(sas6),
                "policies": len(pols6), "message": mo.get("status"),
                "delta_ps": after.get(s.get("spi_ps"), 0) - before.get(s.get("spi_ps"), 0),
                "delta_uc": after.get(s.get("spi_uc"), 0) - before.get(s.get("spi_uc"), 0),
                "dereg": dereg.get("status"), "left": len(left)}
    finally:
        p6.stop()


@step("logs")
def _():
    text = (WORK / "pcscf.log").read_text(errors="replace")
    lines = text.splitlines()
    return {"eexist": text.count("File exists"), "tracebacks": text.count("Traceback"),
            "errors": [ln for ln in lines if " ERROR " in ln][:20],
            # every 5xx the module made, with the AoR it was for (only noik's is expected)
            "module_5xx": [ln.split("ims_pcscf ", 1)[-1] for ln in lines
                           if " WARNING sipedge.ims_pcscf" in ln and ": ims_pcscf 5" in ln][:20]}


pcscf.stop()
scscf.stop()
RESULT.write_text(json.dumps(out, indent=1, default=str))
