"""Security-Client parsing (RFC 3329 / TS 33.203 Annex H), choice, Security-Verify check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipedge.modules.ims_pcscf.secagree import (
    Offer,
    Preference,
    choose,
    format_mechanism,
    parse_mechanism,
    parse_security_client,
    split_mechanisms,
    verify_matches,
)

UE = ("ipsec-3gpp; alg=hmac-sha-1-96; ealg=aes-cbc; spi-c=1111; spi-s=2222; "
      "port-c=5062; port-s=5064")


def test_several_headers_and_lists_all_parsed():
    values = [UE + ", ipsec-3gpp;alg=hmac-md5-96;ealg=des-ede3-cbc;spi-c=3333;spi-s=4444;"
              "port-c=5066;port-s=5068",
              "ipsec-3gpp;alg=hmac-md5-96;spi-c=5555;spi-s=6666;port-c=1;port-s=2;q=0.5"]
    offers, rejected = parse_security_client(values)
    assert not rejected
    assert [(o.alg, o.ealg, o.spi_c) for o in offers] == [
        ("hmac-sha-1-96", "aes-cbc", 1111), ("hmac-md5-96", "des-ede3-cbc", 3333),
        ("hmac-md5-96", "null", 5555)]  # no ealg = NULL encryption (TS 33.203 Annex H)
    assert offers[2].q == 0.5 and [o.position for o in offers] == [0, 1, 2]


def test_unknown_params_kept_and_case_insensitive_names():
    o = parse_mechanism("IPSEC-3GPP;ALG=HMAC-SHA-1-96;Spi-C=300;SPI-S=301;port-c=7;port-s=8;"
                        "mediasec;x-foo=\"a;b\"".replace(';x-foo="a;b"', ";x-foo=bar"))
    assert o.alg == "hmac-sha-1-96" and o.spi_c == 300
    assert ("mediasec", "") in o.extra and ("x-foo", "bar") in o.extra


def test_out_of_range_rejects_only_that_offer():
    values = [UE.replace("spi-c=1111", "spi-c=255"),  # reserved SPI
              UE.replace("port-s=5064", "port-s=65536"),
              UE.replace("spi-s=2222", "spi-s=4294967296"),
              UE.replace("port-c=5062", "port-c=0"),
              UE.replace("spi-c=1111", "spi-c=-5"),
              UE.replace("; spi-c=1111", ""),  # missing
              UE + "; prot=ah",
              UE + "; mod=tun",
              "digest; d-alg=md5",
              UE]
    offers, rejected = parse_security_client([", ".join(values)])
    assert len(offers) == 1 and offers[0].spi_c == 1111
    assert len(rejected) == len(values) - 1
    assert any("255 out of range" in r.reason for r in rejected)
    assert any("missing" in r.reason for r in rejected)


def test_choice_follows_our_preference_then_q():
    offers, _ = parse_security_client([
        "ipsec-3gpp;alg=hmac-md5-96;ealg=aes-cbc;spi-c=300;spi-s=301;port-c=1;port-s=2;q=0.9",
        "ipsec-3gpp;alg=hmac-sha-1-96;ealg=des-ede3-cbc;spi-c=302;spi-s=303;port-c=1;port-s=2",
        "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=304;spi-s=305;port-c=1;port-s=2;q=0.1",
        "ipsec-3gpp;alg=hmac-sha-1-96;spi-c=306;spi-s=307;port-c=1;port-s=2;q=1"])
    assert choose(offers, Preference()).spi_c == 304  # aes-cbc + sha1 first
    assert choose(offers, Preference(algs=("hmac-md5-96",))).spi_c == 300
    assert choose(offers, Preference(ealgs=("des-ede3-cbc",))).spi_c == 302
    # null only when allowed
    assert choose(offers[3:], Preference()) is None
    assert choose(offers[3:], Preference(allow_null=True)).spi_c == 306
    # accelerated preference: des3 runs on the engine
    hw = Preference(prefer_accelerated=True, accelerated=frozenset({"des-ede3-cbc"}))
    assert choose(offers, hw).spi_c == 302


def test_verify_must_equal_server():
    server = Offer("hmac-sha-1-96", "aes-cbc", 65536, 65537, 5101, 5100)
    text = format_mechanism(server)
    assert verify_matches([text], server) is None
    # order and case of parameters do not matter, q does not either
    assert verify_matches(["ipsec-3gpp;ALG=hmac-sha-1-96;port-s=5100;port-c=5101;"
                           "spi-s=65537;spi-c=65536;ealg=aes-cbc;q=0.5"], server) is None
    assert verify_matches([], server) == "no Security-Verify"
    assert "differs" in verify_matches([text.replace("spi-c=65536", "spi-c=65538")], server)
    assert "expected 1" in verify_matches([text, text], server)


def test_quoted_comma_does_not_split():
    assert len(split_mechanisms(['ipsec-3gpp;x="a,b";alg=x', "digest"])) == 2


_num = st.integers(min_value=-10, max_value=2 ** 33)


@settings(max_examples=300, deadline=None)
@given(spi_c=_num, spi_s=_num, port_c=_num, port_s=_num,
       alg=st.sampled_from(["hmac-sha-1-96", "hmac-md5-96", "foo"]),
       junk=st.text(alphabet="abc=;, \"q0.5x-", max_size=20))
def test_fuzz_offers_never_crash_and_ranges_hold(spi_c, spi_s, port_c, port_s, alg, junk):
    text = (f"ipsec-3gpp;alg={alg};spi-c={spi_c};spi-s={spi_s};port-c={port_c};"
            f"port-s={port_s};{junk}")
    offers, rejected = parse_security_client([text])
    for o in offers:
        assert 256 <= o.spi_c <= 0xFFFFFFFF and 256 <= o.spi_s <= 0xFFFFFFFF
        assert 1 <= o.port_c <= 65535 and 1 <= o.port_s <= 65535
        assert 0 <= o.q <= 1
    ok = 256 <= spi_c < 2 ** 32 and 256 <= spi_s < 2 ** 32 and 1 <= port_c <= 65535 and \
        1 <= port_s <= 65535
    if not ok:
        assert not any(o.spi_c == spi_c and o.port_c == port_c and o.spi_s == spi_s
                       and o.port_s == port_s for o in offers)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text):
    offers, rejected = parse_security_client([text])
    assert len(offers) + len(rejected) == len(split_mechanisms([text]))


@settings(max_examples=200, deadline=None)
@given(spi_c=st.integers(256, 2 ** 32 - 1), spi_s=st.integers(256, 2 ** 32 - 1),
       port_c=st.integers(1, 65535), port_s=st.integers(1, 65535),
       alg=st.sampled_from(["hmac-sha-1-96", "hmac-md5-96"]),
       ealg=st.sampled_from(["aes-cbc", "des-ede3-cbc", "null"]))
def test_roundtrip(spi_c, spi_s, port_c, port_s, alg, ealg):
    o = Offer(alg, ealg, spi_c, spi_s, port_c, port_s)
    assert verify_matches([format_mechanism(o)], o) is None


@pytest.mark.parametrize("q,ok", [("0", True), ("0.", True), ("0.5", True), ("0.125", True),
                                  ("1", True), ("1.000", True), ("0.1234", False),
                                  ("1.5", False), ("1.001", False), ("1e-1", False),
                                  ("nan", False), (".5", False), ("-0", False), ("", False)])
def test_q_follows_rfc3329_qvalue(q, ok):
    """RFC 3329's ABNF: qvalue = ("0" ["." 0*3DIGIT]) / ("1" ["." 0*3("0")]); an offer with
    another q is rejected (the others in the header still count)."""
    offers, rejected = parse_security_client([
        f"ipsec-3gpp;alg=hmac-md5-96;spi-c=300;spi-s=301;port-c=1;port-s=2;q={q}"])
    assert (len(offers), len(rejected)) == ((1, 0) if ok else (0, 1))
