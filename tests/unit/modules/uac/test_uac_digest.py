"""Client digest (modules/uac/digest.py) against the RFC 2617 / RFC 7616 example vectors,
and -sess / auth-int against the formulas written out here with hashlib."""

from __future__ import annotations

import hashlib

import pytest

from sipedge.modules.auth.digest import parse_credentials, parse_digest
from sipedge.modules.uac.digest import (
    ChallengeError,
    ChallengeMemory,
    Secret,
    UnsupportedChallenge,
    authorization,
    challenges_of,
    digest_response,
    parse_challenge,
    pick,
)


def md5(s: str | bytes) -> str:
    return hashlib.md5(s.encode() if isinstance(s, str) else s).hexdigest()


def sha(s: str | bytes) -> str:
    return hashlib.sha256(s.encode() if isinstance(s, str) else s).hexdigest()


def test_rfc2617_section_3_5_example():
    ch = parse_challenge('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                         'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                         'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    value = authorization(ch, Secret("Mufasa", "Circle Of Life"), method="GET",
                          uri="/dir/index.html", cnonce="0a4f113b", nc=1)
    _, p = parse_digest(value)
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert p["qop"] == "auth" and p["nc"] == "00000001"
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize("alg,expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_section_3_9_1_examples(alg, expected):
    ch = parse_challenge(f'Digest realm="http-auth@example.org", qop="auth, auth-int", '
                         f'algorithm={alg}, nonce="{RFC7616_NONCE}", '
                         'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    value = authorization(ch, Secret("Mufasa", "Circle of Life"), method="GET",
                          uri="/dir/index.html", cnonce=RFC7616_CNONCE, nc=1)
    assert parse_digest(value)[1]["response"] == expected
    # and the server side of this code base accepts what we wrote
    creds = parse_credentials(value)
    assert creds.algorithm == alg and creds.nc == "00000001"


def test_ha1_instead_of_password():
    ha1 = md5("Mufasa:testrealm@host.com:Circle Of Life")
    ch = parse_challenge('Digest realm="testrealm@host.com", qop="auth", '
                         'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"')
    value = authorization(ch, Secret("Mufasa", ha1=ha1), method="GET",
                          uri="/dir/index.html", cnonce="0a4f113b", nc=1)
    assert parse_digest(value)[1]["response"] == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize("alg,h", [("MD5-sess", md5), ("SHA-256-sess", sha)])
def test_sess_algorithms(alg, h):
    ha1 = h(h("bob:sip.example:pw") + ":n0nce:c0nce")
    ha2 = h("INVITE:sip:alice@sip.example")
    expected = h(f"{ha1}:n0nce:00000002:c0nce:auth:{ha2}")
    ch = parse_challenge(f'Digest realm="sip.example", nonce="n0nce", algorithm={alg}, qop="auth"')
    value = authorization(ch, Secret("bob", "pw"), method="INVITE", uri="sip:alice@sip.example",
                          cnonce="c0nce", nc=2)
    _, p = parse_digest(value)
    assert p["response"] == expected and p["cnonce"] == "c0nce" and p["algorithm"] == alg


def test_auth_int_with_body():
    body = b"v=0\r\n"
    ha1 = md5("bob:r:pw")
    ha2 = md5(f"INVITE:sip:a@r:{md5(body)}")
    expected = md5(f"{ha1}:n:00000001:c:auth-int:{ha2}")
    ch = parse_challenge('Digest realm="r", nonce="n", qop="auth,auth-int"')
    _, p = parse_digest(authorization(ch, Secret("bob", "pw"), method="INVITE",
                                      uri="sip:a@r", cnonce="c", body=body))
    assert p["qop"] == "auth-int" and p["response"] == expected
    # no body: auth is enough
    _, p = parse_digest(authorization(ch, Secret("bob", "pw"), method="INVITE",
                                      uri="sip:a@r", cnonce="c"))
    assert p["qop"] == "auth"
    assert digest_response(algorithm="MD5", ha1=ha1, nonce="n", method="INVITE", uri="sip:a@r",
                           qop="auth-int", nc="00000001", cnonce="c", body=body) == expected


def test_rfc2069_style_without_qop():
    ha1 = md5("bob:r:pw")
    expected = md5(f"{ha1}:n:{md5('REGISTER:sip:r')}")
    ch = parse_challenge('Digest realm="r", nonce="n"')
    _, p = parse_digest(authorization(ch, Secret("bob", "pw"), method="REGISTER", uri="sip:r",
                                      cnonce="c"))
    assert p["response"] == expected and "qop" not in p and "cnonce" not in p


def test_bad_and_unsupported_challenges():
    with pytest.raises(ChallengeError):
        parse_challenge('Digest realm="r, nonce="x"')  # unterminated quote
    with pytest.raises(ChallengeError):
        parse_challenge('Digest realm="r"')  # no nonce
    with pytest.raises(UnsupportedChallenge):
        parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-512-256')
    with pytest.raises(UnsupportedChallenge):
        parse_challenge('Basic realm="r"')
    with pytest.raises(UnsupportedChallenge):
        parse_challenge('Digest realm="r", nonce="n", qop="auth-conf"')
    ok, skipped = challenges_of([("proxy-authenticate", 'Digest realm="r", nonce="n", '
                                  'algorithm=AKAv1-MD5'),
                                 ("proxy-authenticate", 'Digest realm="r", nonce="m"')])
    assert [c.nonce for c in ok] == ["m"] and skipped == ["algorithm AKAv1-MD5"]
    assert ok[0].proxy and ok[0].header_name == "Proxy-Authorization"


def test_pick_prefers_sha256_per_realm():
    chs = [parse_challenge('Digest realm="r", nonce="a", algorithm=MD5'),
           parse_challenge('Digest realm="r", nonce="b", algorithm=SHA-256'),
           parse_challenge('Digest realm="s", nonce="c"')]
    assert sorted(c.nonce for c in pick(chs)) == ["b", "c"]


def test_memory_one_answer_per_realm_and_one_stale_retry():
    mem = ChallengeMemory()
    a = parse_challenge('Digest realm="r", nonce="a"')
    assert mem.may_answer(a)
    mem.answered_now(a)
    assert not mem.may_answer(a)  # same nonce again: refused
    fresh = parse_challenge('Digest realm="r", nonce="z"')
    assert not mem.may_answer(fresh)  # a new nonce without stale: refused too
    b = parse_challenge('Digest realm="r", nonce="b", stale=true')
    assert mem.may_answer(b)
    mem.answered_now(b)
    c = parse_challenge('Digest realm="r", nonce="c", stale=TRUE')
    assert not mem.may_answer(c)  # a second stale: give up
    other = parse_challenge('Digest realm="s", nonce="a"')
    assert mem.may_answer(other)  # another realm (a second hop) is its own challenge
    assert mem.next_nc("a") == 1 and mem.next_nc("a") == 2


def test_secret_repr_hides_password():
    assert "pw" not in repr(Secret("bob", "pw"))
