"""RFC 6733 codec: header, AVPs, grouped/vendor AVPs, framing, malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipedge.diameter import dictionary as dd
from sipedge.diameter.codec import (
    AVP_M,
    AVP_V,
    FLAG_P,
    FLAG_R,
    INVALID_AVP_LENGTH,
    INVALID_MESSAGE_LENGTH,
    Avp,
    DiameterDecodeError,
    Framer,
    FramingError,
    Message,
    append_avps,
    decode,
    set_hop_by_hop,
)
from sipedge.errors import RemoteProtocolError


def _uar() -> Message:
    return Message(300, FLAG_R | FLAG_P, 16777216, 0x11223344, 0x55667788, [
        dd.avp("Session-Id", "pcscf.test;1;2"),
        dd.avp("Vendor-Specific-Application-Id", [("Vendor-Id", 10415),
                                                  ("Auth-Application-Id", 16777216)]),
        dd.avp("Auth-Session-State", 1),
        dd.avp("Origin-Host", "pcscf.test"), dd.avp("Origin-Realm", "test"),
        dd.avp("Destination-Realm", "hss.test"),
        dd.avp("User-Name", "alice@test"),
        dd.avp("Public-Identity", "sip:alice@test"),
        dd.avp("Visited-Network-Identifier", b"test"),
        dd.avp("User-Authorization-Type", 0),
    ])


def test_header_layout():
    raw = _uar().encode()
    assert raw[0] == 1 and int.from_bytes(raw[1:4], "big") == len(raw)
    assert raw[4] == FLAG_R | FLAG_P and int.from_bytes(raw[5:8], "big") == 300
    assert struct.unpack("!III", raw[8:20]) == (16777216, 0x11223344, 0x55667788)


def test_round_trip_and_values():
    raw = _uar().encode()
    m = decode(raw)
    assert m.encode() == raw
    assert dd.get(m.avps, "Public-Identity") == "sip:alice@test"
    pi = m.find(601, 10415)
    assert pi.flags & AVP_V and pi.vendor == 10415
    vsai = dd.get(m.avps, "Vendor-Specific-Application-Id")
    assert dd.get(vsai, "Auth-Application-Id") == 16777216


@pytest.mark.parametrize("name,value", [
    ("Result-Code", 2001), ("Disconnect-Cause", 2), ("Accounting-Sub-Session-Id", 2**63 + 5),
    ("Host-IP-Address", "127.0.0.1"), ("Host-IP-Address", "::1"),
    ("Event-Timestamp", 1800000000), ("Origin-Host", "a.example"),
    ("Flow-Description", "permit out 17 from 10.0.0.1 to any"), ("Class", b"\x00\xff"),
    ("Redirect-Host", "aaa://host.example:3868"), ("Session-Id", "ä;1"),
])
def test_base_types_round_trip(name, value):
    a = dd.avp(name, value)
    (b,) = decode(Message(1, 0, 0, 0, 0, [a]).encode()).avps
    assert dd.value_of(b) == value


def test_float_and_signed():
    assert dd.decode_value(dd.F64, dd.encode_value(dd.F64, 1.5)) == 1.5
    assert dd.decode_value(dd.F32, dd.encode_value(dd.F32, 0.25)) == 0.25
    assert dd.decode_value(dd.I64, dd.encode_value(dd.I64, -7)) == -7
    assert dd.decode_value(dd.I32, dd.encode_value(dd.I32, -7)) == -7


def test_unknown_avps_kept_byte_identical():
    weird = struct.pack("!IBBHI", 99999, AVP_V | AVP_M, 0, 12 + 5, 424242) + b"abcde\0\0\0"
    plain = struct.pack("!IB", 77777, 0) + (8 + 3).to_bytes(3, "big") + b"xyz\0"
    body = dd.avp("Origin-Host", "x").encode() + weird + plain
    raw = struct.pack("!B", 1) + (20 + len(body)).to_bytes(3, "big") + bytes([FLAG_R]) + \
        (300).to_bytes(3, "big") + struct.pack("!III", 1, 2, 3) + body
    m = decode(raw)
    assert m.encode() == raw
    assert dd.value_of(m.avps[1]) == b"abcde"
    # the relay helpers keep everything but what they change
    out = append_avps(set_hop_by_hop(raw, 0xABCDEF01, set_t=True), [dd.avp("Route-Record", "r")])
    m2 = decode(out)
    assert m2.hop_by_hop == 0xABCDEF01 and m2.end_to_end == 3 and m2.flags & 0x10
    assert out[20:len(raw)] == raw[20:]


def test_grouped_nested():
    g = dd.avp("Media-Component-Description", [
        ("Media-Component-Number", 1),
        dd.avp("Media-Sub-Component", [("Flow-Number", 1),
                                       ("Flow-Description", "permit in ip from any to any")]),
    ])
    (back,) = decode(Message(265, FLAG_R, 16777236, 1, 1, [g]).encode()).avps
    sub = dd.get(back.group(), "Media-Sub-Component")
    assert dd.get(sub, "Flow-Number") == 1


@pytest.mark.parametrize("raw,code", [
    (b"\x01\x00\x00\x10" + b"\0" * 12, INVALID_MESSAGE_LENGTH),  # shorter than 20
    (b"\x01\x00\x00\x18" + b"\x80" + b"\0" * 15, INVALID_MESSAGE_LENGTH),  # length mismatch
])
def test_bad_message_length(raw, code):
    with pytest.raises(DiameterDecodeError) as exc:
        decode(raw)
    assert exc.value.result_code == code


def test_bad_avp_length_gives_5014_with_failed_avp():
    m = Message(300, FLAG_R, 0, 1, 2, [dd.avp("Origin-Host", "abc")])
    raw = bytearray(m.encode())
    raw[25:28] = (200).to_bytes(3, "big")  # AVP length beyond the message
    with pytest.raises(DiameterDecodeError) as exc:
        decode(bytes(raw))
    assert exc.value.result_code == INVALID_AVP_LENGTH
    (failed,) = decode(Message(1, 0, 0, 0, 0, [Avp(279, exc.value.failed_avp)]).encode()).avps
    assert failed.group()[0].code == 264  # the offending AVP's code, zero payload


def test_framer_byte_at_a_time_and_trailing():
    a, b = _uar().encode(), Message(280, FLAG_R, 0, 9, 9, []).encode()
    f = Framer()
    out = []
    for i in range(len(a + b) - 3):
        out += f.feed((a + b)[i:i + 1])
    out += f.feed((a + b)[len(a + b) - 3:])
    assert out == [a, b] and f.buffered == 0


@pytest.mark.parametrize("head", [b"\x02\x00\x00\x14", b"\x01\x00\x00\x04",
                                  b"\x01\xff\xff\xff"])
def test_framer_refuses_unframeable(head):
    with pytest.raises(FramingError):
        Framer(max_message_bytes=65536).feed(head + b"\0" * 16)


# ------------------------------------------------------------------ Hypothesis

_leaf = st.builds(lambda c, v, f, data: Avp(c, data, f & 0x60, v),
                  st.integers(0, 2**32 - 1), st.sampled_from([0, 0, 10415, 5535]),
                  st.integers(0, 255), st.binary(max_size=40))
_avp = st.recursive(_leaf, lambda kids: st.builds(
    lambda c, ch: Avp(c, b"", AVP_M, 0, ch), st.integers(0, 2**32 - 1),
    st.lists(kids, max_size=4)), max_leaves=6)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**24 - 1), st.sampled_from([0, FLAG_R, FLAG_R | FLAG_P, 0x20]),
       st.integers(0, 2**32 - 1), st.lists(_avp, max_size=8))
def test_round_trip(code, flags, app, avps):
    m = Message(code, flags, app, 1, 2, avps)
    raw = m.encode()
    back = decode(raw)
    assert back.encode() == raw
    assert (back.code, back.flags, back.application) == (code, flags, app)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_protocol_errors(data):
    try:
        m = decode(data)
        for a in m.avps:
            try:
                dd.value_of(a)
            except RemoteProtocolError:
                pass
    except RemoteProtocolError:
        pass
    f = Framer(4096)
    try:
        for i in range(0, len(data), 7):
            f.feed(data[i:i + 7])
    except RemoteProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(_avp, max_size=4), st.integers(20, 400), st.binary(min_size=1, max_size=4))
def test_mutated_messages_never_crash(avps, pos, junk):
    raw = bytearray(Message(300, FLAG_R, 1, 2, 3, avps).encode())
    p = pos % len(raw)
    raw[p:p + len(junk)] = junk
    try:
        m = decode(bytes(raw))
        for a in m.avps:
            if a.children is None and len(a.data) >= 8:
                try:
                    a.group()
                except RemoteProtocolError:
                    pass
    except RemoteProtocolError:
        pass


def test_header_bits():
    m = Message(300, FLAG_R | 0x0F, 0, 1, 2, [dd.avp("Origin-Host", "x")])
    assert decode(m.encode()).code == 300  # reserved bits: ignored
    with pytest.raises(DiameterDecodeError) as exc:
        decode(Message(300, FLAG_R | 0x20, 0, 1, 2, []).encode())
    assert exc.value.result_code == 3008
    bad = bytearray(Message(300, FLAG_R, 0, 1, 2, [dd.avp("Origin-Host", "x")]).encode())
    bad[24] |= 0x01  # an AVP flag nobody defined
    with pytest.raises(DiameterDecodeError) as exc:
        decode(bytes(bad))
    assert exc.value.result_code == 3009 and exc.value.failed_avp
