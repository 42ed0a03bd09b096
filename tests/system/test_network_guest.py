"""`[network]` applied by the supervisor in the QEMU guest, on the guest's real kernel.

- An 802.1Q sub-interface of the guest NIC (the host kernel may lack 802.1Q; Debian's guest
  kernel has 8021q.ko, kept by tools/image/modules.keep) gets its static address, and applying
  the section again changes nothing.
- `dhcp = true` on the main NIC: the supervisor's own udhcpc replaces the boot one, gets the
  address from QEMU's user-mode DHCP (slirp answers inside the VM) and is restarted when killed;
  host name and DNS servers land in /proc and /run (the rootfs is read-only); `ntp_servers` run
  a supervised ntpd with those servers on its command line (where BusyBox has ntpd; otherwise
  the supervisor must report it).

Addresses: the VLAN, the DNS and the NTP server use 198.51.100.0/24 (RFC 5737), which exists
only inside the guest; NTP is only checked as a running process with its arguments, never for
an answer.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from guest_helpers import REPO, TIMEOUT_MULTIPLIER, cmdlines, record, status, wait_for

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(900)]

BASE = (REPO / "board/common/sipedge.toml").read_text() + "\n[supervisor]\nstart_timeout_s = 300\n"
VLAN_ADDR = "198.51.100.1/24"
NTP_SERVER = "198.51.100.123"
DNS_SERVER = "198.51.100.53"

# Run inside the guest: plan [network] of the running config against the kernel again.
REPLAN = r'''
import sys
from sipedge.config.loader import load_file
from sipedge.appliance.network import NetlinkNetwork, configure, desired_state, plan
params = load_file("/boot/sipedge.toml").network
with NetlinkNetwork() as net:
    print("PLAN", plan(desired_state(params), net.snapshot()))
    print("PROBLEMS", configure(params, net))
'''


def boot_with_network(sipedge_image, boot_guest, network: str, name: str):
    g = boot_guest(sipedge_image, boot_files={"sipedge.toml": BASE + network,
                                              "replan.py": REPLAN}, name=name)
    g.wait_shell(timeout=240 * TIMEOUT_MULTIPLIER)
    return g


def check_vlan_and_idempotence(g) -> None:
    out = wait_for(g, "ip -d addr show dev eth0.100", re.escape(VLAN_ADDR), timeout=300)
    assert "vlan protocol 802.1Q id 100" in out, out
    assert "eth0.100@eth0" in out, out
    _rc, before = g.shell("cat /sys/class/net/eth0.100/ifindex")
    rc, out = g.shell("python3 /boot/replan.py", timeout=120)
    assert rc == 0, out
    assert "PLAN []" in out and "PROBLEMS []" in out, out
    _rc, after = g.shell("cat /sys/class/net/eth0.100/ifindex")
    assert before.strip() == after.strip()  # not recreated


def test_vlan_on_guest_nic(sipedge_image, boot_guest):
    net = ("\n[network]\nmanage = true\n\n[[network.interface]]\nname = \"eth0\"\n"
           "addresses = [\"10.0.2.15/24\"]\n\n"
           f"[[network.vlan]]\nname = \"eth0.100\"\nlink = \"eth0\"\nid = 100\n"
           f"addresses = [\"{VLAN_ADDR}\"]\n")
    g = boot_with_network(sipedge_image, boot_guest, net, "vlan")
    check_vlan_and_idempotence(g)


def test_dhcp_ntp_hostname_from_config(sipedge_image, boot_guest):
    net = ("\n[network]\nmanage = true\nhostname = \"edge-guest\"\n"
           f"ntp_servers = [\"{NTP_SERVER}\"]\ndns_servers = [\"{DNS_SERVER}\"]\n\n"
           "[[network.interface]]\nname = \"eth0\"\ndhcp = true\n\n"
           f"[[network.vlan]]\nname = \"eth0.100\"\nlink = \"eth0\"\nid = 100\n"
           f"addresses = [\"{VLAN_ADDR}\"]\n")
    g = boot_with_network(sipedge_image, boot_guest, net, "dhcp")
    check_vlan_and_idempotence(g)  # the lease on eth0 is not planned away either

    # the supervisor's udhcpc (foreground, supervised) replaced the init script's one
    ours = ("udhcpc -f -S -i eth0 -s /usr/libexec/sipedge/udhcpc-event "
            "-x hostname:edge-guest")
    deadline = time.monotonic() + 120 * TIMEOUT_MULTIPLIER
    while time.monotonic() < deadline:
        clients = cmdlines(g, "udhcpc")
        if len(clients) == 1 and ours in clients[0]:
            break
        time.sleep(1)
    assert len(clients) == 1 and ours in clients[0], clients
    wait_for(g, "ip -4 addr show dev eth0", r"inet 10\.0\.2\.15/24")
    st = status(g, lambda st: "udhcpc:eth0" in st["network_services"])
    first = st["network_services"]["udhcpc:eth0"]["pid"]

    # it dies and the lease is gone: restarted, and slirp's DHCP answers the new client
    g.shell(f"kill -KILL {first}; ip -4 addr flush dev eth0", check=True)
    st = status(g, lambda st: st["network_services"].get("udhcpc:eth0", {}).get(
        "pid", first) != first)
    assert st["network_services"]["udhcpc:eth0"]["restarts"] >= 1, st
    wait_for(g, "ip -4 addr show dev eth0", r"inet 10\.0\.2\.15/24")
    _rc, log = g.shell("logread 2>/dev/null | grep -i 'udhcpc.*lease' | tail -n 3")
    assert "10.0.2.15" in log, log

    # configured resolvers in /run/resolv.conf (via the /etc symlink); the new lease (slirp
    # offers 10.0.2.3) did not replace them
    _rc, out = g.shell("readlink /etc/resolv.conf; cat /etc/resolv.conf")
    assert "../run/resolv.conf" in out and f"nameserver {DNS_SERVER}" in out, out
    assert "10.0.2.3" not in out, out

    # host name: kernel and the runtime copy (the rootfs is read-only)
    _rc, out = g.shell("cat /proc/sys/kernel/hostname /run/hostname")
    assert out.split()[-2:] == ["edge-guest", "edge-guest"], out

    # ntpd with the configured server: a supervised process where BusyBox has the applet,
    # otherwise a reported network problem (never silently nothing)
    if image_has_ntpd(sipedge_image) is False:
        assert any("no ntpd applet" in p for p in st["network_problems"]), st
        record("ntpd in the amd64 guest", "not run: Debian busybox-static has no ntpd applet "
               "(reported in network_problems)")
    else:
        check_ntpd(g)


def image_has_ntpd(image) -> bool | None:
    """Whether the image's BusyBox has ntpd (None: cannot tell from the host)."""
    busybox = image.bindir.parent / "rootfs/bin/busybox"
    if image.arch != "amd64" or not busybox.exists():
        return None
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, timeout=30)
    return "ntpd" in out.stdout.split()


def check_ntpd(g) -> None:
    procs = wait_for(g, "for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline; echo; done",
                     rf"ntpd -n -p {re.escape(NTP_SERVER)}")
    st = status(g, lambda st: "ntpd" in st["network_services"])
    assert st["network_services"]["ntpd"]["argv"][-2:] == ["-p", NTP_SERVER], procs


def test_ntpd_from_config(sipedge_image, boot_guest):
    """ntpd as a supervised helper with the configured server on its command line; the server
    sits on the guest-only VLAN subnet, so no NTP packet leaves the VM."""
    if image_has_ntpd(sipedge_image) is False:
        pytest.skip("the image's BusyBox (Debian busybox-static) has no ntpd applet "
                    "(test_dhcp_ntp_hostname_from_config checks that this is reported)")
    net = ("\n[network]\nmanage = true\n"
           f"ntp_servers = [\"{NTP_SERVER}\"]\n\n"
           "[[network.interface]]\nname = \"eth0\"\ndhcp = true\n\n"
           f"[[network.vlan]]\nname = \"eth0.100\"\nlink = \"eth0\"\nid = 100\n"
           f"addresses = [\"{VLAN_ADDR}\"]\n")
    g = boot_with_network(sipedge_image, boot_guest, net, "ntpd")
    check_ntpd(g)
