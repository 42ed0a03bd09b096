"""TCP framing (sipedge.io.transport.StreamConnection.data_received) without sockets.

The connection is driven through its asyncio.Protocol methods with a recording sink (our own
Sink interface, so a fake is fine); nothing is ever sent on a network. Byte-at-a-time
feeding with trailing data, as in h11's tests.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from sipedge.io.transport import StreamConnection
from sipedge.sip.message import parse_message
from sip_corpus import valid_case, valid_names


class RecordingSink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.errors: list[tuple[str, bytes]] = []

    def on_stream_message(self, data: bytes, conn: StreamConnection) -> None:
        self.messages.append(data)

    def on_stream_error(self, reason: str, data: bytes, conn: StreamConnection) -> None:
        self.errors.append((reason, data))

    def on_datagram(self, data, addr, listener):  # pragma: no cover - not used on streams
        raise AssertionError("datagram on a stream")

    def on_connection_made(self, conn):  # pragma: no cover
        pass

    def on_connection_lost(self, conn):  # pragma: no cover
        pass


@pytest.fixture
def conn():
    loop = asyncio.new_event_loop()  # only for the `connected` future; never run
    asyncio.set_event_loop(loop)
    try:
        yield StreamConnection(RecordingSink(), listener=0)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _stream_samples() -> list:
    """Valid corpus messages that are complete stream messages (exact Content-Length)."""
    out = []
    for name in valid_names():
        data, exp = valid_case(name)
        if exp.get("stream") is False or "xfail" in exp:
            continue
        out.append(pytest.param(data.lstrip(b"\r\n"), id=name))
    return out


SAMPLES = _stream_samples()
KEEPALIVE = b"\r\n\r\n"


def _feed(conn: StreamConnection, data: bytes, sizes) -> None:
    i = 0
    while i < len(data):
        n = next(sizes)
        conn.data_received(data[i:i + n])
        i += n


def _ones():
    while True:
        yield 1


@pytest.mark.parametrize("msg", SAMPLES)
def test_byte_at_a_time_with_trailing_data(conn, msg):
    parse_message(msg, datagram=False)  # the sample itself is a valid stream message
    stream = msg + KEEPALIVE + b"\r\n" + msg + msg[:10]
    _feed(conn, stream, _ones())
    assert conn.sink.messages == [msg, msg]
    assert conn.sink.errors == []
    assert conn.pending == [b"\r\n"]  # the RFC 5626 keep-alive was answered
    assert bytes(conn.buf) == msg[:10]  # the start of a third message waits for more
    for framed in conn.sink.messages:
        assert parse_message(framed, datagram=False).body == parse_message(msg).body


@pytest.mark.parametrize("seed", range(5))
def test_random_chunks_over_the_whole_corpus(conn, seed):
    rnd = random.Random(seed)
    msgs = [p.values[0] for p in SAMPLES]
    rnd.shuffle(msgs)
    stream = b"".join(msgs)

    def sizes():
        while True:
            yield rnd.choice([1, 2, 3, 7, 64, 500, 4096])

    _feed(conn, stream, sizes())
    assert conn.sink.messages == msgs
    assert conn.sink.errors == [] and not conn.buf


def test_keepalives_only(conn):
    _feed(conn, KEEPALIVE * 3, _ones())
    assert conn.pending == [b"\r\n"] * 3
    conn.data_received(b"\r\n")
    assert bytes(conn.buf) == b"\r\n"  # may still become a ping
    assert conn.sink.messages == []


def _head(extra: bytes) -> bytes:
    return (b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKs\r\n"
            b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: s-1\r\n"
            b"CSeq: 1 OPTIONS\r\n" + extra + b"\r\n")


@pytest.mark.parametrize("data, reason", [
    (_head(b""), "Missing Content-Length"),
    (_head(b"Content-Length: x\r\n"), "Bad Content-Length"),
    (_head(b"Content-Length: \xc2\xb2\r\n"), "Bad Content-Length"),
    (_head(b"Content-Length: 9999999999\r\n"), "Bad Content-Length"),
    (_head(b"Content-Length: 99999999\r\n"), "Message Too Large"),
    (b"X" * 70000, "Message Too Large"),
])
def test_framing_errors_close_the_connection(conn, data, reason):
    conn.data_received(data)
    assert [r for r, _ in conn.sink.errors] == [reason]
    assert conn.closed and not conn.buf
    conn.data_received(_head(b"l: 0\r\n"))  # nothing more is read after a framing error
    assert conn.sink.messages == []


def test_compact_content_length_frames(conn):
    msg = _head(b"l: 4\r\n") + b"abcd"
    _feed(conn, msg + msg, _ones())
    assert conn.sink.messages == [msg, msg]


def test_bare_lf_message_frames(conn):
    msg = _head(b"Content-Length: 3\r\n").replace(b"\r\n", b"\n") + b"xyz"
    _feed(conn, msg + msg, _ones())
    assert conn.sink.messages == [msg, msg]


def test_bare_lf_message_then_crlf_message_in_one_read(conn):
    """The head ends at the first blank line, not at a CRLFCRLF of the next message."""
    lf = _head(b"Content-Length: 3\r\n").replace(b"\r\n", b"\n") + b"xyz"
    crlf = _head(b"Content-Length: 0\r\n")
    conn.data_received(lf + crlf)
    assert conn.sink.messages == [lf, crlf]
