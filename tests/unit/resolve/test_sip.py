"""RFC 3263 Resolution: the whole workflow against an in-memory zone, `now` as a number."""

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from sipedge.errors import LocalProtocolError
from sipedge.resolve import Answer, DnsCache, Resolution, Target, literal_target
from sipedge.sip.uri import parse_uri

T = dns.rdatatype


def rd(rdtype: str, text: str):
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)


class FakeDns:
    """A zone: (name, rdtype) -> list of rdata; unknown names answer empty."""

    def __init__(self, records: dict[tuple[str, str], list[str]], ttl: float = 300,
                 dead: tuple[str, ...] = ()) -> None:
        self.zone = {(n, T.from_text(t)): [rd(t, v) for v in vals] for (n, t), vals in records.items()}
        self.ttl = ttl
        self.dead = dead  # names whose queries time out
        self.asked: list[tuple[str, str]] = []

    def answer(self, q):
        self.asked.append((q.name, q.rdtype.name))
        if q.name in self.dead:
            return None
        return Answer(tuple(self.zone.get((q.name, q.rdtype), ())), self.ttl)


def drive(res: Resolution, dns_: FakeDns, now: float = 0.0) -> Target | None:
    while (q := res.next_query(now)) is not None:
        res.feed(dns_.answer(q), now)
    return res.next_target()


def all_targets(res: Resolution, dns_: FakeDns, now: float = 0.0) -> list[tuple]:
    out = []
    while (t := drive(res, dns_, now)) is not None:
        out.append((t.ip, t.port, t.transport))
        assert len(out) < 50
    return out


def resolution(uri: str, cache: DnsCache | None = None, **kw) -> Resolution:
    u = parse_uri(uri)
    return Resolution(u, u.param("maddr") or u.host, cache if cache is not None else DnsCache(), **kw)


ZONE = {
    ("example.test", "NAPTR"): [
        '10 50 "s" "SIP+D2U" "" _sip._udp.example.test.',
        '10 10 "s" "SIP+D2T" "" _sip._tcp.example.test.',
        '20 10 "s" "SIPS+D2T" "" _sips._tcp.example.test.',
        '5 10 "s" "SIP+D2X" "" _sip._x.example.test.',  # unknown service: ignored
    ],
    ("_sip._tcp.example.test", "SRV"): ["10 0 5070 b.example.test.", "5 0 5080 a.example.test."],
    ("_sip._udp.example.test", "SRV"): ["10 0 5090 a.example.test."],
    ("_sips._tcp.example.test", "SRV"): ["10 0 5061 a.example.test."],
    ("a.example.test", "A"): ["127.0.0.11"],
    ("a.example.test", "AAAA"): ["::1"],
    ("b.example.test", "A"): ["127.0.0.12"],
}


def test_naptr_srv_a_order_and_failover():
    z = FakeDns(ZONE)
    res = resolution("sip:alice@example.test", transports=("udp", "tcp", "tls"), families=("ipv4",))
    first = drive(res, z)
    assert first == Target("127.0.0.11", 5080, "tcp", "example.test")
    assert z.asked == [("example.test", "NAPTR"), ("_sip._tcp.example.test", "SRV"),
                       ("a.example.test", "A")]
    # fail-over: next SRV target of the service, then the next NAPTR service, then TLS
    assert all_targets(res, z) == [("127.0.0.12", 5070, "tcp"), ("127.0.0.11", 5090, "udp"),
                                   ("127.0.0.11", 5061, "tls")]
    assert res.exhausted
    assert drive(res, z) is None


def test_naptr_only_transports_we_have():
    z = FakeDns(ZONE)
    res = resolution("sip:example.test", transports=("udp",), families=("ipv4",))
    assert all_targets(res, z) == [("127.0.0.11", 5090, "udp")]


def test_sips_uses_only_tls():
    z = FakeDns(ZONE)
    res = resolution("sips:bob@example.test", families=("ipv4", "ipv6"))
    t = drive(res, z)
    assert (t.ip, t.port, t.transport, t.server_name) == ("127.0.0.11", 5061, "tls", "example.test")
    assert all_targets(res, z) == [("::1", 5061, "tls")]


def test_no_naptr_srv_in_our_preference_order():
    z = FakeDns({k: v for k, v in ZONE.items() if k[1] != "NAPTR"})
    res = resolution("sip:example.test", transports=("udp", "tcp"), families=("ipv4",))
    assert drive(res, z) == Target("127.0.0.11", 5090, "udp", "example.test")
    assert z.asked == [("example.test", "NAPTR"), ("_sip._udp.example.test", "SRV"),
                       ("a.example.test", "A")]


def test_no_naptr_no_srv_falls_back_to_a_with_default_port():
    z = FakeDns({("host.test", "A"): ["127.0.0.5"]})
    res = resolution("sip:host.test", transports=("udp", "tcp", "tls"), families=("ipv4",))
    assert all_targets(res, z) == [("127.0.0.5", 5060, "udp")]
    assert [a[1] for a in z.asked] == ["NAPTR", "SRV", "SRV", "SRV", "A"]
    z2 = FakeDns({("host.test", "A"): ["127.0.0.5"]})
    assert all_targets(resolution("sips:host.test", families=("ipv4",)), z2) == [
        ("127.0.0.5", 5061, "tls")]


def test_explicit_port_skips_naptr_and_srv():
    z = FakeDns(ZONE)
    res = resolution("sip:example.test:5099", families=("ipv4",))
    assert drive(res, z) is None  # example.test itself has no A record
    assert z.asked == [("example.test", "A")]
    z = FakeDns(ZONE)
    res = resolution("sip:a.example.test:5099;transport=tcp", families=("ipv4", "ipv6"))
    assert all_targets(res, z) == [("127.0.0.11", 5099, "tcp"), ("::1", 5099, "tcp")]
    assert [a[1] for a in z.asked] == ["A", "AAAA"]


def test_explicit_transport_goes_straight_to_srv():
    z = FakeDns(ZONE)
    res = resolution("sip:example.test;transport=udp", families=("ipv4",))
    assert all_targets(res, z) == [("127.0.0.11", 5090, "udp")]
    assert z.asked[0] == ("_sip._udp.example.test", "SRV")
    # no SRV for it: the host's A record with the transport's default port
    z = FakeDns({("a.example.test", "A"): ["127.0.0.11"]})
    res = resolution("sip:a.example.test;transport=tls", families=("ipv4",))
    assert all_targets(res, z) == [("127.0.0.11", 5061, "tls")]
    assert z.asked == [("_sips._tcp.a.example.test", "SRV"), ("a.example.test", "A")]


def test_transport_we_do_not_have_or_impossible():
    z = FakeDns(ZONE)
    assert drive(resolution("sip:example.test;transport=sctp"), z) is None
    assert drive(resolution("sips:example.test;transport=udp"), z) is None
    assert drive(resolution("sip:example.test;transport=tls", transports=("udp",)), z) is None
    assert z.asked == []


def test_numeric_ip_needs_no_dns():
    z = FakeDns(ZONE)
    assert all_targets(resolution("sip:127.0.0.9"), z) == [("127.0.0.9", 5060, "udp")]
    assert all_targets(resolution("sips:127.0.0.9"), z) == [("127.0.0.9", 5061, "tls")]
    assert all_targets(resolution("sips:127.0.0.9;transport=tcp"), z) == [("127.0.0.9", 5061, "tls")]
    assert all_targets(resolution("sip:[::1]:5070;transport=tcp"), z) == [("::1", 5070, "tcp")]
    assert all_targets(resolution("sip:x@example.test;maddr=127.0.0.8"), z) == [
        ("127.0.0.8", 5060, "udp")]
    assert z.asked == []
    assert literal_target(parse_uri("sip:example.test"), "example.test") is None


def test_srv_priority_then_weight_with_injected_random():
    zone = {
        ("_sip._udp.w.test", "SRV"): ["20 0 5001 last.w.test.", "10 10 5002 light.w.test.",
                                      "10 90 5003 heavy.w.test.", "10 0 5004 zero.w.test."],
        ("last.w.test", "A"): ["127.0.0.1"], ("light.w.test", "A"): ["127.0.0.2"],
        ("heavy.w.test", "A"): ["127.0.0.3"], ("zero.w.test", "A"): ["127.0.0.4"],
    }
    def order(draws):
        it = iter(draws)
        res = resolution("sip:w.test;transport=udp", families=("ipv4",), rand=lambda: next(it))
        return [t[1] for t in all_targets(res, FakeDns(zone))]
    # draw 0.5 of 101 -> 50: running sums zero=0, light=10, heavy=100 -> heavy
    assert order([0.5, 0.0, 0.0, 0.0]) == [5003, 5004, 5002, 5001]
    # draw 0.05 -> 5 -> light; then 0.0 -> zero weight first; then heavy
    assert order([0.05, 0.0, 0.0, 0.0]) == [5002, 5004, 5003, 5001]


def test_srv_dot_target_means_no_service_and_no_a_fallback():
    z = FakeDns({("_sip._udp.none.test", "SRV"): ["0 0 0 ."], ("none.test", "A"): ["127.0.0.1"]})
    assert drive(resolution("sip:none.test;transport=udp"), z) is None


def test_failed_query_moves_on_and_is_not_cached():
    z = FakeDns(ZONE, dead=("a.example.test",))
    cache = DnsCache()
    res = resolution("sip:example.test", cache, transports=("tcp",), families=("ipv4",))
    assert drive(res, z) == Target("127.0.0.12", 5070, "tcp", "example.test")
    assert res.failures == 1
    assert cache.get("a.example.test", T.A, 1.0) is None


def test_ttl_cache_answers_without_queries_until_expiry():
    cache = DnsCache()
    z = FakeDns(ZONE, ttl=30)
    drive(resolution("sip:example.test", cache, families=("ipv4",)), z, now=100.0)
    assert len(z.asked) == 3
    res = resolution("sip:example.test", cache, families=("ipv4",))
    assert res.next_query(129.0) is None  # all from the cache, synchronously
    assert res.next_target() == Target("127.0.0.11", 5080, "tcp", "example.test")
    assert len(z.asked) == 3
    drive(resolution("sip:example.test", cache, families=("ipv4",)), z, now=130.0)
    assert len(z.asked) == 6


def test_negative_answers_cached_bounded_by_negative_ttl():
    cache = DnsCache(negative_ttl_s=5)
    z = FakeDns({("host.test", "A"): ["127.0.0.5"]}, ttl=300)
    drive(resolution("sip:host.test", cache, families=("ipv4",)), z, now=0.0)
    n = len(z.asked)
    drive(resolution("sip:host.test", cache, families=("ipv4",)), z, now=4.0)
    assert len(z.asked) == n
    drive(resolution("sip:host.test", cache, families=("ipv4",)), z, now=6.0)
    assert len(z.asked) == n + 4  # NAPTR + 3 SRV again; the A answer is still cached


def test_cache_bounded():
    cache = DnsCache(max_entries=2)
    for i in range(5):
        cache.put(f"n{i}.test", T.A, (rd("A", "127.0.0.1"),), 60, now=0)
    assert len(cache) == 2
    assert cache.get("n4.test", T.A, 1) is not None
    assert cache.get("n0.test", T.A, 1) is None


def test_api_misuse_is_local_protocol_error():
    res = resolution("sip:example.test")
    with pytest.raises(LocalProtocolError):
        res.feed(Answer(), 0)
    assert res.next_query(0) is not None
    with pytest.raises(LocalProtocolError):
        res.next_target()


def test_query_budget_bounds_a_hostile_zone():
    zone = {("_sip._udp.big.test", "SRV"): [f"10 0 {5000 + i} h{i}.big.test." for i in range(100)]}
    z = FakeDns(zone)
    res = resolution("sip:big.test;transport=udp", max_queries=10)
    assert drive(res, z) is None
    assert len(z.asked) == 10


def test_unreachable_dns_gives_up_after_max_failures():
    z = FakeDns(ZONE, dead=("example.test", "_sip._udp.example.test", "_sip._tcp.example.test"))
    res = resolution("sip:example.test", max_failures=2)
    assert drive(res, z) is None
    assert len(z.asked) == 2 and res.exhausted
