"""`sipedge-supervisor` against a real child process that speaks the proxy's contracts
(`fake_proxy.py`: `core.health` over the control socket, 200 to OPTIONS), on 127.0.0.1."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipedge.io.rpc import rpc_call

FAKE = Path(__file__).with_name("fake_proxy.py")
APP = Path(__file__).resolve().parents[3] / "app"


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path, run, extra="", command=None, **sup):
    settings = dict(respawn_timeout_s=0.1, respawn_max_delay_s=0.2, respawn_retry=2,
                    term_timeout_s=0.5, start_timeout_s=5, health_interval_s=0.1,
                    health_timeout_s=1.0, probe_timeout_s=0.5)
    settings.update(sup)
    lines = ["[core]", f'ctl_socket = "{run}/ctl.sock"', "",
             "[[listen]]", 'proto = "udp"', 'address = "127.0.0.1"',
             f"port = {free_udp_port()}", "",
             "[supervisor]", f"command = {json.dumps(command or [sys.executable, str(FAKE)])}",
             f'rpc_socket = "{run}/supervisor.sock"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n" + extra)


def wait_status(sock, cond, timeout):
    """The supervisor's status once `cond(status)` holds, polled over its RPC socket."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = rpc_call(str(sock), "supervisor.status")
            if cond(last):
                return last
        except Exception:  # socket not there yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"condition not reached; last status {last}")


class Sup:
    def __init__(self, tmp_path, mode="ok", extra="", command=None, flags=("--simulate",),
                 **sup):
        self.run = tmp_path / "run"
        self.run.mkdir()
        (tmp_path / "boot").mkdir()
        self.boot = tmp_path / "boot" / "sipedge.toml"
        self.data = tmp_path / "data"
        self.log = tmp_path / "proxy.log"
        write_config(self.boot, self.run, extra, command, **sup)
        self.env = dict(os.environ, FAKE_PROXY_MODE=mode, FAKE_PROXY_LOG=str(self.log),
                        FAKE_PROXY_HANG_S="0.5", PYTHONPATH=str(APP))
        self.flags = flags
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipedge.appliance.supervisor_main", "--boot-config",
             str(self.boot), "--data-dir", str(self.data), *self.flags],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def status(self):
        return rpc_call(str(self.run / "supervisor.sock"), "supervisor.status")

    def wait_for(self, cond, timeout=15.0):
        return wait_status(self.run / "supervisor.sock", cond, timeout)

    def proxy_starts(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return self.proc.returncode, out


@pytest.fixture
def sup_factory(tmp_path):
    made = []

    def make(mode="ok", extra="", command=None, flags=("--simulate",), **kw):
        s = Sup(tmp_path, mode, extra, command, flags, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_healthy_proxy_then_clean_stop(sup_factory):
    s = sup_factory("ok", config_good_after_s=0.5)
    st = s.wait_for(lambda st: st["state"] == "RUNNING")
    assert st["health"]["ok"] and st["health"]["workers_alive"] == 2
    assert st["config"]["source"] == "boot"
    pid = st["pid"]
    errs = rpc_call(str(s.run / "supervisor.sock"), "config.errors")
    assert errs["errors"] == [] and errs["source"] == "boot"
    # last-known-good once the proxy has been healthy for config_good_after_s
    s.wait_for(lambda st: st["config"]["proven"])
    assert (s.data / "config" / "last-good.toml").read_text() == s.boot.read_text()
    assert f"cwd={s.data} " in s.proxy_starts()[0]  # relative paths land on the data partition
    rc, out = s.stop()
    assert rc == 0, out
    assert not pid_alive(pid)
    assert "proxy exited" in out


def test_first_proxy_is_launched_before_the_loop_and_adopted(sup_factory):
    """At start the supervisor launches the proxy on the boot file before it imports and
    builds the rest (boot time, issue 13); its loop adopts that process as its first spawn."""
    s = sup_factory("ok")
    st = s.wait_for(lambda st: st["state"] == "RUNNING")
    assert len(s.proxy_starts()) == 1
    assert s.proxy_starts()[0].startswith(f"{st['pid']} ")
    rc, out = s.stop()
    assert rc == 0 and f"proxy launched at boot adopted pid={st['pid']}" in out, out


def test_proxy_launched_on_an_invalid_boot_file_is_replaced(sup_factory):
    """The early launch runs before the boot file is validated: when the choice is another
    file (here last-known-good), that proxy is killed and the chosen one started."""
    s = sup_factory("ok", config_good_after_s=0.5)
    s.wait_for(lambda st: st["config"]["proven"])
    s.stop()
    s.boot.write_text(s.boot.read_text() + "\n[watchdog]\ntimeout_s = 9999\n")
    s.start()
    st = s.wait_for(lambda st: st["state"] == "RUNNING"
                    and st["config"]["source"] == "last-known-good")
    starts = s.proxy_starts()[1:]
    assert "last-good.toml" in starts[-1] and st["pid"] == int(starts[-1].split()[0])
    # the early one (killed maybe before its first line) is gone
    assert all(not pid_alive(int(x.split()[0])) for x in starts[:-1] if str(s.boot) in x)
    rc, out = s.stop()
    assert "no longer matches the config: stopped" in out, out


def test_crashing_proxy_gives_up(sup_factory):
    s = sup_factory("crash")
    st = s.wait_for(lambda st: st["state"] == "FAILED")
    assert len(s.proxy_starts()) == 3
    assert st["last_exit"]["returncode"] == 3 and st["panel"] == "failed"
    rc, _ = s.stop()
    assert rc == 0


def test_hung_proxy_is_killed_and_restarted(sup_factory):
    # The fake blocks its loop 0.5 s after start, ignoring SIGTERM's handler: SIGKILL needed.
    s = sup_factory("hang-after")
    first = s.wait_for(lambda st: st["state"] == "RUNNING")["pid"]
    st = s.wait_for(lambda st: st["restarts"] >= 1 and st["pid"] not in (None, first))
    assert st["crashes"] >= 1
    assert st["last_exit"]["returncode"] == -signal.SIGKILL
    assert not pid_alive(first)


def test_proxy_deaf_to_sip_is_restarted(sup_factory):
    s = sup_factory("deaf-sip", start_timeout_s=1.0)
    st = s.wait_for(lambda st: st["restarts"] >= 1)
    assert "OPTIONS" in st["problem"] or st["state"] in ("STARTING", "STOPPING", "BACKOFF")


def test_sighup_with_invalid_file_keeps_running_last_known_good(sup_factory):
    s = sup_factory("ok", config_good_after_s=0.5)
    s.wait_for(lambda st: st["config"]["proven"])
    s.boot.write_text(s.boot.read_text() + "\n[watchdog]\ntimeout_s = 9999\n")
    s.proc.send_signal(signal.SIGHUP)
    st = s.wait_for(lambda st: st["config"]["source"] == "last-known-good")
    errs = rpc_call(str(s.run / "supervisor.sock"), "config.errors")
    assert len(errs["errors"]) == 1 and "watchdog.timeout_s" in errs["errors"][0]
    s.wait_for(lambda st: st["state"] == "RUNNING" and st["panel"] == "config_error")


def test_real_proxy_under_the_supervisor(sup_factory):
    """The real `python -m sipedge`: heartbeat over its ctl socket and OPTIONS to itself."""
    s = sup_factory(command=[sys.executable, "-m", "sipedge"], extra="",
                    start_timeout_s=20, health_timeout_s=5.0, probe_timeout_s=2.0)
    st = s.wait_for(lambda st: st["state"] == "RUNNING", timeout=30)
    assert st["health"]["ok"] and st["health"]["workers_alive"] == st["health"]["workers_expected"]
    # the proxy's numbers reach status (and the LCD's traffic page): core.panel
    st = s.wait_for(lambda st: st["numbers"]["transactions"] is not None, timeout=30)
    assert st["numbers"]["transactions"] == 0 and st["numbers"]["calls"] == 0
    assert st["box_uptime_s"] > 0
    pid = st["pid"]
    rc, out = s.stop()
    assert rc == 0, out
    assert not pid_alive(pid)
    # the proxy's own log lines come through the supervisor (console `logs`, syslog)
    assert re.search(r"INFO sipedge\.proxy: sipedge\[\d+\]: sipedge .* running config=", out), out


def test_killed_supervisor_takes_the_proxy_with_it(sup_factory):
    """SIGKILL leaves no time to clean up: PR_SET_PDEATHSIG stops the proxy anyway."""
    s = sup_factory("ok")
    pid = s.wait_for(lambda st: st["state"] == "RUNNING")["pid"]
    s.proc.kill()
    s.proc.wait(timeout=10)
    end = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert not pid_alive(pid)


def test_cli_hash_password_and_show_choice(tmp_path):
    from sipedge.appliance.auth import verify_password

    env = dict(os.environ, PYTHONPATH=str(APP))
    cmd = [sys.executable, "-m", "sipedge.appliance.supervisor_main"]
    res = subprocess.run(cmd + ["--hash-password"], input="s3cret\n", capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 0 and verify_password("s3cret", res.stdout.strip())
    boot = tmp_path / "sipedge.toml"
    boot.write_text("[core]\nworkers = 0\n")
    res = subprocess.run(cmd + ["--boot-config", str(boot), "--data-dir", str(tmp_path / "d"),
                                "--show-choice"], capture_output=True, text=True, env=env,
                         timeout=60)
    choice = json.loads(res.stdout)
    assert res.returncode == 0 and choice["source"] == "default"
    assert choice["errors"] == [f"{boot}:2: core.workers: must be >= 1"]


def test_real_adapters_start_and_stop_promptly(sup_factory, tmp_path):
    """No --simulate: netlink snapshot/watcher, udev monitor, fake sysfs LEDs; SIGTERM must
    still end the process quickly (no thread left blocked in a netlink or udev read)."""
    led = tmp_path / "sys" / "class" / "leds" / "t:green:status"
    led.mkdir(parents=True)
    (led / "brightness").write_text("0")
    (led / "trigger").write_text("[none] timer")
    s = sup_factory("ok", extra='\n[panel]\nstatus_led = "t:green:status"\n',
                    flags=("--no-watchdog", "--sysfs", str(tmp_path / "sys")))
    st = s.wait_for(lambda st: st["state"] == "RUNNING")
    assert st["leds"]["status"] == ["on", 0, 0]
    assert (led / "brightness").read_text() == "1"
    t0 = time.monotonic()
    rc, out = s.stop()
    assert rc == 0, out
    assert time.monotonic() - t0 < 8, out
