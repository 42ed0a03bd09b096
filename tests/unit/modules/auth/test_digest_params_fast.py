"""parse_digest reads a well-formed parameter list in one findall (`_ALL_PARAMS` accepts it)
and anything else with the match-per-parameter loop: both must give the same parameters,
and the fast path must never accept what the loop refuses (differential, corpus + mutations)."""

import random

import pytest

from sipedge.errors import RemoteProtocolError
from sipedge.modules.auth import digest

CORPUS = [
    'Digest username="u000001",realm="localhost",cnonce="00000001",nc=00000001,qop=auth,'
    'uri="sip:127.0.0.1:25010",nonce="AAA=",response="0123abcd",algorithm=MD5',
    'Digest realm="a\\"b", nonce="x",, opaque=y ,',
    'Digest a = "x" , b=\t"y"',
    'Digest a=b c=d',
    'Digest a="b',
    'Digest a=b,a=c',
    'Digest a=b,\n,',
    'Digest a="", b="\\\\"',
    'Digest  ',
]
PIECES = [" ", "\t", ",", "=", '"', "\\", "a", "realm", "\n", "\r\n", '"sip:a@b"', "z9", "\u00e9",
          ";", ":"]


def _outcome(fn, text, pos):
    try:
        return fn(text, pos)
    except RemoteProtocolError as exc:
        return ("error", exc.reason)


def _texts(n=3000, seed=15):
    rnd = random.Random(seed)
    yield from CORPUS
    for _ in range(n):
        chars = list(rnd.choice(CORPUS))
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randrange(len(chars) + 1)
            op = rnd.random()
            if op < 0.4:
                chars.insert(at, rnd.choice(PIECES))
            elif chars:
                at = min(at, len(chars) - 1)
                if op < 0.8:
                    del chars[at]
                else:
                    chars[at] = rnd.choice(PIECES)
        yield "".join(chars)


@pytest.mark.parametrize("seed", [15, 16])
def test_fast_path_equals_loop(seed):
    fast = 0
    for value in _texts(seed=seed):
        text = value.strip()
        if not text.startswith("Digest"):
            continue
        pos = len("Digest")
        if digest._ALL_PARAMS.fullmatch(text, pos):
            fast += 1
            assert _outcome(digest._find_params, text, pos) == \
                _outcome(digest._parse_params, text, pos), text
    assert fast > 100  # the fast path was exercised


def test_parse_digest_fast_path_values():
    scheme, p = digest.parse_digest(CORPUS[1])
    assert scheme == "Digest" and p == {"realm": 'a"b', "nonce": "x", "opaque": "y"}
    with pytest.raises(RemoteProtocolError, match="Repeated"):
        digest.parse_digest("Digest a=b, A=c")
