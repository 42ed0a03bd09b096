"""`[network]` applied by the supervisor in the QEMU guest, on the guest's real kernel.

- An 802.1Q sub-interface of the guest NIC (the host kernel may lack 802.1Q; Debian's guest
  kernel has 8021q.ko, kept by tools/image/modules.keep) gets its static address, and applying
  the section again changes nothing.
- `dhcp = true` on the main NIC: the supervisor's own udhcpc replaces the boot one, gets the
  address from QEMU's user-mode DHCP (slirp answers inside the VM) and is restarted when killed;
  host name and DNS servers land in /proc and /run (the rootfs is read-only).
- `ntp_servers`: the supervisor runs chronyd, which sets the guest's clock from a real chronyd
  serving on the host's 127.0.0.1 (reached from the guest as slirp's 10.0.2.2, which QEMU maps
  to the host's loopback); the clock is put a year off and chronyd killed, and the restarted
  chronyd steps it back.

The DHCP and the NTP test share one boot (CI time); the VLAN test boots its own (a static
address on eth0).

Addresses: the VLAN and the DNS server use 198.51.100.0/24 (RFC 5737), which exists only inside
the guest; NTP goes only to 10.0.2.2, i.e. the host's 127.0.0.1.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import time

import pytest
from guest_helpers import REPO, TIMEOUT_MULTIPLIER, cmdlines, record, status, wait_for

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(900)]

# the shipped file without its [management] table (console tests add their own)
BASE = ((REPO / "board/common/sipedge.toml").read_text().split("[management]")[0]
        + "\n[supervisor]\nstart_timeout_s = 300\n")
VLAN_ADDR = "198.51.100.1/24"
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


def boot_with_network(sipedge_image, boot_guest, network: str, name: str, **kw):
    g = boot_guest(sipedge_image, boot_files={"sipedge.toml": BASE + network,
                                              "replan.py": REPLAN}, name=name, **kw)
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


@pytest.fixture(scope="module")
def dhcp_guest(sipedge_image, module_boot_guest, ntp_port):
    """One boot for the DHCP and the NTP test: DHCP on eth0, host name, DNS servers, a VLAN
    and (when the host has a chronyd to serve time) an NTP server."""
    net = ("\n[network]\nmanage = true\nhostname = \"edge-guest\"\n"
           f"dns_servers = [\"{DNS_SERVER}\"]\n"
           + (f"ntp_servers = [\"10.0.2.2:{ntp_port}\"]\n" if ntp_port else "") + "\n"
           "[[network.interface]]\nname = \"eth0\"\ndhcp = true\n\n"
           f"[[network.vlan]]\nname = \"eth0.100\"\nlink = \"eth0\"\nid = 100\n"
           f"addresses = [\"{VLAN_ADDR}\"]\n")
    return boot_with_network(sipedge_image, module_boot_guest, net, "dhcp",
                             timeout_s=900 * TIMEOUT_MULTIPLIER)


def test_dhcp_hostname_dns_from_config(dhcp_guest):
    g = dhcp_guest
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



CHRONYD = REPO / ".cache/chrony/usr/sbin/chronyd"


@pytest.fixture(scope="module")
def ntp_port(tmp_path_factory):
    """chronyd on the host's 127.0.0.1 as an NTP server (-x: never touches the host's clock),
    unpacked by `make test-deps`; yields its UDP port (None without it: the NTP test skips,
    the DHCP test sharing the guest runs)."""
    if not CHRONYD.exists():
        yield None
        return
    tmp_path = tmp_path_factory.mktemp("ntp")
    chronyd = CHRONYD
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "chrony-server.conf"
    conf.write_text(f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 8\nallow all\n"
                    f"cmdport 0\nbindcmdaddress /\npidfile {tmp_path}/chronyd-server.pid\n")
    log = open(tmp_path / "chronyd-server.log", "wb")
    proc = subprocess.Popen([str(chronyd), "-x", "-d", "-u", "root", "-f", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while ntp_query("127.0.0.1", port) is None:
            assert proc.poll() is None, (tmp_path / "chronyd-server.log").read_text()
            assert time.monotonic() < deadline, "the host chronyd never answered"
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def ntp_query(host: str, port: int, timeout: float = 1.0) -> float | None:
    """One SNTP client request (RFC 4330) to host:port; the server's transmit time (Unix)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(b"\x23" + bytes(47), (host, port))  # LI 0, version 4, mode 3 (client)
        try:
            data, _ = s.recvfrom(512)
        except (TimeoutError, ConnectionRefusedError):
            return None
    secs, frac = struct.unpack("!II", data[40:48])
    return secs - 2208988800 + frac / 2**32


def guest_clock_offset(g) -> float:
    """Guest wall clock minus host wall clock, in seconds (the console adds well under 1 s)."""
    before = time.time()
    _rc, out = g.shell("date +%s", check=True)
    after = time.time()
    return int(re.findall(r"^(\d{9,})\s*$", out, re.M)[-1]) - (before + after) / 2


def test_ntp_sets_the_clock(dhcp_guest, ntp_port):
    """On the DHCP test's guest (its lease restored), with the NTP server in its config."""
    if ntp_port is None:
        pytest.skip(f"no {CHRONYD} (`make test-deps` unpacks Debian's chrony there)")
    ntp_server = ntp_port
    g = dhcp_guest
    wait_for(g, "ip -4 addr show dev eth0", r"inet 10\.0\.2\.15/24")
    st = status(g, lambda st: "ntpd" in st["network_services"])
    argv = st["network_services"]["ntpd"]["argv"]
    assert argv[0].endswith("/chronyd") and argv[1:] == ["-d", "-f", "/run/sipedge/chrony.conf"]
    _rc, conf = g.shell("cat /run/sipedge/chrony.conf", check=True)
    assert f"server 10.0.2.2 iburst port {ntp_server}" in conf, conf
    assert not [p for p in st["network_problems"] if "ntp" in p], st

    # a year off, then chronyd dies: the supervisor restarts it and it steps the clock back
    first = st["network_services"]["ntpd"]["pid"]
    g.shell("date -s @$(( $(date +%s) - 365 * 86400 )) >/dev/null", check=True)
    assert guest_clock_offset(g) < -364 * 86400
    t0 = time.monotonic()
    g.shell(f"kill -KILL {first}", check=True)
    deadline = t0 + 120 * TIMEOUT_MULTIPLIER
    offset = guest_clock_offset(g)
    while abs(offset) > 5:
        assert time.monotonic() < deadline, f"guest clock still {offset:.0f} s off"
        time.sleep(2)
        offset = guest_clock_offset(g)
    took = time.monotonic() - t0
    record("NTP: clock a year off to within 5 s (chronyd restarted by the supervisor)",
           f"{took:.1f} s, then {offset:+.1f} s off")
    st = status(g, lambda st: st["network_services"].get("ntpd", {}).get("pid") not in
                (None, first))
    assert st["network_services"]["ntpd"]["restarts"] >= 1, st
    _rc, log = g.shell("logread 2>/dev/null | grep -i 'chronyd' | tail -n 5")
    print(log)
