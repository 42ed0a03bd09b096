"""Shared helpers for the SIP parser tests: the wire-sample corpus and a strict parse.

`corpus/valid/NAME.sip` holds raw bytes exactly as received (one UDP datagram) and
`NAME.json` what the parser must make of them. `corpus/invalid/NAME.sip` holds malformed
input and `corpus/invalid/expected.json` maps NAME to the expected `reason` (a
case-insensitive substring of `RemoteProtocolError.reason`) and `status` (the `status_hint`).
An `xfail` key marks a known parser bug, with what is wrong (`xfail_strict: false` when
the outcome depends on parser caches warmed by earlier tests).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sipedge.errors import RemoteProtocolError
from sipedge.sip.headers.address import parse_address
from sipedge.sip.message import Request, Response, parse_message

CORPUS = Path(__file__).parent / "corpus"


def _params(names: list[str], marks: dict[str, str], lax: frozenset[str] = frozenset()) -> list:
    return [pytest.param(n, id=n, marks=[pytest.mark.xfail(reason=marks[n], strict=n not in lax)]
                         if n in marks else []) for n in names]


def valid_names() -> list[str]:
    return sorted(p.stem for p in (CORPUS / "valid").glob("*.sip"))


def valid_case(name: str) -> tuple[bytes, dict]:
    base = CORPUS / "valid" / name
    return base.with_suffix(".sip").read_bytes(), json.loads(base.with_suffix(".json").read_text())


def valid_params(*, include_xfail: bool = True) -> list:
    marks = {n: e["xfail"] for n in valid_names() if "xfail" in (e := valid_case(n)[1])}
    names = [n for n in valid_names() if include_xfail or n not in marks]
    return _params(names, marks)


def invalid_table() -> dict[str, dict]:
    return json.loads((CORPUS / "invalid" / "expected.json").read_text())


def invalid_case(name: str) -> tuple[bytes, dict]:
    return (CORPUS / "invalid" / f"{name}.sip").read_bytes(), invalid_table()[name]


def invalid_params() -> list:
    table = invalid_table()
    return _params(sorted(table), {n: e["xfail"] for n, e in table.items() if "xfail" in e},
                   frozenset(n for n, e in table.items() if e.get("xfail_strict") is False))


def all_corpus_bytes() -> list[bytes]:
    """Every sample, valid and invalid: seeds for the mutation fuzzers."""
    return [p.read_bytes() for p in sorted(CORPUS.glob("*/*.sip"))]


# what a mutation may insert: the octets that delimit SIP's syntax
DELIMITERS = (b"\r\n", b";", b",", b":", b" ", b"\x00", b"<", b'"', b"%")


def mutations(data: bytes, rng: random.Random, count: int, *, max_ops: int = 4,
              inserts: tuple[bytes, ...] = DELIMITERS) -> list[bytes]:
    """`count` seeded variants of `data`, each with 1 to `max_ops` edits: an octet replaced,
    up to 8 deleted, one of `inserts` inserted, or the 20 octets before a point repeated."""
    out = []
    for _ in range(count):
        buf = bytearray(data)
        for _ in range(rng.randint(1, max_ops)):
            if not buf:
                break
            op, i = rng.randrange(4), rng.randrange(len(buf))
            if op == 0:
                buf[i] = rng.randrange(256)
            elif op == 1:
                del buf[i:i + rng.randint(1, 8)]
            elif op == 2:
                buf[i:i] = rng.choice(inserts)
            else:
                buf[i:i] = buf[max(0, i - 20):i]
        out.append(bytes(buf))
    return out


def parse_strict(data: bytes, *, datagram: bool = True) -> Request | Response:
    """Parse, then touch every structured value a proxy reads (they are parsed lazily)."""
    msg = parse_message(data, datagram=datagram)
    msg.vias()
    msg.via  # noqa: B018
    msg.cseq  # noqa: B018
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    for name in ("contact", "route", "record-route"):
        for value in msg.get_all(name):
            parse_address(value)
    if isinstance(msg, Request):
        msg.uri  # noqa: B018
    return msg


def check_reason(exc: RemoteProtocolError) -> None:
    """The error must be usable as the reason phrase and status of a reply."""
    assert type(exc) is RemoteProtocolError
    assert exc.reason and len(exc.reason) < 100, exc.reason
    assert not any(c in exc.reason for c in "\r\n\x00"), exc.reason
    assert exc.reason.isprintable(), exc.reason
    assert 400 <= exc.status_hint < 600, exc.status_hint
