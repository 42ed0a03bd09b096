"""Print, one JSON line per input, what the parser and the proxy rules make of every corpus
sample and of seeded mutations of them. Run once per build (PYTHONPATH selects it);
test_compiled_build.py compares the two outputs line by line.

Only public, stable entry points are used (parse_message, the header accessors,
ProxyCore.check_request/options replies, ProxyCore.forward_datagram, and
ProxyCore.splice_response of every reply with the Via of a request that core forwarded put
on top; then forward_datagram of the byte path's own test inputs, see byte_path_cases), so
the dump survives
refactoring of the hot path; what a value looks like is its repr()/str(), the same in both
builds.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from sipedge.errors import ProtocolError
from sipedge.sip.headers.address import parse_address
from sipedge.sip.message import Request, parse_message

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "sip"))
from sip_corpus import CORPUS, mutations  # noqa: E402 - the corpus and its mutations
MUTATIONS_PER_SAMPLE = 12


def _err(e: BaseException) -> list:
    return ["error", type(e).__name__, getattr(e, "reason", str(e)), getattr(e, "status_hint", None)]


def _try(fn):
    try:
        return ["ok", fn()]
    except ProtocolError as e:
        return _err(e)
    except (ValueError, TypeError, KeyError, IndexError, UnicodeError) as e:
        return _err(e)


def byte_path(data: bytes):
    """What the proxy core's byte path makes of a UDP request (None: the full path)."""
    from sipedge.script.api import RouteTable
    from sipedge.sip.proxy import LocalAddress, ProxyCore, Source
    from sipedge.sip.uri import parse_uri
    local = LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)
    core = ProxyCore([local], domains=("example.com",), secret=b"k")
    table = RouteTable([], parse_uri("sip:192.0.2.99:5080"))
    fwd = core.forward_datagram(data, Source("udp", "198.51.100.1", 5070, 0), table.destination)
    return None if fwd is None else [fwd[0].hex(), *fwd[1:]]


_SPLICE: list = []


def splice(data: bytes):
    """What the stateless reply splice makes of a reply, with the Via of a request the same
    core forwarded (by forward_datagram) put on top, and of the reply as it is (None: the
    full path). One core for the whole dump: its caches are part of what is compared."""
    from sipedge.script.api import RouteTable
    from sipedge.sip.proxy import LocalAddress, ProxyCore, Source
    from sipedge.sip.uri import parse_uri
    if not _SPLICE:
        local = LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)
        core = ProxyCore([local], secret=b"k")
        req = (b"INVITE sip:b@192.0.2.99:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5070;"
               b"branch=z9hG4bKd1\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\n"
               b"To: <sip:b@y>\r\nCall-ID: d1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
        fwd = core.forward_datagram(req, Source("udp", "198.51.100.1", 5070, 0),
                                    RouteTable([], parse_uri("sip:192.0.2.99:5080")).destination)
        _SPLICE.extend([core, next(line for line in fwd[0].split(b"\r\n")
                                   if line.startswith(b"Via: "))])
    core, via_line = _SPLICE
    i = data.find(b"\r\n")
    out = []
    for d in (data, data[:i + 2] + via_line + b"\r\n" + data[i + 2:]):
        r = core.splice_response(d)
        out.append(None if r is None else [r.data.hex(), r.transport, r.ip, r.port, repr(r.via)])
    return out


def parsed(data: bytes, datagram: bool) -> dict:
    out: dict = {}
    if datagram:
        out["byte_path"] = _try(lambda: byte_path(data))
        if data.startswith(b"SIP/2.0 ") and b"\r\n" in data:
            out["splice"] = _try(lambda: splice(data))
    try:
        msg = parse_message(data, datagram=datagram)
    except ProtocolError as e:
        return {"parse": _err(e)}
    out["start"] = msg.start_line
    out["headers"] = [list(h) for h in msg.header_items()]
    out["body"] = msg.body.hex() if isinstance(msg.body, (bytes, bytearray)) else repr(msg.body)
    out["vias"] = _try(lambda: [repr(v) for v in msg.vias()])
    out["cseq"] = _try(lambda: repr(msg.cseq))
    out["call_id"] = _try(lambda: msg.call_id)
    out["from"] = _try(lambda: repr(msg.from_))
    out["to"] = _try(lambda: repr(msg.to))
    for name in ("contact", "route", "record-route"):
        out[name] = _try(lambda: [repr(parse_address(v)) for v in msg.get_all(name)])
    if isinstance(msg, Request):
        out["uri"] = _try(lambda: [repr(msg.uri), str(msg.uri)])
        out["proxy"] = _try(lambda: proxy_rules(msg))
    out["bytes"] = _try(lambda: msg.to_bytes().hex())
    return out


def proxy_rules(msg: Request):
    from sipedge.sip.proxy import LocalAddress, ProxyCore, Source
    local = LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)
    core = ProxyCore([local], domains=("example.com",), secret=b"k")
    reply = core.check_request(msg, Source("udp", "198.51.100.1", 5070, 0))
    return None if reply is None else reply.to_bytes().hex()


def byte_path_cases() -> list[dict]:
    """The byte path's own inputs (tests/unit/proxy/test_byte_path.py: the corpus, the rule
    cases and their mutations) through every route table and source there: what
    forward_datagram makes of them (the compiled build scans the head in C, _scan_head)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "proxy"))
    import test_byte_path as t
    out = []
    for name in sorted(t.TABLES):
        for src in (t.SRC, t.SRC_NAT, t.SRC6):
            core = t._core()
            for data in t.INPUTS:
                fwd = _try(lambda: core.forward_datagram(data, src, t.TABLES[name].destination))
                if fwd[0] == "ok" and fwd[1] is not None:
                    fwd[1] = [fwd[1][0].hex(), *fwd[1][1:]]
                out.append({"table": name, "src": repr(src), "forward": fwd})
    return out


def main() -> int:
    rng = random.Random(15)
    samples = [p.read_bytes() for p in sorted(CORPUS.glob("*/*.sip"))]
    if not samples:
        raise SystemExit(f"no corpus under {CORPUS}")
    n = 0
    for data in samples:
        for variant in [data, *mutations(data, rng, MUTATIONS_PER_SAMPLE)]:
            for datagram in (True, False):
                line = {"n": n, "datagram": datagram, **parsed(variant, datagram)}
                print(json.dumps(line, sort_keys=True, default=repr))
                n += 1
    for case in byte_path_cases():
        print(json.dumps({"n": n, **case}, sort_keys=True, default=repr))
        n += 1
    print(json.dumps({"total": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
