"""Appliance runtime in the QEMU guest, on real kernel devices.

- i6300esb: a hung proxy is recovered without a reset; a hung supervisor resets the VM
  (time from hang to reset is recorded).
- i6300esb: a proxy that hangs again after every restart ends in FAILED and a reset after
  `[watchdog] hang_limit` hangs (time from the first hang to the reset is recorded); with the
  boot-loop guard record already at `max_resets` the same hangs leave it FAILED, still petted.
- Config fallback: broken boot file -> embedded default with errors; fixed -> it runs and
  becomes last-known-good; broken again -> last-known-good keeps SIP up. In the same boot,
  [instances] from the SD-card file with the i6300esb armed: an optional instance FAILED is
  still petted, a required one FAILED resets the VM.
- Management console on the second serial port: login, status, `config set`, `apply`.
- LEDs through a uinput device with EV_LED bits (/sys/class/leds/inputN::*) and the LCD
  through i2c-stub at 0x27 (amd64 only).
- A boot file with another SIP port is what the proxy listens on.

The port, console and LED/LCD tests share one boot (CI time); the others boot their own
(a broken boot file, and two that end in a watchdog reset).
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from guest_helpers import (REPO, TIMEOUT_MULTIPLIER, processes, record, sip_options,
                           status, wait_sip_ready)
from sipedge_vm import GuestError

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(900)]

# TCG guests on a busy 2-core host start Python slowly: generous start timeout.
# the shipped file without its [management] table (console tests add their own)
BASE = ((REPO / "board/common/sipedge.toml").read_text().split("[management]")[0]
        + "\n[supervisor]\nstart_timeout_s = 300\n")

UINPUT_LEDS = r'''
import fcntl, glob, os, struct, sys
UI_SET_EVBIT, UI_SET_LEDBIT, UI_DEV_CREATE = 0x40045564, 0x40045569, 0x5501
EV_LED = 0x11
fd = os.open("/dev/uinput", os.O_RDWR)
fcntl.ioctl(fd, UI_SET_EVBIT, EV_LED)
for led in (0, 1):  # LED_NUML, LED_CAPSL
    fcntl.ioctl(fd, UI_SET_LEDBIT, led)
os.write(fd, struct.pack("80sHHHHi256i", b"sipedge-test-leds", 3, 1, 1, 1, 0, *[0] * 256))
fcntl.ioctl(fd, UI_DEV_CREATE)
for path in glob.glob("/sys/class/input/input*/name"):
    if open(path).read().strip() == "sipedge-test-leds":
        print("READY", path.split("/")[-2], flush=True)
size = struct.calcsize("llHHi")
while True:
    data = os.read(fd, size)
    _s, _us, typ, code, value = struct.unpack("llHHi", data)
    if typ == EV_LED:
        print("LED", code, value, flush=True)
'''


def ctl(g, method: str, *params: str, timeout: float = 30) -> dict:
    rc, out = g.shell(f"sipedgectl --json {method} {' '.join(params)}", timeout=timeout)
    if rc != 0 or "{" not in out:
        raise AssertionError(f"sipedgectl {method} failed rc={rc}: {out}")
    return json.JSONDecoder().raw_decode(out[out.index("{"):])[0]


def pids(g, pattern: str) -> list[int]:
    return [pid for pid, _cmd in processes(g, pattern)]


def restart_supervisor(g) -> None:
    """SIGTERM (clean stop); init respawns it, and the new one opens devices loaded since."""
    old = pids(g, "sipedge-supervisor --boot-config")
    assert old, "no supervisor running"
    g.shell(f"kill {' '.join(map(str, old))}", check=True)
    deadline = time.monotonic() + 60 * TIMEOUT_MULTIPLIER
    while time.monotonic() < deadline:
        now = pids(g, "sipedge-supervisor --boot-config")
        if now and not set(now) & set(old):
            return
        time.sleep(1)
    raise AssertionError("supervisor was not respawned by init")


def wait_running(g, timeout: float = 300) -> dict:
    """Boot until the supervisor reports the proxy RUNNING (its own heartbeat + OPTIONS)."""
    g.wait_shell(timeout=240 * TIMEOUT_MULTIPLIER)
    return status(g, lambda st: st["state"] == "RUNNING", timeout, "RUNNING")


def write_boot(g, text: str) -> None:
    """Replace /boot/sipedge.toml from the guest shell (what a technician's PC would do)."""
    g.shell("mount -o remount,rw /boot", check=True)
    marker = "SIPEDGE_EOF_" + uuid.uuid4().hex[:8]
    g.shell(f"cat > /boot/sipedge.toml <<'{marker}'\n{text.rstrip()}\n{marker}", check=True)
    g.shell("sync; mount -o remount,ro /boot", check=True)


def wait_armed(g, restart: bool = False) -> dict:
    """Load the i6300esb driver if needed; RUNNING with the watchdog open and petted.
    `restart` restarts the supervisor in any case (e.g. to read a new reset record)."""
    rc, out = g.shell("[ -e /dev/watchdog ] || modprobe i6300esb")
    if rc != 0 and "Unknown symbol" in out:
        pytest.skip("the image lacks the watchdog core module "
                    "(drivers/watchdog/watchdog.ko in tools/image/modules.keep): " + out)
    g.shell("ls /dev/watchdog", check=True)
    if restart or not status(g, lambda st: True)["watchdog"]["armed"]:
        restart_supervisor(g)  # started before the driver was loaded
    return status(g, lambda st: st["watchdog"]["armed"] and st["watchdog"]["pets"] >= 2
                       and st["state"] == "RUNNING", timeout=300, what="armed and RUNNING")


WDT_CFG = BASE + ("health_interval_s = 1\nhealth_timeout_s = 8\nterm_timeout_s = 2\n"
                  "respawn_timeout_s = 1\n\n[watchdog]\ntimeout_s = 5\npet_interval_s = 1\n")


def test_watchdog_hung_proxy_recovered_hung_supervisor_resets(sipedge_image, boot_guest):
    g = boot_guest(sipedge_image, boot_files={"sipedge.toml": WDT_CFG},
                   extra_args=["-device", "i6300esb"], name="wdt")
    wait_running(g)
    st = wait_armed(g)
    wd = ctl(g, "watchdog.status")
    assert wd["timeout_s"] == 5

    # 1. a hung proxy (SIGSTOP) is killed and restarted; the box does not reset
    proxy = st["pid"]
    t0 = time.monotonic()
    g.shell(f"kill -STOP {proxy}", check=True)
    st = status(g, lambda st: st["state"] == "RUNNING" and st["pid"] not in (None, proxy),
                     what="RUNNING with a new proxy")
    record("hung proxy to restarted proxy amd64", f"{time.monotonic() - t0:.1f} s "
           "(health_timeout_s=8, term_timeout_s=2)")
    assert st["crashes"] >= 1 and g.proc.poll() is None

    # 2. a hung supervisor stops petting: the i6300esb resets the VM (-no-reboot: QEMU exits)
    sup = pids(g, "sipedge-supervisor --boot-config")
    assert len(sup) == 1
    t0 = time.monotonic()
    g.console.write(f"kill -STOP {sup[0]}\n")
    g.wait_exit(90 * TIMEOUT_MULTIPLIER)
    hang_to_reset = time.monotonic() - t0
    record("hung supervisor to hardware reset amd64 (i6300esb)",
           f"{hang_to_reset:.1f} s (timeout_s=5, petted every 1 s)")
    print(f"hang to reset: {hang_to_reset:.1f} s")
    assert 3 <= hang_to_reset <= 60


RESET_RECORD = "/data/supervisor/watchdog-reset.json"


def hang_every_proxy(g, hangs: int, stop_times: list[float]) -> dict:
    """SIGSTOP the running proxy, then each restarted one as soon as it is RUNNING again,
    `hangs` times in all (host monotonic time of each SIGSTOP appended to `stop_times`);
    returns the last status seen (the QEMU may be gone afterwards)."""
    st = status(g, lambda st: st["state"] == "RUNNING", what="RUNNING")
    stopped: list[int] = []
    for n in range(hangs):
        if n:
            st = status(g, lambda st: st["state"] == "RUNNING"
                             and st["pid"] not in (None, *stopped), timeout=300,
                             what=f"RUNNING with proxy #{n + 1}")
            assert st["hangs"] == n, st
        pid = st["pid"]
        g.shell(f"kill -STOP {pid}", check=True)
        stopped.append(pid)
        stop_times.append(time.monotonic())
    return st


def test_watchdog_proxy_hanging_after_every_restart_resets(sipedge_image, boot_guest):
    """hang_limit = 2: the second hang in a row is FAILED and the i6300esb resets the VM;
    first with the guard record at max_resets (no reset, FAILED), then without it."""
    cfg = WDT_CFG + "hang_limit = 2\nmax_resets = 1\n"
    g = boot_guest(sipedge_image, boot_files={"sipedge.toml": cfg},
                   extra_args=["-device", "i6300esb"], name="wdt-hang")
    wait_running(g)

    # 1. boot-loop guard: a record from another boot at max_resets -> FAILED, no reset
    record_json = json.dumps({"resets": 1, "reason": "test: earlier hangs",
                              "boot_id": "00000000-0000-0000-0000-000000000000",
                              "time": 1.0})
    g.shell(f"mkdir -p /data/supervisor && echo '{record_json}' > {RESET_RECORD}", check=True)
    st = wait_armed(g, restart=True)
    wd = ctl(g, "watchdog.status")
    assert wd["previous_reset"] == ("previous boot ended in a watchdog reset: "
                                    "test: earlier hangs")
    assert wd["resets_allowed"] is False and wd["resets_in_a_row"] == 1
    hang_every_proxy(g, 2, [])
    st = status(g, lambda st: st["state"] == "FAILED", timeout=120, what="FAILED")
    assert "hung 2 times" in st["problem"] and "suppressed" in st["problem"], st
    pets = st["watchdog"]["pets"]
    time.sleep(3 * 5)  # three watchdog timeouts
    st = ctl(g, "supervisor.status")
    assert g.proc.poll() is None, "VM reset although max_resets was reached"
    assert st["state"] == "FAILED" and st["panel"] == "failed"
    assert st["watchdog"]["petting"] and st["watchdog"]["pets"] > pets
    assert st["watchdog"]["reset_suppressed"].startswith("proxy hung 2 times")

    # 2. without the record: the same hangs end in a hardware reset
    g.shell(f"rm -f {RESET_RECORD}", check=True)
    st = wait_armed(g, restart=True)
    assert st["watchdog"]["resets_allowed"] is True and st["watchdog"]["previous_reset"] is None
    t0: list[float] = []
    hang_every_proxy(g, 2, t0)
    # Best effort: the record is written when the keep-alive stops, a few seconds before the
    # reset; read it if the shell still answers (the next boot cannot: the disk is a snapshot).
    seen = ""
    deadline = time.monotonic() + 120 * TIMEOUT_MULTIPLIER
    while not seen and g.proc.poll() is None and time.monotonic() < deadline:
        try:
            _rc, out = g.shell(f"cat {RESET_RECORD} 2>/dev/null", timeout=10)
        except GuestError:
            break
        seen = out if '"resets": 1' in out else ""
        time.sleep(0.5)
    g.wait_exit(300 * TIMEOUT_MULTIPLIER)
    t_reset = time.monotonic()
    hang_to_reset = t_reset - t0[0]
    if seen:
        assert "proxy hung 2 times in a row" in seen, seen
    record("reset record read before the reset", "yes" if seen else "no (reset came first)")
    record("proxy hanging after every restart to hardware reset amd64 (i6300esb)",
           f"{hang_to_reset:.1f} s from the first hang, {t_reset - t0[-1]:.1f} s from the "
           "second (hang_limit=2, health_timeout_s=8, term_timeout_s=2, timeout_s=5, "
           "pet_interval_s=1; the first figure includes one proxy start)")
    print(f"first hang to reset: {hang_to_reset:.1f} s, last hang to reset: "
          f"{t_reset - t0[-1]:.1f} s")
    assert 10 <= hang_to_reset <= 400 * TIMEOUT_MULTIPLIER


INSTANCES_CFG = """\
[supervisor]
start_timeout_s = 300
respawn_retry = 1
respawn_timeout_s = 1

config_good_after_s = 5

[watchdog]
reset_on_failed = true
timeout_s = 5
pet_interval_s = 1

[instances.edge]
[instances.edge.core]
workers = 1
[[instances.edge.listen]]
address = "0.0.0.0"
port = 5060

[instances.lab]
required = false
[instances.lab.core]
workers = 1
modules = ["registrar"]
[[instances.lab.listen]]
address = "0.0.0.0"
port = 5070
[instances.lab.registrar]
db_path = "/proc/sipedge-none/location.sqlite"  # cannot be created: lab never starts
"""


def test_config_fallback_and_errors(sipedge_image, boot_guest):
    good = BASE + "config_good_after_s = 5\n"  # [supervisor] (30 s by default)
    broken = good.replace("workers = 1", "workers = 0")
    # the instances check at the end needs more than the default 300 s guest deadline
    g = boot_guest(sipedge_image, boot_files={"sipedge.toml": broken}, name="badcfg",
                   extra_args=["-device", "i6300esb"], timeout_s=720 * TIMEOUT_MULTIPLIER)
    g.console.expect(rb"sipedge: running the default config", timeout=240 * TIMEOUT_MULTIPLIER)
    g.wait_shell(timeout=240 * TIMEOUT_MULTIPLIER)
    st = status(g, lambda st: st["state"] == "RUNNING", what="RUNNING")
    assert st["config"]["source"] == "default" and st["panel"] == "config_error"
    errs = ctl(g, "config.errors")
    assert len(errs["errors"]) == 1
    assert errs["errors"][0].startswith("/boot/sipedge.toml:")
    assert ": core.workers: " in errs["errors"][0]

    write_boot(g, good)
    ctl(g, "supervisor.reload")
    # last-known-good once the proxy has run healthy on it for config_good_after_s
    st = status(g, lambda st: st["config"]["source"] == "boot" and st["config"]["proven"],
                timeout=300, what="boot config healthy and proven")
    rc, _ = g.shell("cmp /data/config/last-good.toml /boot/sipedge.toml")
    assert rc == 0  # byte-exact copy

    write_boot(g, broken)
    ctl(g, "supervisor.reload")
    st = status(g, lambda st: st["config"]["source"] == "last-known-good"
                     and st["state"] == "RUNNING", timeout=300, what="last-known-good RUNNING")
    assert st["panel"] == "config_error"
    assert ctl(g, "config.errors")["errors"][0].startswith("/boot/sipedge.toml:")

    # [instances] from the SD-card file (issue 19), in the same boot: each instance its own
    # proxy and control socket. The i6300esb driver is loaded and the supervisor restarted
    # (it opens the watchdog at start), so the instances start from the file as at boot and
    # the watchdog is armed. An optional instance that cannot start goes FAILED on its own
    # and, with reset_on_failed, the armed watchdog is still petted; a required one that goes
    # FAILED holds the keep-alive back and the i6300esb resets the VM.
    write_boot(g, INSTANCES_CFG)
    t0 = time.monotonic()
    rc, out = g.shell("modprobe i6300esb && ls /dev/watchdog")
    if rc != 0 and "Unknown symbol" in out:
        pytest.skip("the image lacks the watchdog core module: " + out)
    assert rc == 0, out
    restart_supervisor(g)
    st = status(g, lambda st: (st.get("instances") or {}).get("edge", {}).get("state")
                == "RUNNING" and st["instances"].get("lab", {}).get("state") == "FAILED"
                and st["watchdog"]["armed"] and st["config"]["proven"],
                timeout=600, what="edge RUNNING and proven, lab FAILED, watchdog armed")
    record("instances: supervisor restart to edge RUNNING + lab FAILED, armed",
           f"{time.monotonic() - t0:.0f} s")
    assert st["config"]["source"] == "boot" and st["instances"]["lab"]["required"] is False
    assert st["watchdog"]["petting"] and st["panel"] == "failed"
    assert st["instances"]["edge"]["ctl_socket"] == "/run/sipedge/edge/ctl.sock"
    assert ctl(g, "-i edge core.health", timeout=90)["workers_alive"] == 1
    assert len(pids(g, "--instance edge")) >= 1
    pets = st["watchdog"]["pets"]
    time.sleep(2 * 5)  # two hardware timeouts with the optional instance FAILED
    st = ctl(g, "supervisor.status")
    assert g.proc.poll() is None and st["watchdog"]["pets"] > pets
    assert st["instances"]["lab"]["state"] == "FAILED"
    # the required instance crashes twice in a row (respawn_retry = 1): FAILED, no keep-alive,
    # the i6300esb resets the VM (-no-reboot: QEMU exits)
    killed: list[int] = []
    t0 = time.monotonic()
    try:
        while len(killed) < 4:
            st = status(g, lambda st: st["instances"]["edge"]["state"] == "FAILED"
                        or st["instances"]["edge"]["pid"] not in (None, *killed),
                        timeout=120, what="edge respawned or FAILED")
            if st["instances"]["edge"]["state"] == "FAILED":
                break
            killed.append(st["instances"]["edge"]["pid"])
            g.shell(f"kill -9 {killed[-1]}", check=True)
            t0 = time.monotonic()
    except GuestError:
        pass  # the reset came while the shell was being asked
    g.wait_exit(120 * TIMEOUT_MULTIPLIER)
    record("instances: required instance's last crash to i6300esb reset amd64",
           f"{time.monotonic() - t0:.1f} s after {len(killed)} SIGKILLs (timeout_s=5, "
           "pet_interval_s=1)")
    assert 2 <= len(killed) <= 3


@pytest.fixture(scope="module")
def console_guest(sipedge_image, module_boot_guest):
    """One boot for the console test and the LED/LCD test (CI time), on a boot file with the
    management console on the second serial port and SIP on port 5070 (the boot file on the
    FAT partition is what the proxy runs: test_boot.py boots the shipped file)."""
    from sipedge.appliance.auth import hash_password

    mgmt_tty = "/dev/" + sipedge_image.meta["MGMT_TTY"]
    cfg = BASE.replace("port = 5060", "port = 5070") + (
        f'\n[management]\nconsole_device = "{mgmt_tty}"\n'
        f'password_hash = "{hash_password("tech", iterations=2000)}"\n')
    assert cfg.count("port = 5070") == 2
    return module_boot_guest(sipedge_image, boot_files={"sipedge.toml": cfg,
                                                        "uinput_leds.py": UINPUT_LEDS},
                             forward=(("udp", 5070), ("udp", 5060)), name="console",
                             timeout_s=1200 * TIMEOUT_MULTIPLIER)


def test_boot_config_comes_from_fat_partition(console_guest):
    """A sipedge.toml with another port, written onto the FAT partition before the boot, is
    what the proxy listens on (moved here from test_boot.py: one boot less)."""
    g = console_guest
    seconds = wait_sip_ready(g, guest_port=5070)
    record("boot-to-SIP-ready amd64, changed port", f"{seconds:.1f} s")
    assert sip_options(g.host_port("udp", 5060), "10.0.2.15:5060", timeout=3) is None
    _rc, toml = g.shell("cat /boot/sipedge.toml")
    assert "port = 5070" in toml and "port = 5060" not in toml


def test_console_on_second_serial_port(console_guest):
    g = console_guest
    before = wait_running(g)
    con = g.serial2
    con.expect(rb"password: ", timeout=120 * TIMEOUT_MULTIPLIER)
    con.write(b"tech\r")
    con.expect(rb"sipedge> ", timeout=30)
    con.write(b"status\r")
    con.expect(rb"state:    RUNNING", timeout=30)
    con.expect(rb"sipedge> ", timeout=30)
    con.write(b'config set core.server_header "edge-console-test"\r')
    con.expect(rb"\+server_header = \"edge-console-test\"", timeout=30)
    con.expect(rb"write it\? \[y/N\] ", timeout=30)
    con.write(b"y\r")
    con.expect(rb"written", timeout=60)
    con.write(b"apply\r")
    con.expect(rb"applying", timeout=30)
    # applied: the proxy was restarted for the new file (planned, not a crash) and runs again
    st = status(g, lambda st: st["restarts"] > before["restarts"] and
                     st["state"] == "RUNNING", timeout=300, what="restarted with the new config")
    assert st["crashes"] == 0
    _rc, toml = g.shell("cat /boot/sipedge.toml")
    assert 'server_header = "edge-console-test"' in toml
    _rc, cmdlines = g.shell("cat /proc/%d/cmdline | tr '\\0' ' '" % st["pid"])
    assert "--config /boot/sipedge.toml" in cmdlines
    con.write(b"logout\r")
    con.expect(rb"password: ", timeout=30)


def test_leds_via_uinput_and_lcd_via_i2c_stub(sipedge_image, console_guest):
    """On the console test's guest: the panel config written below replaces its boot file."""
    if sipedge_image.arch != "amd64":
        pytest.skip("i2c-stub exists in Debian's amd64 kernel only")
    g = console_guest
    wait_running(g)
    g.shell("modprobe uinput; modprobe ledtrig-timer; modprobe i2c-dev; "
            "modprobe i2c-stub chip_addr=0x27", check=True)
    g.shell("python3 -u /boot/uinput_leds.py > /tmp/led-events 2>&1 &", check=True)
    deadline = time.monotonic() + 60
    inp = ""
    while time.monotonic() < deadline and not inp:
        _rc, out = g.shell("cat /tmp/led-events")
        m = re.search(r"READY (input\d+)", out)  # the shell may prefix its prompt
        inp = m.group(1) if m else ""
        time.sleep(0.5)
    assert inp, out
    _rc, out = g.shell("for d in /sys/class/i2c-dev/*; do grep -q 'SMBus stub' $d/name "
                       "&& echo I2CBUS=${d##*-}; done")
    m = re.search(r"I2CBUS=(\d+)", out)
    assert m, out
    write_boot(g, BASE + (f'\n[panel]\nstatus_led = "{inp}::numlock"\n'
                          f'error_led = "{inp}::capslock"\nlcd_bus = {m.group(1)}\n'))
    restart_supervisor(g)
    # pages rotate every page_interval_s: wait for the state page to come round
    st = status(g, lambda st: st["state"] == "RUNNING" and st["lcd"]
                     and (st["lcd"]["bytes_sent"] or 0) > 0
                     and (st["lcd"]["lines"] or [""])[0].startswith("sipedge OK"), timeout=300,
                     what="RUNNING with the LCD showing 'sipedge OK'")
    assert st["leds"]["status"] == ["on", 0, 0]
    # the traffic page carries the proxy's own numbers (core.panel): the shipped config's
    # registrar answers a count ("reg 0"), not the "-" of a proxy that gave none
    st = status(g, lambda st: (st["lcd"]["lines"] or [""])[0].startswith("reg "), timeout=120,
                what="the LCD's traffic page")
    assert re.fullmatch(r"reg \d+ call \d+ *", st["lcd"]["lines"][0]), st["lcd"]
    assert re.fullmatch(r"trans \d+ *", st["lcd"]["lines"][1]), st["lcd"]
    _rc, events = g.shell("cat /tmp/led-events")
    assert "LED 0 1" in events  # numlock (status) lit through /sys/class/leds brightness

    # the proxy hangs: DEGRADED blinks the error LED with the kernel's timer trigger
    g.shell(f"kill -STOP {st['pid']}", check=True)
    deadline = time.monotonic() + 60 * TIMEOUT_MULTIPLIER
    toggles = 0
    while time.monotonic() < deadline and toggles < 4:
        _rc, events = g.shell("cat /tmp/led-events")
        toggles = events.count("LED 1 1") + events.count("LED 1 0")
        time.sleep(1)
    assert toggles >= 4, events
    _rc, trig = g.shell(f"cat /sys/class/leds/{inp}::capslock/trigger")
    assert "[timer]" in trig
