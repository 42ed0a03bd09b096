"""Several proxy instances from one config file ([instances.<name>], docs/instances.md), with
real proxies: under `sipedge-supervisor --simulate` (per-instance supervision) inside a network
namespace the test creates (the "box", one address per instance on its LAN side, probed from a
second namespace, the "LAN", over a veth pair), under `sipedge --config FILE` on a host (the
launcher, 127.0.0.1), and the shipped IMS-style trio (examples/ims_trio), as shipped on
127.0.0.11-13:5060 in a namespace of its own, that SIPp UEs register and call through."""

import asyncio
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sip_harness import SCENARIOS, Sipp, free_port, needs_sipp

from sipedge.appliance.health import SipOptionsProbe
from sipedge.io.rpc import RpcError, rpc_call

APP = Path(__file__).resolve().parents[2] / "app"
TRIO = APP / "sipedge" / "examples" / "ims_trio"
ENV = dict(os.environ, PYTHONPATH=str(APP), PYTHONUNBUFFERED="1")


def answers(port, timeout=30.0, host="127.0.0.1", netns=None):
    """A final reply to OPTIONS from the UDP listener at host:port (asked again until
    `timeout`: a loaded CI machine may miss one), sent from inside `netns` if given."""
    end = time.monotonic() + timeout
    while True:
        probe = SipOptionsProbe(host, port, timeout=3).probe
        if (in_netns(netns, lambda: asyncio.run(probe())) if netns else asyncio.run(probe())).ok:
            return True
        if time.monotonic() > end:
            return False


# ------------------------------------------------------------------ network namespaces

_seq = itertools.count()
_CLONE_NEWNET = 0x40000000
LAN = "198.18.19"  # RFC 2544 benchmarking range, only inside the test's namespaces


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                          check=check)


def in_netns(ns, fn):
    """fn() run in a thread that entered network namespace `ns` (setns(2) moves only the
    calling thread), so the test process itself stays where it is."""
    out = {}

    def run():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {ns}")
        finally:
            os.close(fd)
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class Lan:
    """A box and a LAN: network namespace `box` (the supervisor and its proxies; address
    198.18.19.<i> per instance on lan0) joined by a veth pair to namespace `lan` (the test's
    OPTIONS probes and SIPp, 198.18.19.100 on ue0)."""

    def __init__(self, hosts):
        tag = f"{os.getpid()}-{next(_seq)}"
        self.box, self.lan = f"sipedge-box-{tag}", f"sipedge-lan-{tag}"
        self.ue = f"{LAN}.100"
        _ip("netns", "add", self.box)
        _ip("netns", "add", self.lan)
        try:
            for ns in (self.box, self.lan):
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.box, "link", "add", "lan0", "type", "veth", "peer", "name", "ue0",
                "netns", self.lan)
            for host in hosts:
                _ip("-n", self.box, "addr", "add", f"{host}/24", "dev", "lan0")
            _ip("-n", self.lan, "addr", "add", f"{self.ue}/24", "dev", "ue0")
            _ip("-n", self.box, "link", "set", "lan0", "up")
            _ip("-n", self.lan, "link", "set", "ue0", "up")
        except BaseException:
            self.close()
            raise

    def exec(self, ns):
        return ["ip", "netns", "exec", ns]

    def close(self):
        for ns in (self.box, self.lan):
            _ip("netns", "del", ns, check=False)


def needs_netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespaces)")


def ctl(config, *args):
    p = subprocess.run([sys.executable, "-c", "from sipedge.cli import ctl_main; ctl_main()",
                        "-c", str(config), "--json", *args], env=ENV, capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def until(cond, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = cond()
            if last:
                return last
        except (OSError, ValueError, KeyError, TypeError, RpcError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last})")


def instance_config(run, names, optional=(), extra="", hosts=None):
    """Each instance on its own port of 127.0.0.1, or (`hosts`: name -> address, inside the
    test's box namespace) on 5060 of its own address."""
    ports = {n: 5060 if hosts else free_port() for n in names}
    hosts = hosts or {n: "127.0.0.1" for n in names}
    lines = ["[supervisor]",
             f"command = {json.dumps([sys.executable, '-m', 'sipedge'])}",
             f'rpc_socket = "{run}/supervisor.sock"',
             "respawn_timeout_s = 0.2", "respawn_max_delay_s = 1", "respawn_retry = 3",
             "term_timeout_s = 5", "start_timeout_s = 60", "health_interval_s = 0.5",
             "health_timeout_s = 20", "config_good_after_s = 1", "mark_good_after_s = 0", ""]
    for n in names:
        lines += [f"[instances.{n}]", f"required = {'false' if n in optional else 'true'}",
                  f'data_dir = "{run}/{n}"',
                  f"[instances.{n}.core]", "workers = 1", f'ctl_socket = "{run}/{n}.sock"',
                  f"[[instances.{n}.listen]]", f'address = "{hosts[n]}"', f"port = {ports[n]}",
                  ""]
    return "\n".join(lines) + extra, ports


class Supervised:
    """`sipedge-supervisor --simulate` running the instances of a boot config, inside the box
    namespace of a `Lan` (each instance on 5060 of its own address there)."""

    def __init__(self, tmp_path, names, optional=()):
        self.run = tmp_path / "run"
        self.run.mkdir()
        (tmp_path / "boot").mkdir()
        self.boot = tmp_path / "boot" / "sipedge.toml"
        self.hosts = {n: f"{LAN}.{i}" for i, n in enumerate(names, 1)}
        self.lan = Lan(self.hosts.values())
        self.text, self.ports = instance_config(self.run, names, optional, hosts=self.hosts)
        self.boot.write_text(self.text)
        self.out = open(tmp_path / "supervisor.log", "wb")
        self.log = tmp_path / "supervisor.log"
        self.proc = subprocess.Popen(
            self.lan.exec(self.lan.box) +
            [sys.executable, "-m", "sipedge.appliance.supervisor_main", "--simulate",
             "--boot-config", str(self.boot), "--data-dir", str(tmp_path / "data")],
            env=ENV, stdout=self.out, stderr=subprocess.STDOUT)

    def answers(self, name):
        """The instance answers OPTIONS on its address, asked from the LAN namespace."""
        return answers(self.ports[name], host=self.hosts[name], netns=self.lan.lan)

    def rpc(self, method, params=None):
        return rpc_call(str(self.run / "supervisor.sock"), method, params, timeout=10)

    def instances(self):
        return self.rpc("supervisor.status")["instances"]

    def all_running(self):
        st = self.instances()
        return st if all(i["state"] == "RUNNING" for i in st.values()) else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.lan.close()
        return self.proc.returncode


@pytest.fixture
def supervised(tmp_path):
    made = []

    needs_netns()

    def make(names, optional=()):
        s = Supervised(tmp_path, names, optional)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_three_instances_supervised_each_on_its_own(supervised):
    s = supervised(["edge", "core", "lab"], optional=("lab",))
    st = until(s.all_running, 120, "three instances RUNNING")
    pids = {n: i["pid"] for n, i in st.items()}
    assert len(set(pids.values())) == 3 and not st["lab"]["required"]
    # each answers on its own port, and sipedgectl -i reaches each one's control socket
    for name in s.ports:
        assert s.answers(name), name
        rc, out = ctl(s.boot, "-i", name, "core.health")
        assert rc == 0 and json.loads(out)["workers_alive"] == 1, out
    rc, out = ctl(s.boot, "core.health")
    assert rc != 0 and "choose one with -i NAME" in out
    # killing one instance's proxy restarts only that instance
    os.kill(pids["core"], signal.SIGKILL)
    st = until(lambda: (st := s.all_running())
               and st["core"]["pid"] not in (None, pids["core"]) and st,
               120, "core restarted")
    assert st["edge"]["pid"] == pids["edge"] and st["lab"]["pid"] == pids["lab"]
    # (pid None: dead, its exit not handled yet; >= 1: under load the new one may start
    # before the old worker let go of the port)
    assert st["core"]["restarts"] >= 1 and st["edge"]["restarts"] == 0
    pids = {n: i["pid"] for n, i in st.items()}
    assert s.answers("core")
    # the console's `restart lab` (supervisor.restart instance=lab): only lab
    assert s.rpc("supervisor.restart", {"instance": "lab"})["instance"] == "lab"
    st = until(lambda: (st := s.all_running())
               and st["lab"]["pid"] not in (None, pids["lab"]) and st,
               120, "lab restarted")
    assert st["edge"]["pid"] == pids["edge"] and st["core"]["pid"] == pids["core"]
    assert s.rpc("supervisor.status")["watchdog"]["petting"]
    # a new file that breaks only the optional instance is kept (made last-known-good on the
    # health of the required ones): lab is left to its respawn policy, nothing is rolled back
    until(lambda: s.rpc("supervisor.status")["config"]["proven"], 60, "config proven")
    s.boot.write_text(_broken_script(s, "lab"))
    s.rpc("config.apply")
    conf = until(lambda: (c := s.rpc("supervisor.status")["config"])["proven"] and c, 60,
                 "the file with lab broken kept")
    assert conf["source"] == "boot" and conf["rolled_back"] is None
    st = s.instances()
    assert st["lab"]["state"] != "RUNNING" and st["lab"]["pid"] != pids["lab"]
    assert st["edge"]["pid"] == pids["edge"] and st["core"]["pid"] == pids["core"]
    assert "config kept although optional instance lab" in s.log.read_text()
    assert s.stop() == 0


def _broken_script(s, name):
    """The box's file with instance `name` given a routing script that cannot load (its
    worker dies at start, so it never gets healthy)."""
    script = s.run / f"{name}_route.py"
    script.write_text('raise RuntimeError("broken on purpose")\n')
    text = s.text.replace(f"[instances.{name}.core]\n",
                          f'[instances.{name}.routing]\nscript = "{script}"\n'
                          f"[instances.{name}.core]\n")
    return text


def test_config_error_in_one_instance_named_others_keep_running(supervised):
    s = supervised(["edge", "core"])
    st = until(s.all_running, 120, "two instances RUNNING")
    pids = {n: i["pid"] for n, i in st.items()}
    until(lambda: s.rpc("supervisor.status")["config"]["proven"], 60, "config proven")
    bad = s.text.replace("[instances.core.core]\nworkers = 1",
                         "[instances.core.core]\nworkers = 1\nmax_message_bytes = 10")
    s.boot.write_text(bad)
    s.rpc("config.apply")
    errs = until(lambda: s.rpc("config.errors")["errors"], 30, "errors reported")
    line = bad.splitlines().index("max_message_bytes = 10") + 1
    assert errs == [f"{s.boot}:{line}: instances.core.core.max_message_bytes: must be >= 1024"]
    assert s.rpc("config.errors")["source"] == "last-known-good"
    time.sleep(2)
    st = s.all_running()
    assert st and {n: i["pid"] for n, i in st.items()} == pids  # nobody restarted
    assert s.answers("edge") and s.answers("core")
    # the fixed file with one instance's section changed: that instance alone restarts
    s.boot.write_text(s.text.replace("[instances.core.core]\nworkers = 1",
                                     "[instances.core.core]\nworkers = 2"))
    s.rpc("config.apply")
    st = until(lambda: (st := s.all_running())
               and st["core"]["pid"] not in (None, pids["core"]) and st,
               120, "core restarted with its new section")
    assert st["edge"]["pid"] == pids["edge"]
    assert st["core"]["health"]["workers_expected"] == 2
    # a new file whose second (required) instance never gets healthy is rolled back to
    # last-known-good, the instance named; core restarts on it, edge is left running
    until(lambda: s.rpc("supervisor.status")["config"]["proven"], 60, "config proven")
    good = s.boot.read_text()
    s.boot.write_text(_broken_script(s, "core"))
    s.rpc("config.apply")
    rb = until(lambda: s.rpc("supervisor.status")["config"]["rolled_back"], 120,
               "rolled back")
    assert rb["reason"].startswith("instance core: 2 failed starts on ") and \
        str(s.boot) in rb["reason"] and "broken on purpose" in rb["reason"], rb
    assert s.rpc("config.errors")["source"] == "last-known-good"
    assert (s.run.parent / "data" / "config" / "last-good.toml").read_text() == good
    st = until(s.all_running, 120, "core back on last-known-good")
    assert st["edge"]["pid"] == pids["edge"] and st["core"]["health"]["workers_expected"] == 2
    assert s.answers("core")
    assert s.stop() == 0


def test_host_launcher_runs_every_instance(tmp_path):
    """`sipedge --config FILE` on a PC: one proxy process tree per instance."""
    text, ports = instance_config(tmp_path, ["one", "two"])
    cfg = tmp_path / "sipedge.toml"
    cfg.write_text(text)
    log = open(tmp_path / "launcher.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "sipedge", "--config", str(cfg)], env=ENV,
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        def healthy(name):  # answering, and its worker's first heartbeat is in
            rc, out = ctl(cfg, "-i", name, "core.health")
            return rc == 0 and json.loads(out)["workers_alive"] >= 1

        for name in ("one", "two"):
            until(lambda: healthy(name), 120, name)
            assert answers(ports[name])
        health = json.loads(ctl(cfg, "-i", "two", "core.health")[1])
        assert health["workers_alive"] == 1
        # a child that dies is started again; the other one is left alone
        started = dict(re.findall(r"instance (\w+) started pid=(\d+)",
                                  (tmp_path / "launcher.log").read_text()))
        os.kill(int(started["two"]), signal.SIGKILL)
        until(lambda: len(re.findall(r"instance two started",
                                     (tmp_path / "launcher.log").read_text())) == 2, 60,
              "two started again")
        until(lambda: ctl(cfg, "-i", "two", "core.health")[0] == 0, 120, "two back")
        assert len(re.findall(r"instance one started", (tmp_path / "launcher.log")
                              .read_text())) == 1
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
        log.close()
    assert rc == 0
    out = (tmp_path / "launcher.log").read_text()
    assert "instance one started" in out and "instance two started" in out
    assert re.search(r"running config=\S+ instance=two ", out), out


# ------------------------------------------------------------------ the IMS-style trio


def trio_copy(tmp_path):
    """The shipped example as shipped (127.0.0.11-13, port 5060, inside the test's network
    namespace), its control sockets and the S-CSCF's data dir moved to tmp_path."""
    work = tmp_path / "trio"
    shutil.copytree(TRIO, work)
    text = (work / "sipedge.toml").read_text()
    for n in ("pcscf", "icscf", "scscf"):
        text = text.replace(f"[instances.{n}.core]\n",
                            f'[instances.{n}.core]\nctl_socket = "{work}/{n}.sock"\n')
    text = text.replace("/data/sipedge/scscf", str(work / "scscf-data"))
    (work / "sipedge.toml").write_text(text)
    return work


class NetnsSipp(Sipp):
    """SIPp run inside a network namespace."""

    def __init__(self, workdir, ns):
        super().__init__(workdir)
        self.ns = ns

    def _cmd(self, scenario, port, extra):
        return ["ip", "netns", "exec", self.ns, *super()._cmd(scenario, port, extra)]


def _sipp(work, ns, scenario, target, *args, timeout_s=20):
    err = work / f"sipp-{Path(scenario).stem}.err"
    err.unlink(missing_ok=True)
    cmd = ["ip", "netns", "exec", ns, "sipp", "-sf", str(SCENARIOS / scenario),
           "-i", "127.0.0.1", "-p", "0", "-m", "1",
           "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error", "-recv_timeout", "8s",
           "-trace_err", "-error_file", str(err), *args, target]
    p = subprocess.run(cmd, cwd=work, capture_output=True, timeout=timeout_s + 30)
    text = p.stdout.decode(errors="replace")[-1500:]
    if err.exists():
        text += err.read_text(errors="replace")[-3000:]
    return p.returncode, text


@pytest.fixture
def netns():
    """A network namespace with only lo (up): the box the trio runs on, as shipped."""
    needs_netns()
    ns = f"sipedge-trio-{os.getpid()}-{next(_seq)}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        _ip("netns", "del", ns, check=False)


@needs_sipp
@pytest.mark.needs_sipp
def test_ims_trio_ue_registers_and_calls_through(tmp_path, netns):
    work = trio_copy(tmp_path)
    cfg = work / "sipedge.toml"
    rc, out = subprocess.run([sys.executable, "-m", "sipedge", "--check-config", str(cfg)],
                             env=ENV, capture_output=True, text=True).returncode, ""
    assert rc == 0
    log = open(work / "trio.log", "wb")
    p = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "sipedge",
                          "--config", str(cfg)], env=ENV, stdout=log, stderr=subprocess.STDOUT)
    sipp = NetnsSipp(work, netns)
    pcscf = "127.0.0.11:5060"
    try:
        for name in ("pcscf", "icscf", "scscf"):
            until(lambda: ctl(cfg, "-i", name, "core.health")[0] == 0, 120, name)
        alice_port, bob_port = 5071, 5072
        sipp.uas("uas", bob_port)
        for user, contact in (("bob", bob_port), ("alice", alice_port)):
            # the digest uri names the home domain, as an IMS UE's (its R-URI); SIPp would
            # take the P-CSCF's address, which the S-CSCF (another address) does not serve
            rc, out = _sipp(work, netns, "registrar/register.xml", pcscf, "-s", user,
                            "-au", user, "-ap", f"{user}-pw", "-auth_uri", "localhost",
                            "-key", "contact_port", str(contact), "-key", "expires", "600")
            assert rc == 0, out
        # the S-CSCF holds the bindings, with the P-CSCF's Path
        rc, out = ctl(cfg, "-i", "scscf", "ul.show", "aor=bob@localhost")
        assert rc == 0, out
        binding = json.loads(out)[0]
        assert binding["contact"] == f"sip:bob@127.0.0.1:{bob_port}"
        assert pcscf in json.dumps(binding.get("path")), binding
        # alice calls bob: P-CSCF -> I-CSCF -> S-CSCF -> (Path) P-CSCF -> bob; 200, ACK, BYE
        rc, out = _sipp(work, netns, "registrar/call_auth.xml", pcscf, "-s", "bob",
                        "-key", "caller", "alice", "-au", "alice", "-ap", "alice-pw",
                        "-auth_uri", "bob@localhost")
        assert rc == 0, out
        rc, out = ctl(cfg, "-i", "pcscf", "ul.dump")
        assert rc != 0  # the P-CSCF has no registrar: each instance its own modules
    finally:
        sipp.stop()
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        log.close()
    text = (work / "trio.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
