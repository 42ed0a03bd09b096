"""ENUM lookups through a real bind9 (`named -g`, recursion off) serving an e164.arpa zone that
this test writes. The resolver is sipedge's own (io/dns.py) pointed at that server only, so a
result also proves the system resolver was not used."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from dns_harness import Bind9, needs_named
from sip_harness import free_port

from sipedge.config.sections import DnsParams
from sipedge.modules.enum import DnsFailure, Found, NotFound, enum_domain
from sipedge.modules.enum.aio import EnumLookup, make_asker
from sipedge.modules.enum.api import EnumApi

pytestmark = [needs_named, pytest.mark.timeout(60)]

BIND_IP = "127.0.0.1"
SILENT_IP = "127.0.0.1"  # a socket there that reads and never answers


def owner(number: str) -> str:
    return enum_domain(number).removesuffix(".e164.arpa.")


# zone-file text: a backslash in the data is written twice
RECORDS = f"""
{owner("+61355500912")} IN NAPTR 100 10 "u" "E2U+sip" "!^\\\\+61(.*)$!sip:\\\\1@sip.example.net!" .
{owner("+4930123456")}  IN NAPTR 10 100 "u" "E2U+sip" "!^.*$!sip:pref100@b.example!" .
{owner("+4930123456")}  IN NAPTR 10 50 "u" "E2U+sip" "!^.*$!sip:pref50@b.example!" .
{owner("+4930123456")}  IN NAPTR 5 90 "u" "E2U+email:mailto" "!^.*$!mailto:x@b.example!" .
{owner("+4930123456")}  IN NAPTR 20 1 "u" "E2U+sip" "!^.*$!sip:order20@b.example!" .
{owner("+442079460000")} IN NAPTR 10 10 "" "" "" redirect.e164.arpa.
redirect                IN NAPTR 10 10 "u" "E2U+sip" "!^\\\\+(44)(.*)$!sip:0\\\\2@uk\\\\1.example!" .
{owner("+33123456789")} IN NAPTR 10 10 "u" "E2U+email:mailto" "!^.*$!mailto:info@fr.example!" .
{owner("+3612345678")}  IN NAPTR 10 10 "u" "SIP+E2U" "/^\\\\+36(.*)$/sip:\\\\1@hu.example/i" .
"""


@pytest.fixture(scope="module")
def bind(tmp_path_factory):
    port = free_port("udp", BIND_IP)
    server = Bind9(tmp_path_factory.mktemp("enum-bind"), BIND_IP, port, "e164.arpa", RECORDS)
    server.start()
    yield server
    server.stop()


def lookup_for(servers: list[str], timeout_s: float = 1.0) -> EnumLookup:
    params = DnsParams(servers=servers, timeout_s=timeout_s, attempts=1)
    return EnumLookup(make_asker(params))


def run(coro):
    return asyncio.run(coro)


def test_seed_number_with_backreferences(bind):
    lk = lookup_for([f"{BIND_IP}:{bind.port}"])
    result = run(lk.lookup("+61355500912"))
    assert isinstance(result, Found)
    assert result.uri == "sip:355500912@sip.example.net"
    assert result.domain == "2.1.9.0.0.5.5.5.3.1.6.e164.arpa."
    assert ("2.1.9.0.0.5.5.5.3.1.6.e164.arpa", "NAPTR") in bind.queries()
    # the same number written with separators and without '+'
    assert run(lk.lookup("61 3 5550 0912")).uri == result.uri


def test_order_and_preference(bind):
    result = run(lookup_for([f"{BIND_IP}:{bind.port}"]).lookup("+49 30 123456"))
    assert (result.uri, result.order, result.preference) == ("sip:pref50@b.example", 10, 50)


def test_non_terminal_record(bind):
    result = run(lookup_for([f"{BIND_IP}:{bind.port}"]).lookup("+442079460000"))
    assert result.uri == "sip:02079460000@uk44.example"
    assert result.domain == "redirect.e164.arpa."
    names = [n for n, _ in bind.queries()]
    assert names.index(enum_domain("+442079460000").rstrip(".")) < names.index("redirect.e164.arpa")


def test_old_service_form_and_i_flag(bind):
    assert run(lookup_for([f"{BIND_IP}:{bind.port}"]).lookup("+3612345678")).uri == \
        "sip:12345678@hu.example"


def test_nxdomain_and_wrong_service(bind):
    lk = lookup_for([f"{BIND_IP}:{bind.port}"])
    assert run(lk.lookup("+15550100")) == NotFound("no such number", "+15550100")
    assert run(lk.lookup("+33123456789")) == NotFound("no record for the service", "+33123456789")


def test_timeout_is_a_dns_failure_and_other_lookups_keep_flowing(bind):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((SILENT_IP, 0))  # receives queries, never answers
        dead = lookup_for([f"{SILENT_IP}:{silent.getsockname()[1]}"], timeout_s=0.5)
        live = lookup_for([f"{BIND_IP}:{bind.port}"])

        async def both():
            t0 = time.monotonic()
            slow = asyncio.ensure_future(dead.lookup("+61355500912"))
            fast = await live.lookup("+61355500912")
            fast_at = time.monotonic() - t0
            return await slow, fast, fast_at, time.monotonic() - t0

        slow, fast, fast_at, total = run(both())
    assert isinstance(slow, DnsFailure) and not slow
    assert slow.name == "2.1.9.0.0.5.5.5.3.1.6.e164.arpa"
    assert 0.4 < total < 3.0
    assert isinstance(fast, Found) and fast_at < 0.4  # not held up by the dead server


class Msg:
    def __init__(self, ruri_user, from_user=None):
        self.ruri_user = ruri_user
        self.from_user = from_user
        self.ruri = f"sip:{ruri_user}@edge"

    def set_ruri(self, uri):
        self.ruri = uri


def test_script_api_rewrites_ruri(bind):
    api = EnumApi(lookup_for([f"{BIND_IP}:{bind.port}"]))
    msg = Msg("+61355500912", from_user="+15550100")
    result = run(api.enum_query(msg))
    assert result and msg.ruri == "sip:355500912@sip.example.net"
    assert run(api.is_from_user_enum(msg)) is False
    miss = Msg("+15550100")
    r = run(api.enum_query(miss))
    assert not r and miss.ruri == "sip:+15550100@edge" and api.reply_for(r) == (404, "Not Found")
    assert api.reply_for(run(api.lookup("alice"))) == (404, "Not Found")
