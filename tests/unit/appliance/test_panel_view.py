"""supervisor.status carries `panel_view`: the LCD pages and LED patterns the panel shows,
whether or not a display or LEDs are fitted (the OTA guest test reads the update's pages
through it). An update agent that is installing shows UPGRADING and its percent; one that
came back from a rollback shows the ROLLED BACK alarm."""

from sipedge.appliance.fakes import FakeUpdateAgent
from test_supervisor_loop import Harness, State, until


class Agent(FakeUpdateAgent):
    """FakeUpdateAgent with the panel hooks of ota.OtaManager."""

    def __init__(self):
        super().__init__()
        self.installing, self.percent, self.alarms = False, 0, []

    def progress_line(self):
        return f"Update {self.percent}%" if self.installing else None

    def panel_alarms(self):
        return list(self.alarms)


async def test_panel_view_of_an_install_and_a_rollback(tmp_path):
    h = Harness(tmp_path)
    h.sup.update_agent = agent = Agent()
    await h.start()
    await until(lambda: h.state() is State.RUNNING)
    view = h.sup.status()["panel_view"]
    assert view["pages"][0][0].startswith("sipedge OK")
    assert view["leds"] == {"status": ["on", 0, 0], "error": ["off", 0, 0]}
    agent.installing, agent.percent = True, 42
    view = h.sup.status()["panel_view"]
    assert view["pages"][0][0].startswith("sipedge UPGRAD")
    assert ["ALARM           ", "Update 42%      "] in view["pages"]
    assert view["leds"]["status"] == ["blink", 100, 100]
    agent.installing, agent.alarms = False, ["ROLLED BACK"]
    view = h.sup.status()["panel_view"]
    assert view["pages"][0][0].startswith("sipedge DEGRADED")
    assert ["ALARM           ", "ROLLED BACK     "] in view["pages"]
    assert view["leds"]["error"] == ["blink", 1000, 1000]
    assert await h.stop() == 0
