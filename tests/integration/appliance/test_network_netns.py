"""Network set-up through real netlink, inside network namespaces each test creates."""

import asyncio
import ipaddress
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sipedge.appliance.network import (AddressChanged, LinkChanged, NetlinkNetwork,
                                       NetlinkWatcher, RouteSpec, configure, desired_state,
                                       plan)
from sipedge.appliance.params import InterfaceParams, NetworkParams, RouteParams, VlanParams

pytestmark = pytest.mark.needs_root
_seq = itertools.count()
REPO = Path(__file__).resolve().parents[3]


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    name = f"sipedge-test-{os.getpid()}-{next(_seq)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        yield name
    finally:
        ip("netns", "del", name, check=False)


def cfg(**kw):
    base = dict(manage=True, interface=[
        InterfaceParams(name="va", addresses=["198.18.5.1/24", "2001:db8:5::1/64"], mtu=1400),
        InterfaceParams(name="vb", addresses=["198.18.5.2/24"])],
        route=[RouteParams(dst="198.18.99.0/24", gateway="198.18.5.2", metric=7),
               RouteParams(dst="198.18.100.0/24", dev="vb")])
    base.update(kw)
    return NetworkParams(**base)


def test_apply_is_idempotent(netns):
    with NetlinkNetwork(netns) as net:
        assert configure(cfg(), net) == []
        snap = net.snapshot()
        assert snap.links["va"].up and snap.links["va"].mtu == 1400 and snap.links["vb"].up
        assert {("va", "198.18.5.1/24"), ("va", "2001:db8:5::1/64"),
                ("vb", "198.18.5.2/24")} <= snap.addresses
        assert RouteSpec("198.18.100.0/24", "", "vb", 0) in snap.routes
        assert ("198.18.99.0/24", "198.18.5.2", 7) in {(r.dst, r.gateway, r.metric)
                                                        for r in snap.routes}
        # re-applying changes nothing
        assert plan(desired_state(cfg()), net.snapshot()) == []
        assert configure(cfg(), net) == []
    out = ip("-n", netns, "-4", "route", "show", "proto", "static").stdout
    assert "198.18.99.0/24 via 198.18.5.2" in out and "198.18.100.0/24 dev vb" in out


def test_reconfigure_removes_what_the_config_dropped(netns):
    with NetlinkNetwork(netns) as net:
        configure(cfg(), net)
        smaller = cfg(interface=[InterfaceParams(name="va", addresses=["198.18.5.1/24"]),
                                 InterfaceParams(name="vb", up=False)], route=[])
        assert configure(smaller, net) == []
        snap = net.snapshot()
        assert ("va", "2001:db8:5::1/64") not in snap.addresses
        assert ("vb", "198.18.5.2/24") not in snap.addresses
        assert not snap.links["vb"].up
        assert snap.routes == set()
        assert plan(desired_state(smaller), snap) == []


def test_addresses_with_lifetimes_are_the_kernels(netns):
    """An IPv6 address with lifetimes (how SLAAC addresses look: no IFA_F_PERMANENT) is left
    alone on a managed interface; one added without lifetimes is ours to remove."""
    with NetlinkNetwork(netns) as net:
        configure(cfg(), net)
        ip("-n", netns, "addr", "add", "2001:db8:77::5/64", "dev", "va",
           "valid_lft", "600", "preferred_lft", "300")
        ip("-n", netns, "addr", "add", "2001:db8:78::5/64", "dev", "va")
        snap = net.snapshot()
        assert snap.autoconf == {("va", "2001:db8:77::5/64")}
        assert configure(cfg(), net) == []
        snap = net.snapshot()
        assert ("va", "2001:db8:77::5/64") in snap.addresses
        assert ("va", "2001:db8:78::5/64") not in snap.addresses
        assert plan(desired_state(cfg()), snap) == []


def test_missing_interface_is_reported(netns):
    with NetlinkNetwork(netns) as net:
        problems = configure(cfg(interface=[InterfaceParams(name="eth7",
                                                            addresses=["198.18.6.1/24"])],
                                 route=[]), net)
    assert problems == ["interface eth7 does not exist"]


async def test_link_and_address_events(netns):
    want = {AddressChanged("va", "198.18.5.1/24", True), AddressChanged("vb", "198.18.5.2/24", True),
            AddressChanged("va", "2001:db8:5::1/64", True), LinkChanged("va", True)}
    events = []

    async def collect():
        async for ev in watcher.events():
            events.append(ev)
            if want <= set(events):
                return

    async with NetlinkWatcher(netns) as watcher:
        def apply():  # the sync pyroute2 API runs its own loop: keep it off ours
            with NetlinkNetwork(netns) as net:
                return configure(cfg(route=[]), net)
        assert await asyncio.to_thread(apply) == []
        await asyncio.wait_for(collect(), 10)
        ip("-n", netns, "link", "set", "vb", "down")
        events.clear()
        want = {LinkChanged("va", False), LinkChanged("vb", False)}
        await asyncio.wait_for(collect(), 10)


def test_vlan(netns):
    probe = ip("-n", netns, "link", "add", "link", "va", "name", "probe.9", "type", "vlan",
               "id", "9", check=False)
    if probe.returncode != 0:
        pytest.skip("kernel has no 802.1Q support here (tested in the guest)")
    ip("-n", netns, "link", "del", "probe.9")
    c = cfg(vlan=[VlanParams(name="va.100", link="va", id=100, addresses=["198.18.7.1/24"])])
    with NetlinkNetwork(netns) as net:
        assert configure(c, net) == []
        snap = net.snapshot()
        assert snap.links["va.100"].vlan_id == 100 and snap.links["va.100"].vlan_parent == "va"
        assert plan(desired_state(c), snap) == []


async def test_dhcp_client_supervised(netns, tmp_path):
    """The supervisor's udhcpc (real BusyBox) gets a lease from a udhcpd on the veth peer,
    is restarted when killed and stopped when the interface is no longer DHCP."""
    from sipedge.appliance.netservices import (ServicePolicy, ServiceRunner, ServiceSpec,
                                               spawn_helper)
    from sipedge.appliance.network import NetworkManager

    busybox = shutil.which("busybox")
    if busybox is None or subprocess.run([busybox, "udhcpd", "--help"],
                                         capture_output=True).returncode > 1:
        pytest.skip("needs BusyBox with udhcpc and udhcpd")
    conf = tmp_path / "udhcpd.conf"
    conf.write_text(f"interface vb\nstart 198.18.9.100\nend 198.18.9.110\n"
                    f"lease_file {tmp_path}/leases\npidfile {tmp_path}/udhcpd.pid\n"
                    "option subnet 255.255.255.0\n")

    def in_netns(spec):
        return spawn_helper(ServiceSpec(spec.name, ("ip", "netns", "exec", netns, *spec.argv),
                                        spec.env))

    script = str(REPO / "rootfs/usr/libexec/sipedge/udhcpc-event")
    nm = NetworkManager(netns, run_dir=tmp_path, busybox=busybox, applets=set(),
                        udhcpc_script=script,
                        services=ServiceRunner(in_netns, ServicePolicy(restart_delay_s=0.2)))
    # dns_servers: the event script then leaves resolv.conf alone (never the host's)
    dhcp = NetworkParams(manage=True, dns_servers=["198.18.9.53"],
                         resolv_conf=str(tmp_path / "resolv.conf"),
                         interface=[InterfaceParams(name="va", dhcp=True),
                                    InterfaceParams(name="vb", addresses=["198.18.9.1/24"])])
    ip("-n", netns, "addr", "add", "198.18.9.1/24", "dev", "vb")  # udhcpd needs its address
    ip("-n", netns, "link", "set", "vb", "up")
    server = subprocess.Popen(["ip", "netns", "exec", netns, busybox, "udhcpd", "-f", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def leased():
        while "inet 198.18.9.10" not in ip("-n", netns, "-4", "addr", "show", "dev", "va").stdout:
            await asyncio.sleep(0.1)

    try:
        assert await nm.apply(dhcp) == []
        first = nm.services.status()["udhcpc:va"]["pid"]
        await asyncio.wait_for(leased(), 20)
        assert (tmp_path / "resolv.conf").read_text().endswith("nameserver 198.18.9.53\n")
        assert await nm.apply(dhcp) == []  # idempotent: same client, lease kept
        assert nm.services.status()["udhcpc:va"]["pid"] == first
        assert await asyncio.to_thread(_plan_empty, netns, dhcp)

        os.kill(first, 9)  # dies: restarted
        for _ in range(100):
            if nm.services.status().get("udhcpc:va", {}).get("pid", first) != first:
                break
            await asyncio.sleep(0.1)
        second = nm.services.status()["udhcpc:va"]["pid"]
        assert second != first

        static = NetworkParams(manage=True, interface=[
            InterfaceParams(name="va", addresses=["198.18.9.2/24"]),
            InterfaceParams(name="vb", addresses=["198.18.9.1/24"])])
        assert await nm.apply(static) == []
        assert nm.services.status() == {}
        assert not os.path.exists(f"/proc/{second}")  # the DHCP client was stopped (and reaped)
    finally:
        await nm.close()
        server.terminate()
        server.wait(10)


def _plan_empty(netns, params):
    with NetlinkNetwork(netns) as net:
        return plan(desired_state(params), net.snapshot()) == []


@pytest.mark.timeout(60)
async def test_sync_watcher_never_blocks_the_loop(netns, monkeypatch):
    """pyroute2 0.7 (Debian 12) path: a burst of address changes must not leave the reader
    in a blocking recv() (a spurious wake-up once froze the supervisor)."""
    import pyroute2

    monkeypatch.delattr(pyroute2, "AsyncIPRoute", raising=False)
    ip("-n", netns, "link", "set", "va", "up")
    beats = 0

    async def beat():
        nonlocal beats
        while True:
            await asyncio.sleep(0.05)
            beats += 1

    async with NetlinkWatcher(netns) as watcher:
        assert not watcher._async

        async def drain():
            async for _ev in watcher.events():
                pass

        tasks = [asyncio.ensure_future(beat()), asyncio.ensure_future(drain())]
        try:
            for i in range(20):
                await asyncio.to_thread(subprocess.run, (
                    f"ip -n {netns} addr add 198.18.{i}.1/24 dev va && "
                    f"ip -n {netns} addr add 198.18.{i}.2/24 dev va && "
                    f"ip -n {netns} -4 addr flush dev va"), shell=True, check=True)
            before = beats
            await asyncio.sleep(1)
            assert beats - before >= 5  # the loop kept running
        finally:
            for t in tasks:
                t.cancel()


def test_read_state_without_pyroute2_matches_the_snapshot(netns):
    """With `manage = false` the supervisor reads links and addresses with the standard
    library (netwatch.read_state), not pyroute2: the same answer as pyroute2's snapshot."""
    from sipedge.appliance.netwatch import read_state

    with NetlinkNetwork(netns) as net:
        assert configure(cfg(route=[]), net) == []
        snap = net.snapshot()
    links, addresses = read_state(netns)
    assert links == set(snap.links)
    assert {(n, str(ipaddress.ip_interface(c))) for n, c in addresses} == snap.addresses
    assert {("va", "198.18.5.1/24"), ("va", "2001:db8:5::1/64"),
            ("vb", "198.18.5.2/24")} <= addresses
