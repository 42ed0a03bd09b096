"""List-file parsing and the immutable table."""

from __future__ import annotations

import pytest

from sipedge.modules.dispatcher.table import (DispatcherListError, format_list, make_destination,
                                              parse_list)

LIST = """\
# set uri flags priority attrs
1 sip:10.0.0.21:5060 8 10 weight=50;duid=box-a
1 sip:10.0.0.22:5060 8 20 weight=25;duid=box-b;socket=udp:1.2.3.4:5060

2 sip:pstn.example.net        # trailing comment
2 sips:[2001:db8::1]:5061;transport=tls 4
"""


def test_parse_columns_attrs_and_order():
    t = parse_list(LIST, "ds.list")
    assert sorted(t.sets) == [1, 2]
    s1 = t.get(1).destinations
    # priority: higher first
    assert [str(d.uri) for d in s1] == ["sip:10.0.0.22:5060", "sip:10.0.0.21:5060"]
    b = s1[0]
    assert (b.flags, b.priority, b.weight, b.duid) == (8, 20, 25, "box-b")
    assert b.attr("socket") == "udp:1.2.3.4:5060"
    s2 = t.get(2).destinations
    assert s2[0].flags == 0 and s2[0].weight == 1 and s2[0].priority == 0
    assert s2[1].uri.scheme == "sips" and s2[1].flags == 4
    assert len(t) == 4 and t.source == "ds.list"


def test_errors_are_line_numbered_and_all_reported():
    text = ("1 sip:10.0.0.1\n"
            "x sip:10.0.0.2\n"            # 2: bad set
            "1 http://nope 0\n"           # 3: not SIP
            "1 sip:10.0.0.3 64\n"         # 4: unknown flag bit
            "1 sip:10.0.0.4 0 0 weight=abc\n"  # 5: bad weight
            "1 sip:10.0.0.1\n"            # 6: duplicate of line 1
            "1\n"                         # 7: no uri
            "1 sip:10.0.0.5 0 0 junk\n")  # 8: attribute without '='
    with pytest.raises(DispatcherListError) as ei:
        parse_list(text, "ds.list")
    got = [(e.line, e.key) for e in ei.value.errors]
    assert got == [(2, "set"), (3, "uri"), (4, "flags"), (5, "attrs"), (6, "uri"), (7, "uri"),
                   (8, "attrs")]
    assert str(ei.value.errors[4]).startswith("ds.list:6: uri: duplicate of line 1")


def test_format_list_round_trip():
    t = parse_list(LIST)
    again = parse_list(format_list(t))
    assert [(d.key, d.flags, d.priority, d.weight, d.duid, d.attrs) for d in t.destinations()] == \
        [(d.key, d.flags, d.priority, d.weight, d.duid, d.attrs) for d in again.destinations()]


def test_make_destination_validates():
    with pytest.raises(ValueError, match="^weight:"):
        make_destination(1, "sip:a.example", weight=5000)
    with pytest.raises(ValueError, match="^set:"):
        make_destination(-1, "sip:a.example")
    d = make_destination(1, "sip:a.example", attrs=[("weight", "7")])
    assert d.weight == 7


def test_table_is_immutable():
    t = parse_list(LIST)
    d = t.get(1).destinations[0]
    with pytest.raises(AttributeError):
        d.flags = 0  # type: ignore[misc]
