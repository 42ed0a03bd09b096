"""tools/provision against the real image in QEMU (one boot).

- `provision image` writes lab-a's config into a copy of the built image; that copy boots and
  the host sees lab-a's port and name (SIP OPTIONS to the forwarded port, Server header and
  the kernel's host name);
- `provision push` then sends lab-b's config over the guest's management console (second
  serial port; login, `config import -`, the box's diff, apply): the running proxy moves to
  lab-b's port and the box takes lab-b's name.
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import tty
import uuid

import pytest
from guest_helpers import REPO, TIMEOUT_MULTIPLIER, record, wait_for, wait_sip_ready

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(1200)]

TOOL = REPO / "tools/provision/provision"

TEMPLATE = """\
# {{ inventory_hostname }}: rendered by tools/provision for the QEMU guest test
[core]
workers = 1
server_header = {{ ("sipedge " ~ hostname) | toml }}
{% for proto in ["udp", "tcp"] %}

[[listen]]
proto = "{{ proto }}"
address = "0.0.0.0"
port = {{ sip_port }}
{% endfor %}

[supervisor]
start_timeout_s = 300

[network]
manage = true
hostname = {{ hostname | toml }}

[[network.interface]]
name = "eth0"
dhcp = true

[management]
console_device = {{ console_device | toml }}
password_hash = {{ console_password_hash | toml }}
"""

PORT_A, PORT_B = 5070, 5072


def options_reply(port: int, ruri: str, timeout: float = 2.0) -> str:
    """One OPTIONS over UDP to 127.0.0.1:port; the final reply's text ('' if none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        call_id = uuid.uuid4().hex
        msg = (f"OPTIONS sip:{ruri} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{call_id[:12]};rport\r\n"
               "Max-Forwards: 70\r\n"
               f"From: <sip:provision-test@127.0.0.1:{lport}>;tag={call_id[:8]}\r\n"
               f"To: <sip:{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
               "Content-Length: 0\r\n\r\n").encode()
        s.settimeout(timeout)
        s.sendto(msg, ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                return ""
            if call_id.encode() in data and re.match(rb"SIP/2.0 [2-6]\d\d", data):
                return data.decode(errors="replace")
        return ""


def pty_bridge(port) -> tuple[str, threading.Event]:
    """A pty whose other end is the guest's serial port (the harness keeps its connection and
    transcript): returns the tty path and an event that stops the bridge."""
    master, slave = os.openpty()
    tty.setraw(slave)  # a cable does not echo
    stop = threading.Event()
    pos = len(port.text().encode())  # SerialPort keeps everything; forward only what is new

    def guest_to_pty() -> None:
        nonlocal pos
        while not stop.is_set():
            with port._cond:  # the harness's buffer (tools/vm/sipedge_vm.py SerialPort)
                if len(port._buf) <= pos:
                    port._cond.wait(0.2)
                data = bytes(port._buf[pos:])
                pos += len(data)
            if data:
                os.write(master, data)

    def pty_to_guest() -> None:
        while not stop.is_set():
            r, _w, _x = select.select([master], [], [], 0.2)
            if r:
                port.write(os.read(master, 4096))

    for fn in (guest_to_pty, pty_to_guest):
        threading.Thread(target=fn, daemon=True).start()
    return os.ttyname(slave), stop


def provision(work, *args, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, str(TOOL), "-i", str(work / "inventory.toml"), *args],
                       capture_output=True, text=True, timeout=300, env=env)
    print(p.stdout, p.stderr)
    return p


def test_image_boots_with_host_config_then_push_changes_it(sipedge_image, boot_guest, tmp_path):
    from sipedge.appliance.auth import hash_password

    work = tmp_path / "fleet"
    work.mkdir()
    (work / "sipedge.toml.j2").write_text(TEMPLATE)
    (work / "inventory.toml").write_text(
        "[all.vars]\n"
        f'console_device = "/dev/{sipedge_image.meta["MGMT_TTY"]}"\n'
        f'console_password_hash = "{hash_password("lab-tech", iterations=2000)}"\n\n'
        "[all.children.lab.hosts.lab-a]\n"
        f"sip_port = {PORT_A}\n\n"
        "[all.children.lab.hosts.lab-b]\n"
        f"sip_port = {PORT_B}\n")
    assert provision(work, "render").returncode == 0

    p = provision(work, "image", "--host", "lab-a", "--image", str(sipedge_image.bindir.parent))
    assert p.returncode == 0, p.stderr
    path, sha = p.stdout.split()[0], p.stdout.split()[-1]
    assert path.endswith("sipedge-lab-a.img") and re.fullmatch(r"[0-9a-f]{64}", sha)

    # boot exactly that file (snapshot=on keeps it unchanged)
    image = dataclasses.replace(sipedge_image, manifest={**sipedge_image.manifest, "disk": path})
    # one guest for both halves: generous deadlines (173 s to SIP-ready at load 13 on 2 cores)
    # no_timer_check: at load 12 a TCG guest's kernel once panicked in its IO-APIC timer check
    # ("IO-APIC + timer doesn't work"), before anything of ours ran
    g = boot_guest(image, name="prov", forward=(("udp", PORT_A), ("udp", PORT_B)),
                   timeout_s=700 * TIMEOUT_MULTIPLIER, append="no_timer_check")
    boot_s = wait_sip_ready(g, guest_port=PORT_A, timeout=420)
    record("provision image: boot to SIP-ready on the rendered port", f"{boot_s:.0f} s")
    reply = options_reply(g.host_port("udp", PORT_A), f"10.0.2.15:{PORT_A}")
    assert reply.startswith("SIP/2.0 200") and "sipedge lab-a" in reply, reply
    wait_for(g, "cat /proc/sys/kernel/hostname", r"^lab-a\s*$")

    # push lab-b's config over the management console, through a pty joined to the guest's
    # second serial port (the tool opens a tty, as it opens /dev/ttyUSB0 in the field)
    tty_path, stop = pty_bridge(g.serial2)
    env = {**os.environ, "SIPEDGE_CONSOLE_PASSWORD": "lab-tech"}
    t0 = time.monotonic()
    try:
        p = provision(work, "push", "--host", "lab-b", "--serial", tty_path, "--yes",
                      "--timeout", str(120 * TIMEOUT_MULTIPLIER), env=env)
    finally:
        stop.set()
    assert p.returncode == 0, p.stdout + p.stderr
    record("provision push: login, transfer, diff, write, apply", f"{time.monotonic() - t0:.0f} s")
    assert f"-port = {PORT_A}" in p.stdout and f"+port = {PORT_B}" in p.stdout
    assert "lab-b: applied" in p.stdout
    assert "lab-tech" not in p.stdout + p.stderr and "pbkdf2_sha256$" not in p.stdout

    wait_sip_ready(g, guest_port=PORT_B, timeout=300)
    reply = options_reply(g.host_port("udp", PORT_B), f"10.0.2.15:{PORT_B}")
    assert reply.startswith("SIP/2.0 200") and "sipedge lab-b" in reply, reply
    assert options_reply(g.host_port("udp", PORT_A), f"10.0.2.15:{PORT_A}", timeout=1) == ""
    wait_for(g, "cat /proc/sys/kernel/hostname", r"^lab-b\s*$")
    _rc, boot = g.shell("cat /boot/sipedge.toml")
    rendered_b = (work / "rendered/lab-b/sipedge.toml").read_text()
    assert boot.replace("\r", "").strip() == rendered_b.strip()
