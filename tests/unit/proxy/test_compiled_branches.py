"""The compiled build's branches of the byte path (`if cython.compiled:` in sip/proxy.py:
_scan_head, _splice_lines) give what the Python branches give.

As plain Python the typed branches run too, slowly (they are plain Python loops over the
octets): `cython.compiled` is forced true and the outputs are compared with the Python
branches' on the byte path's inputs (the corpus, the rule cases and their mutations) and on
replies for the splice. In the compiled build (tests/integration/test_compiled_build.py
runs tests/unit/proxy on it) the branch is fixed at compile time: there _scan_head, the
compiled scan, is compared with _split_head directly, and test_byte_path and
test_splice_response compare the compiled forward and splice with the full path.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sipedge.compiled import is_compiled
from sipedge.sip import proxy
from sipedge.sip.proxy import LocalAddress, ProxyCore

from test_byte_path import INPUTS, SRC, SRC6, SRC_NAT, TABLES, _core, _mutations
from test_splice_response import THEIRS, reply

COMPILED = is_compiled("sipedge.sip.proxy")


def _known(head):
    """_scan_head leaves out what the byte path never reads (keys "" and values None for
    the other headers): compare the rest."""
    if head is None:
        return None
    hl, keys, values, present, cl, method, uri_text = head
    known = [(i, k, values[i]) for i, k in enumerate(keys) if k in proxy._SCAN_KEYS]
    return hl, known, cl, method, uri_text, present & set(proxy._SCAN_KEYS)


def _heads() -> list[tuple[bytes, int]]:
    out = []
    for data in INPUTS:
        end = data.find(b"\r\n\r\n")
        if 0 <= end <= proxy.BYTE_PATH_MAX_HEAD:
            out.append((data, end))
    return out


HEADS = _heads()

# header names in every spelling _scan_head folds: compact, upper, mixed case, and names
# that are only nearly the ones it knows
NAMES = {b"Via": (b"v", b"VIA", b"vIa", b"Vias", b"Vi"), b"From": (b"f", b"FROM", b"fROm"),
         b"To": (b"t", b"TO", b"tO", b"To-"), b"Call-ID": (b"i", b"CALL-ID", b"call-id"),
         b"CSeq": (b"CSEQ", b"cseq", b"C-Seq"),
         b"Max-Forwards": (b"MAX-FORWARDS", b"max-forwards"),
         b"Content-Length": (b"l", b"L", b"CONTENT-LENGTH", b"Content-Lengths"),
         b"Route": (b"ROUTE", b"r", b"Record-Route"), b"Record-Route": (b"RECORD-ROUTE",),
         b"Proxy-Require": (b"PROXY-REQUIRE",), b"Contact": (b"m", b"Proxy-Authorization",
                                                             b"Proxy-Require", b"X_y.z!%*+`'~")}


def _renamed() -> list[bytes]:
    rng = random.Random(9)
    out = []
    for data in INPUTS[:400]:
        for old, news in NAMES.items():
            if b"\r\n" + old + b": " in data:
                new = rng.choice(news)
                out.append(data.replace(b"\r\n" + old + b": ", b"\r\n" + new + b": ", 1))
    return out


RENAMED = _renamed()


@pytest.mark.parametrize("inputs", ["inputs", "renamed"])
def test_scan_head_is_split_head(inputs):
    heads = HEADS if inputs == "inputs" else [(d, d.find(b"\r\n\r\n")) for d in RENAMED]
    taken = 0
    for data, end in heads:
        if end < 0:
            continue
        split = _known(proxy._split_head(data[:end]))
        assert _known(proxy._scan_head(data, end)) == split, data
        taken += split is not None
    assert taken > 100, taken


@pytest.fixture
def forced(monkeypatch):
    """The module's `if cython.compiled:` branches, run as Python."""
    if COMPILED:
        pytest.skip("compiled build: the branch is fixed at compile time")
    monkeypatch.setattr(proxy, "cython", types.SimpleNamespace(compiled=True))


def _forwards(table, src, inputs):
    return [_core().forward_datagram(d, src, table.destination) for d in inputs]


@pytest.mark.parametrize("table", sorted(TABLES))
@pytest.mark.parametrize("src", [SRC, SRC_NAT, SRC6], ids=["src", "nat", "ipv6"])
def test_forward_datagram_branches_agree(table, src, monkeypatch):
    if COMPILED:
        pytest.skip("compiled build: the branch is fixed at compile time")
    inputs = INPUTS + RENAMED
    python = _forwards(TABLES[table], src, inputs)
    monkeypatch.setattr(proxy, "cython", types.SimpleNamespace(compiled=True))
    typed = _forwards(TABLES[table], src, inputs)
    for data, a, b in zip(inputs, python, typed):
        assert a == b, data


def _replies() -> list[bytes]:
    """Replies whose top Via a core wrote (and some it did not), and mutations of them."""
    rng = random.Random(15)
    core = ProxyCore([LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)])
    ours = core._our_via(core.locals[0], "z9hG4bK0x1a2b3c4dabcdef012345")
    tx = core._our_via(core.locals[0], "z9hG4bK0xt1a2b3c")
    heads = [f"Via: {ours}\r\nVia: {THEIRS}\r\n", f"v: {ours}\r\nVia: {THEIRS}\r\n",
             f"Via: {ours}\r\nVia: {THEIRS}\r\n ;x=1\r\n", f"Via: {THEIRS}\r\nVia: {ours}\r\n",
             f"Via: {tx}\r\nVia: {THEIRS}\r\n", f"Via: {ours}, {THEIRS}\r\n",
             f"X: 1\r\nvia: 2\r\nVia: {ours}\r\nVia: {THEIRS}\r\n",
             f"Via: {ours}\r\nVia: SIP/2.0/TCP 198.51.100.1;branch=z9hG4bKabc\r\n"]
    out = []
    for h in heads:
        data = reply(h, "v=0\r\n")
        out += [data, data[:-6], *_mutations(data, rng, 60)]
    return out


REPLIES = _replies()


def _splices(inputs):
    core = ProxyCore([LocalAddress(0, "udp", "192.0.2.10", 5060, "192.0.2.10", 5060)])
    core._our_via(core.locals[0], "z9hG4bK0x1a2b3c4dabcdef012345")
    out = []
    for data in inputs:
        try:
            r = core.splice_response(data)
        except Exception as exc:  # noqa: BLE001 - compared, not handled
            out.append(type(exc))
        else:
            out.append(None if r is None else (r.data, r.transport, r.ip, r.port, r.via))
    return out


def test_splice_response_branches_agree(forced, monkeypatch):
    typed = _splices(REPLIES)
    monkeypatch.undo()
    python = _splices(REPLIES)
    assert sum(isinstance(r, tuple) for r in python) > 20
    for data, a, b in zip(REPLIES, python, typed):
        assert a == b, data


def test_plain_python_without_cython_installed():
    """The image's Python has no Cython: sip/proxy.py then takes sipedge/_cython.py, and the
    typed branches still run as Python (forced) with its no-op decorators and declare."""
    if COMPILED:
        pytest.skip("compiled build: `import cython` is resolved at compile time")
    code = ("import sys, types\n"
            "sys.modules['cython'] = None  # import cython raises ImportError\n"
            "from sipedge.sip import proxy\n"
            "assert proxy.cython.__name__ == 'sipedge._cython', proxy.cython\n"
            "assert proxy.cython.compiled is False\n"
            "from test_byte_path import CASES, SRC, TABLES, _core\n"
            "data = CASES[sorted(CASES)[0]]\n"
            "table = TABLES['default']\n"
            "a = _core().forward_datagram(data, SRC, table.destination)\n"
            "proxy.cython = types.SimpleNamespace(compiled=True)\n"
            "b = _core().forward_datagram(data, SRC, table.destination)\n"
            "assert a == b, (a, b)\n"
            "print('ok', a is not None)\n")
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(proxy.__file__).resolve().parents[2]), str(here), str(here.parent / "sip")])}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stdout + res.stderr
