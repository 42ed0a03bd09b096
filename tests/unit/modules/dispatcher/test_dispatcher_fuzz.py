"""Garbage list files give line-numbered errors, garbage datagrams on the probe socket are
ignored (Hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.modules.dispatcher.probe import parse_probe_reply
from sipedge.modules.dispatcher.table import DispatcherListError, parse_list

LINE = st.lists(st.sampled_from(["1", "-1", "x", "sip:10.0.0.1", "sips:[::1]:5061", "sip:a b",
                                 "8", "99", "weight=5", "weight=x", "duid=a;k=v", "#", ";", ""]),
                max_size=6).map(" ".join)


@settings(max_examples=120, deadline=None)
@given(st.lists(LINE | st.text(max_size=30), max_size=8))
def test_list_garbage(lines):
    text = "\n".join(lines)
    try:
        table = parse_list(text, "f")
    except DispatcherListError as exc:
        assert all(1 <= e.line <= max(1, len(text.splitlines())) for e in exc.errors)
        return
    assert len(table) <= len(lines)


@settings(max_examples=120, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda b: b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch="
                                            + b + b"\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n"
                                            b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n",
                                            st.binary(max_size=30)))
def test_probe_socket_garbage(data):
    r = parse_probe_reply(data, "0")
    assert r is None or r.status >= 100
