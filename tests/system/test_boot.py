"""The offline image boots in QEMU, the supervisor starts the proxy, and SIP works.

One guest with the default boot partition is shared by the tests of this module. A
sipedge.toml of its own on the FAT partition (another port) is booted by
test_appliance_guest.py::test_boot_config_comes_from_fat_partition, on a guest it shares.
"""
import re
import sys

import pytest

from guest_helpers import (REPO, boot_stages, kernel_start, proxy_rss_kib, record, sip_options,
                           sipedge_memory_kib, wait_sip_ready)

sys.path.insert(0, str(REPO / "tests/unit"))

pytestmark = [pytest.mark.needs_qemu, pytest.mark.needs_root, pytest.mark.timeout(900)]
# a hardware crypto engine for ims_pcscf (test_ims_pcscf_crypto_virtio): QEMU's built-in
# cryptodev backend behind a virtio-crypto PCI device
VIRTIO_CRYPTO = ["-object", "cryptodev-backend-builtin,id=cryptodev0",
                 "-device", "virtio-crypto-pci,cryptodev=cryptodev0"]


@pytest.fixture(scope="module")
def guest(sipedge_image, tmp_path_factory):
    from sipedge_vm import Guest
    from guest_helpers import TIMEOUT_MULTIPLIER

    g = Guest(sipedge_image, tmp_path_factory.mktemp("guest"), name="default",
              timeout_s=600 * TIMEOUT_MULTIPLIER, extra_args=VIRTIO_CRYPTO)
    g.start()
    try:
        g.kernel_at = kernel_start(g)
        g.ready_s = wait_sip_ready(g)
        yield g
    finally:
        g.stop()


def test_boot_to_sip_ready(guest):
    record("boot-to-SIP-ready amd64", f"{guest.ready_s:.1f} s (QEMU start to first 200 OK, TCG)")
    print(f"boot-to-SIP-ready: {guest.ready_s:.1f} s")
    stages = boot_stages(guest, guest.ready_s, guest.kernel_at)
    record("boot stages amd64 (s)", ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    # every stage mark was written: init, rcS, run-supervisor, supervisor, proxy, worker
    assert {"init scripts", "proxy launch", "proxy imports", "listener ready",
            "supervisor started at"} <= set(stages)
    assert sip_options(guest.host_port("udp", 5060), "10.0.2.15:5060", timeout=5) == 200


def test_supervisor_runs_the_proxy(guest):
    guest.wait_shell()
    rss = proxy_rss_kib(guest)
    assert any("sipedge --config /boot/sipedge.toml" in c or "sipedge --config" in c for c in rss), rss
    if any("sipedge-supervisor" in c for c in rss):
        supervised = "supervised"
    else:
        supervised = "fallback (no supervisor)"
    total = sum(rss.values())
    mem = sipedge_memory_kib(guest)
    record("sipedge RSS/PSS sum amd64", f"{sum(r for r, _ in mem.values()) / 1024:.1f} / "
           f"{sum(p for _, p in mem.values()) / 1024:.1f} MiB over {len(mem)} processes "
           "(forked workers share pages: PSS counts them once)")
    record("proxy RSS amd64", f"{total / 1024:.1f} MiB over {len(rss)} processes, {supervised}: "
           + "; ".join(f"{v / 1024:.1f} MiB {c[:60]}" for c, v in rss.items()))
    assert total > 0


def test_partitions_mounted(guest):
    rc, mounts = guest.shell("cat /proc/mounts")
    assert rc == 0
    by_target = {f[1]: f for f in (line.split() for line in mounts.splitlines()) if len(f) > 3}
    assert by_target["/"][3].split(",")[0] == "ro"
    assert by_target["/boot"][2] == "vfat" and by_target["/boot"][3].split(",")[0] == "ro"
    assert by_target["/data"][2] == "ext4" and by_target["/data"][3].split(",")[0] == "rw"
    rc, toml = guest.shell("cat /boot/sipedge.toml")
    assert toml.strip() == (REPO / "board/common/sipedge.toml").read_text().strip()


def test_second_serial_port_is_the_console_with_a_first_way_in(guest):
    """The shipped config puts the management console on the board's second port; with no
    password anywhere the first login chooses one (stored hashed on /data)."""
    con = guest.serial2
    con.write(b"\r")
    con.expect(rb"no password is set yet", timeout=120)  # guest to host
    con.expect(rb"choose the console password: ", timeout=20)
    con.write(b"first-login-pw\r")  # host to guest
    con.expect(rb"repeat it: ", timeout=20)
    con.write(b"first-login-pw\r")
    con.expect(rb"password set[\s\S]*sipedge> ", timeout=90)  # pbkdf2 in Python under TCG
    con.write(b"status\r")
    con.expect(rb"state: +\w+", timeout=30)
    _rc, stored = guest.shell("cat /data/config/console-password; "
                              "stat -c %a /data/config/console-password")
    assert stored.startswith("pbkdf2_sha256$") and "first-login-pw" not in stored
    assert stored.split()[-1] == "600"
    con.write(b"logout\r")
    con.expect(rb"password: ", timeout=20)
    con.write(b"first-login-pw\r")
    con.expect(rb"sipedge> ", timeout=90)
    assert "first-login-pw" not in con.text()  # never echoed


def test_debian_kernel_has_the_options_the_app_needs(sipedge_image):
    """The offline image runs Debian's kernel: it must provide what board/common asks for."""
    from test_firmware_static import REQUIRED_KERNEL  # noqa: PLC0415 - shared list

    config = (sipedge_image.bindir / "kernel.config").read_text()
    opts = dict(re.findall(r"^CONFIG_(\w+)=(\S+)$", config, re.M))
    missing = [o for o in (*REQUIRED_KERNEL, "I6300ESB_WDT") if opts.get(o) not in ("y", "m")]
    assert not missing


def test_panel_leds_named_by_board_data(guest):
    """With no `[panel]` LED names the supervisor takes them from the board data
    (/usr/share/sipedge/board, from board/qemu-x86_64/meta: the emulated PS/2 keyboard's
    LEDs) and lights the status LED once the proxy is healthy."""
    from guest_helpers import status

    _rc, board = guest.shell("grep _LED= /usr/share/sipedge/board", check=True)
    assert 'STATUS_LED="input*::numlock"' in board, board
    st = status(guest, lambda st: st.get("state") == "RUNNING"
                and st.get("leds", {}).get("status"), timeout=300)
    names = st.get("led_names", {})
    assert re.fullmatch(r"input\d+::numlock", names.get("status", "")), st
    assert re.fullmatch(r"input\d+::capslock", names.get("error", "")), st
    _rc, out = guest.shell(f"cat /sys/class/leds/{names['status']}/brightness "
                           f"/sys/class/leds/{names['error']}/brightness", check=True)
    assert out.split()[-2:] == ["1", "0"], out  # healthy: status lit, error dark


def test_nics_keep_kernel_names_under_udev(guest):
    """udev runs (hotplug of media), but does not rename NICs: [network] says eth0."""
    _rc, out = guest.shell("ip -o link show | cut -d: -f2; pidof systemd-udevd udevd")
    names = {w.strip() for w in out.split()}
    assert "eth0" in names, out
    assert not any(n.startswith(("ens", "enp")) for n in names), out


def test_ims_pcscf_crypto_virtio(guest):
    """Issue 16 on a hardware crypto engine: with the virtio-crypto device, the report of
    `ipsec.crypto` (here its CLI, the proxy of this guest does not load ims_pcscf) names
    virtio_crypto's driver among the implementations of aes-cbc, classified as a hardware
    engine, after an ESP SA made the kernel instantiate ESP's algorithms; the self-test
    measures every driver of cbc(aes), the generic software one included."""
    import json

    from guest_helpers import TIMEOUT_MULTIPLIER

    guest.wait_shell()
    # kernel messages would interleave with the output on this console: quiet them
    rc, text = guest.shell(
        "lvl=$(cut -f1 /proc/sys/kernel/printk); dmesg -n 1; "
        "modprobe -a virtio_crypto esp4 xfrm_user authenc echainiv seqiv cbc hmac "
        "sha1_generic md5 des_generic 2>&1; python3 -m sipedge.modules.ims_pcscf crypto "
        "--probe 127.0.0.1 --algs hmac-sha-1-96 --ealgs aes-cbc --selftest 0.3 "
        "> /run/ims-crypto.json; rc=$?; dmesg -n $lvl; "
        "printf 'IMSJSON%s\\n' \"$(tr -d '\\n' < /run/ims-crypto.json)\"; "
        "test $rc = 0", timeout=300 * TIMEOUT_MULTIPLIER)
    assert rc == 0 and "IMSJSON" in text, text[-3000:]
    out = json.loads(text.split("IMSJSON", 1)[1].strip().splitlines()[0])
    assert out["probe"] == {"hmac-sha-1-96/aes-cbc": "ok"}, out
    aes = out["algorithms"]["aes-cbc"]
    virtio = [c for c in aes["candidates"] if c["driver"].startswith("virtio_crypto")]
    assert virtio and virtio[0]["kind"] == "hardware engine", aes
    st = out["selftest"]["cbc(aes)"]
    measured = {st["kernel_choice"].get("driver"): st["kernel_choice"], **st["others"],
                st["generic"]["driver"]: st["generic"]}
    rates = {d: m.get("mb_per_s") for d, m in measured.items()}
    assert rates[virtio[0]["driver"]] and rates["cbc(aes-generic)"], st
    record("ims_pcscf cbc(aes) kernel choice amd64 (virtio-crypto present)",
           f"{aes['driver']} ({aes['kind']}, priority {aes['priority']}); ESP instances: "
           + ", ".join(out["esp_instances"]))
    record("ipsec.selftest cbc(aes) MB/s amd64 TCG", ", ".join(
        f"{d} {r}" for d, r in sorted(rates.items(), key=lambda kv: -(kv[1] or 0))))
    print(json.dumps(out["selftest"]))
