"""Digest math, header parsing and nonce handling (RFC 7616, RFC 8760, RFC 3261 22.4).

Expected digests are computed here directly with hashlib, independently of the module."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings, strategies as st

from sipedge.errors import RemoteProtocolError
from sipedge.modules.auth.digest import (AuthResult, DigestAuth, NonceCodec, NonceCounts,
                                         NonceState, compute_response, make_ha1,
                                         parse_credentials, parse_digest)

SECRET = b"0123456789abcdef0123456789abcdef"


def h(alg: str, text: str) -> str:
    fn = hashlib.sha256 if alg.upper().startswith("SHA-256") else hashlib.md5
    return fn(text.encode()).hexdigest()


def client_authorization(challenge: str, user: str, password: str, method: str, uri: str, *,
                         nc: int = 1, cnonce: str = "0a4f113b", realm: str | None = None,
                         use_qop: bool = True) -> str:
    """What a UA sends back: an independent implementation on top of hashlib."""
    fields = dict(re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', challenge) and
                  [(k, a or b) for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))',
                                                          challenge)])
    realm = realm or fields["realm"]
    alg = fields.get("algorithm", "MD5")
    ha1 = h(alg, f"{user}:{realm}:{password}")
    if alg.lower().endswith("-sess"):
        ha1 = h(alg, f"{ha1}:{fields['nonce']}:{cnonce}")
    ha2 = h(alg, f"{method}:{uri}")
    ncs = f"{nc:08x}"
    if use_qop:
        resp = h(alg, f"{ha1}:{fields['nonce']}:{ncs}:{cnonce}:auth:{ha2}")
        return (f'Digest username="{user}", realm="{realm}", nonce="{fields["nonce"]}", '
                f'uri="{uri}", response="{resp}", algorithm={alg}, qop=auth, nc={ncs}, '
                f'cnonce="{cnonce}"')
    resp = h(alg, f"{ha1}:{fields['nonce']}:{ha2}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{fields["nonce"]}", '
            f'uri="{uri}", response="{resp}", algorithm={alg}')


# ---------------------------------------------------------------- the math


def test_rfc7616_example_md5_and_sha256():
    # RFC 7616 3.9.1: the "Mufasa" example (both algorithms share nonce and cnonce)
    args = dict(nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", method="GET",
                uri="/dir/index.html", qop="auth", nc="00000001",
                cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    realm = "http-auth@example.org"
    md5 = compute_response(algorithm="MD5", ha1=make_ha1("Mufasa", realm, "Circle of Life"),
                           **args)
    sha = compute_response(algorithm="SHA-256",
                           ha1=make_ha1("Mufasa", realm, "Circle of Life", "SHA-256"), **args)
    assert md5 == "8ca523f5e9506fed4657c9700eebdbec"
    assert sha == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


@pytest.mark.parametrize("alg", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
@pytest.mark.parametrize("qop", ["auth", None])
def test_response_matches_independent_hashlib(alg, qop):
    user, realm, pw, nonce, cnonce = "bob", "example.com", "s3cr3t", "abc", "xyz"
    ha1 = h(alg, f"{user}:{realm}:{pw}")
    assert make_ha1(user, realm, pw, alg) == ha1
    sess = h(alg, f"{ha1}:{nonce}:{cnonce}") if alg.endswith("-sess") else ha1
    ha2 = h(alg, "REGISTER:sip:example.com")
    want = (h(alg, f"{sess}:{nonce}:00000002:{cnonce}:auth:{ha2}") if qop
            else h(alg, f"{sess}:{nonce}:{ha2}"))
    got = compute_response(algorithm=alg, ha1=ha1, nonce=nonce, method="REGISTER",
                           uri="sip:example.com", qop=qop, nc="00000002", cnonce=cnonce)
    assert got == want


# ---------------------------------------------------------------- parsing


def test_parse_quoted_strings_commas_and_escapes():
    scheme, p = parse_digest('Digest  username="al,ice" ,REALM="a \\"b\\" c",nonce=abc,'
                             ' uri="sip:x@y;transport=tcp", response="00ff", qop=auth,'
                             ' nc=00000001, cnonce="c,n"')
    assert scheme == "Digest"
    assert p == {"username": "al,ice", "realm": 'a "b" c', "nonce": "abc",
                 "uri": "sip:x@y;transport=tcp", "response": "00ff", "qop": "auth",
                 "nc": "00000001", "cnonce": "c,n"}


def test_parse_credentials_normalises():
    c = parse_credentials('digest username="a", realm="r", nonce="n", uri="sip:r", '
                          'response="ABCDEF", algorithm=sha-256, qop="auth", nc=0000000A, '
                          'cnonce="z"')
    assert (c.algorithm, c.qop, c.nc, c.response) == ("SHA-256", "auth", "0000000a", "abcdef")
    assert "abcdef" not in repr(c)  # the response never shows up in logs


@pytest.mark.parametrize("value", [
    "", "   ", "Digest", "Digest username", 'Digest username="a', 'Digest username="a\\',
    "Digest a=b c=d", 'Digest a="x"junk', "Digest a=b, a=c", "Digest =b", "Digest a=",
    "Digest a=b, c", "Dig,est a=b", 'Digest a="' + "x" * 5000 + '"',
])
def test_parse_digest_malformed(value):
    with pytest.raises(RemoteProtocolError):
        parse_digest(value)


@pytest.mark.parametrize("value", [
    'Basic dXNlcjpwYXNz',  # not Digest
    'Digest realm="r", nonce="n", uri="u", response="ab"',  # no username
    'Digest username="a", realm="r", nonce="n", uri="u", response="ab", qop=auth',  # no nc
    'Digest username="a", realm="r", nonce="n", uri="u", response="ab", qop=auth, '
    'nc=1, cnonce="c"',  # nc not 8 hex digits
    'Digest username="a", realm="r", nonce="n", uri="u", response="xyz"',  # not hex
    'Digest username="a", realm="r", nonce="n", uri="u", response="ab", algorithm=SHA-1',
    'Digest username="a", realm="r", nonce="n", uri="u", response="ab", qop=auth-int, '
    'nc=00000001, cnonce="c"',
])
def test_parse_credentials_refuses(value):
    with pytest.raises(RemoteProtocolError):
        parse_credentials(value)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('Digest usrnam="\\,= \t;abc0129xyz')),
               max_size=80))
def test_garbage_only_raises_remote_protocol_error(text):
    try:
        parse_credentials(text)
    except RemoteProtocolError:
        pass


# ---------------------------------------------------------------- nonces


def test_nonce_valid_stale_tampered_and_foreign():
    codec = NonceCodec(SECRET, expires_s=30)
    n = codec.issue("example.com", now=1000.0)
    assert codec.check(n, "example.com", 1000.0) is NonceState.VALID
    assert codec.check(n, "example.com", 1029.9) is NonceState.VALID
    assert codec.check(n, "example.com", 1030.1) is NonceState.STALE
    assert codec.check(n, "example.com", 900.0) is NonceState.STALE  # from the future
    assert codec.check(n, "other.com", 1000.0) is NonceState.INVALID  # bound to the realm
    flipped = n[:10] + ("A" if n[10] != "A" else "B") + n[11:]
    assert codec.check(flipped, "example.com", 1000.0) is NonceState.INVALID
    other = NonceCodec(b"another secret of 16+ bytes", expires_s=30)
    assert other.check(n, "example.com", 1000.0) is NonceState.INVALID  # not our secret
    for junk in ("", "abc", "!" * 44, n + "x"):
        assert codec.check(junk, "example.com", 1000.0) is NonceState.INVALID
    # every challenge gets its own nonce
    assert codec.issue("example.com", 1000.0) != n


def test_nonce_secret_survives_restart():
    a = NonceCodec(SECRET, expires_s=30)
    n = a.issue("r", 50.0)
    assert NonceCodec(SECRET, expires_s=30).check(n, "r", 55.0) is NonceState.VALID


def test_nonce_mac_is_hmac_sha256_whatever_the_key_length():
    """Nonces issued before the MAC's pads were precomputed still check (and the other way
    round): the value is HMAC-SHA256, also for a key longer than the hash block."""
    import base64
    import hmac

    for secret in (SECRET, b"k" * 64, b"long key " * 20):
        n = NonceCodec(secret, expires_s=30, rand=lambda k: b"\x07" * k).issue("r", 50.0)
        raw = base64.urlsafe_b64decode(n)
        assert raw[16:] == hmac.digest(secret, b"r\x00" + raw[:16], "sha256")[:16]


def test_nonce_counts_bounded_and_monotonic():
    t = NonceCounts(max_entries=3)
    assert t.accept("a", 1, 100, 0) is True
    assert t.accept("a", 1, 100, 0) is False
    assert t.accept("a", 3, 100, 0) is True
    assert t.accept("a", 2, 100, 0) is False
    assert t.accept("b", 2, 100, 0) is None  # unknown nonce, nc > 1: cannot tell
    for n in "bcde":
        assert t.accept(n, 1, 100, 0) is True
    assert len(t) == 3
    assert t.accept("a", 4, 100, 0) is None  # "a" was evicted: refused, not replayable
    assert t.purge(now=200) == 3


# ---------------------------------------------------------------- verification


class Subs:
    def __init__(self, **passwords: str) -> None:
        self.passwords = passwords
        self.calls = 0

    def __call__(self, user: str, realm: str, alg: str) -> str | None:
        self.calls += 1
        pw = self.passwords.get(user)
        return None if pw is None else h(alg, f"{user}:{realm}:{pw}")


def _flow(auth: DigestAuth, **kw):
    realm = kw.pop("realm", "example.com")
    [challenge, *_] = auth.challenge(realm, kw.pop("at", 1000.0))
    return challenge


@pytest.mark.parametrize("alg", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_verify_ok_each_algorithm(alg):
    auth = DigestAuth(SECRET, algorithms=(alg,))
    ch = _flow(auth)
    assert f"algorithm={alg}" in ch and 'qop="auth"' in ch
    cred = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com")
    v = auth.verify([cred], method="REGISTER", request_uri="sip:example.com",
                    realm="example.com", lookup=Subs(alice="pw"), now=1001.0)
    assert v.result is AuthResult.OK and v.username == "alice" and v.algorithm == alg


def _verify(auth, creds, now=1001.0, subs=None, uri="sip:example.com", method="REGISTER"):
    return auth.verify(creds, method=method, request_uri=uri, realm="example.com",
                       lookup=subs or Subs(alice="pw"), now=now).result


def test_refusals():
    auth = DigestAuth(SECRET, nonce_expires_s=60)
    ch = _flow(auth)
    good = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com")
    assert _verify(auth, []) is AuthResult.NO_CREDENTIALS
    wrong = client_authorization(ch, "alice", "nope", "REGISTER", "sip:example.com")
    assert _verify(auth, [wrong]) is AuthResult.WRONG_PASSWORD
    unknown = client_authorization(ch, "mallory", "pw", "REGISTER", "sip:example.com")
    assert _verify(auth, [unknown]) is AuthResult.UNKNOWN_USER
    # a realm we do not serve is not our credentials at all
    other = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com",
                                 realm="evil.com")
    assert _verify(auth, [other]) is AuthResult.NO_CREDENTIALS
    # a tampered response (one hex digit changed)
    resp = re.search(r'response="([0-9a-f]+)"', good).group(1)
    bad = good.replace(resp, resp[:-1] + ("0" if resp[-1] != "0" else "1"))
    assert _verify(auth, [bad]) is AuthResult.WRONG_PASSWORD
    # a tampered nonce (its MAC no longer verifies)
    nonce = re.search(r'nonce="([^"]+)"', good).group(1)
    forged = good.replace(nonce, nonce[:5] + ("x" if nonce[5] != "x" else "y") + nonce[6:])
    assert _verify(auth, [forged]) is AuthResult.INVALID_NONCE
    # digest uri is not the request's
    assert _verify(auth, [good], uri="sip:other.com") is AuthResult.URI_MISMATCH
    # method is part of HA2
    assert _verify(auth, [good], method="INVITE") is AuthResult.WRONG_PASSWORD
    assert _verify(auth, ['Digest username="alice", realm="example.com"']) is \
        AuthResult.MALFORMED
    # our realm's header being incomplete is malformed; another realm's is ignored, and
    # a header that does not even parse is malformed whichever realm it meant
    assert _verify(auth, ['Digest realm="elsewhere", username="x"', good]) is AuthResult.OK
    assert _verify(auth, ['Digest realm="elsewhere", junk', good]) is AuthResult.MALFORMED


def test_replay_and_nonce_count():
    auth = DigestAuth(SECRET)
    ch = _flow(auth)
    first = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com", nc=1)
    assert _verify(auth, [first]) is AuthResult.OK
    assert _verify(auth, [first]) is AuthResult.REPLAYED
    second = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com", nc=2)
    assert _verify(auth, [second]) is AuthResult.OK
    assert _verify(auth, [first]) is AuthResult.REPLAYED
    # another worker (fresh table) never saw the nonce: nc=3 is refused as stale
    other = DigestAuth(SECRET)
    third = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com", nc=3)
    v = other.verify([third], method="REGISTER", request_uri="sip:example.com",
                     realm="example.com", lookup=Subs(alice="pw"), now=1001.0)
    assert v.result is AuthResult.REPLAYED and v.stale


def test_stale_only_with_the_right_password():
    auth = DigestAuth(SECRET, nonce_expires_s=60)
    ch = _flow(auth, at=1000.0)
    good = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com")
    wrong = client_authorization(ch, "alice", "bad", "REGISTER", "sip:example.com")
    assert _verify(auth, [wrong], now=1100.0) is AuthResult.WRONG_PASSWORD
    v = auth.verify([good], method="REGISTER", request_uri="sip:example.com",
                    realm="example.com", lookup=Subs(alice="pw"), now=1100.0)
    assert v.result is AuthResult.STALE_NONCE and v.stale
    ch2 = auth.challenge("example.com", 1100.0, stale=True)[0]
    assert "stale=true" in ch2


def test_algorithm_not_offered_and_qop_policy():
    auth = DigestAuth(SECRET, algorithms=("SHA-256",))
    md5_challenge = DigestAuth(SECRET, algorithms=("MD5",)).challenge("example.com", 1000.0)[0]
    cred = client_authorization(md5_challenge, "alice", "pw", "REGISTER", "sip:example.com")
    assert _verify(auth, [cred]) is AuthResult.ALGORITHM_REFUSED
    ch = _flow(auth)
    legacy = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com",
                                  use_qop=False)
    assert _verify(auth, [legacy]) is AuthResult.MALFORMED
    lax = DigestAuth(SECRET, algorithms=("SHA-256",), qop_required=False)
    ch = _flow(lax)
    legacy = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com",
                                  use_qop=False)
    assert _verify(lax, [legacy]) is AuthResult.OK
    assert _verify(lax, [legacy]) is AuthResult.REPLAYED  # without nc: once per nonce


def test_challenge_offers_algorithms_in_order_with_one_nonce():
    auth = DigestAuth(SECRET, algorithms=("SHA-256", "MD5"))
    a, b = auth.challenge("example.com", 5.0)
    assert "algorithm=SHA-256" in a and "algorithm=MD5" in b
    nonce = lambda s: re.search(r'nonce="([^"]+)"', s).group(1)  # noqa: E731
    assert nonce(a) == nonce(b)
    assert parse_digest(a)[1]["realm"] == "example.com"
