"""params (TOML loading), rpc functions, script API and probe bytes of the dispatcher."""

from __future__ import annotations

import pytest

from sipedge.config import ConfigError, load_text
from sipedge.modules.dispatcher import Dispatcher, DispatcherError, State, parse_list
from sipedge.modules.dispatcher.api import DispatcherApi
from sipedge.modules.dispatcher.probe import build_probe, parse_probe_reply
from sipedge.modules.dispatcher.rpc import ReloadGuard, methods
from sipedge.modules.dispatcher.table import DispatcherListError
from sipedge.sip.message import Response, parse_message

TOML = """
[dispatcher]
probe_interval_s = 5
probe_timeout_s = 1.5
probe_ok_codes = ["2xx", "404"]
inactive_after = 2

[[dispatcher.destination]]
set = 1
uri = "sip:10.0.0.1:5060"
weight = 10
duid = "a"

[[dispatcher.destination]]
set = 1
uri = "sip:10.0.0.2:5060"
flags = 8
priority = 5
"""


def test_params_load_and_build(section_module):
    params = section_module("sipedge.modules.dispatcher.params")
    cfg = load_text(TOML)
    p = cfg.dispatcher
    assert p.probe_interval_s == 5.0 and p.inactive_after == 2 and p.active_after == 2
    s = p.settings()
    assert s.ok_codes == ("2xx", "404") and s.probe_timeout_s == 1.5
    table = params.build_config_table(p, parse_list("2 sip:10.0.1.1\n1 sip:10.0.0.3 0 1\n",
                                                    "ds.list"))
    assert [str(d.uri) for d in table.get(1)] == ["sip:10.0.0.2:5060", "sip:10.0.0.3",
                                                  "sip:10.0.0.1:5060"]
    assert table.get(1).destinations[2].weight == 10
    with pytest.raises(ValueError, match="also in"):
        params.build_config_table(p, parse_list("1 sip:10.0.0.1:5060\n"))


def test_params_errors_have_paths_and_lines(section_module):
    section_module("sipedge.modules.dispatcher.params")
    bad = TOML.replace("weight = 10", "weight = 5000").replace("probe_mode", "x") + \
        "\n[[dispatcher.destination]]\nuri = \"sip:x\"\n"
    with pytest.raises(ConfigError) as ei:
        load_text(bad, "t.toml")
    text = str(ei.value)
    assert "dispatcher.destination[0].weight: must be <= 1000" in text
    assert "dispatcher.destination[2].set: required key is missing" in text
    with pytest.raises(ConfigError, match="did you mean 'probe_mode'"):
        load_text("[dispatcher]\nprobe_mod = 'all'\n")


def test_sections_are_registered_by_the_loader():
    from sipedge.config import loader, sections
    from sipedge.config.schema import SECTIONS

    loader._ensure_sections()
    for name in ("dispatcher", "enum", "http_client"):
        assert f"sipedge.modules.{name}.params" in sections.SECTION_MODULES
        assert name in SECTIONS


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rpc_list_set_state_reload():
    d = Dispatcher(parse_list("1 sip:10.0.0.1\n1 sip:10.0.0.2\n", "ds.list"))
    clock = Clock()
    files = {"text": "1 sip:10.0.0.1\n1 sip:10.0.0.9\n"}
    pokes = []
    m = methods(d, lambda: parse_list(files["text"], "ds.list"), clock,
                ReloadGuard(min_interval_s=5), after_change=lambda: pokes.append(1))
    listed = m["dispatcher.list"]({})
    assert [r["uri"] for r in listed["sets"][0]["destinations"]] == ["sip:10.0.0.1", "sip:10.0.0.2"]
    row = listed["sets"][0]["destinations"][0]
    assert {"state", "rtt_ms", "avg_rtt_ms", "probes_sent", "probes_failed", "relays_failed",
            "selected", "active_calls"} <= set(row)
    assert m["dispatcher.set_state"]({"set": 1, "uri": "sip:10.0.0.1", "state": "disabled"}) == \
        {"set": 1, "uri": "sip:10.0.0.1", "state": "disabled"}
    with pytest.raises(DispatcherError):
        m["dispatcher.set_state"]({"set": 1})
    assert m["dispatcher.reload"]({})["added"] == 1
    assert d.health_of(d.destination(1, "sip:10.0.0.1")).state is State.DISABLED  # kept
    with pytest.raises(DispatcherError, match="wait"):
        m["dispatcher.reload"]({})  # rate-limited
    clock.t += 6
    files["text"] = "1 sip:10.0.0.1\n1 bad\n"
    with pytest.raises(DispatcherListError, match="ds.list:2: uri"):
        m["dispatcher.reload"]({})
    assert len(d.table) == 2  # the old table stays
    assert pokes == [1, 1]


class FakeMsg:
    """Just what DispatcherApi uses of a script RequestMsg."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.vars: dict = {}
        self.dst_uri = None

    def set_dst_uri(self, uri: str) -> None:
        self.dst_uri = uri


INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKx\r\n"
          b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
          b"Call-ID: abc@10.1.1.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


def test_script_api_select_failover_mark_inactive():
    d = Dispatcher(parse_list("1 sip:10.0.0.1 0 9\n1 sip:10.0.0.2 0 5\n1 sip:10.0.0.3 0 1\n"))
    api = DispatcherApi(d, clock=Clock())
    msg = FakeMsg(parse_message(INVITE))
    sel = api.select(msg, 1, "priority")
    assert sel and msg.dst_uri == "sip:10.0.0.1"
    # failure route (a new message object sharing the transaction's vars)
    fmsg = FakeMsg(msg.raw)
    fmsg.vars = msg.vars
    assert api.mark_inactive(fmsg)
    assert api.next_destination(fmsg).uri.host == "10.0.0.2"
    assert fmsg.dst_uri == "sip:10.0.0.2"
    assert api.relay_failed(fmsg)
    assert api.next_destination(fmsg).uri.host == "10.0.0.3"
    assert api.next_destination(fmsg) is None
    assert d.health_of(d.destination(1, "sip:10.0.0.1")).state is State.INACTIVE
    # hash_to reads the To URI of the real message
    a = api.select(FakeMsg(parse_message(INVITE)), 1, "hash_to").current
    b = api.select(FakeMsg(parse_message(INVITE.replace(b"Call-ID: abc", b"Call-ID: zzz"))),
                   1, "hash_to").current
    assert a == b


def test_probe_request_and_reply_matching():
    d = Dispatcher(parse_list("1 sip:10.0.0.1:5070;transport=udp;lr\n"))
    dest = d.destination(1, "sip:10.0.0.1:5070;transport=udp;lr")
    data = build_probe(dest, "127.0.0.1", 40000, 17, instance="ab1")
    req = parse_message(data)
    assert req.method == "OPTIONS" and req.uri_text == "sip:10.0.0.1:5070;transport=udp"
    assert req.via.branch == "z9hG4bK-dsab1-17"
    resp = Response(200, "OK", [list(h) for h in req.headers])
    r = parse_probe_reply(resp.to_bytes(), "ab1")
    assert (r.token, r.status) == (17, 200)
    assert parse_probe_reply(resp.to_bytes(), "other") is None  # another prober's reply
    assert parse_probe_reply(data, "ab1") is None  # a request
    assert parse_probe_reply(b"\x00garbage", "ab1") is None


def test_module_specs_are_built_lazily(section_module):
    import importlib

    from sipedge.config.schema import SECTIONS
    from sipedge.modules import ModuleSpec

    for name in ("dispatcher", "enum", "http_client"):
        pkg = importlib.import_module(f"sipedge.modules.{name}")
        section_module(f"sipedge.modules.{name}.params")  # registered until the test ends
        spec = pkg.MODULE
        assert isinstance(spec, ModuleSpec) and spec.name == name
        assert SECTIONS[name][0].__name__ == spec.params.__name__
        assert all(k.startswith(name + ".") for k in spec.rpc)
        importlib.import_module(spec.script_api)
