"""sipedge.sip.grammar: list splitting, parameters, tokens, header names."""

from __future__ import annotations

import pytest

from sipedge.errors import RemoteProtocolError
from sipedge.sip.grammar import (COMPACT, canonical_name, format_params, get_param, has_param,
                                 is_digits, is_token, parse_params, set_param, split_commas)
from sip_corpus import check_reason


@pytest.mark.parametrize("value, parts", [
    ("a", ["a"]),
    (" a , b,c ", ["a", "b", "c"]),
    ('"Doe, Jane" <sip:j@example.com>, <sip:k@example.com>',
     ['"Doe, Jane" <sip:j@example.com>', "<sip:k@example.com>"]),
    ("<sip:a@example.com;x=1,2>, <sip:b@example.com>",
     ["<sip:a@example.com;x=1,2>", "<sip:b@example.com>"]),
    ('"a \\" , b" <sip:x@example.com>;p="q,r", c',
     ['"a \\" , b" <sip:x@example.com>;p="q,r"', "c"]),
    ('"<" <sip:x@example.com>, d', ['"<" <sip:x@example.com>', "d"]),
    ("SIP/2.0/UDP a;branch=1, SIP/2.0/TCP [2001:db8::1]:5060;branch=2",
     ["SIP/2.0/UDP a;branch=1", "SIP/2.0/TCP [2001:db8::1]:5060;branch=2"]),
])
def test_split_commas(value, parts):
    assert split_commas(value) == parts


@pytest.mark.parametrize("value", ['"a, b', "a,,b", "a, ", ",a", '"x\\", y'])
def test_split_commas_errors(value):
    with pytest.raises(RemoteProtocolError) as info:
        split_commas(value)
    check_reason(info.value)


def test_parse_params():
    assert parse_params(";a=1;B; c = x ;d=\"e;f\"") == (("a", "1"), ("B", None), ("c", "x"),
                                                         ("d", '"e;f"'))
    assert parse_params("") == ()
    assert parse_params("a") == (("a", None),)
    params = parse_params(";Tag=1;lr")
    assert get_param(params, "tag") == "1" and get_param(params, "LR") == ""
    assert get_param(params, "x") is None and has_param(params, "TAG")
    assert set_param(params, "tag", "2") == (("lr", None), ("tag", "2"))
    assert format_params((("a", "1"), ("lr", None))) == ";a=1;lr"


@pytest.mark.parametrize("text", [";=1", ";a b=1", ";a<=1", ';a="x', ";é=1"])
def test_parse_params_errors(text):
    with pytest.raises(RemoteProtocolError) as info:
        parse_params(text)
    check_reason(info.value)


def test_tokens_and_digits():
    assert is_token("INVITE") and is_token("x-.!%*_+`'~1")
    assert not is_token("") and not is_token("a b") and not is_token("a\n") and not is_token("é")
    assert is_digits("0") and is_digits("65535", 5)
    assert not is_digits("") and not is_digits("123456", 5) and not is_digits("²")
    assert not is_digits("١") and not is_digits("-1") and not is_digits("1" * 5000)


def test_names():
    assert canonical_name("call-id") == "Call-ID" and canonical_name("cseq") == "CSeq"
    assert canonical_name("record-route") == "Record-Route"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    for short, full in {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
                        "l": "content-length", "c": "content-type", "k": "supported",
                        "s": "subject", "e": "content-encoding"}.items():
        assert COMPACT[short] == full


def test_stat_method_names_known_methods_and_folds_the_rest():
    from sipedge.sip.grammar import KNOWN_METHODS, stat_method

    assert all(stat_method(m) == m for m in KNOWN_METHODS)
    names = {stat_method(f"X{i}") for i in range(10000)} | {stat_method("invite")}
    assert names == {"other"}
