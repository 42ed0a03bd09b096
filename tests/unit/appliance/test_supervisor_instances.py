"""The supervisor with [instances]: one process tree, probe and respawn policy per instance;
the watchdog follows the required ones; a changed section restarts only its instance."""

import asyncio
import re

from sipedge.appliance.fakes import FakeDisplay, FakeLeds, FakeProbe, FakeProcess, FakeWatchdog
from sipedge.appliance.ports import HealthReport
from sipedge.appliance.sdconfig import BootConfigManager
from sipedge.appliance.supervisor import Supervisor

TEXT = """\
[supervisor]
command = ["proxy-bin"]
respawn_timeout_s = 0.05
respawn_max_delay_s = 0.1
respawn_retry = 1
term_timeout_s = 0.2
start_timeout_s = 1
health_interval_s = 0.1
health_timeout_s = 0.5
mark_good_after_s = 0

[watchdog]
pet_interval_s = 0.1
reset_on_failed = true

[panel]
page_interval_s = 0.5

[instances.pcscf]
[[instances.pcscf.listen]]
port = 5060

[instances.icscf]
[[instances.icscf.listen]]
port = 5070

[instances.scscf]
required = false
[[instances.scscf.listen]]
port = 5080
[instances.scscf.proxy]
max_forwards = 70
"""

BAD = HealthReport(False, "no answer", 0, 2, 0.0)


async def until(cond, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class MarkGoodRecorder:
    """The supervisor's UpdateAgent port as a board without RAUC sees it: mark_good only."""

    def __init__(self):
        self.calls = 0

    def mark_good(self):
        self.calls += 1


class Box:
    def __init__(self, tmp_path, text=TEXT, update_agent=None):
        (tmp_path / "boot").mkdir()
        self.boot = tmp_path / "boot" / "sipedge.toml"
        self.boot.write_text(text)
        (tmp_path / "data" / "config").mkdir(parents=True)
        (tmp_path / "data" / "config" / "last-good.toml").write_text(text)
        self.probes = {n: FakeProbe() for n in ("pcscf", "icscf", "scscf")}
        self.procs = []
        self.wd = FakeWatchdog()
        self.leds = FakeLeds()
        self.lcd = FakeDisplay(16, 2)
        self.sup = Supervisor(BootConfigManager(self.boot, tmp_path / "data"), watchdog=self.wd,
                              leds=self.leds, display=self.lcd, update_agent=update_agent,
                              probe_factory=lambda c: self.probes[_name(c.config)],
                              process_factory=self._proc)

    def _proc(self, argv):
        p = FakeProcess(argv)
        self.procs.append(p)
        return p

    def running(self, name):
        return [p for p in self.procs if p.argv[-1] == name and p.running]

    def states(self):
        return {n: i["state"] for n, i in self.sup.status()["instances"].items()}

    async def start(self):
        self.task = asyncio.ensure_future(self.sup.run())
        await until(lambda: all(self.running(n) for n in self.probes))
        await until(lambda: set(self.states().values()) == {"RUNNING"})
        return self


def _name(config):
    from sipedge.appliance.instances import first_instance

    return first_instance(config).instance_name


async def test_each_instance_its_own_process_and_status(tmp_path):
    b = await Box(tmp_path).start()
    argvs = sorted(p.argv for p in b.procs)
    assert argvs == sorted(["proxy-bin", "--config", str(b.boot), "--instance", n]
                           for n in ("pcscf", "icscf", "scscf"))
    st = b.sup.status()["instances"]
    assert list(st) == ["pcscf", "icscf", "scscf"]
    assert st["icscf"]["ctl_socket"] == "/run/sipedge/icscf/ctl.sock"
    assert st["scscf"]["required"] is False and st["icscf"]["listen"] == ["udp:127.0.0.1:5070"]
    await until(lambda: any(s[0].startswith("icscf") for s in b.lcd.screens))  # LCD cycles
    b.sup.request("stop")
    assert await asyncio.wait_for(b.task, 5) == 0
    assert all(p.signals[:1] == ["TERM"] for p in b.procs)


async def test_a_crash_restarts_only_that_instance(tmp_path):
    b = await Box(tmp_path).start()
    pcscf, icscf = b.running("pcscf")[0], b.running("icscf")[0]
    icscf.exit(-9)
    await until(lambda: b.running("icscf") and b.running("icscf")[0] is not icscf)
    assert b.running("pcscf") == [pcscf] and len(b.procs) == 4
    b.sup.request("restart", "scscf")  # console `restart scscf`
    await until(lambda: len(b.procs) == 5)
    assert b.procs[-1].argv[-1] == "scscf" and b.running("pcscf") == [pcscf]
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)


async def test_watchdog_follows_the_required_instances_and_leds_the_worst(tmp_path):
    b = await Box(tmp_path).start()
    b.probes["scscf"].report = BAD  # optional: hangs, killed, FAILED; the box keeps petting
    await until(lambda: b.states()["scscf"] == "FAILED")
    pets = b.wd.pets
    await until(lambda: b.wd.pets >= pets + 3)
    assert b.sup.status()["watchdog"]["petting"]
    assert b.sup.panel_state() == "failed" and b.leds.current["error"][0] != "off"
    b.probes["icscf"].report = BAD  # required: once FAILED by a hang, petting stops
    await until(lambda: b.states()["icscf"] == "FAILED")
    await until(lambda: not b.sup.status()["watchdog"]["petting"])
    pets = b.wd.pets
    await asyncio.sleep(0.3)
    assert b.wd.pets == pets
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)


async def test_changing_one_instance_section_restarts_only_it(tmp_path):
    b = await Box(tmp_path).start()
    before = {n: b.running(n)[0] for n in b.probes}
    # a broken instance: the file is refused (instance and line named), the last good one
    # (the same as running) stays: nothing restarts
    b.boot.write_text(TEXT.replace("port = 5070", "port = 0"))
    b.sup.request("reload")
    await until(lambda: b.sup.config_errors()["errors"])
    line = TEXT.splitlines().index("port = 5070") + 1
    assert b.sup.config_errors()["errors"] == [
        f"{b.boot}:{line}: instances.icscf.listen[0].port: must be >= 1"]
    await asyncio.sleep(0.3)
    assert len(b.procs) == 3 and all(b.running(x) for x in b.probes)
    # a changed instance section restarts that instance only ([panel] is box-wide)
    b.boot.write_text(TEXT.replace("max_forwards = 70", "max_forwards = 20")
                      .replace("page_interval_s = 0.5", "page_interval_s = 1"))
    b.sup.request("reload")
    await until(lambda: b.running("scscf") and b.running("scscf")[0] is not before["scscf"])
    await asyncio.sleep(0.3)
    assert b.running("pcscf") == [before["pcscf"]] and b.running("icscf") == [before["icscf"]]
    assert len(b.procs) == 4
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)


async def test_console_status_and_restart_name_the_instances(tmp_path):
    from sipedge.appliance.console import ConsoleSession, LoginGuard

    b = await Box(tmp_path).start()

    class Backend:
        def status(self):
            return b.sup.status()

        def restart(self, name):
            return b.sup._rpc_restart([name] if name else [])

    sess = ConsoleSession(Backend(), lambda: "", LoginGuard(5, 60))
    out = sess._status()
    for name in ("pcscf", "icscf", "scscf"):
        assert re.search(rf"instance: {name} +RUNNING +pid \d+", out), out
    assert "optional" in out and "udp:127.0.0.1:5080" in out
    assert sess.run("restart icscf") == "restarting icscf"
    assert sess.run("restart nosuch").startswith("error: no instance 'nosuch'")
    await until(lambda: len(b.procs) == 4)
    assert b.procs[-1].argv[-1] == "icscf"
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)


TRIAL = "[supervisor]\nconfig_good_after_s = 0.5\nconfig_trial_s = 30\n"


def _on_trial(text):
    return text.replace("[supervisor]\n", TRIAL)


async def test_a_required_instance_that_fails_on_a_new_file_rolls_it_back(tmp_path):
    """Not only the first instance: a new file whose second (required) instance cannot come
    up is rolled back to last-known-good, the instance named, and that instance restarted on
    the last good config; the file is not promoted while the instance it changed is unproven
    (the first, unchanged one has long been healthy)."""
    b = await Box(tmp_path).start()
    lkg = tmp_path / "data" / "config" / "last-good.toml"
    pcscf = b.running("pcscf")[0]
    new = _on_trial(TEXT).replace("port = 5070", "port = 5071")
    b.boot.write_text(new)
    b.probes["icscf"].report = BAD
    b.sup.request("reload")
    await until(lambda: b.sup.rollback is not None)
    assert b.sup.trial_instances() == ["pcscf", "icscf"]  # back on LKG: nothing changed
    reason = b.sup.rollback["reason"]
    assert reason.startswith("instance icscf: ") and f"on {b.boot}" in reason, reason
    assert lkg.read_text() == TEXT and b.sup.choice.source == "last-known-good"
    b.probes["icscf"].report = HealthReport(True, "ok", 2, 2, 0.0)
    await until(lambda: b.states()["icscf"] == "RUNNING")
    assert b.running("pcscf") == [pcscf]  # the unchanged first instance never restarted
    assert b.sup.status()["instances"]["icscf"]["listen"] == ["udp:127.0.0.1:5070"]
    assert "rolled back" in b.sup.config_source.select().issues[0].reason  # remembered
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)


async def test_the_trial_waits_for_the_required_instances_the_file_changed(tmp_path):
    b = await Box(tmp_path).start()
    lkg = tmp_path / "data" / "config" / "last-good.toml"
    new = _on_trial(TEXT).replace("port = 5070", "port = 5071")
    b.boot.write_text(new)
    b.sup.request("reload")
    await until(lambda: b.sup.trial_started is not None)
    assert b.sup.trial_instances() == ["icscf"]
    await until(lambda: b.states()["icscf"] == "RUNNING")
    started = b.sup.clock()
    await until(lambda: lkg.read_text() == new)
    # promoted only after icscf (restarted) was healthy config_good_after_s
    assert b.sup.clock() - started >= 0.4 and b.sup.rollback is None
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)


async def test_an_optional_instance_failing_does_not_roll_a_new_file_back(tmp_path):
    """required = false: like the watchdog, the config trial ignores it. The file that broke
    it is kept (and promoted on the health of the required ones); the instance shows FAILED."""
    b = await Box(tmp_path).start()
    lkg = tmp_path / "data" / "config" / "last-good.toml"
    new = _on_trial(TEXT).replace("max_forwards = 70", "max_forwards = 20")
    b.boot.write_text(new)
    b.probes["scscf"].report = BAD
    b.sup.request("reload")
    await until(lambda: b.states()["scscf"] == "FAILED")
    assert b.sup.trial_instances() == ["pcscf", "icscf"]  # no required one changed: all
    await until(lambda: lkg.read_text() == new)
    await asyncio.sleep(0.3)
    assert b.sup.rollback is None and b.sup.choice.source == "boot"
    assert b.states()["scscf"] == "FAILED" and b.sup.status()["watchdog"]["petting"]
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)


async def test_a_new_required_instance_that_cannot_start_rolls_the_file_back(tmp_path):
    """An instance new in the file counts as changed: it failing rolls the file back, and the
    rollback (an apply of last-known-good) stops it again."""
    b = await Box(tmp_path).start()
    b.probes["bgcf"] = FakeProbe()
    new = _on_trial(TEXT) + "\n[instances.bgcf]\n[[instances.bgcf.listen]]\nport = 5090\n"
    b.boot.write_text(new)
    b.sup.request("reload")
    await until(lambda: b.running("bgcf"))
    assert b.sup.trial_instances() == ["bgcf"]
    b.running("bgcf")[0].exit(1)  # dies at start, twice
    await until(lambda: len([p for p in b.procs if p.argv[-1] == "bgcf"]) == 2)
    await until(lambda: b.running("bgcf"))
    b.running("bgcf")[0].exit(1)
    await until(lambda: b.sup.rollback is not None)
    # respawn_retry = 1: the second crash is FAILED
    assert b.sup.rollback["reason"] == (f"instance bgcf: proxy FAILED on {b.boot}: "
                                        "proxy exited with status 1")
    await until(lambda: "bgcf" not in b.sup.status()["instances"])
    assert not b.running("bgcf") and all(b.running(n) for n in ("pcscf", "icscf", "scscf"))
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)


MARK_AFTER = TEXT.replace("mark_good_after_s = 0\n", "").replace(
    "[watchdog]", "[update]\nmark_good_after_s = 1.5\n\n[watchdog]")


async def test_the_booted_slot_is_marked_good_only_when_every_required_instance_is(tmp_path):
    """OTA mark-good follows the required instances, as the watchdog does: the first instance
    healthy is not enough; an optional one failing does not hold it back."""
    agent = MarkGoodRecorder()
    b = await Box(tmp_path, MARK_AFTER, update_agent=agent).start()
    b.probes["icscf"].report = BAD  # required, second in the file: FAILED by a hang
    b.probes["scscf"].report = BAD
    await until(lambda: b.states()["icscf"] == "FAILED")
    await asyncio.sleep(2.0)  # pcscf healthy for well over mark_good_after_s
    assert b.states()["pcscf"] == "RUNNING" and agent.calls == 0
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)

    agent = MarkGoodRecorder()
    (tmp_path / "2").mkdir()
    b = await Box(tmp_path / "2", MARK_AFTER, update_agent=agent).start()
    b.probes["scscf"].report = BAD  # only the optional instance fails
    await until(lambda: agent.calls == 1, timeout=10)
    b.sup.request("stop")
    await asyncio.wait_for(b.task, 5)
