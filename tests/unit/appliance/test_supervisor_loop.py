"""The supervisor loop with recording fakes: process, probe, watchdog, LEDs, LCD, OTA agent.

Short real timeouts (tenths of a second) keep the loop honest; every wait is bounded and waits
for a condition, never for a fixed time.
"""

import asyncio

import pytest

from sipedge.appliance.fakes import (FakeDisplay, FakeLeds, FakeProbe, FakeProcess,
                                     FakeUpdateAgent, FakeWatchdog)
from sipedge.appliance.policy import State
from sipedge.appliance.ports import HealthReport
from sipedge.appliance.sdconfig import BootConfigManager
from sipedge.appliance.supervisor import Supervisor

BASE = """\
[supervisor]
command = ["proxy-bin"]
respawn_timeout_s = 0.05
respawn_max_delay_s = 0.1
respawn_retry = 2
term_timeout_s = 0.2
start_timeout_s = 2
health_interval_s = 0.1
health_timeout_s = 0.5

[watchdog]
pet_interval_s = 0.1

[panel]
page_interval_s = 30

[update]
mark_good_after_s = {mark_good}
"""


async def until(cond, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class Harness:
    def __init__(self, tmp_path, text=None, mark_good=0, process=None, proven=True, **sup_kw):
        (tmp_path / "boot").mkdir(exist_ok=True)
        self.boot = tmp_path / "boot" / "sipedge.toml"
        if text is None:
            text = BASE.format(mark_good=mark_good)
        if text:
            self.boot.write_text(text)
        if text and proven:  # the file already proved itself on an earlier boot
            (tmp_path / "data" / "config").mkdir(parents=True, exist_ok=True)
            (tmp_path / "data" / "config" / "last-good.toml").write_text(text)
        self.source = BootConfigManager(self.boot, tmp_path / "data")
        self.procs = []
        self.process_kw = process or {}
        self.probe = FakeProbe()
        self.wd = FakeWatchdog()
        self.leds = FakeLeds()
        self.lcd = FakeDisplay(16, 2)
        self.ota = FakeUpdateAgent()
        self.sup = Supervisor(self.source, watchdog=self.wd, leds=self.leds, display=self.lcd,
                              update_agent=self.ota, probe_factory=lambda choice: self.probe,
                              process_factory=self._proc, **sup_kw)

    def _proc(self, argv):
        p = FakeProcess(argv, **self.process_kw)
        self.procs.append(p)
        return p

    def state(self):
        return self.sup.policy.state

    async def start(self):
        self.task = asyncio.ensure_future(self.sup.run())
        await until(lambda: self.procs)
        return self

    async def stop(self):
        self.sup.request("stop")
        return await asyncio.wait_for(self.task, 5)


async def test_healthy_run_pets_watchdog_and_stops_cleanly(tmp_path):
    h = await Harness(tmp_path, mark_good=0.2).start()
    assert h.procs[0].argv == ["proxy-bin", "--config", str(h.boot)]
    await until(lambda: h.state() is State.RUNNING)
    await until(lambda: h.wd.pets >= 3)
    assert h.leds.current == {"status": ("on", 0, 0), "error": ("off", 0, 0)}
    assert h.lcd.screens[-1][0] == "sipedge OK      "
    await until(lambda: h.ota.marked_good == 1)
    st = h.sup.status()
    assert st["state"] == "RUNNING" and st["marked_good"] and st["config"]["source"] == "boot"
    assert await h.stop() == 0
    assert h.procs[0].signals[0] == "TERM"
    assert h.wd.events[0] == "open" and h.wd.events[-1] == "close-disarm"
    assert h.state() is State.STOPPED


async def test_crash_loop_ends_in_failed_and_operator_restart(tmp_path):
    h = Harness(tmp_path)
    orig = h._proc

    def crashing(argv):
        p = orig(argv)
        real_start = p.start

        async def start():
            await real_start()
            p.exit(1)
        p.start = start
        return p

    h.sup.process_factory = crashing
    await h.start()
    await until(lambda: h.state() is State.FAILED)
    assert len(h.procs) == 3  # first start + respawn_retry restarts, then no more
    assert h.leds.current["error"] == ("on", 0, 0)
    assert h.leds.current["status"] == ("off", 0, 0)
    assert h.lcd.screens[-1][0].startswith("sipedge FAILED")
    pets = h.wd.pets
    await until(lambda: h.wd.pets > pets + 1)  # FAILED keeps the box up by default
    assert h.sup.status()["problem"].startswith("proxy exited with status 1 (3 crashes")
    h.sup.rpc_methods()["supervisor.restart"]({})
    await until(lambda: len(h.procs) == 4)
    await h.stop()


async def test_hung_proxy_is_killed_and_restarted(tmp_path):
    h = await Harness(tmp_path, process={"dies_on_term": False}).start()
    await until(lambda: h.state() is State.RUNNING)
    h.probe.report = HealthReport(False, "core.health: timed out")
    await until(lambda: len(h.procs) == 2)
    assert h.procs[0].signals[:2] == ["TERM", "KILL"]
    assert h.sup.status()["crashes"] == 1
    h.probe.report = HealthReport(True, "", 2, 2, 1.0)
    await until(lambda: h.state() is State.RUNNING)
    h.procs[1].dies_on_term = True
    await h.stop()


async def test_config_error_shows_on_panel_and_rpc(tmp_path):
    h = Harness(tmp_path)
    h.source.promote(h.source.select())  # make the current file last-known-good
    h.boot.write_text(h.boot.read_text() + "\n[watchdog]\n")  # duplicate table: syntax error
    h.sup = Supervisor(h.source, watchdog=h.wd, leds=h.leds, display=h.lcd,
                       probe_factory=lambda c: h.probe, process_factory=h._proc)
    await h.start()
    await until(lambda: h.state() is State.RUNNING)
    assert h.procs[0].argv[-1] == str(h.source.lkg_path)
    assert h.lcd.screens[-1] == ["CONFIG ERROR    ", "sipedge.toml:20 "]
    assert h.leds.current["error"] == ("blink", 150, 150)
    errs = h.sup.rpc_methods()["config.errors"]({})
    assert errs["source"] == "last-known-good" and len(errs["errors"]) == 1
    assert h.sup.status()["panel"] == "config_error"
    await h.stop()


async def test_reload_restarts_only_when_config_changed(tmp_path, monkeypatch):
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "route.py").write_text("def request_route(msg):\n    pass\n")
    h = await Harness(tmp_path, BASE.format(mark_good=0)
                      + '\n[routing]\nscript = "route.py"\n').start()
    await until(lambda: h.state() is State.RUNNING)
    routes = []

    async def fake_rpc(path, method, params=None, timeout=2.0):
        routes.append(method)
        return {}

    monkeypatch.setattr("sipedge.appliance.supervisor.rpc_request", fake_rpc)
    h.sup.request("reload")
    await until(lambda: routes == ["route.reload"])
    assert len(h.procs) == 1
    h.boot.write_text(h.boot.read_text().replace("respawn_retry = 2", "respawn_retry = 4"))
    h.sup.request("reload")
    await until(lambda: len(h.procs) == 2)
    assert h.procs[0].signals[0] == "TERM"
    await until(lambda: h.state() is State.RUNNING)
    st = h.sup.status()
    assert st["restarts"] == 1 and st["crashes"] == 0
    assert h.sup.policy.respawn.retry == 4
    await h.stop()


async def test_reload_without_a_routing_script_asks_the_proxy_nothing(tmp_path, monkeypatch):
    h = await Harness(tmp_path).start()
    await until(lambda: h.state() is State.RUNNING)
    calls = []

    async def fake_rpc(path, method, params=None, timeout=2.0):
        calls.append(method)
        return {}

    monkeypatch.setattr("sipedge.appliance.supervisor.rpc_request", fake_rpc)
    h.sup.request("reload")
    await asyncio.sleep(0.3)
    assert calls == [] and len(h.procs) == 1
    await h.stop()


async def test_missing_proxy_binary_counts_as_crash(tmp_path):
    h = await Harness(tmp_path, process={"fail_start": True}).start()
    await until(lambda: h.state() is State.FAILED)
    assert len(h.procs) == 3
    await h.stop()
    assert h.wd.events[-1] == "close-disarm"


async def test_stop_during_backoff(tmp_path):
    h = Harness(tmp_path, text=BASE.format(mark_good=0).replace(
        "respawn_timeout_s = 0.05", "respawn_timeout_s = 60").replace(
        "respawn_max_delay_s = 0.1", "respawn_max_delay_s = 60"))
    await h.start()
    h.procs[0].exit(1)
    await until(lambda: h.state() is State.BACKOFF)
    assert await h.stop() == 0
    assert len(h.procs) == 1


def test_request_before_run_is_an_error(tmp_path):
    h = Harness(tmp_path)
    with pytest.raises(RuntimeError):
        h.sup.request("stop")


async def test_network_applied_at_start_and_on_change(tmp_path):
    from sipedge.appliance.fakes import FakeNetwork

    h = Harness(tmp_path)
    net = FakeNetwork(problems=["interface eth7 does not exist"])
    h.sup.network = net
    await h.start()
    assert len(net.applied) == 1  # before the proxy starts
    await until(lambda: h.state() is State.RUNNING)
    await until(lambda: h.lcd.screens and h.lcd.screens[-1][0].startswith("sipedge DEGRADED"))
    assert h.lcd.screens[-1][1] == "eth0 192.0.2.10 "
    assert h.sup.status()["network_problems"] == ["interface eth7 does not exist"]
    assert h.leds.current["error"] == ("blink", 1000, 1000)
    net.problems = []
    h.boot.write_text(h.boot.read_text() + '\n[network]\nhostname = "edge-1"\n')
    h.sup.request("reload")
    await until(lambda: len(net.applied) == 2)
    assert net.applied[-1].hostname == "edge-1"
    await until(lambda: h.sup.panel_state() == "healthy")
    await h.stop()


async def test_hotplug_media_offer_and_new_nic(tmp_path):
    from sipedge.appliance.fakes import FakeNetwork
    from sipedge.appliance.hotplug import (MediaConfigOffer, MediaInserted, MediaScanner,
                                           NetDeviceAdded)

    class FakeHotplug:
        def __init__(self):
            self.queue = asyncio.Queue()

        async def events(self):
            while True:
                yield await self.queue.get()

    class Scanner(MediaScanner):
        def read_config(self, devnode, fstype):
            return "[watchdog]\ntimeout_s = 0\n"

    h = Harness(tmp_path, text=BASE.format(mark_good=0) + "\n[network]\nmanage = true\n")
    hp = FakeHotplug()
    net = FakeNetwork()
    h.sup.hotplug, h.sup.network = hp, net
    h.sup.media = MediaConfigOffer(h.source.check_text, Scanner())
    await h.start()
    await until(lambda: h.state() is State.RUNNING)
    hp.queue.put_nowait(NetDeviceAdded("eth1"))
    await until(lambda: len(net.applied) == 2)
    hp.queue.put_nowait(MediaInserted("/dev/sda1", "vfat"))
    await until(lambda: h.sup.status()["media_config"] is not None)
    mc = h.sup.status()["media_config"]
    assert mc["device"] == "/dev/sda1" and not mc["valid"]
    assert "USB config INVALID" in h.sup.panel_info()["alarms"]
    await h.stop()


def test_rpc_method_names_are_the_contract(tmp_path):
    h = Harness(tmp_path)
    methods = h.sup.rpc_methods()
    assert set(methods) == {"supervisor.status", "supervisor.reload", "supervisor.restart",
                            "supervisor.stop", "config.errors", "config.apply",
                            "watchdog.status"}
    wd = methods["watchdog.status"]({})
    assert wd["device"] == "/dev/watchdog" and wd["timeout_s"] == 15 and wd["pets"] == 0


async def test_watchdog_fed_while_a_slow_network_setup_runs(tmp_path):
    from sipedge.appliance.fakes import FakeNetwork

    class SlowNetwork(FakeNetwork):
        async def apply(self, params):
            self.applied.append(params)
            await asyncio.sleep(0.35)  # stands in for a slow netlink set-up
            return []

    # [network] manage = true: the set-up runs before the proxy starts
    h = Harness(tmp_path, text=BASE.format(mark_good=0) + "\n[network]\nmanage = true\n")
    h.sup.network = SlowNetwork()
    await h.start()  # returns once the proxy was spawned, i.e. after the network set-up
    assert h.wd.events[0] == "open" and h.wd.pets >= 2  # petted during the set-up
    await h.stop()


async def test_unmanaged_network_is_read_after_the_proxy_started(tmp_path):
    """manage = false changes no address: the proxy starts first, the (slow) netlink read of
    the network state runs behind it (issue 13: boot to the first answer)."""
    from sipedge.appliance.fakes import FakeNetwork

    release = asyncio.Event()

    class SlowNetwork(FakeNetwork):
        async def apply(self, params):
            await release.wait()
            self.applied.append(params)
            return []

    h = Harness(tmp_path)
    h.sup.network = SlowNetwork()
    await h.start()  # the proxy is spawned while the network read still waits
    assert h.procs and h.sup.network.applied == []
    release.set()
    await until(lambda: h.sup.network.applied)
    await h.stop()


async def test_watchdog_opened_late_and_petted_at_once_or_skipped_if_missing(tmp_path):
    from sipedge.appliance.watchdog import HardwareError

    h = await Harness(tmp_path).start()
    assert h.wd.events[:2] == ["open", "pet"]
    await h.stop()

    class Broken(FakeWatchdog):
        def open(self):
            raise HardwareError("/dev/watchdog", "open: No such file or directory")

    (tmp_path / "two").mkdir()
    h2 = Harness(tmp_path / "two")
    h2.sup.watchdog = Broken()
    await h2.start()
    await until(lambda: h2.state() is State.RUNNING)
    assert h2.sup.status()["watchdog"]["armed"] is False
    assert await h2.stop() == 0


# ------------------------------------------------------------------ repeated hangs, boot-loop guard

HANGS = BASE.replace("[watchdog]\n", "[watchdog]\nhang_limit = 2\nmax_resets = {max_resets}\n"
                     "reset_record_clear_s = 0.3\n")
UNHEALTHY = HealthReport(False, "core.health: timed out")


def guard_store(tmp_path, record=None):
    from sipedge.appliance.resetguard import ResetRecordStore

    (tmp_path / "boot_id").write_text("boot-B\n")
    store = ResetRecordStore(tmp_path / "data", tmp_path / "boot_id")
    if record is not None:
        store.save(record)
    return store


async def test_repeated_hangs_record_the_reset_and_stop_petting(tmp_path):
    store = guard_store(tmp_path)
    h = await Harness(tmp_path, text=HANGS.format(mark_good=0, max_resets=3),
                      reset_store=store, wall_clock=lambda: 1764000000.0).start()
    await until(lambda: h.state() is State.RUNNING)
    h.probe.report = UNHEALTHY  # every proxy hangs: killed, restarted, hangs again
    await until(lambda: h.state() is State.FAILED)
    assert len(h.procs) == 2 and h.sup.status()["hangs"] == 2
    await until(lambda: store.load() is not None)  # at the first keep-alive left out
    rec = store.load()
    assert rec is not None and rec.resets == 1 and rec.boot_id == "boot-B"
    assert rec.reason.startswith("proxy hung 2 times in a row") and rec.time == 1764000000.0
    wd = h.sup.rpc_methods()["watchdog.status"]({})
    assert not wd["petting"] and wd["reset_pending"] == rec.reason
    pets = h.wd.pets
    await asyncio.sleep(0.5)  # five pet intervals: none may happen (bounded negative check)
    assert h.wd.pets == pets
    assert h.leds.current["error"] == ("on", 0, 0)
    await h.stop()


async def test_guard_at_max_resets_stays_failed_and_keeps_petting(tmp_path):
    from sipedge.appliance.resetguard import ResetRecord

    earlier = ResetRecord(1, "proxy hung 2 times in a row", "boot-A", 1.0)
    store = guard_store(tmp_path, earlier)
    h = await Harness(tmp_path, text=HANGS.format(mark_good=0, max_resets=1),
                      reset_store=store).start()
    st = h.sup.status()["watchdog"]
    assert st["previous_reset"] == ("previous boot ended in a watchdog reset: "
                                    "proxy hung 2 times in a row")
    assert st["resets_allowed"] is False and st["resets_in_a_row"] == 1
    assert "prev. WDT reset" in h.sup.panel_info()["alarms"]
    assert "WDT resets off" in h.sup.panel_info()["alarms"]
    await until(lambda: h.state() is State.RUNNING)
    h.probe.report = UNHEALTHY
    await until(lambda: h.state() is State.FAILED)
    st = h.sup.status()
    assert st["problem"].endswith("watchdog reset suppressed: max_resets reached")
    assert st["watchdog"]["reset_suppressed"] == st["problem"]
    assert st["watchdog"]["petting"] and st["watchdog"]["reset_pending"] is None
    pets = h.wd.pets
    await until(lambda: h.wd.pets > pets + 2)  # FAILED, but the box stays up
    assert store.load() == earlier  # nothing new recorded
    await h.stop()


async def test_guard_record_cleared_after_a_healthy_period(tmp_path):
    from sipedge.appliance.resetguard import ResetRecord

    store = guard_store(tmp_path, ResetRecord(1, "proxy hung 2 times in a row", "boot-A", 1.0))
    h = await Harness(tmp_path, text=HANGS.format(mark_good=0, max_resets=1),
                      reset_store=store).start()
    assert h.sup.policy.resets_allowed is False
    await until(lambda: h.state() is State.RUNNING)
    await until(lambda: not store.path.exists())  # healthy for reset_record_clear_s
    st = h.sup.status()["watchdog"]
    assert st["resets_allowed"] is True and st["resets_in_a_row"] == 0
    assert st["previous_reset"].startswith("previous boot ended in a watchdog reset")
    assert "prev. WDT reset" not in h.sup.panel_info()["alarms"]
    assert "WDT resets off" not in h.sup.panel_info()["alarms"]
    await h.stop()


async def test_guard_record_of_this_boot_is_not_counted(tmp_path):
    from sipedge.appliance.resetguard import ResetRecord

    store = guard_store(tmp_path, ResetRecord(1, "proxy hung 2 times", "boot-B", 1.0))
    h = Harness(tmp_path, text=HANGS.format(mark_good=0, max_resets=1), reset_store=store)
    st = h.sup.status()["watchdog"]
    assert st["resets_allowed"] is True and st["previous_reset"] is None


def test_guard_record_lives_in_the_data_dir_by_default(tmp_path):
    h = Harness(tmp_path)
    assert h.sup.reset_store.path == tmp_path / "data" / "supervisor" / "watchdog-reset.json"


# ------------------------------------------------------------------ config trial (issue 11)

def trial_text(extra=""):
    return BASE.format(mark_good=0).replace(
        "health_timeout_s = 0.5", "health_timeout_s = 0.5\nconfig_good_after_s = 0.3") + extra


async def test_new_config_becomes_last_known_good_only_after_health(tmp_path):
    h = Harness(tmp_path, text=trial_text(), proven=False)
    lkg = h.source.lkg_path
    await h.start()
    assert not lkg.exists() and h.sup.status()["config"]["proven"] is False
    await until(lambda: h.state() is State.RUNNING)
    assert not lkg.exists()  # healthy, but not for long enough yet
    await until(lambda: lkg.exists())
    assert lkg.read_text() == h.boot.read_text()
    assert h.sup.status()["config"]["proven"] is True
    await h.stop()


async def test_config_whose_proxy_cannot_start_is_rolled_back_and_reported(tmp_path):
    good = trial_text()
    h = Harness(tmp_path, text=good, proven=True)
    orig = h._proc
    broken = trial_text("\n[routing]\nscript = \"/data/missing.py\"\n")

    def proc(argv):
        p = orig(argv)
        if argv[-1] == str(h.boot) and "missing" in h.boot.read_text():
            real_start = p.start

            async def start():  # what the real proxy does with a missing script
                await real_start()
                p.last_error = ("cannot start: routing script: /data/missing.py: cannot read "
                                "([Errno 2] No such file or directory)")
                p.exit(2)
            p.start = start
        return p

    h.sup.process_factory = proc
    await h.start()
    await until(lambda: h.state() is State.RUNNING)
    h.boot.write_text(broken)  # `config set routing.script ...` + `apply`
    h.sup.request("reload")
    await until(lambda: h.sup.choice.source == "last-known-good", timeout=10)
    await until(lambda: h.state() is State.RUNNING)
    st = h.sup.status()
    assert h.source.lkg_path.read_text() == good  # the broken file never became LKG
    assert st["config"]["rolled_back"]["file"] == str(h.boot)
    assert st["problem"].startswith("config rolled back: 2 failed starts on ")
    assert "proxy cannot start: routing script: /data/missing.py: cannot read" in st["problem"]
    errs = h.sup.config_errors()["errors"]
    assert "rolled back to last-known-good" in errs[0] and "missing.py" in errs[0]
    assert h.procs[-1].argv[-1] == str(h.source.lkg_path)
    # apply again without a change: the same broken file is not retried
    n = len(h.procs)
    h.sup.request("reload")
    await asyncio.sleep(0.3)
    assert h.sup.choice.source == "last-known-good" and len(h.procs) == n
    await h.stop()


async def test_status_names_the_cause_and_drops_stale_health(tmp_path):
    h = Harness(tmp_path)
    orig = h._proc

    def proc(argv):
        p = orig(argv)
        real_start = p.start

        async def start():
            await real_start()
            p.last_error = "cannot start: registrar database: unable to open database file"
            p.exit(2)
        p.start = start
        return p

    h.sup.process_factory = proc
    await h.start()
    await until(lambda: h.state() in (State.BACKOFF, State.FAILED))
    st = h.sup.status()
    assert st["problem"].startswith("proxy cannot start: registrar database: unable to open")
    assert st["pid"] is None and st["health"] is None  # no stale "health: ok" next to pid None
    await h.stop()


async def test_no_unhealthy_warning_while_starting(tmp_path, caplog):
    import logging

    h = Harness(tmp_path)
    h.probe.report = HealthReport(False, "workers 0/1 alive")
    with caplog.at_level(logging.INFO, logger="sipedge.appliance.supervisor"):
        await h.start()
        await until(lambda: h.sup.last_report is not None)
        await asyncio.sleep(0.3)  # several probes during the start
        assert h.state() is State.STARTING
        assert not [r for r in caplog.records if "unhealthy" in r.getMessage()]
        h.probe.report = HealthReport(True, "", 1, 1, 1.0)
        await until(lambda: h.state() is State.RUNNING)
        h.probe.report = HealthReport(False, "workers 0/1 alive")
        await until(lambda: [r for r in caplog.records if "unhealthy" in r.getMessage()])
    await h.stop()


async def test_lcd_shows_the_proxy_numbers_and_is_rebuilt_on_apply(tmp_path):
    from sipedge.panel.pages import build_pages

    h = Harness(tmp_path)
    built = []

    def factory(choice):
        d = FakeDisplay(choice.config.panel.lcd_cols, choice.config.panel.lcd_rows)
        built.append(d)
        return d
    h.sup.display_factory = factory
    await h.start()
    await until(lambda: h.state() is State.RUNNING)
    h.sup.info.update(registrations=12, calls=3, transactions=40)
    pages = build_pages(h.sup.panel_info(), 16, 2)
    assert ["reg 12 call 3   ", "trans 40        "] in pages
    st = h.sup.status()
    assert st["numbers"] == {"registrations": 12, "calls": 3, "transactions": 40}
    # [panel] changed + apply: the LCD adapter is rebuilt (lcd_bus works without a restart)
    h.boot.write_text(h.boot.read_text().replace("page_interval_s = 30",
                                                 "page_interval_s = 30\nlcd_cols = 20\n"
                                                 "lcd_rows = 4"))
    h.sup.request("reload")
    await until(lambda: built)
    assert h.sup.display is built[-1] and built[-1].size == (20, 4)
    await h.stop()
