"""Digest `uri` against the Request-URI: equivalent URIs, not byte-equal strings (issue 11)."""

import pytest

from sipedge.modules.auth.digest import uri_matches


def ours(uri):
    return uri.host_bare in ("example.com", "192.0.2.1")


@pytest.mark.parametrize("digest, ruri", [
    ("sip:example.com", "sip:example.com"),
    ("sip:127.0.0.1:5060", "sip:127.0.0.1"),          # SIPp: the default port written out
    ("sip:EXAMPLE.com", "sip:example.com"),           # host is case-insensitive
    ("sips:example.com:5061", "sips:example.com"),
    ("sip:example.com;transport=udp", "sip:example.com"),
    ("sip:alice@example.com", "sip:alice@example.com:5060"),
])
def test_equivalent_uris_match(digest, ruri):
    assert uri_matches(digest, ruri)


@pytest.mark.parametrize("digest, ruri", [
    ("sip:example.com:5070", "sip:example.com"),      # another port: another server
    ("sip:other.example", "sip:example.com"),
    ("sips:example.com", "sip:example.com"),
    ("sip:bob@example.com", "sip:alice@example.com"),
    ("sip:ALICE@example.com", "sip:alice@example.com"),  # the user part is case-sensitive
    ("not a uri", "sip:example.com"),
])
def test_different_uris_do_not(digest, ruri):
    assert not uri_matches(digest, ruri)
    assert not uri_matches(digest, ruri, same_server=lambda u: u.host_bare == "example.com"
                           and u.port in (None, 5060))


def test_both_naming_this_server_match_only_with_same_server():
    # a phone configured with the registrar's address computes the digest over it, while
    # the R-URI names the domain
    assert not uri_matches("sip:192.0.2.1:5060", "sip:example.com")
    assert uri_matches("sip:192.0.2.1:5060", "sip:example.com", same_server=ours)
    assert not uri_matches("sip:198.51.100.7", "sip:example.com", same_server=ours)
