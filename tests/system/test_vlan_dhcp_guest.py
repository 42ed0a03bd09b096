"""`dhcp = true` on an 802.1Q VLAN, applied by the supervisor in the QEMU guest.

The config names `lan0` and the VLAN `lan0.42` (dhcp) on it before `lan0` exists: the
supervisor reports the missing interface and runs no DHCP client yet. The test then builds, inside
the guest, a network namespace with a veth pair, VLAN 42 on the peer with 198.51.100.1/24
(RFC 5737; it exists only in the guest) and BusyBox `udhcpd` on it, and moves `lan0` out of the
namespace. The new link makes the supervisor apply `[network]` again (hotplug, kernel uevents:
the image has no udevd): the VLAN is created with id 42, the supervisor's udhcpc runs on it and
the lease from udhcpd's pool lands on `lan0.42`. Applying again (another new link, and a fresh
plan against the kernel) changes nothing: same VLAN, same client, same lease.

The host kernel may lack 802.1Q, so this runs in the guest only. No packet leaves the VM.
"""

from __future__ import annotations

import ipaddress
import re
import time

import pytest
from guest_helpers import REPO, TIMEOUT_MULTIPLIER, cmdlines, record, status, wait_for

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(900)]

# the shipped file without its [management] table (console tests add their own)
BASE = ((REPO / "board/common/sipedge.toml").read_text().split("[management]")[0]
        + "\n[supervisor]\nstart_timeout_s = 300\n")
NETWORK = """
[network]
manage = true

[[network.interface]]
name = "lan0"

[[network.vlan]]
name = "lan0.42"
link = "lan0"
id = 42
dhcp = true
"""
NS = "vdhcp"
SERVER = "198.51.100.1/24"
POOL = ("198.51.100.100", "198.51.100.110")
UDHCPD_CONF = f"""interface lan0p.42
start {POOL[0]}
end {POOL[1]}
lease_file /tmp/udhcpd.leases
option subnet 255.255.255.0
option lease 3600
"""

# Run inside the guest: plan [network] of the running config against the kernel again.
REPLAN = r'''
from sipedge.config.loader import load_file
from sipedge.appliance.network import NetlinkNetwork, configure, desired_state, plan
params = load_file("/boot/sipedge.toml").network
with NetlinkNetwork() as net:
    print("PLAN", plan(desired_state(params), net.snapshot()))
    print("PROBLEMS", configure(params, net))
'''

# Both ends are made inside the namespace, so udhcpd is listening before lan0 shows up.
SETUP = f"""set -e
modprobe veth
modprobe 8021q
ip netns add {NS}
ip -n {NS} link set lo up
ip -n {NS} link add lan0 type veth peer name lan0p
ip -n {NS} link set lan0p up
ip -n {NS} link add link lan0p name lan0p.42 type vlan id 42
ip -n {NS} addr add {SERVER} dev lan0p.42
ip -n {NS} link set lan0p.42 up
cp /boot/udhcpd.conf /tmp/udhcpd.conf
: >/tmp/udhcpd.leases
setsid ip netns exec {NS} busybox udhcpd -f /tmp/udhcpd.conf >/tmp/udhcpd.log 2>&1 &
sleep 2
kill -0 $!
"""


def lease_of(g) -> str:
    out = wait_for(g, "ip -4 -o addr show dev lan0.42", r"inet 198\.51\.100\.\d+/24",
                   timeout=180)
    return re.search(r"inet (198\.51\.100\.\d+)/24", out).group(1)


def vlan_state(g) -> tuple[str, int, str]:
    """(ifindex of lan0.42, pid of the supervisor's client on it, its IPv4 lease)."""
    _rc, ifindex = g.shell("cat /sys/class/net/lan0.42/ifindex")
    st = status(g, lambda st: "udhcpc:lan0.42" in st["network_services"])
    return ifindex.strip(), st["network_services"]["udhcpc:lan0.42"]["pid"], lease_of(g)


def test_dhcp_on_vlan(sipedge_image, boot_guest):
    g = boot_guest(sipedge_image, boot_files={"sipedge.toml": BASE + NETWORK,
                                              "replan.py": REPLAN,
                                              "udhcpd.conf": UDHCPD_CONF,
                                              "vlan-setup.sh": SETUP}, name="vlandhcp")
    g.wait_shell(timeout=240 * TIMEOUT_MULTIPLIER)
    record("vlan dhcp guest: shell after", f"{g.elapsed():.0f} s")

    # lan0 does not exist yet: reported, and no client for the VLAN that could not be made
    st = status(g, lambda st: any("lan0" in p for p in st["network_problems"]), timeout=300)
    assert "udhcpc:lan0.42" not in st["network_services"], st
    _rc, out = g.shell("ip link show lan0.42")
    assert "does not exist" in out, out

    rc, out = g.shell("sh /boot/vlan-setup.sh", timeout=120)
    assert rc == 0, out + g.shell("cat /tmp/udhcpd.log")[1]
    t0 = time.monotonic()
    rc, out = g.shell(f"ip -n {NS} link set lan0 netns 1 && ip link show lan0", timeout=60)
    assert rc == 0, out

    # the new link re-applies [network]: VLAN 42 on lan0, the supervisor's client on it
    out = wait_for(g, "ip -d link show dev lan0.42", r"vlan protocol 802\.1Q id 42", timeout=180)
    assert "lan0.42@lan0" in out, out
    st = status(g, lambda st: "udhcpc:lan0.42" in st["network_services"]
                and not st["network_problems"], timeout=180)
    svc = st["network_services"]["udhcpc:lan0.42"]
    assert svc["argv"][1:6] == ["udhcpc", "-f", "-S", "-i", "lan0.42"], svc
    clients = [c for c in cmdlines(g, "udhcpc") if "-i lan0.42" in c]
    assert len(clients) == 1 and "udhcpc -f -S -i lan0.42" in clients[0], clients

    # the lease from udhcpd's pool, on the VLAN
    lease = lease_of(g)
    record("vlan dhcp guest: lan0 appeared -> lease on lan0.42", f"{time.monotonic() - t0:.0f} s")
    assert ipaddress.ip_address(POOL[0]) <= ipaddress.ip_address(lease) <= \
        ipaddress.ip_address(POOL[1]), lease
    _rc, out = g.shell(f"ip netns exec {NS} ping -c 1 -W 5 {lease}", timeout=60)
    assert " 0% packet loss" in out, out
    before = vlan_state(g)

    # applying again changes nothing: another new link makes the supervisor apply [network] ...
    g.shell("ip link add spare0 type dummy", check=True)
    wait_for(g, "logread 2>/dev/null | grep 'hotplug event'", r"NetDeviceAdded\(ifname='spare0'\)")
    time.sleep(3 * TIMEOUT_MULTIPLIER)  # the apply it triggers
    # ... and a fresh plan against the kernel is empty
    rc, out = g.shell("python3 /boot/replan.py", timeout=120)
    assert rc == 0, out
    assert "PLAN []" in out and "PROBLEMS []" in out, out
    after = vlan_state(g)
    assert after == before, (before, after)  # VLAN not recreated, client not restarted
    st = status(g)
    assert st["network_services"]["udhcpc:lan0.42"]["restarts"] == 0, st
    assert not st["network_problems"], st
