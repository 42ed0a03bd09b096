"""Network set-up from `[network]` through netlink (pyroute2): links, VLANs, addresses, routes.

Split the sans-IO way:

- `desired_state(params)` and `plan(desired, current)` are pure: they turn the config and a
  snapshot of the kernel state into a list of operations. Applying the plan and planning again
  yields an empty plan: that is what "idempotent" means here, and the tests check it.
- `NetlinkNetwork` reads the snapshot (`snapshot()`) and carries out operations (`apply()`)
  with `pyroute2.IPRoute`, optionally inside a network namespace (tests create their own).
- `netwatch.NetlinkWatcher` turns RTM_NEWLINK/NEWADDR/DELADDR notifications into `LinkChanged`
  and `AddressChanged` events for the panel and the proxy (standard library: pyroute2 is
  imported only to change the network).

Only what the config names is touched: addresses on interfaces the config lists (IPv6 link-local
ones and those the kernel made from router advertisements are left alone) and routes with
protocol `static` (what we install). An interface the
config names but the box lacks is reported, not created.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netwatch import AddressChanged, NetlinkWatcher, read_state
from .netwatch import LinkChanged  # noqa: F401 - re-exported for callers of this module
from .netservices import (CHRONY_CONF, UDHCPC_SCRIPT, ServiceRunner, service_specs,
                          split_ntp_server)
from .params import NetworkParams
from .sdconfig import atomic_write

log = logging.getLogger("sipedge.appliance.network")

RTPROT_STATIC = 4
IFF_UP = 0x1
IFA_F_PERMANENT = 0x80  # an address added by hand (no lifetimes)


# ------------------------------------------------------------------ state model


@dataclass(frozen=True)
class LinkSpec:
    name: str
    up: bool = True
    mtu: int | None = None
    vlan_parent: str | None = None  # set: an 802.1Q sub-interface of this parent
    vlan_id: int | None = None


@dataclass(frozen=True)
class RouteSpec:
    dst: str  # normalised prefix, "default" -> 0.0.0.0/0 or ::/0
    gateway: str = ""
    dev: str = ""
    metric: int = 0

    @property
    def family(self) -> int:
        return ipaddress.ip_network(self.dst).version


@dataclass
class NetState:
    """Links, addresses and (static) routes: either wanted (desired) or found (snapshot)."""

    links: dict[str, LinkSpec] = field(default_factory=dict)
    addresses: set[tuple[str, str]] = field(default_factory=set)  # (ifname, "addr/prefix")
    routes: set[RouteSpec] = field(default_factory=set)
    dhcp: set[str] = field(default_factory=set)  # interfaces whose IPv4 the DHCP client owns
    # IPv6 addresses the kernel made itself (SLAAC from a router advertisement: no
    # IFA_F_PERMANENT, they carry lifetimes); they belong to the kernel like a lease to udhcpc
    autoconf: set[tuple[str, str]] = field(default_factory=set)


# Operations, in the order they must run
@dataclass(frozen=True)
class AddVlan:
    name: str
    parent: str
    vlan_id: int


@dataclass(frozen=True)
class DeleteLink:
    name: str


@dataclass(frozen=True)
class SetLink:
    name: str
    up: bool | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class AddAddress:
    ifname: str
    cidr: str


@dataclass(frozen=True)
class DeleteAddress:
    ifname: str
    cidr: str


@dataclass(frozen=True)
class AddRoute:
    route: RouteSpec


@dataclass(frozen=True)
class DeleteRoute:
    route: RouteSpec


@dataclass(frozen=True)
class MissingLink:
    """The config names an interface the box does not have (reported, nothing done)."""

    name: str


Op = AddVlan | DeleteLink | SetLink | AddAddress | DeleteAddress | AddRoute | DeleteRoute | \
    MissingLink


def _norm_cidr(text: str) -> str:
    iface = ipaddress.ip_interface(text)
    return f"{iface.ip.compressed}/{iface.network.prefixlen}"


def _norm_route(dst: str, gateway: str, dev: str, metric: int) -> RouteSpec:
    if dst == "default":
        fam = ipaddress.ip_address(gateway).version if gateway else 4
        dst = "0.0.0.0/0" if fam == 4 else "::/0"
    net = ipaddress.ip_network(dst, strict=False)
    gw = ipaddress.ip_address(gateway).compressed if gateway else ""
    return RouteSpec(net.compressed, gw, dev, metric)


def _address_problems(where: str, addresses: Iterable[str], dhcp: bool) -> list[str]:
    """Malformed addresses, and IPv4 ones where DHCP owns IPv4 (`where`: the config key)."""
    problems = []
    for a in addresses:
        try:
            v4 = ipaddress.ip_interface(a).version == 4
        except ValueError:
            problems.append(f"{where}: bad address {a!r}")
            continue
        if dhcp and v4:
            problems.append(f"{where}: {a!r}: IPv4 comes from DHCP on this interface "
                            "(dhcp = true)")
    return problems


def validate(params: NetworkParams) -> list[str]:
    """Problems a type cannot express: malformed addresses, VLANs on unknown parents, ..."""
    problems = []
    names = set()
    for i, itf in enumerate(params.interface):
        names.add(itf.name)
        problems += _address_problems(f"network.interface[{i}].addresses", itf.addresses,
                                      itf.dhcp)
    for i, v in enumerate(params.vlan):
        if v.link not in names:
            problems.append(f"network.vlan[{i}].link: {v.link!r} is not a configured interface")
        names.add(v.name)
        problems += _address_problems(f"network.vlan[{i}].addresses", v.addresses, v.dhcp)
    for i, r in enumerate(params.route):
        try:
            _norm_route(r.dst, r.gateway, r.dev, r.metric)
        except ValueError as exc:
            problems.append(f"network.route[{i}]: {exc}")
        if r.dev and r.dev not in names:
            problems.append(f"network.route[{i}].dev: {r.dev!r} is not a configured interface")
        if not r.dev and not r.gateway:
            problems.append(f"network.route[{i}]: needs a gateway or a dev")
    for s in params.dns_servers:
        try:
            ipaddress.ip_address(s)
        except ValueError:
            problems.append(f"network.dns_servers: bad address {s!r}")
    for s in params.ntp_servers:
        try:
            if s.startswith("-") or any(c.isspace() for c in s):
                raise ValueError
            split_ntp_server(s)
        except ValueError:
            problems.append(f"network.ntp_servers: bad server {s!r}")
    return problems


def desired_state(params: NetworkParams) -> NetState:
    st = NetState()
    for itf in params.interface:
        st.links[itf.name] = LinkSpec(itf.name, itf.up, itf.mtu)
        st.addresses |= {(itf.name, _norm_cidr(a)) for a in itf.addresses}
        if itf.dhcp:
            st.dhcp.add(itf.name)
    for v in params.vlan:
        st.links[v.name] = LinkSpec(v.name, v.up, v.mtu, v.link, v.id)
        st.addresses |= {(v.name, _norm_cidr(a)) for a in v.addresses}
        if v.dhcp:
            st.dhcp.add(v.name)
    st.routes = {_norm_route(r.dst, r.gateway, r.dev, r.metric) for r in params.route}
    return st


def _link_local(cidr: str) -> bool:
    return ipaddress.ip_interface(cidr).ip.is_link_local


def plan(desired: NetState, current: NetState) -> list[Op]:
    """Operations that turn `current` into `desired` (empty when they already agree)."""
    ops: list[Op] = []
    missing: set[str] = set()
    # A route configured without `dev` gets one from the kernel: compare without it.
    loose = {(r.dst, r.gateway, r.metric) for r in desired.routes if not r.dev}
    current_routes = {RouteSpec(r.dst, r.gateway, "", r.metric)
                      if (r.dst, r.gateway, r.metric) in loose else r for r in current.routes}
    # static routes we no longer want go first, before their interface loses its address
    for r in sorted(current_routes - desired.routes, key=repr):
        ops.append(DeleteRoute(r))
    # links: VLANs first created/recreated, then state
    for name, want in desired.links.items():
        have = current.links.get(name)
        if want.vlan_parent is not None:
            if have is not None and (have.vlan_parent, have.vlan_id) != (want.vlan_parent,
                                                                         want.vlan_id):
                ops.append(DeleteLink(name))
                have = None
            if have is None:
                if want.vlan_parent not in current.links and \
                        want.vlan_parent not in desired.links:
                    ops.append(MissingLink(want.vlan_parent))
                    missing.add(name)
                    continue
                ops.append(AddVlan(name, want.vlan_parent, want.vlan_id or 0))
                have = LinkSpec(name, False, None, want.vlan_parent, want.vlan_id)
        elif have is None:
            ops.append(MissingLink(name))
            missing.add(name)
            continue
        up = want.up if have.up != want.up else None
        mtu = want.mtu if want.mtu is not None and have.mtu != want.mtu else None
        if up is not None or mtu is not None:
            ops.append(SetLink(name, up, mtu))
    # addresses on the interfaces we manage
    for ifname, cidr in sorted(current.addresses - desired.addresses):
        if ifname in desired.dhcp and ipaddress.ip_interface(cidr).version == 4:
            continue  # the lease's address belongs to the DHCP client
        if (ifname, cidr) in current.autoconf:
            continue  # deleted, the next advertisement would bring it back
        if ifname in desired.links and not _link_local(cidr):
            ops.append(DeleteAddress(ifname, cidr))
    for ifname, cidr in sorted(desired.addresses - current.addresses):
        if ifname not in missing:
            ops.append(AddAddress(ifname, cidr))
    # static routes (current.routes holds only protocol-static ones)
    for r in sorted(desired.routes - current_routes, key=repr):
        if r.dev not in missing:
            ops.append(AddRoute(r))
    return ops


# ------------------------------------------------------------------ events


# LinkChanged, AddressChanged and NetlinkWatcher: netwatch.py (standard library only)


# ------------------------------------------------------------------ netlink adapter


def open_iproute(netns: str | None = None) -> Any:
    """A sync IPRoute, in `netns` if given. pyroute2 >= 0.8 takes `netns=`; 0.7 (Debian 12,
    Buildroot) has the `NetNS` class instead."""
    from pyroute2 import IPRoute

    if not netns:
        return IPRoute()
    try:
        return IPRoute(netns=netns)
    except TypeError:
        from pyroute2 import NetNS

        return NetNS(netns)


class NetlinkNetwork:
    """Reads and changes the kernel's network state with pyroute2 (in `netns` if given)."""

    def __init__(self, netns: str | None = None) -> None:
        self.ipr = open_iproute(netns)

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> NetlinkNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _names(self) -> dict[int, str]:
        return {ln["index"]: ln.get_attr("IFLA_IFNAME") for ln in self.ipr.get_links()}

    def snapshot(self) -> NetState:
        st = NetState()
        names = {}
        for ln in self.ipr.get_links():
            name = ln.get_attr("IFLA_IFNAME")
            names[ln["index"]] = name
            info = ln.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            parent = vid = None
            if kind == "vlan":
                data = info.get_attr("IFLA_INFO_DATA")
                vid = data.get_attr("IFLA_VLAN_ID") if data else None
                parent = ln.get_attr("IFLA_LINK")
            st.links[name] = LinkSpec(name, bool(ln["flags"] & IFF_UP), ln.get_attr("IFLA_MTU"),
                                      parent, vid)
        for name, spec in list(st.links.items()):
            if isinstance(spec.vlan_parent, int):
                st.links[name] = LinkSpec(name, spec.up, spec.mtu,
                                          names.get(spec.vlan_parent), spec.vlan_id)
        for a in self.ipr.get_addr():
            addr = a.get_attr("IFA_ADDRESS") if a["family"] == 10 else (
                a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"))
            key = (names.get(a["index"], ""), _norm_cidr(f"{addr}/{a['prefixlen']}"))
            st.addresses.add(key)
            flags = a.get_attr("IFA_FLAGS") or a["flags"]
            if a["family"] == 10 and not flags & IFA_F_PERMANENT:
                st.autoconf.add(key)
        for family in (2, 10):
            for r in self.ipr.get_routes(family=family, table=254):
                if r["proto"] != RTPROT_STATIC:
                    continue
                dst = r.get_attr("RTA_DST")
                dst = f"{dst}/{r['dst_len']}" if dst else ("0.0.0.0/0" if family == 2 else "::/0")
                gw = r.get_attr("RTA_GATEWAY") or ""
                dev = names.get(r.get_attr("RTA_OIF"), "") if r.get_attr("RTA_OIF") else ""
                metric = r.get_attr("RTA_PRIORITY") or 0
                st.routes.add(_norm_route(dst, gw, dev, metric))
        return st

    def apply(self, ops: Iterable[Op]) -> list[str]:
        """Carry out `ops` in order. Returns problems (missing links, kernel errors)."""
        from pyroute2 import NetlinkError

        problems = []
        for op in ops:
            try:
                self._apply_one(op)
            except NetlinkError as exc:
                if isinstance(op, (DeleteRoute, DeleteAddress)) and exc.code in (3, 99):
                    continue  # already gone with its interface or address: nothing to do
                problems.append(f"{op}: {exc}")
                log.error("network op failed op=%s error=%s", op, exc)
            if isinstance(op, MissingLink):
                problems.append(f"interface {op.name} does not exist")
                log.warning("network interface missing name=%s", op.name)
        return problems

    def _index(self, name: str) -> int:
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            from pyroute2 import NetlinkError

            raise NetlinkError(19, f"no interface {name}")
        return int(found[0])

    def _apply_one(self, op: Op) -> None:
        log.info("network op=%s", op)
        if isinstance(op, AddVlan):
            self.ipr.link("add", ifname=op.name, kind="vlan", link=self._index(op.parent),
                          vlan_id=op.vlan_id)
        elif isinstance(op, DeleteLink):
            self.ipr.link("del", index=self._index(op.name))
        elif isinstance(op, SetLink):
            kw: dict[str, Any] = {}
            if op.mtu is not None:
                kw["mtu"] = op.mtu
            if op.up is not None:
                kw["state"] = "up" if op.up else "down"
            self.ipr.link("set", index=self._index(op.name), **kw)
        elif isinstance(op, (AddAddress, DeleteAddress)):
            iface = ipaddress.ip_interface(op.cidr)
            self.ipr.addr("add" if isinstance(op, AddAddress) else "del",
                          index=self._index(op.ifname), address=iface.ip.compressed,
                          prefixlen=iface.network.prefixlen)
        elif isinstance(op, (AddRoute, DeleteRoute)):
            r = op.route
            kw = {"dst": r.dst, "proto": RTPROT_STATIC, "table": 254}
            if r.gateway:
                kw["gateway"] = r.gateway
            if r.dev:
                kw["oif"] = self._index(r.dev)
            if r.metric:
                kw["priority"] = r.metric
            self.ipr.route("add" if isinstance(op, AddRoute) else "del", **kw)


def configure(params: NetworkParams, net: NetlinkNetwork) -> list[str]:
    """Validate, plan against a fresh snapshot and apply. Returns the problems found."""
    problems = validate(params)
    if problems:
        return problems
    return net.apply(plan(desired_state(params), net.snapshot()))


def write_resolv_conf(path: str | Path, servers: Iterable[str]) -> bool:
    """Write resolv.conf atomically if it differs. Returns True when it changed.

    A symlink is followed (the image's read-only /etc/resolv.conf points to /run/resolv.conf),
    so the temporary file and the rename happen in the writable directory."""
    path = Path(path).resolve()
    text = "# written by sipedge-supervisor from [network] dns_servers\n" + "".join(
        f"nameserver {s}\n" for s in servers)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    atomic_write(path, text.encode())
    return True


def write_hostname_file(path: str | Path, name: str) -> bool:
    """Write `name` atomically to `path` (a runtime copy, e.g. /run/hostname) if it differs."""
    path = Path(path).resolve()
    try:
        if path.read_text() == name + "\n":
            return False
    except OSError:
        pass
    atomic_write(path, (name + "\n").encode())
    return True


def set_hostname(name: str, proc: str | Path = "/proc") -> bool:
    """Set the kernel host name through procfs. Returns True when it changed."""
    p = Path(proc) / "sys" / "kernel" / "hostname"
    if p.read_text().strip() == name:
        return False
    p.write_text(name)
    return True


def stop_boot_dhcp(names: Iterable[str], run_dir: str | Path = "/run",
                   proc: str | Path = "/proc") -> list[int]:
    """Stop the udhcpc the init script started on `names` (pid files `run_dir/udhcpc.NAME.pid`),
    so the supervisor alone decides what runs there. Returns the pids signalled."""
    done = []
    for name in names:
        pidfile = Path(run_dir) / f"udhcpc.{name}.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = (Path(proc) / str(pid) / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"udhcpc" in cmdline:  # not a recycled pid
            try:
                os.kill(pid, signal.SIGTERM)
                done.append(pid)
                log.info("stopped the boot-time DHCP client ifname=%s pid=%d", name, pid)
            except ProcessLookupError:
                pass
        pidfile.unlink(missing_ok=True)
    return done


def busybox_applets(busybox: str) -> set[str]:
    try:
        out = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(out.stdout.split())


def find_chronyd() -> str:
    """chronyd's path ("" if not installed); init's PATH may lack the sbin directories."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which("chronyd", path=path) or ""


class NetworkManager:
    """What the supervisor uses: apply `[network]` (off the event loop), run the helpers it
    asks for (udhcpc, ntpd) and track addresses."""

    def __init__(self, netns: str | None = None, proc: str | Path = "/proc",
                 run_dir: str | Path = "/run", services: ServiceRunner | None = None,
                 busybox: str | None = None, applets: set[str] | None = None,
                 udhcpc_script: str = UDHCPC_SCRIPT, chronyd: str | None = None,
                 chrony_conf: str = CHRONY_CONF) -> None:
        self.netns = netns
        self.proc = Path(proc)
        self.run_dir = Path(run_dir)
        self.services = services if services is not None else ServiceRunner()
        self.busybox = busybox or shutil.which("busybox") or "busybox"
        self.applets = applets  # None: ask `busybox --list` when first needed
        self.udhcpc_script = udhcpc_script
        # NTP: chrony where installed (both images ship it), else BusyBox ntpd; "" forces BusyBox
        self.chronyd = chronyd if chronyd is not None else find_chronyd()
        self.chrony_conf = chrony_conf
        self.addresses: dict[str, set[str]] = {}
        self.links: set[str] | None = None  # interface names after the last apply

    def _apply_sync(self, params: NetworkParams) -> list[str]:
        if not params.manage:  # only read: links and addresses without pyroute2 (netwatch)
            links, addresses = read_state(self.netns)
            self.links = links
            self.addresses = {}
            for ifname, cidr in addresses:
                self._track(AddressChanged(ifname, _norm_cidr(cidr), True))
            return []
        with NetlinkNetwork(self.netns) as net:
            problems = configure(params, net)
            snap = net.snapshot()
        self.links = set(snap.links)
        if params.manage:
            stop_boot_dhcp([i.name for i in params.interface], self.run_dir, self.proc)
            try:
                if params.dns_servers:
                    write_resolv_conf(params.resolv_conf, params.dns_servers)
                if params.hostname:
                    set_hostname(params.hostname, self.proc)
                    if params.hostname_file:
                        write_hostname_file(params.hostname_file, params.hostname)
            except OSError as exc:
                problems.append(f"network: {exc}")
        self.addresses = {}
        for ifname, cidr in snap.addresses:
            self._track(AddressChanged(ifname, cidr, True))
        return problems

    async def apply(self, params: NetworkParams) -> list[str]:
        problems = await asyncio.to_thread(self._apply_sync, params)
        if validate(params):  # an invalid section changes nothing, helpers included
            return problems
        # after the netlink work: a DHCP VLAN gets its client once it exists
        specs = service_specs(params, self.busybox, self.udhcpc_script, self.chronyd or None,
                              self.chrony_conf, links=self.links)
        if "ntpd" in specs and not self.chronyd:
            if self.applets is None:
                self.applets = await asyncio.to_thread(busybox_applets, self.busybox)
            if "ntpd" not in self.applets:
                problems.append(f"network.ntp_servers: no chronyd, and {self.busybox} has no "
                                "ntpd applet")
                del specs["ntpd"]
        await self.services.update(specs)
        return problems + list(self.services.problems.values())

    async def close(self) -> None:
        """Stop the helpers (supervisor shutdown)."""
        await self.services.close()

    def _track(self, ev: AddressChanged) -> None:
        ip = ipaddress.ip_interface(ev.cidr).ip
        if ip.is_loopback or ip.is_link_local:
            return
        s = self.addresses.setdefault(ev.ifname, set())
        if ev.added:
            s.add(ev.cidr)
        else:
            s.discard(ev.cidr)

    def address_lines(self) -> list[str]:
        """ "eth0 192.0.2.10/24" lines, IPv4 first, for the LCD."""
        out = []
        for ifname in sorted(self.addresses):
            for cidr in sorted(self.addresses[ifname], key=lambda c: (":" in c, c)):
                out.append(f"{ifname} {cidr}")
        return out

    async def watch(self, on_event: Any) -> None:
        """Follow link/address changes until cancelled; `on_event(ev)` sees each one."""
        async with NetlinkWatcher(self.netns) as w:
            async for ev in w.events():
                if isinstance(ev, AddressChanged):
                    self._track(ev)
                on_event(ev)
