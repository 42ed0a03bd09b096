"""The box in an operator's hands (issue 11), one guest, on the shipped config:

first login chooses the console password; a secret set on the console never shows on it; a
config whose routing script is missing is refused by `config set` (the same check as
`sipedge --check-config`) and, written anyway, is rolled back to last-known-good after its
failed starts, with the proxy's own reason in `status`, `show errors` and `logs`; `ctl
watchdog.status` reaches the supervisor; `factory-reset` leaves a box that answers SIP on the
guest's address and a console that still lets the operator in. The guest runs in the
runner's persistent-disk mode: a `reboot` at the end is a real one, and the console password
and the config the operator left survive it.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from guest_helpers import (REPO, TIMEOUT_MULTIPLIER, record, sip_options, sip_request, status,
                           wait_sip_ready)

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root,
              pytest.mark.timeout(int(1500 * TIMEOUT_MULTIPLIER))]

SHIPPED = (REPO / "board/common/sipedge.toml").read_text()
CFG = SHIPPED + ("\n[supervisor]\nstart_timeout_s = 300\nconfig_good_after_s = 5\n"
                 "respawn_timeout_s = 1\n")
PW = "operator-pw-1"
SECRET = "guest-auth-secret-0123456789"


def write_boot(g, text: str) -> None:
    g.shell("mount -o remount,rw /boot", check=True)
    marker = "SIPEDGE_EOF_" + uuid.uuid4().hex[:8]
    g.shell(f"cat > /boot/sipedge.toml <<'{marker}'\n{text.rstrip()}\n{marker}", check=True)
    g.shell("sync; mount -o remount,ro /boot", check=True)


def test_operator_console_rollback_secrets_factory_reset_and_reboot(sipedge_image, boot_guest,
                                                                    tmp_path):
    disk = tmp_path / "box.img"
    g = boot_guest(sipedge_image, boot_files={"sipedge.toml": CFG}, name="operator",
                   timeout_s=1100 * TIMEOUT_MULTIPLIER, persistent_disk=disk)
    t0 = time.monotonic()
    # OPTIONS in a tight loop from boot: no 403/482 while the proxy learns its addresses
    # (point 10). Bounded: at most 4000 requests, until 5 s after the first 200.
    codes: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        port = g.host_port("udp", 5060)
        first_ok = None
        for _ in range(4000):
            if stop.is_set() or (first_ok and time.monotonic() - first_ok > 5):
                return
            code = sip_options(port, "10.0.2.15:5060", timeout=0.2)
            if code is not None:
                codes.append(code)
                first_ok = first_ok or (time.monotonic() if code == 200 else None)
            time.sleep(0.05)

    hammering = threading.Thread(target=hammer, daemon=True)
    hammering.start()
    wait_sip_ready(g)
    hammering.join(timeout=30)
    stop.set()
    assert 200 in codes and not set(codes) & {403, 482}, sorted(set(codes))
    record("early answers to OPTIONS from boot (amd64 TCG)",
           f"{len(codes)} answers, codes {sorted(set(codes))}")
    con = g.serial2
    mult = TIMEOUT_MULTIPLIER

    def cmd(line: str, expect: bytes = rb"sipedge> $", timeout: float = 60) -> None:
        con.write(line.encode() + b"\r")
        con.expect(expect, timeout=timeout * mult)

    # -- first way in (point 4)
    con.write(b"\r")
    con.expect(rb"choose the console password: ", timeout=120 * mult)
    con.write(PW.encode() + b"\r")
    con.expect(rb"repeat it: ", timeout=20 * mult)
    cmd(PW, rb"password set[\s\S]*sipedge> ")

    # -- the shipped config proves itself and becomes last-known-good (point 2)
    st = status(g, lambda st: st["config"]["proven"], timeout=120 * mult, what="proven")
    rc, _ = g.shell("cmp /data/config/last-good.toml /boot/sipedge.toml")
    assert rc == 0

    # -- a secret set on the console is never shown (point 8)
    cmd("config set auth.secret", rb"\(not shown\): ")
    cmd(SECRET, rb"write it\? \[y/N\] ", timeout=120)
    cmd("y", rb"written[\s\S]*sipedge> ")
    cmd("show config")

    # -- the supervisor's methods from the console (point 7)
    cmd("ctl watchdog.status", rb'"device"[\s\S]*sipedge> ')

    # -- a missing routing script: refused by config set, rolled back when applied (2, 6)
    cmd("config set routing.script /data/missing.py", rb"not changed[\s\S]*sipedge> ",
        timeout=120)
    assert "missing.py" in con.text()[-2000:]
    broken = g.shell("cat /boot/sipedge.toml")[1].replace(
        'script = "sipedge:examples/registrar_route.py"', 'script = "/data/missing.py"')
    assert "/data/missing.py" in broken
    write_boot(g, broken)
    t_apply = time.monotonic()
    cmd("apply")
    st = status(g, lambda st: (st["config"]["rolled_back"] is not None
                               and st["state"] == "RUNNING"), timeout=300 * mult,
                what="rolled back and RUNNING")
    record("broken config applied to rolled back and running again (amd64 TCG)",
           f"{time.monotonic() - t_apply:.1f} s")
    assert st["config"]["source"] == "last-known-good"
    assert "missing.py" in st["problem"] and "proxy cannot start" in st["problem"], st
    # on the kernel console too (written while the status polls above ran, hence text())
    assert "sipedge: config /boot/sipedge.toml rolled back" in g.console.text()
    cmd("status", rb"problem: +config rolled back[^\r\n]*missing\.py[\s\S]*sipedge> ")
    cmd("show errors", rb"rolled back to last-known-good[\s\S]*sipedge> ")
    cmd("logs 200", rb"sipedge\.proxy: [^\r\n]*cannot start: routing script[\s\S]*sipedge> ")
    rc, _ = g.shell("grep -q missing.py /data/config/last-good.toml")
    assert rc != 0  # the broken file never became last-known-good
    assert sip_options(g.host_port("udp", 5060), "10.0.2.15:5060", timeout=5) == 200

    # -- factory reset: SIP on the guest's address, console way in kept (point 1)
    cmd("factory-reset", rb"type 'yes' to confirm \[yes/N\] ")
    cmd("yes", rb"factory default written[\s\S]*sipedge> ")
    status(g, lambda st: (st["config"]["source"] == "boot" and st["state"] == "RUNNING"
                          and st["pid"] is not None), timeout=300 * mult,
           what="factory config RUNNING")
    _rc, boot = g.shell("cat /boot/sipedge.toml")
    assert boot.strip() == SHIPPED.strip()
    deadline = time.monotonic() + 120 * mult
    code = None
    while time.monotonic() < deadline and code != 200:
        code = sip_options(g.host_port("udp", 5060), "10.0.2.15:5060", timeout=2)
    assert code == 200
    # ... and is no open relay on the guest's own address (point 3, inside the box): requests
    # from outside to a target that is not the box get 403, REGISTER a challenge. The target
    # 10.0.2.2 is QEMU's alias of the host's loopback: were anything relayed, it would stay
    # on this machine (port 9 is discard; nothing listens).
    port = g.host_port("udp", 5060)
    assert sip_request(port, "MESSAGE", "sip:bob@10.0.2.2:9", timeout=10) == 403
    assert sip_request(port, "INVITE", "sip:bob@10.0.2.2:9", timeout=10) == 403
    assert sip_request(port, "REGISTER", "sip:sipedge.local", timeout=10) == 401
    cmd("logout", rb"password: ")
    cmd(PW, rb"sipedge> ")
    cmd("status", rb"config: +boot /boot/sipedge.toml[\s\S]*sipedge> ")

    # -- a real reboot on the persistent disk keeps what the operator did (point 12): the
    # boot file written by factory-reset (the disk started with CFG), the console password
    g.shell("echo kept > /data/operator-marker; sync", check=True)
    t_reboot = time.monotonic()
    g.console.write(b"reboot\n")
    g.console.expect(rb"sipedge-init: udev ready", timeout=300 * mult)  # rcS of the new boot
    g.rebooted()
    assert g.proc.poll() is None  # QEMU went on: the reboot was a real one
    _rc, marker = g.shell("cat /data/operator-marker", timeout=120 * mult)
    assert marker.strip() == "kept", marker
    _rc, boot = g.shell("cat /boot/sipedge.toml")
    assert boot.strip() == SHIPPED.strip()  # not CFG, which the disk was made with
    wait_sip_ready(g)
    record("reboot to SIP-ready, persistent disk (amd64 TCG)",
           f"{time.monotonic() - t_reboot:.1f} s")
    con.write(b"\r")
    con.expect(rb"password: ", timeout=120 * mult)  # the password chosen before the reboot
    cmd(PW, rb"sipedge> ")
    cmd("status", rb"config: +boot /boot/sipedge.toml[\s\S]*sipedge> ")
    record("operator guest test (two boots, amd64 TCG)", f"{time.monotonic() - t0:.0f} s")

    transcript = con.text()
    for value in (SECRET, PW):
        assert value not in transcript, value
    _rc, stored = g.shell("cat /data/config/console-password")
    assert stored.strip().split("$")[-1] not in transcript  # not even the hash
