"""ProxyCore fed with what the wire delivers: hostile values may only raise RemoteProtocolError.

The parser is lazy, so some values (Max-Forwards, the top Via branch) are first read by the
proxy rules; they are held to the same rule as the parser. RFC behaviour of the proxy is
tested in tests/unit/proxy.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipedge.errors import RemoteProtocolError
from sipedge.sip.message import Request, parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore, Source
from sip_corpus import all_corpus_bytes, check_reason

UDP = LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)
SRC = Source("udp", "198.51.100.1", 5070, 0)


def _core() -> ProxyCore:
    return ProxyCore([UDP], domains=("example.com",), secret=b"k")


def _request(extra: str = "", branch: str = "z9hG4bKabc") -> Request:
    return parse_message((
        f"OPTIONS sip:bob@example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.1:5070;branch={branch}\r\n"
        f"From: <sip:alice@example.net>;tag=f1\r\nTo: <sip:bob@example.org>\r\n"
        f"Call-ID: c1@x\r\nCSeq: 7 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n").encode())


@pytest.mark.parametrize("value", [
    "x", "-1", "+5", "",
    "7²",  # str.isdigit() says yes, int() raises ValueError
    pytest.param("9" * 5000, id="5000-digits"),  # int() refuses more than 4300 digits
])
def test_bad_max_forwards(value):
    with pytest.raises(RemoteProtocolError) as info:
        _core().check_request(_request(f"Max-Forwards: {value}\r\n"), SRC)
    check_reason(info.value)


@pytest.mark.parametrize("branch, worker", [
    ("z9hG4bK3xabc", 3), ("z9hG4bKabc", None), ("z9hG4bKxabc", None), (None, None),
    ("1234", None),
    ("z9hG4bK²xabc", None),
    pytest.param("z9hG4bK" + "1" * 5000 + "xabc", None, id="5000-digits"),
])
def test_worker_of_branch(branch, worker):
    assert ProxyCore.worker_of_branch(branch) == worker


def _mutate(data: bytes, draw) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        buf[at:at + draw(st.integers(0, 2))] = draw(st.sampled_from(
            [b"", b"\x00", b",", b";", b'"', b"<", b">", b"@", b":", b"0", b"9" * 12, b" ",
             b"\r\n", b"\r\n ", b"[", b"]", b"%", b"\xc2\xb2"]))
    return bytes(buf)


SEEDS = all_corpus_bytes()


@settings(max_examples=200, deadline=timedelta(seconds=1), database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_proxy_rules_on_mutated_corpus(data):
    """Parse, then run the request or response rules: RemoteProtocolError or a result."""
    raw = _mutate(data.draw(st.sampled_from(SEEDS)), data.draw)
    try:
        msg = parse_message(raw)
    except RemoteProtocolError:
        return
    core = _core()
    try:
        if isinstance(msg, Request):
            if core.check_request(msg, SRC) is None and msg.method != "ACK":
                core.next_hop(msg)
                core.finalize_request(msg, SRC, UDP)
        else:
            core.route_response(msg)
    except RemoteProtocolError as exc:
        check_reason(exc)


@pytest.mark.parametrize("out", [
    UDP,
    LocalAddress(1, "tcp", "192.0.2.10", 5080, "proxy.example.com", 5080),
    LocalAddress(2, "udp", "::1", 5060, "::1", 5060),
    LocalAddress(3, "tls", "2001:db8::1", 5061, "[2001:db8::1]", 5061),
])
def test_own_via_remembered_as_parsed(out):
    """finalize_request puts its Via into the parse cache: it must be what parsing gives."""
    from sipedge.sip.headers import via as via_mod

    core = ProxyCore([UDP, out] if out is not UDP else [UDP], secret=b"k")
    msg = _request()
    assert core.check_request(msg, SRC) is None
    core.finalize_request(msg, SRC, out)
    text = msg.get("via")
    seeded = via_mod._cache[text]
    assert via_mod._parse_via_uncached(text) == seeded
