"""ENUM from a routing script, end to end: bind9 (tests/integration/dns_harness.py) serves an
e164.arpa zone written here, sipedge (`[core] modules = ["enum"]`, `[enum] servers` pointing
at that bind9 only) rewrites the R-URI with `await ksr.enum.enum_query(msg)` and relays the
call to a SIPp UAS; a number without records gets the 404 the script chooses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dns_harness import Bind9, needs_named
from sip_harness import SipEdge, free_port, make_config, needs_sipp
from sipcall import call

sys.path.insert(0, str(Path(__file__).parents[2] / "tools" / "lab"))
from labkit import Lab  # noqa: E402

from sipedge.modules.enum import enum_domain  # noqa: E402

pytestmark = [needs_named, needs_sipp, pytest.mark.timeout(60)]

SCRIPT = '''
async def request_route(msg):
    if msg.in_dialog:
        msg.t_relay()
        return
    result = await ksr.enum.enum_query(msg)
    if not result:
        status, reason = ksr.enum.reply_for(result)
        msg.reply(status, "No ENUM Record" if status == 404 else reason)
        return
    msg.t_relay()
'''


def owner(number: str) -> str:
    return enum_domain(number).removesuffix(".e164.arpa.")


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    work = tmp_path_factory.mktemp("enum-route")
    with Lab(work / "lab", 1) as lab:
        uas = lab.uas[0]
        # the seed's example: +61355500912 -> the SIP server (here the SIPp UAS), the
        # national number kept through a back-reference
        records = (f'{owner("+61355500912")} IN NAPTR 100 10 "u" "E2U+sip" '
                   f'"!^\\\\+61(.*)$!sip:\\\\1@127.0.0.1:{uas.port}!" .\n')
        dns_port = free_port()
        (work / "bind").mkdir(exist_ok=True)
        bind = Bind9(work / "bind", "127.0.0.1", dns_port, "e164.arpa", records)
        bind.start()
        (work / "route.py").write_text(SCRIPT)
        port = free_port()
        cfg = make_config(str(work / "edge.ctl"), [("udp", "127.0.0.1", port)], workers=1,
                          extra='[routing]\nscript = "route.py"\n'
                          f'[enum]\nservers = ["127.0.0.1:{dns_port}"]\ntimeout_s = 1\n')
        cfg = cfg.replace("[core]\n", '[core]\nmodules = ["enum"]\n', 1)
        edge = SipEdge(work, cfg, "edge")
        edge.port = port
        try:
            edge.start(workers=1)
            yield edge, uas, bind
        finally:
            edge.stop()
            bind.stop()


def test_seed_number_routes_to_the_uas(bed):
    edge, uas, bind = bed
    r = call(edge.port, "+61355500912")
    assert r.status == 200 and r.contact_port == uas.port, (r, edge.log())
    assert ("2.1.9.0.0.5.5.5.3.1.6.e164.arpa", "NAPTR") in bind.queries()


def test_nxdomain_gets_the_scripts_404(bed):
    edge, _, _ = bed
    r = call(edge.port, "+61399999999")
    assert (r.status, r.reason) == (404, "No ENUM Record"), edge.log()


def test_rpc_enum_lookup(bed):
    edge, uas, _ = bed
    found = edge.rpc("enum.lookup", {"number": "+61355500912"})
    assert found["result"] == "found"
    assert found["uri"] == f"sip:355500912@127.0.0.1:{uas.port}"
    assert edge.rpc("enum.lookup", ["+61399999999"])["result"] == "not_found"
