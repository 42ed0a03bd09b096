"""Release channels, sans-IO: version ordering, index format, Ed25519 signature, the choice
of a release (downgrade, min_version, compatible), the install window."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sipedge.appliance.ota_channel import (BadSignature, ChannelError, Index, Release, Version,
                                           choose, in_window, minutes_until_window,
                                           parse_index, parse_window, sign_index,
                                           verify_index)

ORDERED = ["0.1.0-rc.1", "0.1.0-rc.2", "0.1.0-rc.10", "0.1.0", "0.1.0+20261206235959",
           "0.1.0+20261207010000", "0.1.1", "0.2.0", "0.10.0", "1.0.0"]


def test_version_order():
    vs = [Version.parse(v) for v in ORDERED]
    for a, b in zip(vs, vs[1:]):
        assert a < b and b > a and a <= b and not b <= a, (a, b)
    assert sorted(reversed(vs), key=Version.key) == vs
    assert str(Version.parse("1.2.3-rc.1+42")) == "1.2.3-rc.1+42"
    for bad in ("1.2", "v1.2.3", "1.2.3+", "1.2.3 ", "01.2.3x", ""):
        with pytest.raises(ChannelError):
            Version.parse(bad)


def rel(v, compat="sipedge-qemu-x86_64", minv=None):
    return Release(Version.parse(v), compat, f"../bundles/{v}.raucb", 1000, "a" * 64,
                   Version.parse(minv) if minv else None, "notes")


def signed(idx: Index, key: Ed25519PrivateKey):
    data = idx.to_bytes()
    return data, sign_index(data, key)


def test_index_round_trip_and_signature():
    key = Ed25519PrivateKey.generate()
    idx = Index("nightly", "2026-12-07T00:00:00Z", (rel("0.1.0+1"), rel("0.1.0+2", minv="0.1.0")))
    data, sig = signed(idx, key)
    assert verify_index(data, sig, key.public_key(), "nightly") == idx
    # forged: one byte of the index changed, another key, garbage signature, wrong channel
    forged = data.replace(b'"size": 1000', b'"size": 1001', 1)
    with pytest.raises(BadSignature):
        verify_index(forged, sig, key.public_key(), "nightly")
    with pytest.raises(BadSignature):
        verify_index(data, sign_index(data, Ed25519PrivateKey.generate()), key.public_key(),
                     "nightly")
    with pytest.raises(BadSignature):
        verify_index(data, b"not base64!!", key.public_key(), "nightly")
    with pytest.raises(ChannelError, match="not 'stable'"):
        verify_index(data, sig, key.public_key(), "stable")


@pytest.mark.parametrize("doc,msg", [
    (b"[]", "not an object"),
    (b"{", "not JSON"),
    (b'{"format": 2, "channel": "x", "published": "", "releases": []}', "not supported"),
    (b'{"format": 1, "channel": "x", "published": "", "releases": [], "x": 1}', "unknown"),
    (b'{"format": 1, "channel": "x", "published": "", "releases": [{"version": "1.0.0"}]}',
     "missing"),
    (b'{"format": 1, "channel": "x", "published": "", "releases": [{"version": "1.0.0", '
     b'"compatible": "c", "url": "u", "size": 1, "sha256": "XYZ"}]}', "sha256"),
    (b'{"format": 1, "channel": "x", "published": "", "releases": [{"version": "1.0.0", '
     b'"compatible": "c", "url": "u", "size": true, "sha256": "' + b"a" * 64 + b'"}]}',
     "size"),
    (b'{"format": 1, "channel": "x", "published": "", "releases": [{"version": "1.0", '
     b'"compatible": "c", "url": "u", "size": 1, "sha256": "' + b"a" * 64 + b'"}]}',
     "bad version"),
])
def test_index_format_errors(doc, msg):
    with pytest.raises(ChannelError, match=msg):
        parse_index(doc)


def test_choose():
    idx = Index("stable", "", (rel("0.1.0+1"), rel("0.1.0+3"), rel("0.1.0+2"),
                               rel("0.9.0", "sipedge-raspberrypi4_64")))
    base = "http://127.0.0.1:8080/stable/index.json"
    c = choose(idx, base, Version.parse("0.1.0+1"), "sipedge-qemu-x86_64")
    assert str(c.release.version) == "0.1.0+3"
    assert c.url == "http://127.0.0.1:8080/bundles/0.1.0+3.raucb"
    # nothing newer / downgrade: refused unless forced
    c = choose(idx, base, Version.parse("0.1.0+3"), "sipedge-qemu-x86_64")
    assert c.release is None and "already installed" in c.reason
    c = choose(idx, base, Version.parse("0.2.0"), "sipedge-qemu-x86_64")
    assert c.release is None and "downgrade" in c.reason
    c = choose(idx, base, Version.parse("0.2.0"), "sipedge-qemu-x86_64", force=True,
               version=Version.parse("0.1.0+2"))
    assert str(c.release.version) == "0.1.0+2"
    # another board's release is never offered
    assert choose(idx, base, Version.parse("0.0.1"), "sipedge-x").release is None
    # min_version: an old box must take the intermediate release first
    idx2 = Index("stable", "", (rel("0.3.0", minv="0.2.0"),))
    c = choose(idx2, base, Version.parse("0.1.0"), "sipedge-qemu-x86_64")
    assert c.release is None and "needs at least 0.2.0" in c.reason


def test_window():
    assert parse_window("") is None and in_window(None, 5)
    w = parse_window("02:00-04:00")
    assert w == (120, 240)
    assert [in_window(w, m) for m in (119, 120, 239, 240)] == [False, True, True, False]
    assert minutes_until_window(w, 60) == 60 and minutes_until_window(w, 300) == 1260
    night = parse_window("23:30-01:00")
    assert [in_window(night, m) for m in (1409, 1410, 0, 59, 60)] == [False, True, True, True,
                                                                       False]
    assert minutes_until_window(night, 1400) == 10
    assert parse_window("00:00-24:00") == (0, 1440)
    for bad in ("2-4", "25:00-26:00", "02:00-02:00", "02:00 - 04:00"):
        with pytest.raises(ChannelError):
            parse_window(bad)
