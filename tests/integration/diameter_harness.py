"""Real Diameter peers on 127.0.0.1 for the diameter tests: freeDiameter (`freeDiameterd`,
Debian freediameterd) and Kamailio's cdp module (Debian kamailio-ims-modules), plus helpers to
run our own node in-process (`Side`) or as a process (`python -m sipedge.modules.diameter`).

freeDiameter wants a TLS certificate in its config even when every peer uses plain TCP: one is
generated per session with openssl. Every process is stopped at the end of its test.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fdpeer_build import build_fdpeer
from sip_harness import free_port
from sipedge.diameter import dictionary as dd
from sipedge.diameter.base import Identity, VendorApp
from sipedge.diameter.peer import PeerSettings
from sipedge.modules.diameter.aio import DiameterService
from sipedge.modules.diameter.core import Node, NodeSettings, PeerConfig
from sipedge.modules.diameter.routing import Route, RoutingTable

FD_BIN = shutil.which("freeDiameterd")
FD_EXT = Path("/usr/lib/freeDiameter")
KAMAILIO = shutil.which("kamailio")
KAMCMD = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
CDP_SO = next(iter(Path("/usr/lib").glob("*/kamailio/modules/cdp.so")), None)

needs_freediameter = pytest.mark.skipif(FD_BIN is None, reason="freeDiameterd (Debian "
                                        "freediameterd) not installed")
needs_cdp = pytest.mark.skipif(KAMAILIO is None or CDP_SO is None,
                               reason="Kamailio cdp.so (Debian kamailio-ims-modules) missing")

CX = 16777216
RX = 16777236


def make_cert(directory: Path, cn: str = "fd.test") -> tuple[Path, Path]:
    """A self-signed certificate whose CN is the freeDiameter identity (it checks that)."""
    key, cert = directory / f"{cn}.key", directory / f"{cn}.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", "-subj", f"/CN={cn}"],
                       check=True, capture_output=True, timeout=60)
    return cert, key


class FreeDiameter:
    """One freeDiameterd. `peers`: (identity, port or None) - with a port it connects too."""

    def __init__(self, tmp: Path, identity: str, realm: str, peers, certdir: Path,
                 port: int | None = None, tc: int = 2, tw: int = 6, dumps: bool = True,
                 extensions=(), relay: bool = True, sctp: bool = False) -> None:
        self.tmp, self.identity, self.realm = tmp, identity, realm
        cert = make_cert(certdir, identity)
        self.port = port or free_port("tcp")
        self.conf = tmp / f"{identity}.conf"
        self.logfile = tmp / f"{identity}.log"
        lines = [f'Identity = "{identity}";', f'Realm = "{realm}";', f"Port = {self.port};",
                 f"SecPort = {free_port('tcp')};", "No_IPv6;", "" if sctp else "No_SCTP;",
                 'ListenOn = "127.0.0.1";', f"TcTimer = {tc};", f"TwTimer = {tw};",
                 f'TLS_Cred = "{cert[0]}", "{cert[1]}";', f'TLS_CA = "{cert[0]}";']
        if dumps:
            lines.append(f'LoadExtension = "{FD_EXT}/dbg_msg_dumps.fdx" : "0x0080";')
        if not relay:  # announce only the extensions' applications, not the relay one
            lines.append("NoRelay;")
        for path, conf in extensions:
            lines.append(f'LoadExtension = "{path}" : "{conf}";')
        for host, pport in peers:
            # Always an address: without ConnectTo freeDiameter resolves the peer's name in
            # DNS (a query off the box). Accept-only peers point at 127.0.0.1:9, where nothing
            # listens: its attempts are refused locally and the peer's own connection is taken.
            lines.append(f'ConnectPeer = "{host}" {{ ConnectTo = "127.0.0.1"; '
                         f'Port = {pport or 9}; No_TLS; {"No_TCP; " if sctp else ""}}};')
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> FreeDiameter:
        self.logf = open(self.logfile, "ab")
        self._run_from = self.logf.tell()  # a restart appends: ready/is_open read this run only
        self.proc = subprocess.Popen([FD_BIN, "-c", str(self.conf), "-dd"], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def run_log(self) -> str:
        """The log of the process started last."""
        with open(self.logfile, "rb") as f:
            f.seek(self._run_from)
            return f.read().decode(errors="replace")

    def ready(self) -> bool:
        """Listening (and its extensions loaded)."""
        return "daemon initialized" in self.run_log()

    def is_open(self, peer: str) -> bool:
        log = self.run_log()
        return re.search(rf"-> 'STATE_OPEN'\s+'{re.escape(peer)}'", log) is not None \
            and not re.search(rf"'STATE_OPEN'\s+-> '\w+'\s+'{re.escape(peer)}'",
                              log.rsplit("-> 'STATE_OPEN'", 1)[-1])

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (no SIGCONT first: a frozen server must not answer while dying)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logf.close()
        return self.proc.returncode


class Cdp:
    """Kamailio with the cdp module as a Diameter peer."""

    def __init__(self, tmp: Path, identity: str, realm: str, peer: str, peer_port: int,
                 apps=((CX, 10415),), port: int | None = None) -> None:
        self.tmp = tmp
        self.port = port or free_port("tcp")
        self.sip_port = free_port("udp")
        self.xml = tmp / "cdp.xml"
        auths = "\n".join(f'  <Auth id="{a}" vendor="{v}"/>' for a, v in apps)
        self.xml.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<DiameterPeer FQDN="{identity}" Realm="{realm}" Vendor_Id="10415" Product_Name="CDiameterPeer"
  AcceptUnknownPeers="0" DropUnknownOnDisconnect="1" Tc="2" Workers="2" QueueLength="32"
  TransactionTimeout="5" SessionsHashSize="128" DefaultAuthSessionTimeout="3600"
  MaxAuthSessionTimeout="3600">
  <Peer FQDN="{peer}" Realm="dra" port="{peer_port}"/>
  <Acceptor port="{self.port}" bind="127.0.0.1"/>
{auths}
  <DefaultRoute FQDN="{peer}" metric="10"/>
</DiameterPeer>
""")
        self.cfg = tmp / "kamailio.cfg"
        self.ctl = tmp / "kam.ctl"  # binrpc control socket (kamcmd), for cdp.disable_peer
        mpath = CDP_SO.parent if CDP_SO else ""
        self.cfg.write_text(f"""#!KAMAILIO
debug=3
log_stderror=yes
children=1
listen=udp:127.0.0.1:{self.sip_port}
mpath="{mpath}"
loadmodule "cdp.so"
loadmodule "ctl.so"
modparam("cdp", "config_file", "{self.xml}")
modparam("cdp", "latency_threshold", 0)
modparam("ctl", "binrpc", "unix:{self.ctl}")
request_route {{ drop; }}
""")
        self.logfile = tmp / "cdp.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Cdp:
        self.logf = open(self.logfile, "ab")
        self.proc = subprocess.Popen([KAMAILIO, "-DD", "-E", "-f", str(self.cfg), "-w",
                                      str(self.tmp)], stdout=self.logf, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def rpc(self, *args: str) -> str:
        """A Kamailio RPC command through kamcmd (e.g. "cdp.disable_peer", "localhost")."""
        return subprocess.run([KAMCMD, "-s", f"unix:{self.ctl}", *args], capture_output=True,
                              text=True, timeout=20, check=True).stdout

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self.logf.close()


def fast(connect: bool, tw: float = 6.0, dpr: float = 2.0, reopen: int = 1) -> PeerSettings:
    return PeerSettings(connect=connect, tc_s=1.0, tw_s=tw, cea_timeout_s=3.0,
                        dpr_timeout_s=dpr, reopen_dwa=reopen)


def make_node(identity: str, realm: str, peers, apps=(CX,), relay=False, routes=(),
              timeout=5.0, max_pending=100000, tw=6.0, dpr=2.0, vendor_apps=()) -> Node:
    """peers: (identity, port or None) - with a port we connect."""
    auth = tuple(apps) + ((0xFFFFFFFF,) if relay else ())
    pcs = [PeerConfig(h, "127.0.0.1" if port else "", port or 3868,
                      settings=fast(bool(port), tw=tw, dpr=dpr)) for h, port in peers]
    return Node(Identity(identity, realm, ("127.0.0.1",), auth_apps=auth,
                         vendor_apps=tuple(vendor_apps)), pcs,
                RoutingTable(list(routes)),
                NodeSettings(relay=relay, request_timeout_s=timeout, max_pending=max_pending))


async def start_side(node: Node, port: int | None = None) -> DiameterService:
    svc = DiameterService(node, [("127.0.0.1", port or 0, "tcp")])
    await svc.start()
    return svc


async def wait_for(cond, timeout: float, what: str = "condition", step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def uar(user: str = "alice") -> list:
    return [dd.avp("Session-Id", f"client.cli;{user};{time.monotonic_ns()}"),
            dd.avp("Auth-Session-State", 1), dd.avp("User-Name", f"{user}@ims.test"),
            dd.avp("Public-Identity", f"sip:{user}@ims.test")]


def port_of(svc: DiameterService) -> int:
    return svc.bound[0][1]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def dra_process(tmp: Path, config: str) -> subprocess.Popen:
    cfg = tmp / "dra.toml"
    cfg.write_text(config)
    ready = tmp / "dra.ready"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "sipedge.modules.diameter", str(cfg),
                             "--ready", str(ready), "--log-level", "warning"],
                            stdout=open(tmp / "dra.log", "ab"), stderr=subprocess.STDOUT,
                            env=env)
    deadline = time.monotonic() + 20
    while not ready.exists() or not ready.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("DRA did not start:\n" + (tmp / "dra.log").read_text())
        time.sleep(0.05)
    return proc


CX_3GPP = (VendorApp(10415, auth=CX),)
RX_3GPP = (VendorApp(10415, auth=RX),)

__all__ = [
    "CX",
    "CX_3GPP",
    "RX",
    "RX_3GPP",
    "Cdp",
    "FreeDiameter",
    "Route",
    "dra_process",
    "fast",
    "free_port",
    "make_cert",
    "make_node",
    "needs_cdp",
    "needs_freediameter",
    "port_of",
    "rss_kb",
    "start_side",
    "uar",
    "wait_for",
]


class FdClient:
    """freeDiameterd with fdpeer in client mode: `send(tag, realm, n)` makes it originate n
    Cx UARs (User-Name tag-i); `answers()` are the answers (or expiries) it got."""

    def __init__(self, tmp: Path, ext: Path, identity: str, realm: str, dra: str, dra_port: int,
                 certdir: Path, sctp: bool = False) -> None:
        self.fifo = tmp / f"{identity}.fifo"
        if not self.fifo.exists():
            os.mkfifo(self.fifo)
        self.out = tmp / f"{identity}.out"
        rt = tmp / f"{identity}.rt.conf"
        rt.write_text(f'* : "{dra}" += DEFAULT ;\n')
        self.fd = FreeDiameter(tmp, identity, realm, [(dra, dra_port)], certdir, extensions=[
            (ext, f"client {self.out} {self.fifo}"), (FD_EXT / "rt_default.fdx", rt)],
            relay=False, sctp=sctp)
        self._w = None

    def start(self) -> FdClient:
        self.fd.start()
        return self

    def send(self, tag: str, realm: str, n: int = 1, route_record: str = "") -> None:
        deadline = time.monotonic() + 20
        while self._w is None:  # the extension holds the FIFO open read-write once loaded
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: freeDiameter has not loaded the extension yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            self._w = os.fdopen(fd, "w", buffering=1)
        self._w.write(f"send {tag} {realm} {n} {route_record}".rstrip() + "\n")

    def answers(self) -> dict[str, dict]:
        res = {}
        if self.out.exists():
            for line in self.out.read_text().splitlines():
                kind, tag, *kv = line.split()
                res[tag] = {"kind": kind, **dict(x.split("=", 1) for x in kv)}
        return res

    def stop(self) -> None:
        if self._w is not None:
            try:
                self._w.close()
            except OSError:
                pass
            self._w = None
        self.fd.stop()


def fd_server(tmp: Path, ext: Path, identity: str, realm: str, dra: str, certdir: Path,
              port: int, sctp: bool = False) -> FreeDiameter:
    """freeDiameterd with fdpeer in server mode: answers Cx UARs with 2001 and writes each
    request it got to `<identity>.out` ("REQ user hbh=.. e2e=.. flags=..")."""
    return FreeDiameter(tmp, identity, realm, [(dra, None)], certdir, port=port,
                        extensions=[(ext, f"server {tmp / (identity + '.out')}")], relay=False,
                        sctp=sctp)


def fd_requests(tmp: Path, identity: str) -> dict[str, dict]:
    path = tmp / f"{identity}.out"
    res = {}
    if path.exists():
        for line in path.read_text().splitlines():
            _, user, *kv = line.split()
            res[user] = dict(x.split("=", 1) for x in kv)
    return res


KAM_SERVER_ROUTE = r"""
request_route { drop; }
event_route[diameter:request] {
  xlog("L_NOTICE", "DIAMETER-REQUEST cmd=$diameter_command app=$diameter_application\n");
  $diameter_response = '[{"avpCode":268,"vendorId":0,"Flags":64,"int32":2001},{"avpCode":277,"vendorId":0,"Flags":64,"int32":1}]';
}
"""

KAM_CLIENT_ROUTE = r"""
request_route {
  if (diameter_request("$hdr(X-Peer)", "16777216", "300", "$rb")) {
    sl_send_reply("200", "answered");
  } else {
    sl_send_reply("500", "no diameter answer");
  }
  exit;
}
event_route[diameter:request] {
  $diameter_response = '[{"avpCode":268,"vendorId":0,"Flags":64,"int32":3001}]';
}
"""


class KamDiameter:
    """Kamailio with cdp + cdp_avp + ims_diameter_server: a Cx server (answers 2001 from
    event_route[diameter:request]) or a Cx client (each SIP request it receives on `sip_port`
    sends the JSON AVPs of its body as a UAR to the peer named in X-Peer; 200 = an answer came
    back, 500 = none before cdp's transaction timeout). Own process group, so SIGSTOP/SIGKILL
    reach all its processes."""

    def __init__(self, tmp: Path, identity: str, realm: str, peer: str, peer_port: int,
                 route: str, timeout_s: int = 8) -> None:
        self.tmp, self.identity = tmp, identity
        self.port = free_port("tcp")
        self.sip_port = free_port("udp")
        xml = tmp / f"{identity}.xml"
        xml.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<DiameterPeer FQDN="{identity}" Realm="{realm}" Vendor_Id="10415" Product_Name="CDiameterPeer"
  AcceptUnknownPeers="0" DropUnknownOnDisconnect="1" Tc="2" Workers="2" QueueLength="32"
  TransactionTimeout="{timeout_s}" SessionsHashSize="128" DefaultAuthSessionTimeout="3600"
  MaxAuthSessionTimeout="3600">
  <Peer FQDN="{peer}" Realm="dra" port="{peer_port}"/>
  <Acceptor port="{self.port}" bind="127.0.0.1"/>
  <Auth id="{CX}" vendor="10415"/>
  <DefaultRoute FQDN="{peer}" metric="10"/>
</DiameterPeer>
""")
        self.cfg = tmp / f"{identity}.cfg"
        self.cfg.write_text(f"""#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:127.0.0.1:{self.sip_port}
mpath="{CDP_SO.parent if CDP_SO else ''}"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "cdp.so"
loadmodule "cdp_avp.so"
loadmodule "ims_diameter_server.so"
modparam("cdp", "config_file", "{xml}")
{route}
""")
        self.logfile = tmp / f"{identity}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> KamDiameter:
        self.logf = open(self.logfile, "ab")
        self.proc = subprocess.Popen([KAMAILIO, "-DD", "-E", "-f", str(self.cfg), "-w",
                                      str(self.tmp)], stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        try:  # children left behind by a killed main process
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.logf.close()

    def request(self, peer: str, avps_json: str, timeout: float = 30) -> str:
        """One SIP request whose route sends a UAR; the status line of Kamailio's reply."""
        import socket as _s
        with _s.socket(_s.AF_INET, _s.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(timeout)
            lp = s.getsockname()[1]
            body = avps_json.encode()
            tag = time.monotonic_ns()
            msg = (f"MESSAGE sip:cx@127.0.0.1:{self.sip_port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK{tag}\r\n"
                   f"From: <sip:test@127.0.0.1>;tag={tag}\r\nTo: <sip:cx@127.0.0.1>\r\n"
                   f"Call-ID: {tag}@test\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 5\r\n"
                   f"X-Peer: {peer}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            s.sendto(msg, ("127.0.0.1", self.sip_port))
            return s.recv(65535).decode(errors="replace").split("\r\n", 1)[0]


def uar_json(user: str, realm: str) -> str:
    """A Cx UAR's AVPs in ims_diameter_server's JSON form (cdp adds Session-Id and Origin-*)."""
    import json
    return json.dumps([
        {"avpCode": 260, "vendorId": 0, "Flags": 64, "list": [
            {"avpCode": 266, "vendorId": 0, "Flags": 64, "int32": 10415},
            {"avpCode": 258, "vendorId": 0, "Flags": 64, "int32": CX}]},
        {"avpCode": 277, "vendorId": 0, "Flags": 64, "int32": 1},
        {"avpCode": 283, "vendorId": 0, "Flags": 64, "string": realm},
        {"avpCode": 1, "vendorId": 0, "Flags": 64, "string": user},
        {"avpCode": 601, "vendorId": 10415, "Flags": 192, "string": f"sip:{user}"}])


__all__ += ["FD_EXT", "FdClient", "KamDiameter", "KAM_CLIENT_ROUTE", "KAM_SERVER_ROUTE", "build_fdpeer",
            "fd_requests", "fd_server", "uar_json"]
