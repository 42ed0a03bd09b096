"""401 rewrite (ck/ik out, everything else byte-identical) and TS 33.203 Annex I keys."""

from __future__ import annotations

import hashlib

import pytest
from sipedge.modules.ims_pcscf.keys import encryption_key, integrity_key
from sipedge.modules.ims_pcscf.wwwauth import ChallengeError, strip_keys

CK = "0123456789abcdef0123456789ABCDEF"
IK = "fedcba9876543210fedcba9876543210"
NONCE = 'nonce="CjPk9mRqNuT25eRkajM09uTl9nM09uTl9nMz5OX25PZz=="'


@pytest.mark.parametrize("value,expected", [
    # ck/ik last
    (f'Digest realm="ims.test", {NONCE}, algorithm=AKAv1-MD5, qop="auth", ck="{CK}", '
     f'ik="{IK}"', f'Digest realm="ims.test", {NONCE}, algorithm=AKAv1-MD5, qop="auth"'),
    # ck/ik first
    (f'Digest ck="{CK}", ik="{IK}", realm="ims.test", {NONCE}',
     f'Digest realm="ims.test", {NONCE}'),
    # in the middle, upper case names, unquoted token values, odd spacing kept
    (f'Digest realm="ims.test",CK={CK} ,  {NONCE},IK="{IK}", algorithm=AKAv1-MD5',
     f'Digest realm="ims.test" ,  {NONCE}, algorithm=AKAv1-MD5'),
    # quoted value with a comma and an escaped quote nearby stays intact
    (f'Digest realm="a,\\"b", ck="{CK}", opaque="x,y", ik="{IK}"',
     'Digest realm="a,\\"b", opaque="x,y"'),
])
def test_strip(value, expected):
    r = strip_keys(value)
    assert r.value == expected
    assert r.ck == bytes.fromhex(CK) and r.ik == bytes.fromhex(IK)
    assert "ck=" not in r.value.lower() and "ik=" not in r.value.lower()


def test_other_params_byte_identical_and_in_order():
    params = ['realm="ims.test"', NONCE, "algorithm=AKAv1-MD5", 'qop="auth,auth-int"',
              'opaque="5ccc069c403ebaf9f0171e9517f40e41"']
    value = "Digest " + ", ".join(params[:2] + [f'ck="{CK}"'] + params[2:] + [f'ik="{IK}"'])
    out = strip_keys(value).value
    assert out == "Digest " + ", ".join(params)


def test_missing_ik_is_reported():
    r = strip_keys(f'Digest realm="r", {NONCE}, ck="{CK}"')
    assert r.ck is not None and r.ik is None
    assert "ck" not in r.value


def test_no_keys_untouched():
    v = f'Digest realm="r", {NONCE}'
    r = strip_keys(v)
    assert r.value == v and r.ck is None and r.ik is None


@pytest.mark.parametrize("bad", [f'Digest ck="{CK[:-2]}"', f'Digest ck="{CK}", ck="{CK}"',
                                 'Digest realm="unterminated', "Digest realm"])
def test_bad_challenges_raise(bad):
    with pytest.raises(ChallengeError):
        strip_keys(bad)


# Annex I, computed independently: sha1 key is IK followed by four zero bytes; 3DES key is
# CK1||CK2||CK1. Cross-checked with hashlib: HMAC key padding makes IK||0^32 and IK give the
# same HMAC-SHA-1 only because HMAC pads keys with zeros to the block size.
def test_keys_annex_i():
    ik, ck = bytes.fromhex(IK), bytes.fromhex(CK)
    assert integrity_key("hmac-md5-96", ik).hex() == IK
    assert integrity_key("hmac-sha-1-96", ik).hex() == IK + "00000000"
    assert encryption_key("aes-cbc", ck).hex() == CK.lower()
    assert encryption_key("des-ede3-cbc", ck).hex() == (CK + CK[:16]).lower()
    assert len(encryption_key("des-ede3-cbc", ck)) == 24
    assert encryption_key("null", ck) == b""
    import hmac
    assert hmac.new(integrity_key("hmac-sha-1-96", ik), b"x", hashlib.sha1).digest() == \
        hmac.new(ik + bytes(4), b"x", hashlib.sha1).digest()
    with pytest.raises(ValueError):
        integrity_key("hmac-sha-256", ik)
    with pytest.raises(ValueError):
        encryption_key("aes-cbc", ck[:8])
