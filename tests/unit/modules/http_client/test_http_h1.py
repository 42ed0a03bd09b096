"""HTTP/1.1 client framing, sans-IO: whole, byte at a time, with trailing data."""

from __future__ import annotations

import pytest

from sipedge.modules.http_client.h1 import (HttpProtocolError, HttpTooLarge, ResponseParser,
                                            build_request)
from sipedge.modules.http_client.client import parse_url

CASES = [
    # (method, wire bytes, eof needed, status, body, keep_alive)
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False, 200, b"hello", True),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n", False, 200, b"hello", True),
    ("GET", b"HTTP/1.0 200 OK\r\n\r\nuntil close", True, 200, b"until close", False),
    ("GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
     False, 200, b"ok", True),
    ("GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
     False, 200, b"ok", False),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", False, 200, b"", True),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", False, 204, b"", True),
    ("POST", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
     False, 201, b"x", True),
    ("GET", b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", False, 404, b"", True),
]


def feed_all(method, wire, eof, step=None, **limits):
    p = ResponseParser(method, **limits)
    chunks = [wire] if step is None else [wire[i:i + step] for i in range(0, len(wire), step)]
    for c in chunks:
        p.feed(c)
    if eof:
        assert not p.done
        p.feed(b"")
    return p


@pytest.mark.parametrize("method,wire,eof,status,body,keep", CASES)
@pytest.mark.parametrize("step", [None, 1, 7])
def test_cases(method, wire, eof, status, body, keep, step):
    p = feed_all(method, wire, eof, step)
    assert p.done
    assert (p.response.status, p.response.body, p.keep_alive) == (status, body, keep)
    st, headers, b = p.response  # unpacks as (status, headers, body)
    assert st == status and b == body


def test_trailing_data_makes_the_connection_unusable():
    p = feed_all("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA", False)
    assert p.done and p.response.body == b"x" and not p.keep_alive


def test_headers_and_text():
    p = feed_all("GET", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=latin-1\r\n"
                        b"Set-Cookie: a\r\nset-cookie: b\r\nContent-Length: 1\r\n\r\n\xe9", False)
    r = p.response
    assert r.header("CONTENT-TYPE").startswith("text/plain")
    assert r.header_dict()["set-cookie"] == "a, b"
    assert r.text == "\u00e9" and r.ok


@pytest.mark.parametrize("wire,exc", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", HttpTooLarge),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300 + b"\r\n\r\n", HttpTooLarge),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n" + b"a" * 65, HttpTooLarge),
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"a" * 65, HttpTooLarge),
    (b"SIP/2.0 200 OK\r\n\r\n", HttpProtocolError),
    (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", HttpProtocolError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", HttpProtocolError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", HttpProtocolError),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", HttpProtocolError),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab", HttpProtocolError),
])
def test_limits_and_garbage(wire, exc):
    p = ResponseParser("GET", max_head_bytes=256, max_body_bytes=64)
    with pytest.raises(exc):
        p.feed(wire)
        p.feed(b"")


def test_eof_before_complete_is_an_error():
    p = ResponseParser("GET")
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    with pytest.raises(HttpProtocolError):
        p.feed(b"")


def test_build_request():
    data = build_request("POST", "/x?a=1", "example.com:8080", [("X-A", "1")], b"body")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"POST /x?a=1 HTTP/1.1", b"Host: example.com:8080",
                                   b"X-A: 1", b"Content-Length: 4"]
    assert body == b"body"
    assert b"Content-Length" not in build_request("GET", "/", "h", [], None)
    with pytest.raises(ValueError):
        build_request("GET", "/", "h", [("X-A", "1\r\nInjected: 1")], None)
    with pytest.raises(ValueError):
        build_request("GET", "/ x", "h", [], None)
    with pytest.raises(ValueError):
        build_request("G ET", "/", "h", [], None)


def test_parse_url():
    t = parse_url("https://[::1]:8443/a?b=c")
    assert (t.scheme, t.host, t.port, t.path, t.host_header) == ("https", "::1", 8443, "/a?b=c",
                                                                 "[::1]:8443")
    assert parse_url("http://example.com").host_header == "example.com"
    for bad in ("ftp://x/", "http:///x", "http://u:p@x/", "http://x:99999/"):
        with pytest.raises(ValueError):
            parse_url(bad)
