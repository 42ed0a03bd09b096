"""DHCP client and ntpd helpers: command lines (pure), lifecycle policy (sans-IO) and the
asyncio runner with fake processes at the spawn boundary."""

import asyncio
import os
import signal

import pytest

from sipedge.appliance.netservices import (ServicePolicy, ServiceRunner, ServiceSpec, Start,
                                           Stop, service_specs, split_ntp_server)
from sipedge.appliance.network import (NetworkManager, desired_state, plan, stop_boot_dhcp,
                                       validate, write_hostname_file, write_resolv_conf)
from sipedge.appliance.network import DeleteAddress, LinkSpec, NetState
from sipedge.appliance.params import InterfaceParams, NetworkParams, VlanParams

SCRIPT = "/usr/libexec/sipedge/udhcpc-event"


def params(**kw):
    base = dict(manage=True, interface=[InterfaceParams(name="eth0", dhcp=True),
                                        InterfaceParams(name="eth1",
                                                        addresses=["192.0.2.1/24"])],
                ntp_servers=["198.51.100.123", "ntp.example.net"])
    base.update(kw)
    return NetworkParams(**base)


# ------------------------------------------------------------------ command lines


def test_command_lines():
    specs = service_specs(params(), busybox="/bin/busybox")
    assert specs == {
        "udhcpc:eth0": ServiceSpec("udhcpc:eth0", ("/bin/busybox", "udhcpc", "-f", "-S", "-i",
                                                   "eth0", "-s", SCRIPT)),
        "ntpd": ServiceSpec("ntpd", ("/bin/busybox", "ntpd", "-n", "-p", "198.51.100.123",
                                     "-p", "ntp.example.net")),
    }


def test_chrony_when_installed():
    specs = service_specs(params(ntp_servers=["198.51.100.123", "ntp.example.net:1123",
                                              "[2001:db8::123]:123", "2001:db8::7b"]),
                          chronyd="/usr/sbin/chronyd", chrony_conf_path="/run/x/chrony.conf")
    spec = specs["ntpd"]
    assert spec.argv == ("/usr/sbin/chronyd", "-d", "-f", "/run/x/chrony.conf")
    ((path, conf),) = spec.files
    assert path == "/run/x/chrony.conf"
    lines = conf.splitlines()
    assert lines[1:5] == ["server 198.51.100.123 iburst", "server ntp.example.net iburst port 1123",
                          "server 2001:db8::123 iburst port 123", "server 2001:db8::7b iburst"]
    assert "makestep 1.0 -1" in lines and "cmdport 0" in lines
    assert "pidfile /run/x/chronyd.pid" in lines
    # a changed server list is a changed spec: the runner restarts chronyd with the new file
    other = service_specs(params(ntp_servers=["198.51.100.124"]), chronyd="/usr/sbin/chronyd")
    assert other["ntpd"] != service_specs(params(), chronyd="/usr/sbin/chronyd")["ntpd"]


def test_ntp_server_syntax():
    assert split_ntp_server("ntp.example.net") == ("ntp.example.net", None)
    assert split_ntp_server("192.0.2.1:1123") == ("192.0.2.1", 1123)
    assert split_ntp_server("[2001:db8::1]") == ("2001:db8::1", None)
    assert split_ntp_server("[2001:db8::1]:123") == ("2001:db8::1", 123)
    assert split_ntp_server("2001:db8::1") == ("2001:db8::1", None)
    for bad in ("", ":123", "host:0", "host:99999", "host:x", "[2001:db8::1", "[::1]x"):
        with pytest.raises(ValueError):
            split_ntp_server(bad)


async def test_runner_writes_the_files_before_starting(tmp_path):
    conf = tmp_path / "sub" / "chrony.conf"
    seen = []
    spawn = FakeSpawn()

    async def spawn_and_read(spec):
        seen.append(conf.read_text())
        return await spawn(spec)

    runner = ServiceRunner(spawn_and_read)
    await runner.update({"ntpd": ServiceSpec("ntpd", ("chronyd",),
                                             files=((str(conf), "server a iburst\n"),))})
    await runner.close()
    assert seen == ["server a iburst\n"]


def test_hostname_and_static_dns_reach_udhcpc():
    specs = service_specs(params(hostname="edge-1", dns_servers=["192.0.2.53"], ntp_servers=[]))
    (spec,) = specs.values()
    assert spec.argv[-2:] == ("-x", "hostname:edge-1")
    assert spec.env == (("SIPEDGE_KEEP_RESOLV", "1"),)


def test_no_helpers_unless_managed():
    assert service_specs(params(manage=False)) == {}
    assert service_specs(params(interface=[], ntp_servers=[])) == {}


def vlan_params(**kw):
    """eth1 (static) carries VLAN 42 whose IPv4 comes from DHCP."""
    return params(vlan=[VlanParams(name="eth1.42", link="eth1", id=42, dhcp=True,
                                   addresses=["2001:db8:42::1/64"], mtu=1400)],
                  ntp_servers=[], **kw)


def test_dhcp_vlan_gets_a_client_once_it_exists():
    udhcpc = ("bb", "udhcpc", "-f", "-S", "-i", "eth1.42", "-s", SCRIPT)
    want = {"udhcpc:eth0": ServiceSpec("udhcpc:eth0", ("bb", "udhcpc", "-f", "-S", "-i",
                                                       "eth0", "-s", SCRIPT)),
            "udhcpc:eth1.42": ServiceSpec("udhcpc:eth1.42", udhcpc)}
    assert service_specs(vlan_params(), busybox="bb") == want  # links unknown
    assert service_specs(vlan_params(), busybox="bb", links={"eth0", "eth1", "eth1.42"}) == want
    # parent missing, so the VLAN could not be made: no client yet (the eth0 one runs anyway)
    assert list(service_specs(vlan_params(), busybox="bb", links={"eth0"})) == ["udhcpc:eth0"]
    specs = service_specs(vlan_params(hostname="edge-1", dns_servers=["192.0.2.53"]))
    assert specs["udhcpc:eth1.42"].argv[-2:] == ("-x", "hostname:edge-1")
    assert specs["udhcpc:eth1.42"].env == (("SIPEDGE_KEEP_RESOLV", "1"),)
    assert service_specs(vlan_params(manage=False)) == {}


def test_dhcp_vlan_state_and_plan():
    d = desired_state(vlan_params())
    assert d.dhcp == {"eth0", "eth1.42"}
    assert d.links["eth1.42"] == LinkSpec("eth1.42", True, 1400, "eth1", 42)
    current = NetState(links={"eth0": LinkSpec("eth0", True, 1500),
                              "eth1": LinkSpec("eth1", True, 1500),
                              "eth1.42": LinkSpec("eth1.42", True, 1400, "eth1", 42)},
                       addresses={("eth1", "192.0.2.1/24"), ("eth1.42", "198.51.100.20/24"),
                                  ("eth1.42", "2001:db8:42::1/64"),
                                  ("eth1.42", "2001:db8:43::9/64")})
    # the lease on the VLAN stays; a stray IPv6 address goes
    assert plan(d, current) == [DeleteAddress("eth1.42", "2001:db8:43::9/64")]


def test_dhcp_vlan_validation():
    assert validate(vlan_params()) == []
    bad = params(vlan=[VlanParams(name="eth1.42", link="eth1", id=42, dhcp=True,
                                  addresses=["198.51.100.5/24", "2001:db8::5/64", "x"])])
    assert validate(bad) == [
        ("network.vlan[0].addresses: '198.51.100.5/24': IPv4 comes from DHCP on this "
         "interface (dhcp = true)"),
        "network.vlan[0].addresses: bad address 'x'"]
    static = params(vlan=[VlanParams(name="eth1.42", link="eth1", id=42,
                                     addresses=["198.51.100.5/24"])])
    assert validate(static) == []


def test_validation():
    assert validate(params()) == []
    bad = params(interface=[InterfaceParams(name="eth0", dhcp=True,
                                            addresses=["192.0.2.5/24", "2001:db8::5/64"])],
                 ntp_servers=["-q", "a b", ""])
    problems = validate(bad)
    assert problems[0].startswith("network.interface[0].addresses: '192.0.2.5/24': IPv4 comes")
    assert problems[1:] == ["network.ntp_servers: bad server '-q'",
                            "network.ntp_servers: bad server 'a b'",
                            "network.ntp_servers: bad server ''"]
    assert len(problems) == 4


def test_plan_leaves_the_lease_alone():
    current = NetState(links={"eth0": LinkSpec("eth0", True, 1500),
                              "eth1": LinkSpec("eth1", True, 1500)},
                       addresses={("eth0", "10.0.2.15/24"), ("eth0", "2001:db8::9/64"),
                                  ("eth1", "192.0.2.1/24"), ("eth1", "10.0.3.15/24")})
    assert plan(desired_state(params()), current) == [
        DeleteAddress("eth0", "2001:db8::9/64"), DeleteAddress("eth1", "10.0.3.15/24")]


# ------------------------------------------------------------------ policy (sans-IO)


A = ServiceSpec("udhcpc:eth0", ("busybox", "udhcpc", "-i", "eth0"))
B = ServiceSpec("ntpd", ("busybox", "ntpd", "-n", "-p", "198.51.100.1"))
B2 = ServiceSpec("ntpd", ("busybox", "ntpd", "-n", "-p", "198.51.100.2"))


def test_policy_starts_once_and_stops_when_unwanted():
    p = ServicePolicy()
    assert p.set_wanted({"udhcpc:eth0": A, "ntpd": B}, 0) == [Start(B), Start(A)]
    assert p.set_wanted({"udhcpc:eth0": A, "ntpd": B}, 1) == []  # already running
    assert p.set_wanted({"ntpd": B}, 2) == [Stop("udhcpc:eth0")]
    assert p.set_wanted({"ntpd": B2}, 3) == [Stop("ntpd"), Start(B2)]  # changed servers
    assert p.set_wanted({}, 4) == [Stop("ntpd")]
    assert p.next_timer() is None


def test_policy_restarts_with_backoff_and_resets_after_a_long_run():
    p = ServicePolicy(restart_delay_s=1, max_delay_s=4, threshold_s=30)
    p.set_wanted({"ntpd": B}, 0)
    p.on_exit("ntpd", 5)
    assert p.next_timer() == 6
    assert p.on_timer(5.5) == []
    assert p.on_timer(6) == [Start(B)]
    delays = []
    t = 6.0
    for _ in range(4):
        p.on_exit("ntpd", t)
        delays.append(p.next_timer() - t)
        t = p.next_timer()
        assert p.on_timer(t) == [Start(B)]
    assert delays == [2, 4, 4, 4]
    p.on_exit("ntpd", t + 100)  # ran 100 s: counts as fine, first delay again
    assert p.next_timer() == t + 101
    assert p.restarts["ntpd"] == 5


def test_policy_forgets_a_pending_restart_when_unwanted():
    p = ServicePolicy()
    p.set_wanted({"ntpd": B}, 0)
    p.on_exit("ntpd", 1)
    assert p.set_wanted({}, 1.5) == []  # not running: nothing to stop
    assert p.next_timer() is None and p.on_timer(10) == []


# ------------------------------------------------------------------ runner with fake processes


class FakeProc:
    def __init__(self, spec, pid):
        self.spec, self.pid = spec, pid
        self.signals = []
        self.done = asyncio.get_running_loop().create_future()
        self.ignore_term = False

    async def wait(self):
        return await asyncio.shield(self.done)

    def send_signal(self, sig):
        self.signals.append(sig)
        if sig == signal.SIGKILL or not self.ignore_term:
            self.exit(-sig)

    def exit(self, rc):
        if not self.done.done():
            self.done.set_result(rc)


class FakeSpawn:
    def __init__(self):
        self.procs = []

    async def __call__(self, spec):
        proc = FakeProc(spec, 1000 + len(self.procs))
        self.procs.append(proc)
        return proc

    def argvs(self):
        return [p.spec.argv for p in self.procs]


async def until(cond, timeout=5):
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def test_runner_lifecycle():
    spawn = FakeSpawn()
    runner = ServiceRunner(spawn, ServicePolicy(restart_delay_s=0.05), term_timeout_s=0.2)
    await runner.update({"udhcpc:eth0": A, "ntpd": B})
    assert spawn.argvs() == [B.argv, A.argv]
    await runner.update({"udhcpc:eth0": A, "ntpd": B})
    assert len(spawn.procs) == 2  # started once
    assert runner.status()["ntpd"] == {"pid": 1000, "argv": list(B.argv), "restarts": 0}

    spawn.procs[0].exit(1)  # ntpd dies: restarted after the delay
    await until(lambda: len(spawn.procs) == 3)
    assert spawn.procs[2].spec == B and runner.status()["ntpd"]["restarts"] == 1

    await runner.update({"ntpd": B})  # eth0 no longer DHCP: its client is stopped
    assert spawn.procs[1].signals == [signal.SIGTERM]
    assert "udhcpc:eth0" not in runner.status()
    await asyncio.sleep(0.15)
    assert len(spawn.procs) == 3  # a stopped helper is not restarted

    spawn.procs[2].ignore_term = True  # SIGKILL after term_timeout_s
    await runner.close()
    assert spawn.procs[2].signals == [signal.SIGTERM, signal.SIGKILL]
    assert runner.status() == {}


async def test_runner_reports_a_missing_program():
    async def spawn(spec):
        raise FileNotFoundError(2, "No such file", spec.argv[0])

    runner = ServiceRunner(spawn, ServicePolicy(restart_delay_s=10))
    await runner.update({"ntpd": B})
    assert runner.problems["ntpd"].startswith("ntpd: cannot start busybox")
    await runner.close()


async def test_network_manager_runs_helpers_from_the_config(tmp_path, monkeypatch):
    spawn = FakeSpawn()
    nm = NetworkManager(services=ServiceRunner(spawn), busybox="bb", applets={"udhcpc"},
                        chronyd="")
    monkeypatch.setattr(nm, "_apply_sync", lambda p: [])
    problems = await nm.apply(params())
    assert problems == ["network.ntp_servers: no chronyd, and bb has no ntpd applet"]
    assert spawn.argvs() == [("bb", "udhcpc", "-f", "-S", "-i", "eth0", "-s", SCRIPT)]
    nm.applets = {"udhcpc", "ntpd"}
    assert await nm.apply(params()) == []
    assert spawn.argvs()[1] == ("bb", "ntpd", "-n", "-p", "198.51.100.123",
                                "-p", "ntp.example.net")
    assert await nm.apply(params(manage=False)) == []  # unmanaged: helpers stop
    assert all(p.done.done() for p in spawn.procs)
    await nm.close()


async def test_network_manager_prefers_chrony(tmp_path, monkeypatch):
    spawn = FakeSpawn()
    nm = NetworkManager(services=ServiceRunner(spawn), busybox="bb", applets={"udhcpc"},
                        chronyd="/usr/sbin/chronyd", chrony_conf=str(tmp_path / "c.conf"))
    monkeypatch.setattr(nm, "_apply_sync", lambda p: [])
    assert await nm.apply(params(interface=[])) == []  # no ntpd applet needed
    assert spawn.argvs()[0] == ("/usr/sbin/chronyd", "-d", "-f", str(tmp_path / "c.conf"))
    assert "server ntp.example.net iburst" in (tmp_path / "c.conf").read_text()
    await nm.close()


async def test_network_manager_starts_a_vlan_client_after_the_vlan_exists(monkeypatch):
    spawn = FakeSpawn()
    nm = NetworkManager(services=ServiceRunner(spawn), busybox="bb", applets={"udhcpc"},
                        chronyd="")
    kernel = {"eth0"}  # eth1 not plugged in yet: the VLAN on it cannot be made

    def apply_sync(p):
        nm.links = set(kernel)
        return [] if "eth1" in kernel else ["interface eth1 does not exist"]

    monkeypatch.setattr(nm, "_apply_sync", apply_sync)
    assert await nm.apply(vlan_params()) == ["interface eth1 does not exist"]
    assert [a[5] for a in spawn.argvs()] == ["eth0"]
    kernel |= {"eth1", "eth1.42"}  # plugged in; this apply created the VLAN
    assert await nm.apply(vlan_params()) == []
    assert [a[5] for a in spawn.argvs()] == ["eth0", "eth1.42"]
    assert await nm.apply(vlan_params()) == []  # again: nothing new
    assert len(spawn.procs) == 2
    await nm.close()


# ------------------------------------------------------------------ files and the boot client


def test_resolv_conf_follows_the_symlink_into_run(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "etc/resolv.conf").symlink_to("../run/resolv.conf")
    assert write_resolv_conf(tmp_path / "etc/resolv.conf", ["192.0.2.53"])
    assert (tmp_path / "etc/resolv.conf").is_symlink()
    assert (tmp_path / "run/resolv.conf").read_text().endswith("nameserver 192.0.2.53\n")
    assert not write_resolv_conf(tmp_path / "etc/resolv.conf", ["192.0.2.53"])


def test_hostname_file(tmp_path):
    assert write_hostname_file(tmp_path / "hostname", "edge-1")
    assert (tmp_path / "hostname").read_text() == "edge-1\n"
    assert not write_hostname_file(tmp_path / "hostname", "edge-1")


def test_stop_boot_dhcp(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    (proc / "41").mkdir(parents=True)
    (proc / "41/cmdline").write_bytes(b"busybox\0udhcpc\0-i\0eth0\0")
    (proc / "42").mkdir()
    (proc / "42/cmdline").write_bytes(b"sshd\0")  # recycled pid: left alone
    (tmp_path / "udhcpc.eth0.pid").write_text("41\n")
    (tmp_path / "udhcpc.eth1.pid").write_text("42\n")
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append((pid, sig)))
    assert stop_boot_dhcp(["eth0", "eth1", "eth2"], tmp_path, proc) == [41]
    assert killed == [(41, signal.SIGTERM)]
    assert not (tmp_path / "udhcpc.eth0.pid").exists()


def test_dhcp_interface_in_desired_state():
    assert desired_state(params()).dhcp == {"eth0"}
