"""Whatever a zone holds, a Resolution terminates within its budget and only yields targets
that obey the URI (sips -> tls) and our transports."""

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.resolve import Answer, DnsCache, Resolution
from sipedge.sip.uri import parse_uri

from test_sip import rd

NAMES = ["d.test", "a.d.test", "b.d.test", "_sip._udp.d.test", "_sip._tcp.d.test",
         "_sips._tcp.d.test", "x.test"]
SERVICES = ["SIP+D2U", "SIP+D2T", "SIPS+D2T", "SIP+D2S", "E2U+sip", ""]

FQDNS = [n + "." for n in NAMES] + ["."]

naptr = st.builds(lambda o, p, f, s, r: ("NAPTR", f'{o} {p} "{f}" "{s}" "" {r}'),
                  st.integers(0, 3), st.integers(0, 3), st.sampled_from(["s", "S", "a", "u", ""]),
                  st.sampled_from(SERVICES), st.sampled_from(FQDNS))
srv = st.builds(lambda p, w, port, t: ("SRV", f"{p} {w} {port} {t}"),
                st.integers(0, 3), st.integers(0, 65535), st.integers(0, 65535),
                st.sampled_from(FQDNS))
addr = st.one_of(st.builds(lambda i: ("A", f"127.0.0.{i}"), st.integers(1, 254)),
                 st.builds(lambda i: ("AAAA", f"::{i:x}"), st.integers(1, 0xffff)))
zone = st.dictionaries(st.sampled_from(NAMES), st.lists(st.one_of(naptr, srv, addr), max_size=6),
                       max_size=len(NAMES))


@settings(max_examples=150, deadline=None)
@given(zone=zone, uri=st.sampled_from(["sip:d.test", "sips:d.test", "sip:d.test;transport=tcp",
                                       "sip:d.test:5070", "sips:x@d.test;transport=tcp"]),
       transports=st.lists(st.sampled_from(["udp", "tcp", "tls"]), unique=True),
       dead=st.sets(st.sampled_from(NAMES)), draws=st.lists(st.floats(0, 0.999), min_size=1))
def test_any_zone_terminates_and_obeys_the_uri(zone, uri, transports, dead, draws):
    records = {}
    for name, rrs in zone.items():
        for rdtype, text in rrs:
            records.setdefault((name, rdtype), []).append(rd(rdtype, text))
    u = parse_uri(uri)
    it = iter(draws * 1000)
    res = Resolution(u, u.host, DnsCache(), transports=transports, rand=lambda: next(it))
    asked = 0
    targets = []
    for _ in range(200):
        while (q := res.next_query(0.0)) is not None:
            asked += 1
            assert asked <= res.max_queries
            ans = None if q.name in dead else Answer(
                tuple(records.get((q.name, q.rdtype.name), ())), 60)
            res.feed(ans, 0.0)
        t = res.next_target()
        if t is None:
            break
        targets.append(t)
    else:
        raise AssertionError("did not terminate")
    assert res.exhausted
    assert len({(t.ip, t.port, t.transport) for t in targets}) == len(targets)
    for t in targets:
        assert t.transport in transports
        if u.scheme == "sips":
            assert t.transport == "tls"
        assert t.server_name == "d.test"
