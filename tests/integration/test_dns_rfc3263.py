"""RFC 3263 next-hop resolution against a real bind9 on 127.0.0.1 (zone files written here) and
SIP responders on 127.0.53.x. sipedge is configured with that server in `[dns] servers`; the
names exist nowhere else, so every success also shows the system resolver was not used."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from dns_harness import Bind9, SipResponder, needs_named, wait_for
from sip_harness import free_port
from tls_certs import TestCA

from sipedge.config import load_text
from sipedge.io.dns import DnsResolver
from sipedge.resolve import Target
from sipedge.sip.proxy import NextHop
from sipedge.sip.uri import parse_uri

pytestmark = needs_named

EDGE_IP = "127.0.53.1"
ZONE = "example.test"


class World:
    bind: Bind9
    tcp_host: SipResponder  # NAPTR -> SRV (_sip._tcp) -> A
    first: SipResponder  # SRV priority 10
    second: SipResponder  # SRV priority 20
    plain: SipResponder  # a plain A record
    dead_port: int  # SRV target where nothing listens
    tls_port: int  # sipedge B's TLS listener on 127.0.53.21, found via _sips._tcp.secure
    port53: bool  # bind also answers on 127.0.0.1:53 (resolv.conf fallback test)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World()
    w.tcp_host = SipResponder("127.0.53.11", free_port("udp", "127.0.53.11")).start()
    w.first = SipResponder("127.0.53.12", free_port("udp", "127.0.53.12")).start()
    w.second = SipResponder("127.0.53.13", free_port("udp", "127.0.53.13")).start()
    w.plain = SipResponder("127.0.53.14", free_port("udp", "127.0.53.14")).start()
    w.dead_port = free_port("udp", "127.0.53.12")
    w.tls_port = free_port("tcp", "127.0.53.21")
    records = f"""
naptr           IN NAPTR 20 10 "s" "SIP+D2U" "" _sip._udp.naptr
naptr           IN NAPTR 10 10 "s" "SIP+D2T" "" _sip._tcp.naptr
_sip._tcp.naptr IN SRV 10 0 {w.tcp_host.port} tcphost
_sip._udp.naptr IN SRV 10 0 {w.tcp_host.port} tcphost
tcphost         IN A 127.0.53.11
_sip._udp.srv   IN SRV 20 0 {w.second.port} second
_sip._udp.srv   IN SRV 10 0 {w.first.port} first
_sip._udp.dead  IN SRV 10 0 {w.dead_port} first
_sip._udp.dead  IN SRV 20 0 {w.second.port} second
first           IN A 127.0.53.12
second          IN A 127.0.53.13
plain    300    IN A 127.0.53.14
_sips._tcp.secure IN SRV 10 0 {w.tls_port} edge-b
edge-b          IN A 127.0.53.21
"""
    port = free_port("udp", "127.0.0.1")
    try:  # 53 only for the resolv.conf test (resolv.conf has no port syntax)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 53))
        extra = (53,)
    except OSError:
        extra = ()
    w.bind = Bind9(tmp_path_factory.mktemp("bind"), "127.0.0.1", port, ZONE, records, extra)
    w.bind.start()
    w.port53 = bool(extra) and "127.0.0.1#53" in w.bind.output()
    yield w
    w.bind.stop()
    for r in (w.tcp_host, w.first, w.second, w.plain):
        r.stop()


def dns_extra(w: World, **over) -> str:
    servers = over.pop("servers", [f"127.0.0.1:{w.bind.port}"])
    lines = ["[dns]", f"servers = {servers!r}".replace("'", '"'), "timeout_s = 0.5",
             "attempts = 1"]
    lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in over.items()]
    return "\n".join(lines) + "\n"


def options(edge_port: int, ruri: str, timeout: float = 3.0) -> bytes | None:
    msg = (f"OPTIONS {ruri} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.53.2:5999;rport;branch=z9hG4bK{time.monotonic_ns()}\r\n"
           f"From: <sip:alice@127.0.53.2>;tag=a1\r\nTo: <{ruri}>\r\n"
           f"Call-ID: dns-{time.monotonic_ns()}@127.0.53.2\r\nCSeq: 1 OPTIONS\r\n"
           f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.53.2", 0))
        s.settimeout(timeout)
        s.sendto(msg, (EDGE_IP, edge_port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def status(reply: bytes | None) -> str:
    return reply.split(b"\r\n", 1)[0].decode() if reply else "no reply"


@pytest.fixture
def edge(sipedge_factory, world):
    port = free_port("udp", EDGE_IP)
    proc = sipedge_factory([("udp", EDGE_IP, port), ("tcp", EDGE_IP, port)],
                           extra=dns_extra(world))
    proc.sip_port = port
    return proc


def new_queries(w: World, since: int) -> list[tuple[str, str]]:
    return w.bind.queries()[since:]


def test_naptr_srv_a_chooses_the_naptr_transport(edge, world):
    before = len(world.bind.queries())
    n = len(world.tcp_host.received)
    assert status(options(edge.sip_port, f"sip:bob@naptr.{ZONE}")) == "SIP/2.0 200 OK"
    got = world.tcp_host.received[n:]
    assert [(r.transport, r.method) for r in got] == [("tcp", "OPTIONS")]
    assert new_queries(world, before) == [
        (f"naptr.{ZONE}", "NAPTR"), (f"_sip._tcp.naptr.{ZONE}", "SRV"), (f"tcphost.{ZONE}", "A")]
    # within the TTLs the next request needs no query at all
    assert status(options(edge.sip_port, f"sip:carol@naptr.{ZONE}")) == "SIP/2.0 200 OK"
    assert len(world.tcp_host.received) == n + 2
    assert len(new_queries(world, before)) == 3


def test_srv_priority_order_reaches_the_first_target(edge, world):
    n1, n2 = len(world.first.received), len(world.second.received)
    before = len(world.bind.queries())
    assert status(options(edge.sip_port, f"sip:bob@srv.{ZONE}")) == "SIP/2.0 200 OK"
    assert [r.transport for r in world.first.received[n1:]] == ["udp"]
    assert world.second.received[n2:] == []
    q = new_queries(world, before)
    assert q[0] == (f"srv.{ZONE}", "NAPTR")  # no NAPTR records: SRV in our order
    assert q[1:] == [(f"_sip._udp.srv.{ZONE}", "SRV"), (f"first.{ZONE}", "A")]


def test_failover_to_the_next_srv_target_when_the_first_does_not_answer(world):
    """The Resolution API the stateful proxy uses: the first SRV target (priority 10) gets
    no answer, `next_target()` gives the priority-20 one, which answers."""
    config = load_text(dns_extra(world))
    resolver = DnsResolver(config.dns, transports=("udp",), families=("ipv4",))
    uri = parse_uri(f"sip:bob@dead.{ZONE}")

    async def run():
        res = resolver.resolution(NextHop(uri, uri.host, 5060, "udp"))
        first = await resolver.next_target(res)
        assert first == Target("127.0.53.12", world.dead_port, "udp", f"dead.{ZONE}")
        assert options_to(first, timeout=0.3) is None  # nothing listens: a timeout
        second = await resolver.next_target(res)
        assert second == Target("127.0.53.13", world.second.port, "udp", f"dead.{ZONE}")
        assert status(options_to(second)) == "SIP/2.0 200 OK"
        assert await resolver.next_target(res) is None
        assert res.exhausted

    asyncio.run(asyncio.wait_for(run(), 10))


def options_to(t: Target, timeout: float = 2.0) -> bytes | None:
    msg = (f"OPTIONS sip:{t.ip}:{t.port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.53.2;branch=z9hG4bK{time.monotonic_ns()}\r\n"
           f"From: <sip:a@127.0.53.2>;tag=1\r\nTo: <sip:{t.ip}>\r\nCall-ID: fo-{time.monotonic_ns()}\r\n"
           f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.53.2", 0))
        s.settimeout(timeout)
        s.sendto(msg, (t.ip, t.port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def test_explicit_port_skips_naptr_and_srv_and_answers_are_cached(edge, world):
    before = len(world.bind.queries())
    n = len(world.plain.received)
    for _ in range(3):
        assert status(options(edge.sip_port, f"sip:bob@plain.{ZONE}:{world.plain.port}")) \
            == "SIP/2.0 200 OK"
    assert len(world.plain.received) - n == 3
    # one A query for three requests (TTL 300 s), and no NAPTR/SRV because of the port
    assert new_queries(world, before) == [(f"plain.{ZONE}", "A")]


def test_numeric_ip_skips_dns(edge, world):
    before = len(world.bind.queries())
    assert status(options(edge.sip_port, f"sip:bob@127.0.53.14:{world.plain.port}")) \
        == "SIP/2.0 200 OK"
    assert new_queries(world, before) == []


def test_unknown_name_and_dead_server_answer_503(sipedge_factory, world):
    port = free_port("udp", EDGE_IP)
    dead = free_port("udp", "127.0.0.1")
    edge = sipedge_factory([("udp", EDGE_IP, port)], name="deaddns",
                           extra=dns_extra(world, servers=[f"127.0.0.1:{dead}"]))
    t0 = time.monotonic()
    assert status(options(port, f"sip:bob@plain.{ZONE}")).startswith("SIP/2.0 503")
    assert time.monotonic() - t0 < 2.5  # two failed queries of 0.5 s, then give up
    # the real server: a name it does not have is also a 503
    port2 = free_port("udp", EDGE_IP)
    sipedge_factory([("udp", EDGE_IP, port2)], name="nxdomain", extra=dns_extra(world))
    assert status(options(port2, f"sip:bob@nothing.{ZONE}")).startswith("SIP/2.0 503")
    del edge


def test_resolv_conf_is_the_fallback_when_no_servers_are_configured(sipedge_factory, world,
                                                                   tmp_path):
    if not world.port53:
        pytest.skip("127.0.0.1:53 is taken; resolv.conf cannot name another port")
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.1\n")
    port = free_port("udp", EDGE_IP)
    sipedge_factory([("udp", EDGE_IP, port)], name="resolvconf",
                    extra=dns_extra(world, servers=[], resolv_conf=str(rc)))
    n = len(world.first.received)
    assert status(options(port, f"sip:bob@srv.{ZONE}")) == "SIP/2.0 200 OK"
    assert wait_for(lambda: len(world.first.received) == n + 1)


def test_sips_domain_via_srv_and_tls_verified_against_the_domain(sipedge_factory, world,
                                                               tmp_path):
    """sips:secure.example.test -> (no NAPTR) _sips._tcp SRV -> edge-b A -> TLS. The server
    certificate names the URI domain, not the SRV target (RFC 5922 4.1), and is verified."""
    ca = TestCA(tmp_path)
    b_cert = ca.issue("secure", f"secure.{ZONE}", dns_names=(f"secure.{ZONE}",))
    a_cert = ca.issue("edge-a", "edge-a", ips=(EDGE_IP,))
    tls = (f'[tls]\ncertificate = "{{c.cert}}"\nprivate_key = "{{c.key}}"\n'
           f'ca_bundle = "{ca.pem_path}"\n')
    sipedge_factory([("tls", "127.0.53.21", world.tls_port), ("udp", "127.0.53.21", world.tls_port)],
                    name="edge-b", extra=dns_extra(world) + tls.format(c=b_cert))
    a_port = free_port("udp", EDGE_IP)
    sipedge_factory([("udp", EDGE_IP, a_port), ("tls", EDGE_IP, a_port)], name="edge-a",
                    extra=dns_extra(world) + tls.format(c=a_cert)
                    + f'[routing]\ndefault_destination = "sips:secure.{ZONE}"\n')
    before = len(world.bind.queries())
    n = len(world.plain.received)
    ruri = f"sip:bob@127.0.53.14:{world.plain.port}"
    assert status(options(a_port, ruri)) == "SIP/2.0 200 OK"
    got = world.plain.received[n:]
    assert len(got) == 1 and f"SIP/2.0/TLS {EDGE_IP}:{a_port}" in got[0].data.decode()
    assert new_queries(world, before) == [
        (f"secure.{ZONE}", "NAPTR"), (f"_sips._tcp.secure.{ZONE}", "SRV"), (f"edge-b.{ZONE}", "A")]
