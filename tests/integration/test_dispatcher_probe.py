"""Dispatcher health probing against real SIPp UAS instances on 127.0.0.1 (started with the
lab helper, tools/lab/labkit.py): both come up active, one is stopped and goes inactive and
out of selection, it is restarted and comes back after `active_after` answers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from sip_harness import needs_sipp

sys.path.insert(0, str(Path(__file__).parents[2] / "tools" / "lab"))
from labkit import Lab, options_ping  # noqa: E402

from sipedge.modules.dispatcher import Dispatcher, MessageFields, Settings, State, parse_list
from sipedge.modules.dispatcher.aio import Prober

pytestmark = [needs_sipp, pytest.mark.timeout(60)]


async def wait_until(pred, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def test_lab_uas_answers_options(tmp_path):
    with Lab(tmp_path, 2) as lab:
        assert all(u.running for u in lab.uas)
        assert [options_ping(u.ip, u.port) for u in lab.uas] == [200, 200]
        lab.uas[0].stop()
        assert options_ping(lab.uas[0].ip, lab.uas[0].port, 0.3) is None
    assert not any(u.running for u in lab.uas)  # the with block cleaned up


def test_probe_down_and_up_against_sipp(tmp_path):
    with Lab(tmp_path, 2) as lab:
        asyncio.run(_scenario(lab))


async def _scenario(lab: Lab) -> None:
    loop = asyncio.get_running_loop()
    settings = Settings(probe_interval_s=0.2, probe_timeout_s=0.15, inactive_after=2,
                        active_after=2)
    disp = Dispatcher(parse_list(lab.dispatcher_list(), "lab"), settings, loop.time())
    events = []
    prober = Prober(disp, local_ip="127.0.0.1", clock=loop.time, on_event=events.append)
    await prober.start()
    try:
        a, b = (disp.destination(1, u.uri) for u in lab.uas)
        assert await wait_until(lambda: disp.health_of(a).probes_ok >= 2
                                and disp.health_of(b).probes_ok >= 2, 5)
        assert disp.health_of(a).state is State.ACTIVE
        assert disp.health_of(b).state is State.ACTIVE
        assert 0 < disp.health_of(a).last_rtt_s < 0.15
        assert disp.health_of(a).last_status == 200

        lab.uas[1].stop()
        t0 = loop.time()
        assert await wait_until(lambda: disp.health_of(b).state is State.INACTIVE, 5)
        # two lost probes: at most ~2 intervals + timeout after the stop
        assert loop.time() - t0 < 2 * settings.probe_interval_s + settings.probe_timeout_s + 0.5
        for i in range(20):
            sel = disp.select(1, "hash_callid", MessageFields(call_id=f"c{i}"))
            assert sel.candidates == (a,)
        assert disp.health_of(a).state is State.ACTIVE  # the other one never flapped

        lab.uas[1].start()
        assert await wait_until(lambda: disp.health_of(b).state is State.ACTIVE, 5)
        changes = [(e.uri, e.old, e.new) for e in events]
        assert changes == [(str(b.uri), State.ACTIVE, State.INACTIVE),
                           (str(b.uri), State.INACTIVE, State.ACTIVE)]
        row = {r["uri"]: r for r in disp.snapshot(loop.time())}[str(b.uri)]
        assert row["probes_failed"] >= 2 and row["probes_ok"] >= 4
        assert prober.sent >= prober.received > 0
    finally:
        await prober.close()
