"""Live fuzz target (issue 14): Hypothesis-generated SIP messages sent to a running proxy over
UDP and TCP, with a liveness check (OPTIONS answered 200 on both transports) after each
batch. The conftest log rule fails the test on any traceback or "Unhandled exception" in
the proxy's log. Bounded for `make test`: SIPEDGE_FUZZ_EXAMPLES batches (default 25) of up
to 12 messages; set it higher for a soak."""

from __future__ import annotations

import os
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip_harness import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "sip"))
from sip_corpus import all_corpus_bytes  # noqa: E402 - the parser corpus seeds the mutations

EXAMPLES = int(os.environ.get("SIPEDGE_FUZZ_EXAMPLES", "25"))
SEEDS = all_corpus_bytes()

METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "SUBSCRIBE",
           "NOTIFY", "PRACK", "UPDATE", "REFER", "INFO", "PUBLISH", "FOO", "invite", "X" * 300]
NAMES = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Max-Forwards", "Route",
         "Record-Route", "Contact", "m", "Content-Length", "l", "Content-Type", "Proxy-Require",
         "Require", "Supported", "Authorization", "Expires", "User-Agent", "X-Fuzz", ""]
PIECES = ["SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK", "SIP / 2.0 / TCP h", "<sip:a@b>",
          "sip:bob@127.0.0.1", '"Al\\\x00ice" <sip:a@b>', ";tag=", ";rport", ";lr", ",", ", ,",
          ";", "=", '"', "<", ">", "@", ":", "[", "]", "::1", "%", "\\", "\x00", "\x7f",
          "\r\n ", "\t", "70", "0", "-1", "99999999999", "1 INVITE", "1 ACK", "²", "é",
          "z9hG4bK0x", "z9hG4bKt", "*", "tel:+1", "sips:x", "transport=tcp"]

text = st.lists(st.sampled_from(PIECES) | st.text(max_size=6), max_size=8).map("".join)


@st.composite
def sip_message(draw) -> bytes:
    method = draw(st.sampled_from(METHODS))
    ruri = draw(st.sampled_from(["sip:bob@127.0.0.1", "sip:127.0.0.1", "sips:x", "tel:+1",
                                 "mailto:x", "sip:[::1]:5060", "sip:a@b;lr", ""]) | text)
    version = draw(st.sampled_from(["SIP/2.0", "SIP/2.0", "SIP/7.0", "sip/2.0", "HTTP/1.1"]))
    lines = [f"{method} {ruri} {version}"]
    if draw(st.integers(0, 9)) == 0:
        code = draw(st.sampled_from(["100", "180", "200", "404", "699", "99", "abc"]))
        lines = [f"SIP/2.0 {code} Reason"]
    via = draw(st.sampled_from(["SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bKfz",
                                "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfz, , SIP/2.0/UDP h",
                                "SIP / 2.0 / UDP 127.0.0.1:5999;rport;branch=z9hG4bKfz"]))
    base = [("Via", via + str(draw(st.integers(0, 99)))),
            ("From", "<sip:fuzz@127.0.0.1>;tag=fz"), ("To", "<sip:bob@127.0.0.1>"),
            ("Call-ID", f"fuzz-{draw(st.integers(0, 10**6))}"), ("CSeq", f"1 {method}")]
    headers = draw(st.lists(st.sampled_from(base) | st.tuples(st.sampled_from(NAMES), text),
                            max_size=12))
    if draw(st.booleans()):
        headers = base + headers
    lines += [f"{n}: {v}" for n, v in draw(st.permutations(headers))]
    body = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        lines.append(f"Content-Length: {draw(st.sampled_from([len(body), 0, 5, 10**9]))}")
    sep = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    return (sep.join(lines) + sep + sep).encode("utf-8", "surrogateescape") + body


@st.composite
def mutated_seed(draw) -> bytes:
    buf = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        buf[at:at + draw(st.integers(0, 3))] = draw(st.binary(max_size=4) | st.sampled_from(
            [b"\x00", b",", b";", b'"', b"<", b">", b"\r\n", b"\r\n ", b"9" * 12, b"SIP/7.0"]))
    return bytes(buf)


messages = st.lists(sip_message() | mutated_seed(), min_size=1, max_size=12)


def _alive(port: int) -> None:
    """Both transports answer an OPTIONS to the proxy itself within 2 s."""
    n = time.monotonic_ns()
    opt = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bKalive{n}\r\n"
           f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1:{port}>\r\n"
           f"Call-ID: alive-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        u.settimeout(2)
        u.sendto(opt, ("127.0.0.1", port))
        while True:
            data = u.recv(65535)
            if f"alive-{n}".encode() in data:
                assert data.startswith(b"SIP/2.0 200 "), data[:200]
                break
    with socket.create_connection(("127.0.0.1", port), timeout=2) as t:
        t.sendall(opt.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = t.recv(65536)
            assert chunk, "TCP liveness probe: connection closed"
            buf += chunk
        assert buf.startswith(b"SIP/2.0 200 "), buf[:200]


@pytest.fixture
def fuzz_target(sipedge_factory):
    port, sink_port, dns_port = free_port(), free_port(), free_port()
    # names in the fuzzed Route/R-URI values are looked up at a dead local port only
    sipedge_factory([("udp", "127.0.0.1", port), ("tcp", "127.0.0.1", port)], workers=1,
                    extra=f'[routing]\ndefault_destination = "sip:127.0.0.1:{sink_port}"\n'
                          '[proxy]\ndomains = ["localhost"]\n'
                          f'[dns]\nservers = ["127.0.0.1:{dns_port}"]\ntimeout_s = 0.2\n'
                          'attempts = 1\n')
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the next hop: swallows all
    sink.bind(("127.0.0.1", sink_port))
    sink.setblocking(False)
    yield port
    sink.close()


def _send_batch(port: int, batch: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        for data in batch:
            u.sendto(data[:60000], ("127.0.0.1", port))
    for data in batch:  # one connection per message: garbage loses the framing
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as t:
                t.sendall(data)
        except OSError:
            pass


def test_live_fuzz_udp_and_tcp(fuzz_target):
    port = fuzz_target
    _alive(port)
    for i in range(0, len(SEEDS), 10):  # first the whole parser corpus, as it is
        _send_batch(port, SEEDS[i:i + 10])
        _alive(port)

    @settings(max_examples=EXAMPLES, deadline=timedelta(seconds=20), database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(batch=messages)
    def batch_round(batch: list[bytes]) -> None:
        _send_batch(port, batch)
        _alive(port)

    batch_round()
