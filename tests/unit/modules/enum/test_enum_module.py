"""[enum] params, the script API and the RPC command over a fake resolver (no sockets)."""

from __future__ import annotations

import asyncio

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from sipedge.config import ConfigError, load_text
from sipedge.modules.enum.aio import EnumLookup
from sipedge.modules.enum.api import EnumApi
from sipedge.modules.enum.rpc import methods
from sipedge.resolve import Answer

ZONE = {
    "2.1.9.0.0.5.5.5.3.1.6.e164.example.net": Answer((dns.rdata.from_text(
        dns.rdataclass.IN, dns.rdatatype.NAPTR,
        r'10 10 "u" "E2U+sip" "!^\\+(.*)$!sip:\\1@gw.example!" .'),), 60),
    "0.0.1.0.5.5.5.1.e164.example.net": None,  # this one fails (timeout)
}


class FakeAsker:
    def __init__(self):
        self.asked = []

    async def ask(self, q):
        self.asked.append(q.name)
        return ZONE.get(q.name, Answer((), 30))


def test_params_load(section_module):
    section_module("sipedge.modules.enum.params")
    cfg = load_text('[enum]\nsuffix = "e164.example.net."\nnon_digits = "reject"\n'
                    'servers = ["127.0.0.1:5353"]\n')
    assert cfg.enum.suffix == "e164.example.net." and cfg.enum.services == ["e2u+sip", "sip+e2u"]
    with pytest.raises(ConfigError, match="enum.non_digits: must be one of strip, reject"):
        load_text('[enum]\nnon_digits = "keep"\n')


class Msg:
    def __init__(self, ruri_user, from_user=None):
        self.ruri_user, self.from_user = ruri_user, from_user
        self.ruri = None

    def set_ruri(self, uri):
        self.ruri = uri


def test_api_and_rpc():
    asker = FakeAsker()
    lookup = EnumLookup(asker, suffix="e164.example.net.")
    api = EnumApi(lookup)

    async def go():
        m = Msg("+61355500912", from_user="+15550100")
        found = await api.enum_query(m)
        nx = await api.lookup("+4930")
        failed = await api.lookup("+15550100")
        from_enum = await api.is_from_user_enum(Msg("x", from_user="+61355500912"))
        rpc = await methods(lookup)["enum.lookup"]({"number": "+61355500912"})
        rpc_fail = await methods(lookup)["enum.lookup"]({"args": ["+15550100"]})
        return m, found, nx, failed, from_enum, rpc, rpc_fail

    m, found, nx, failed, from_enum, rpc, rpc_fail = asyncio.run(go())
    assert found and m.ruri == "sip:61355500912@gw.example"
    assert api.reply_for(nx) == (404, "Not Found")
    assert api.reply_for(failed) == (503, "ENUM Lookup Failed")
    assert from_enum is True
    assert rpc["result"] == "found" and rpc["uri"] == "sip:61355500912@gw.example"
    assert rpc_fail == {"result": "dns_failure", "name": "0.0.1.0.5.5.5.1.e164.example.net",
                        "number": "+15550100"}
    with pytest.raises(ValueError):
        asyncio.run(methods(lookup)["enum.lookup"]({"number": "abc"}))
