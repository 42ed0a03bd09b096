"""Network set-up through real netlink, inside network namespaces each test creates."""

import asyncio
import itertools
import os
import shutil
import subprocess

import pytest

from sipedge.appliance.network import (AddressChanged, LinkChanged, NetlinkNetwork,
                                       NetlinkWatcher, RouteSpec, configure, desired_state,
                                       plan)
from sipedge.appliance.params import InterfaceParams, NetworkParams, RouteParams, VlanParams

pytestmark = pytest.mark.needs_root
_seq = itertools.count()


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
