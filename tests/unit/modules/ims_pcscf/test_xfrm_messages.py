"""Golden bytes of the XFRM netlink messages, packed here independently with struct from
<linux/xfrm.h> (no kernel needed), and decode == encode."""

from __future__ import annotations

import socket
import struct

import pytest
from sipedge.io import xfrm as x
from sipedge.xfrm.model import DIR_IN, DIR_OUT, PolicySpec, SaSpec, Selector

INF = 0xFFFFFFFFFFFFFFFF
UE, P = "192.0.2.20", "192.0.2.1"
SEL = Selector(UE, P, 5062, 5101)
AUTH_KEY = bytes(range(20))
ENC_KEY = bytes(range(100, 116))


def a16(ip: str) -> bytes:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return socket.inet_pton(fam, ip).ljust(16, b"\0")


def selector(src, dst, sport, dport, fam, plen, proto=0) -> bytes:
    b = a16(dst) + a16(src) + struct.pack(">HHHH", dport, 0xFFFF, sport, 0xFFFF)
    b += struct.pack("=HBBB3xiI", fam, plen, plen, proto, 0, 0)
    assert len(b) == 56
    return b


def lifetime(hard: int) -> bytes:
    return struct.pack("=8Q", INF, INF, INF, INF, 0, hard, 0, 0)


def nlattr(kind: int, payload: bytes) -> bytes:
    hdr = struct.pack("=HH", 4 + len(payload), kind)
    pad = (-len(payload)) % 4
    return hdr + payload + b"\0" * pad


def test_struct_sizes():
    for cls, size in x.STRUCT_SIZES.items():
        fmt = "=" + "".join(f[1].lstrip(">") for f in cls.fields)
        assert struct.calcsize(fmt) == size, cls.__name__


def test_newsa_golden():
    sa = SaSpec(UE, P, 0x10001, 0x5E0003, "hmac-sha-1-96", AUTH_KEY, "aes-cbc", ENC_KEY,
                SEL, 90)
    body = selector(UE, P, 5062, 5101, 2, 32)
    body += a16(P) + struct.pack(">I", 0x10001) + struct.pack("=B3x", 50)  # xfrm_id
    body += a16(UE) + lifetime(90) + b"\0" * 32 + b"\0" * 12
    body += struct.pack("=IIHBBB7x", 0, 0x5E0003, 2, 0, 32, 0)
    assert len(body) == 224
    attrs = nlattr(20, b"hmac(sha1)".ljust(64, b"\0") + struct.pack("=II", 160, 96) + AUTH_KEY)
    attrs += nlattr(2, b"cbc(aes)".ljust(64, b"\0") + struct.pack("=I", 128) + ENC_KEY)
    flags = 0x1 | 0x4 | 0x400 | 0x200  # REQUEST | ACK | CREATE | EXCL
    expected = struct.pack("=IHHII", 16 + len(body) + len(attrs), 0x10, flags, 7, 0) + body + \
        attrs
    assert x.newsa_msg(sa, seq=7) == expected


def test_newpolicy_golden_ipv6():
    ue6, p6 = "2001:db8::20", "2001:db8::1"
    sel = Selector(p6, ue6, 5101, 5064)
    pol = PolicySpec(sel, DIR_OUT, 0x5E0001, p6, ue6, 120)
    body = selector(p6, ue6, 5101, 5064, 10, 128) + lifetime(120) + b"\0" * 32
    body += struct.pack("=IIBBBB4x", 2080, 0, 1, 0, 0, 0)
    assert len(body) == 168
    tmpl = a16(ue6) + struct.pack(">I", 0) + struct.pack("=B3x", 50)
    tmpl += struct.pack("=H2x", 10) + a16(p6) + struct.pack("=IBBBxIII", 0x5E0001, 0, 0, 0,
                                                              0xFFFFFFFF, 0xFFFFFFFF,
                                                              0xFFFFFFFF)
    assert len(tmpl) == 64
    attrs = nlattr(5, tmpl)
    expected = struct.pack("=IHHII", 16 + 168 + len(attrs), 0x13, 0x1 | 0x4 | 0x400 | 0x200,
                           3, 0) + body + attrs
    assert x.newpolicy_msg(pol, seq=3) == expected


def test_del_messages_golden():
    got = x.delsa_msg(P, 0x10001, seq=9)
    assert got == struct.pack("=IHHII", 40, 0x11, 0x5, 9, 0) + a16(P) + \
        struct.pack(">I", 0x10001) + struct.pack("=HBx", 2, 50)
    got = x.delpolicy_msg(SEL, DIR_IN, seq=4)
    assert got == struct.pack("=IHHII", 80, 0x14, 0x5, 4, 0) + \
        selector(UE, P, 5062, 5101, 2, 32) + struct.pack("=IB3x", 0, 0)


def test_mark_ifid_offload_attributes():
    sa = SaSpec(P, UE, 0x2222, 1, "hmac-md5-96", bytes(16), "null", b"", SEL, 5,
                offload_ifindex=3)
    data = x.newsa_msg(sa, mark=(0x10, 0xFF), if_id=42)
    tail = nlattr(21, struct.pack("=II", 0x10, 0xFF)) + nlattr(31, struct.pack("=I", 42)) + \
        nlattr(28, struct.pack("=iB3x", 3, 0))
    assert data.endswith(tail)
    assert b"ecb(cipher_null)" in data and b"hmac(md5)" in data


def test_decode_roundtrip():
    sa = SaSpec(UE, P, 0xABCDEF, 0x5E0009, "hmac-md5-96", bytes(16), "des-ede3-cbc",
                bytes(range(24)), SEL, 33)
    (msg,) = x.parse_messages(x.newsa_msg(sa))
    k = x.kernel_sa(msg)
    assert (k.src, k.dst, k.spi, k.reqid, k.auth, k.enc, k.hard_seconds) == \
        (UE, P, 0xABCDEF, 0x5E0009, "hmac(md5)", "cbc(des3_ede)", 33)
    pol = PolicySpec(SEL, DIR_IN, 0x5E0009, UE, P, 33)
    (msg,) = x.parse_messages(x.newpolicy_msg(pol))
    kp = x.kernel_policy(msg)
    assert kp.selector == SEL and kp.direction == DIR_IN and kp.reqid == 0x5E0009


def test_error_and_done_parsing():
    err = struct.pack("=IHHII", 36, 2, 0, 5, 0) + struct.pack("=i", -17) + b"\0" * 16
    done = struct.pack("=IHHII", 20, 3, 2, 6, 0) + b"\0" * 4
    assert x.parse_messages(err + done) == [("error", 5, 17), ("done", 6, 0)]


def test_wrong_key_length_refused():
    with pytest.raises(ValueError):
        x.newsa_msg(SaSpec(UE, P, 300, 1, "hmac-sha-1-96", bytes(16), "aes-cbc", bytes(16),
                           SEL, 5))


MASK = 0x5E000000  # [ims_pcscf] xfrm_mark_mask default


def test_ownership_mark_golden():
    """The tag: XFRMA_MARK (type 21) {v: 0, m: MASK} after the other attributes of NEWSA and
    NEWPOLICY, and the only attribute of DELSA / DELPOLICY (the kernel matches a policy to
    delete by selector, direction and exactly this v/m)."""
    mark = nlattr(21, struct.pack("=II", 0, MASK))
    sa = SaSpec(UE, P, 0x10001, 0x5E0003, "hmac-sha-1-96", AUTH_KEY, "aes-cbc", ENC_KEY,
                SEL, 90)
    plain, tagged = x.newsa_msg(sa, seq=7), x.newsa_msg(sa, seq=7, mark=(0, MASK))
    assert tagged == struct.pack("=I", len(plain) + 12) + plain[4:] + mark
    pol = PolicySpec(SEL, DIR_IN, 0x5E0003, UE, P, 90)
    plain, tagged = x.newpolicy_msg(pol, seq=3), x.newpolicy_msg(pol, seq=3, mark=(0, MASK))
    assert tagged == struct.pack("=I", len(plain) + 12) + plain[4:] + mark
    assert x.delsa_msg(P, 0x10001, seq=9, mark=(0, MASK)) == struct.pack(
        "=IHHII", 52, 0x11, 0x5, 9, 0) + a16(P) + struct.pack(">I", 0x10001) + \
        struct.pack("=HBx", 2, 50) + mark
    assert x.delpolicy_msg(SEL, DIR_IN, seq=4, mark=(0, MASK)) == struct.pack(
        "=IHHII", 92, 0x14, 0x5, 4, 0) + selector(UE, P, 5062, 5101, 2, 32) + \
        struct.pack("=IB3x", 0, 0) + mark


def test_block_policy_golden_with_mark():
    body = a16(P) + a16("0.0.0.0") + struct.pack(">HHHH", 5100, 0xFFFF, 0, 0)
    body += struct.pack("=HBBB3xiI", 2, 32, 0, 0, 0, 0)
    body += struct.pack("=8Q", INF, INF, INF, INF, 0, 0, 0, 0) + b"\0" * 32
    body += struct.pack("=IIBBBB4x", x.BLOCK_PRIORITY, 0, 0, 1, 0, 0)
    mark = nlattr(21, struct.pack("=II", 0, MASK))
    assert x.block_policy_msg(P, 5100, seq=2, mark=(0, MASK)) == struct.pack(
        "=IHHII", 16 + 168 + 12, 0x13, 0x1 | 0x4 | 0x400 | 0x200, 2, 0) + body + mark


def test_mark_decoded_and_ownership():
    """Dumps carry the mark back; `owns` wants our mark and a reqid in range, so an unmarked
    object with our reqid, or a marked one with another reqid, is not ours."""
    sa = SaSpec(UE, P, 0xABCDEF, 0x5E0009, "hmac-md5-96", bytes(16), "null", b"", SEL, 33)
    (tagged,) = x.parse_messages(x.newsa_msg(sa, mark=(0, MASK)))
    (plain,) = x.parse_messages(x.newsa_msg(sa))
    assert x.kernel_sa(tagged).mark == (0, MASK) and x.kernel_sa(plain).mark is None
    pol = PolicySpec(SEL, DIR_IN, 0x5E0009, UE, P, 33)
    (ptag,) = x.parse_messages(x.newpolicy_msg(pol, mark=(0, MASK)))
    assert x.kernel_policy(ptag).mark == (0, MASK)
    c = x.XfrmClient.__new__(x.XfrmClient)  # no socket needed for the predicate
    c.mark = (0, MASK)
    rng = range(0x5E0000, 0x5E0010)
    assert c.owns(x.kernel_sa(tagged), rng) and c.owns(x.kernel_policy(ptag), rng)
    assert not c.owns(x.kernel_sa(plain), rng)
    assert not c.owns(x.kernel_sa(tagged), range(1, 5))
    with pytest.raises(ValueError):
        x.XfrmClient(mark_mask=1 << 32)
