"""Hypothesis properties of the SIP parser: round trips, and no crash on hostile bytes.

Garbage from the network may only ever raise RemoteProtocolError (STYLE: Errors); every
example must also finish quickly, hence the per-example deadline.
"""

from __future__ import annotations

import string
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipedge.errors import RemoteProtocolError
from sipedge.sip.grammar import parse_params, split_commas
from sipedge.sip.headers import address as address_mod
from sipedge.sip.headers import via as via_mod
from sipedge.sip.headers.address import parse_address
from sipedge.sip.headers.cseq import parse_cseq
from sipedge.sip.headers.via import parse_via
from sipedge.sip import uri as uri_mod
from sipedge.sip.message import Request, Response, parse_message
from sipedge.sip.uri import parse_uri
from sip_corpus import all_corpus_bytes, check_reason, parse_strict

FAST = settings(max_examples=100, deadline=timedelta(milliseconds=1000), database=None,
                suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(FAST, max_examples=250)

# ------------------------------------------------------------------ strategies: values

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
token = st.text(TOKEN_CHARS, min_size=1, max_size=10)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
host = st.one_of(hostname, ipv4, ipv6)
port = st.none() | st.integers(1, 65535)
param_value = st.none() | token | st.text(TOKEN_CHARS + " ,;:<>@", max_size=8).map(
    lambda s: '"' + s + '"')
params = st.lists(st.tuples(token, param_value), max_size=4).map(tuple)
uri_params = st.lists(st.tuples(token, st.none() | token), max_size=4).map(tuple)
user = st.text(string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/", min_size=1,
               max_size=12) | st.from_regex(r"%[0-9A-F]{2}[a-z]{1,4}", fullmatch=True)
uri_headers = st.lists(st.tuples(token, token), max_size=3).map(
    lambda hs: "&".join(f"{k}={v}" for k, v in hs))


@st.composite
def sip_uris(draw) -> uri_mod.URI:
    u = draw(st.none() | user)
    return uri_mod.URI(draw(st.sampled_from(["sip", "sips"])), u,
                       draw(st.none() | token) if u else None, draw(host), draw(port),
                       draw(uri_params), draw(uri_headers))


tel_uris = st.builds(lambda n, p: uri_mod.URI("tel", user=n, params=p),
                     st.from_regex(r"\+?[0-9][0-9().-]{0,14}", fullmatch=True), uri_params)
uris = st.one_of(sip_uris(), tel_uris)


@st.composite
def vias(draw) -> via_mod.Via:
    ps = list(draw(params))
    ps.insert(0, ("branch", "z9hG4bK" + draw(token)))
    rport = draw(st.sampled_from([None, "", "1", "5060", "65535"]))
    if rport is not None:
        ps.append(("rport", rport or None))
    ps = [(k, v) for i, (k, v) in enumerate(ps)
          if k.lower() != "rport" or i == len(ps) - 1 and rport is not None]
    return via_mod.Via(draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])), draw(host),
                       draw(port), tuple(ps))


display = st.none() | token | st.text(string.printable.strip() + " é,<>;", max_size=12).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')


@st.composite
def addresses(draw) -> address_mod.Address:
    return address_mod.Address(draw(uris), draw(display), draw(params))


# free text for header values and reason phrases: anything printable, no line breaks
text = st.text(st.characters(blacklist_categories=("Cc", "Cs")) | st.just("\t"),
               max_size=30).map(str.strip)


@st.composite
def messages(draw) -> Request | Response:
    via_list = draw(st.lists(vias(), min_size=1, max_size=3))
    cseq_method = draw(token)
    headers: list[list[str]] = []
    one_line = draw(st.booleans())
    if one_line:
        headers.append(["via", "Via", ", ".join(map(str, via_list))])
    else:
        headers += [["via", draw(st.sampled_from(["Via", "v", "VIA"])), str(v)] for v in via_list]
    headers += [
        ["from", draw(st.sampled_from(["From", "f"])), str(draw(addresses()))],
        ["to", draw(st.sampled_from(["To", "t"])), str(draw(addresses()))],
        ["call-id", draw(st.sampled_from(["Call-ID", "i"])), draw(token)],
        ["cseq", "CSeq", f"{draw(st.integers(0, 2**31 - 1))} {cseq_method}"],
    ]
    for _ in range(draw(st.integers(0, 6))):
        name = "X-" + draw(token)
        headers.append([name.lower(), name, draw(text)])
    headers = draw(st.permutations(headers))
    body = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        return Request(cseq_method, str(draw(uris)), headers, body)
    return Response(draw(st.integers(100, 699)), draw(text), headers, body)


# ------------------------------------------------------------------ (1) round trips


@FAST
@given(uris)
def test_uri_round_trip(uri):
    assert parse_uri(str(uri)) == uri


@FAST
@given(vias())
def test_via_round_trip(via):
    assert parse_via(str(via)) == via


@FAST
@given(addresses())
def test_address_round_trip(addr):
    assert parse_address(str(addr)) == addr


@FAST
@given(messages())
def test_message_round_trip(msg):
    data = msg.to_bytes()
    for datagram in (True, False):
        parsed = parse_strict(data, datagram=datagram)
        assert type(parsed) is type(msg)
        if isinstance(msg, Request):
            assert (parsed.method, parsed.uri_text, parsed.uri) == (msg.method, msg.uri_text,
                                                                    msg.uri)
        else:
            assert (parsed.status, parsed.reason) == (msg.status, msg.reason)
        # to_bytes() always writes Content-Length (last, from the body)
        assert parsed.headers[:-1] == msg.headers
        assert parsed.headers[-1] == ["content-length", "Content-Length", str(len(msg.body))]
        assert parsed.body == msg.body
        assert parsed.vias() == msg.vias() and parsed.cseq == msg.cseq
        assert (parsed.from_, parsed.to) == (msg.from_, msg.to)
        assert parsed.to_bytes() == data


def _fixed_point(msg: Request | Response) -> None:
    """serialise(parse(x)) must be a fixed point after one round."""
    out = msg.to_bytes()
    again = parse_message(out, datagram=False)
    assert again.to_bytes() == out


# ------------------------------------------------------------------ (2) no crash on bytes


def _survives(data: bytes) -> None:
    try:
        msg = parse_strict(data)
    except RemoteProtocolError as exc:
        check_reason(exc)
        return
    _fixed_point(msg)


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data):
    _survives(data)


SEEDS = all_corpus_bytes()
# bytes that matter to the grammar; '²' is a digit to str.isdigit() but not to int()
_INSERTS = [b"\r\n", b"\n", b"\r\n ", b"\r\n\r\n", b"\r", b",", b'"', b"<", b"9" * 12,
            b"\xc2\xb2"]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "repeat"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.sampled_from(b'\x00\r\n \t:;,"<>@[]\\%\xff\xc3'))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(_INSERTS))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            end = min(len(data), at + draw(st.integers(1, 40)))
            data[at:at] = data[at:end] * draw(st.integers(1, 3))
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_corpus(data):
    _survives(data)


@FAST
@given(mutated())
def test_mutated_corpus_in_stream_mode(data):
    try:
        msg = parse_strict(data, datagram=False)
    except RemoteProtocolError as exc:
        check_reason(exc)
        return
    _fixed_point(msg)


# ------------------------------------------------------------------ (3) value parsers

VALUE_PARSERS = {"uri": parse_uri, "via": parse_via, "split_commas": split_commas,
                 "address": parse_address, "cseq": parse_cseq, "params": parse_params}
SAMPLES = {
    "uri": ["sip:alice:pw@[2001:db8::1]:5070;transport=tcp;lr?h=1&j=2", "tel:+1-555-0100;x=y",
            "sips:bob@example.com", "sip:%61?b@h.example.com;maddr=192.0.2.1"],
    "via": ["SIP/2.0/UDP h.example.com:5060;branch=z9hG4bK1;rport;received=192.0.2.1",
            "SIP/2.0/UDP [1.2.3.4]:5060", "SIP/2.0/UDP [::]",
            "SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK2;x=\"a;b\""],
    "split_commas": ['"a, b" <sip:x@example.com>;q=1, <sip:y@example.com;p="1,2">, c'],
    "address": ['"A \\"B\\" <C>" <sip:a@example.com;lr>;tag=1', "sip:b@example.com;tag=2", "*"],
    "cseq": ["4711 INVITE"],
    "params": [';a=1;b;c="x;y"'],
}
HOSTILE_CHARS = list("sip:@[]<>\";,=?&%. /\\\t\n\x00²١ab1")
hostile_text = st.text(st.sampled_from(HOSTILE_CHARS) | st.characters(), max_size=80)


@st.composite
def mutated_text(draw, samples: list[str]) -> str:
    s = list(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(s)))
        piece = draw(st.text(st.sampled_from(HOSTILE_CHARS) | st.characters(), max_size=5))
        s[at:at + draw(st.integers(0, 3))] = list(piece)
    return "".join(s)


@pytest.mark.parametrize("name", sorted(VALUE_PARSERS))
def test_value_parsers_only_raise_remote_errors(name):
    parse = VALUE_PARSERS[name]

    @FAST
    @given(hostile_text | mutated_text(SAMPLES[name]))
    def run(s):
        try:
            parse(s)
        except RemoteProtocolError as exc:
            check_reason(exc)

    run()


# ------------------------------------------------------------------ (4) fast path = general path

_PAIRS = [(getattr(uri_mod, "_FAST", None), getattr(uri_mod, "_parse_uri", None), parse_uri,
           "uri"),
          (getattr(via_mod, "_FAST", None), getattr(via_mod, "_parse_via", None), parse_via,
           "via")]


@pytest.mark.parametrize("fast, general, parse, kind", _PAIRS, ids=["uri", "via"])
def test_fast_path_agrees_with_general_parser(fast, general, parse, kind):
    """The regex fast path must accept and build exactly what the general parser does
    (where the fast path does not match, both calls are the general parser anyway)."""
    if fast is None or general is None:
        pytest.skip("no separate fast path")
    values = (uris.map(str) if kind == "uri" else vias().map(str))

    @FUZZ
    @given(values | mutated_text(SAMPLES[kind]) | hostile_text)
    def run(s):
        outcomes = []
        for f in (parse, general):
            try:
                outcomes.append(f(s))
            except RemoteProtocolError as exc:
                outcomes.append(("error", type(exc)))
        assert outcomes[0] == outcomes[1], s

    run()
