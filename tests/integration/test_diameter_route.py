"""The diameter module inside sipedge, end to end: `[core] modules = ["diameter"]`, the
example routing script (app/sipedge/examples/diameter_route.py) with a freeDiameter peer as
the "HSS": a SIP REGISTER triggers a Cx UAR from the route (`ksr.diameter.request`), the relay
hook tags every relayed request, and sipedgectl's diameter.* RPC commands answer."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
from diameter_harness import (
    CX,
    FreeDiameter,
    Route,
    make_node,
    needs_freediameter,
    start_side,
    uar,
    wait_for,
)
from sip_harness import SipEdge, free_port, make_config
from sipcall import request
from sipedge.diameter import dictionary as dd

pytestmark = [needs_freediameter, pytest.mark.timeout(90)]

EXAMPLE = Path(__file__).parents[2] / "app" / "sipedge" / "examples" / "diameter_route.py"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("diameter_route")
    shutil.copy(EXAMPLE, work / "route.py")
    hss_port, dia_port, sip_port = free_port("tcp"), free_port("tcp"), free_port()
    fd = FreeDiameter(work, "hss1.hss.ims.test", "hss.ims.test", [("pcscf.ims.test", None)],
                      work, port=hss_port).start()
    cfg = make_config(str(work / "edge.ctl"), [("udp", "127.0.0.1", sip_port)], workers=2,
                      extra=f"""[routing]
script = "route.py"
[diameter]
identity = "pcscf.ims.test"
realm = "ims.test"
relay = true
auth_applications = ["cx"]
tw_s = 6
[[diameter.listen]]
address = "127.0.0.1"
port = {dia_port}
[[diameter.peer]]
host = "hss1.hss.ims.test"
address = "127.0.0.1"
port = {hss_port}
[[diameter.peer]]
host = "client.cli"
[[diameter.route]]
realm = "hss.ims.test"
peer = "hss1.hss.ims.test"
""")
    cfg = cfg.replace("[core]\n", '[core]\nmodules = ["diameter"]\n', 1)
    edge = SipEdge(work, cfg, "edge")
    edge.sip_port, edge.dia_port, edge.fd = sip_port, dia_port, fd
    try:
        edge.start(workers=2)
        yield edge
    finally:
        edge.stop()
        fd.stop()


def _wait_open(lab):
    import time
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        peers = {p["host"]: p for p in lab.rpc("diameter.peers")["peers"]}
        if peers["hss1.hss.ims.test"]["usable"]:
            return peers
        time.sleep(0.2)
    raise AssertionError(lab.log()[-3000:])


def test_register_sends_cx_uar_from_the_route(lab):
    peers = _wait_open(lab)
    assert peers["hss1.hss.ims.test"]["state"] == "I-Open"
    r = request(lab.sip_port, "alice", "REGISTER")
    # freeDiameter has no Cx application: its answer is 3002 from its own identity
    assert (r.status, r.reason) == (403, "Diameter 3002 from hss1.hss.ims.test"), lab.log()
    import time
    deadline = time.monotonic() + 5
    while not re.search(r"Command Code: 300\n", lab.fd.log()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stats = lab.rpc("diameter.stats")
    assert stats["counters"]["tx UAR"] >= 1 and stats["counters"]["rx UAA"] >= 1
    assert stats["result_codes"]["3002"] >= 1
    # diameter.peers: state, realm, applications, last activity, pending
    row = {p["host"]: p for p in lab.rpc("diameter.peers")["peers"]}["hss1.hss.ims.test"]
    assert row["realm"] == "hss.ims.test" and row["watchdog"] == "OKAY", row
    assert row["applications"] and row["pending"] == 0, row
    assert row["last_activity_s_ago"] is not None and row["last_activity_s_ago"] < 30, row


def test_every_worker_reaches_the_node(lab):
    """Two workers: worker 1's script hands its requests to worker 0's node."""
    _wait_open(lab)
    before = lab.rpc("diameter.stats")["counters"].get("tx UAR", 0)
    for i in range(12):
        r = request(lab.sip_port, f"user{i}", "REGISTER")
        assert (r.status, r.reason) == (403, "Diameter 3002 from hss1.hss.ims.test"), lab.log()
    assert lab.rpc("diameter.stats")["counters"]["tx UAR"] - before == 12
    import time
    time.sleep(1.2)  # the workers publish their counters every 0.5 s
    workers = lab.rpc("stats")["workers"]
    assert all(st.get("rcv_req_REGISTER", 0) > 0 for st in workers.values()), workers


def test_rpc_routes_disable_enable(lab):
    _wait_open(lab)
    routes = lab.rpc("diameter.routes")["routes"]
    assert {"realm": "hss.ims.test", "peer": "hss1.hss.ims.test"}.items() <= routes[0].items()
    out = lab.rpc("diameter.disable", {"host": "hss1.hss.ims.test"})
    assert out["enabled"] is False
    r = request(lab.sip_port, "bob", "REGISTER")
    assert (r.status, r.reason) == (503, "Diameter 3002")  # no usable route: 3002 at once
    lab.rpc("diameter.enable", {"host": "hss1.hss.ims.test"})
    _wait_open(lab)
    r = request(lab.sip_port, "bob", "REGISTER")
    assert r.status == 403


def test_relay_hook_adds_avp_to_relayed_requests(lab):
    _wait_open(lab)

    async def body():
        cli = make_node("client.cli", "cli", [("pcscf.ims.test", lab.dia_port)],
                        routes=[Route("*", "pcscf.ims.test")])
        svc = await start_side(cli)
        try:
            await wait_for(lambda: cli.peers["pcscf.ims.test"].usable, 10, "client open")
            ans = await svc.request(CX, 300, uar("relayed"), dest_realm="hss.ims.test",
                                    timeout=5)
            assert dd.get(ans.avps, "Origin-Host") == "hss1.hss.ims.test"
        finally:
            await svc.stop(timeout=1)

    asyncio.run(body())
    # the HSS saw the relayed request with the Session-Priority AVP the script added
    import time
    deadline = time.monotonic() + 5  # freeDiameter's log reaches the file a bit later
    while not re.search(r"AVP: (650|'Session-Priority'\(650\))", lab.fd.log()):
        assert time.monotonic() < deadline, lab.fd.log()[-3000:]
        time.sleep(0.1)
