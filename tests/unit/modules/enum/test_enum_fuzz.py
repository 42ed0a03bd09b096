"""Hostile NAPTR data never crashes a resolution: it ends with a typed result (Hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.modules.enum import DnsFailure, EnumResolution, Found, Naptr, NotFound
from sipedge.resolve import Answer

TEXT = st.text(st.sampled_from("!/\\^$.*+()[]{}|?0123456789:@siupE2U+-ab"), max_size=30)
RECORD = st.builds(Naptr, st.integers(0, 65535), st.integers(0, 65535),
                   st.sampled_from(["u", "U", "", "s", "a", "p", "x"]),
                   st.sampled_from(["E2U+sip", "SIP+E2U", "", "E2U+email:mailto", "x"]) | TEXT,
                   TEXT | st.just("!^.*$!sip:x@y!"),
                   st.sampled_from([".", "a.example.", "b.example", ""]))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["a.example", "b.example", "1.2.e164.arpa"]),
                       st.lists(RECORD, max_size=5) | st.none(), max_size=3))
def test_any_records_end_in_a_typed_result(zone):
    res = EnumResolution("+21")
    for _ in range(50):
        q = res.next_query()
        if q is None:
            break
        recs = zone.get(q.name, [])
        res.feed(None if recs is None else Answer(tuple(recs), 60))
    assert isinstance(res.result, (Found, NotFound, DnsFailure))
    if isinstance(res.result, Found):
        assert res.result.uri.startswith(("sip:", "sips:"))
