"""Garbage from a server only ever raises HttpError (Hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.modules.http_client.h1 import HttpError, ResponseParser

PIECES = st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 404 X\r\n", b"Content-Length: 3\r\n",
                          b"Transfer-Encoding: chunked\r\n", b"\r\n", b"3\r\nabc\r\n", b"0\r\n",
                          b"Connection: close\r\n", b"HTTP/1.1 100 Continue\r\n", b"zz\r\n",
                          b"Content-Length: 99999999999\r\n", b":\r\n", b"abc"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(PIECES, st.binary(max_size=40)), max_size=12), st.integers(1, 9),
       st.sampled_from(["GET", "HEAD", "POST"]))
def test_garbage_raises_only_http_errors(parts, step, method):
    data = b"".join(parts)
    p = ResponseParser(method, max_head_bytes=512, max_body_bytes=256)
    try:
        for i in range(0, len(data), step):
            p.feed(data[i:i + step])
        p.feed(b"")
    except HttpError:
        return
    assert p.done and p.response is not None
