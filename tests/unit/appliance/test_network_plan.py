"""Network planning (pure): desired state from [network], plan against snapshots."""

from sipedge.appliance.network import (AddAddress, AddRoute, AddVlan, DeleteAddress, DeleteLink,
                                       DeleteRoute, LinkSpec, MissingLink, NetState, RouteSpec,
                                       SetLink, desired_state, plan, validate, write_resolv_conf,
                                       set_hostname)
from sipedge.appliance.params import InterfaceParams, NetworkParams, RouteParams, VlanParams


def params(**kw):
    base = dict(
        manage=True,
        interface=[InterfaceParams(name="eth0", addresses=["192.0.2.10/24", "2001:db8::a/64"],
                                   mtu=1400)],
        vlan=[VlanParams(name="eth0.100", link="eth0", id=100, addresses=["198.51.100.1/24"])],
        route=[RouteParams(dst="default", gateway="192.0.2.1"),
               RouteParams(dst="203.0.113.0/24", dev="eth0.100", metric=10)])
    base.update(kw)
    return NetworkParams(**base)


def current_bare():
    return NetState(links={"lo": LinkSpec("lo", True, 65536),
                           "eth0": LinkSpec("eth0", False, 1500)},
                    addresses={("lo", "127.0.0.1/8"), ("eth0", "fe80::1/64"),
                               ("eth0", "10.9.9.9/8")})


def test_desired_state_normalises():
    d = desired_state(params(interface=[InterfaceParams(name="eth0",
                                                        addresses=["2001:DB8:0::A/64"])],
                             vlan=[], route=[RouteParams(dst="default", gateway="2001:db8::1"),
                                             RouteParams(dst="192.0.2.77/24", dev="eth0")]))
    assert d.addresses == {("eth0", "2001:db8::a/64")}
    assert d.routes == {RouteSpec("::/0", "2001:db8::1"), RouteSpec("192.0.2.0/24", "", "eth0")}


def test_plan_from_bare_box():
    ops = plan(desired_state(params()), current_bare())
    assert ops == [
        SetLink("eth0", True, 1400),
        AddVlan("eth0.100", "eth0", 100),
        SetLink("eth0.100", True, None),
        DeleteAddress("eth0", "10.9.9.9/8"),  # not in the config; fe80:: is kept
        AddAddress("eth0", "192.0.2.10/24"),
        AddAddress("eth0", "2001:db8::a/64"),
        AddAddress("eth0.100", "198.51.100.1/24"),
        AddRoute(RouteSpec("0.0.0.0/0", "192.0.2.1", "", 0)),
        AddRoute(RouteSpec("203.0.113.0/24", "", "eth0.100", 10)),
    ]


def test_plan_is_empty_when_state_matches():
    d = desired_state(params())
    cur = NetState(links=dict(d.links), addresses=set(d.addresses) | {("lo", "127.0.0.1/8")},
                   routes=set(d.routes))
    cur.links["lo"] = LinkSpec("lo")
    assert plan(d, cur) == []


def test_vlan_with_wrong_id_is_recreated_and_stale_static_route_removed():
    d = desired_state(params())
    cur = NetState(links=dict(d.links), addresses=set(d.addresses), routes=set(d.routes))
    cur.links["eth0.100"] = LinkSpec("eth0.100", True, None, "eth0", 200)
    stale = RouteSpec("198.18.0.0/15", "192.0.2.1")
    cur.routes.add(stale)
    ops = plan(d, cur)
    assert ops == [DeleteRoute(stale), DeleteLink("eth0.100"), AddVlan("eth0.100", "eth0", 100),
                   SetLink("eth0.100", True, None)]


def test_kernel_chosen_dev_matches_a_route_configured_without_dev():
    d = desired_state(params())
    cur = NetState(links=dict(d.links), addresses=set(d.addresses), routes=set(d.routes))
    cur.routes.discard(RouteSpec("0.0.0.0/0", "192.0.2.1", "", 0))
    cur.routes.add(RouteSpec("0.0.0.0/0", "192.0.2.1", "eth0", 0))
    assert plan(d, cur) == []


def test_missing_interface_is_reported_and_skipped():
    ops = plan(desired_state(params()), NetState(links={"lo": LinkSpec("lo")}))
    assert ops[0] == MissingLink("eth0")
    assert MissingLink("eth0") in ops
    assert not any(isinstance(o, AddAddress) and o.ifname == "eth0" for o in ops)
    # the VLAN's parent is configured, so the VLAN is still attempted
    assert AddVlan("eth0.100", "eth0", 100) in ops


def test_vlan_mtu_is_set_after_the_vlan_is_made():
    p = params(vlan=[VlanParams(name="eth0.100", link="eth0", id=100, mtu=1300)], route=[])
    ops = plan(desired_state(p), current_bare())
    assert ops[1:3] == [AddVlan("eth0.100", "eth0", 100), SetLink("eth0.100", True, 1300)]
    cur = NetState(links={"eth0": LinkSpec("eth0", True, 1400),
                          "eth0.100": LinkSpec("eth0.100", True, 1500, "eth0", 100)})
    assert plan(desired_state(p), cur)[0] == SetLink("eth0.100", None, 1300)


def test_validate():
    bad = params(interface=[InterfaceParams(name="eth0", addresses=["300.1.1.1/24"])],
                 vlan=[VlanParams(name="v", link="eth9", id=5)],
                 route=[RouteParams(dst="10.0.0.0/8"), RouteParams(dst="x", gateway="1.2.3.4"),
                        RouteParams(dst="10.1.0.0/16", dev="nope")],
                 dns_servers=["1.1.1.1", "dns.example"])
    problems = validate(bad)
    assert problems == [
        "network.interface[0].addresses: bad address '300.1.1.1/24'",
        "network.vlan[0].link: 'eth9' is not a configured interface",
        "network.route[0]: needs a gateway or a dev",
        "network.route[1]: 'x' does not appear to be an IPv4 or IPv6 network",
        "network.route[2].dev: 'nope' is not a configured interface",
        "network.dns_servers: bad address 'dns.example'",
    ]
    assert validate(params()) == []


def test_resolv_conf_and_hostname(tmp_path):
    rc = tmp_path / "resolv.conf"
    assert write_resolv_conf(rc, ["192.0.2.53", "2001:db8::53"])
    assert rc.read_text().splitlines()[1:] == ["nameserver 192.0.2.53",
                                               "nameserver 2001:db8::53"]
    assert not write_resolv_conf(rc, ["192.0.2.53", "2001:db8::53"])
    h = tmp_path / "sys" / "kernel" / "hostname"
    h.parent.mkdir(parents=True)
    h.write_text("debian\n")
    assert set_hostname("edge-1", tmp_path) and h.read_text() == "edge-1"
    assert not set_hostname("edge-1", tmp_path)


def test_plan_keeps_addresses_the_kernel_made_from_router_advertisements():
    """A SLAAC address (what QEMU's user network advertises: fec0::/64) is the kernel's, like
    a lease is udhcpc's: deleting it would only start a fight with the next advertisement."""
    slaac = ("eth0", "fec0::5054:ff:fe12:3456/64")
    cur = current_bare()
    cur.addresses.add(slaac)
    assert DeleteAddress(*slaac) in plan(desired_state(params()), cur)
    cur.autoconf.add(slaac)
    assert DeleteAddress(*slaac) not in plan(desired_state(params()), cur)
