"""sipedge.sip.uri: SIP, SIPS and TEL URIs."""

from __future__ import annotations

import pytest

from sipedge.errors import RemoteProtocolError
from sipedge.sip.uri import URI, format_host, is_host, parse_uri
from sip_corpus import check_reason

# text -> (scheme, user, password, host, port, params, headers)
VALID = {
    "sip:example.com": ("sip", None, None, "example.com", None, (), ""),
    "sip:bob@example.com": ("sip", "bob", None, "example.com", None, (), ""),
    "sips:bob@example.com:5061": ("sips", "bob", None, "example.com", 5061, (), ""),
    "sip:alice:pw@192.0.2.1:5070;transport=tcp;lr":
        ("sip", "alice", "pw", "192.0.2.1", 5070, (("transport", "tcp"), ("lr", None)), ""),
    "sip:[2001:db8::1]": ("sip", None, None, "[2001:db8::1]", None, (), ""),
    "sip:u@[2001:db8::1]:5080;maddr=[2001:db8::2]":
        ("sip", "u", None, "[2001:db8::1]", 5080, (("maddr", "[2001:db8::2]"),), ""),
    "sip:[::ffff:192.0.2.9]:5060": ("sip", None, None, "[::ffff:192.0.2.9]", 5060, (), ""),
    "sip:carol@example.net?Subject=hi%20there&Priority=urgent":
        ("sip", "carol", None, "example.net", None, (), "Subject=hi%20there&Priority=urgent"),
    "sip:carol@example.net;method=INVITE?Route=%3Csip:p.example.com%3E":
        ("sip", "carol", None, "example.net", None, (("method", "INVITE"),),
         "Route=%3Csip:p.example.com%3E"),
    "sip:%61lice;day=tue@example.com": ("sip", "%61lice;day=tue", None, "example.com", None, (),
                                        ""),
    "sip:+1-212-555-0100@gw.example.com;user=phone":
        ("sip", "+1-212-555-0100", None, "gw.example.com", None, (("user", "phone"),), ""),
    "sip:host.example.com.": ("sip", None, None, "host.example.com.", None, (), ""),
    "sip:a-b.c-d.example": ("sip", None, None, "a-b.c-d.example", None, (), ""),
    "sip:h.example.com;x=\"quoted;semi\"":
        ("sip", None, None, "h.example.com", None, (("x", '"quoted;semi"'),), ""),
    "SIP:Bob@Example.COM": ("sip", "Bob", None, "Example.COM", None, (), ""),
    "sip:h.example.com:65535": ("sip", None, None, "h.example.com", 65535, (), ""),
}


@pytest.mark.parametrize("text", sorted(VALID))
def test_valid(text):
    uri = parse_uri(text)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params,
            uri.headers) == VALID[text]
    assert uri.is_sip
    assert parse_uri(str(uri)) == uri
    if text[:4].islower():
        assert str(uri) == text


def test_tel():
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com;ext=22")
    assert (uri.scheme, uri.user) == ("tel", "+1-201-555-0123")
    assert uri.param("ext") == "22" and not uri.is_sip
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com;ext=22"
    assert parse_uri("tel:*67#").user == "*67#"


def test_other_schemes_are_kept_opaque():
    uri = parse_uri("urn:service:sos")
    assert (uri.scheme, uri.opaque, str(uri)) == ("urn", "service:sos", "urn:service:sos")
    assert not uri.is_sip


def test_accessors():
    uri = parse_uri("sips:bob@[2001:DB8::1]:5061;Transport=TCP;lr")
    assert uri.transport == "tcp"  # explicit parameter wins over sips
    assert uri.has_param("LR") and uri.param("lr") == "" and uri.param("maddr") is None
    assert uri.host_bare == "2001:db8::1"
    assert parse_uri("sips:bob@example.com").transport == "tls"
    assert parse_uri("sip:bob@example.com").transport == "udp"
    assert str(uri.with_(port=None, params=())) == "sips:bob@[2001:DB8::1]"


INVALID = [
    "", "sip", "sip:", "bob@example.com", ":example.com", "1sip:example.com",
    "sip:@example.com", "sip:bob@", "sip:bob@example.com:", "sip:bob@example.com:0",
    "sip:bob@example.com:65536", "sip:bob@example.com:5x", "sip:bob@example.com:5²",
    "sip:bob@example.com:" + "1" * 5000, "sip:bob@exa mple.com", "sip:bob@example..com",
    "sip:bob@-example.com", "sip:bob@example-.com", "sip:bob@exam_ple.com", "sip:b<o>b@example.com",
    'sip:"bob"@example.com', "sip:[2001:db8::1", "sip:[]", "sip:[zz::1]", "sip:[2001:db8::1]x",
    "sip:[2001:db8::1]:", "sip:bob@example.com\n;x", "sip:bob@example.com;=x",
    "sip:bob@example.com;a b", 'sip:h.example.com;x="unterminated', "tel:", "tel:abc!",
    "mailto:", "http:with space",
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text):
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri(text)
    check_reason(info.value)


@pytest.mark.parametrize("host, ok", [
    ("example.com", True), ("a", True), ("192.0.2.1", True), ("[2001:db8::1]", True),
    ("[::1]", True), ("", False), ("example.com\n", False), ("[::1", False), ("[1.2.3.4]", False),
    ("exa_mple.com", False), ("1.2.3.4\n", False), ("١.١.١.١", False),
])
def test_is_host(host, ok):
    assert is_host(host) is ok


def test_format_host():
    assert format_host("2001:db8::1") == "[2001:db8::1]"
    assert format_host("[2001:db8::1]") == "[2001:db8::1]"
    assert format_host("192.0.2.1") == "192.0.2.1"


def test_uris_are_values():
    assert parse_uri("sip:a@example.com;lr") == URI("sip", "a", None, "example.com", None,
                                                    (("lr", None),))
    with pytest.raises(AttributeError):
        parse_uri("sip:a@example.com").host = "x"  # type: ignore[misc]
