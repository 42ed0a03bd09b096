"""Take `ck` and `ik` out of an AKA challenge (TS 33.203 / TS 29.228: the S-CSCF adds them to
WWW-Authenticate for the P-CSCF only). Everything else stays byte-identical, in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")


class ChallengeError(ValueError):
    """A WWW-Authenticate we cannot take keys from (the text says why)."""


@dataclass(frozen=True)
class StrippedChallenge:
    value: str  # the header value without ck/ik
    ck: bytes | None
    ik: bytes | None


def _scan(value: str, start: int) -> list[tuple[int, int, str, str]]:
    """auth-params after the scheme: (start, end, name lower-case, unquoted value) spans of
    each `name=value`, end exclusive (before the following comma)."""
    out = []
    i, n = start, len(value)
    while i < n:
        while i < n and value[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        m = _TOKEN.match(value, i)
        if not m:
            raise ChallengeError(f"bad auth-param at offset {i}")
        name = m.group(0)
        j = m.end()
        while j < n and value[j] in " \t":
            j += 1
        if j >= n or value[j] != "=":
            raise ChallengeError(f"auth-param {name!r} has no value")
        j += 1
        while j < n and value[j] in " \t":
            j += 1
        if j < n and value[j] == '"':
            k, buf = j + 1, []
            while k < n and value[k] != '"':
                if value[k] == "\\" and k + 1 < n:
                    k += 1
                buf.append(value[k])
                k += 1
            if k >= n:
                raise ChallengeError(f"auth-param {name!r}: unterminated quoted string")
            end, raw = k + 1, "".join(buf)
        else:
            m2 = _TOKEN.match(value, j)
            end = m2.end() if m2 else j
            raw = value[j:end]
        k = end
        while k < n and value[k] in " \t":
            k += 1
        if k < n and value[k] != ",":
            raise ChallengeError(f"junk after auth-param {name!r}")
        out.append((i, end, name.lower(), raw))
        i = k + 1
    return out


def strip_keys(value: str) -> StrippedChallenge:
    """Remove ck= and ik= (any case, quoted or not) from one WWW-Authenticate value. The
    separators around a removed parameter go with it; other bytes are untouched."""
    m = _TOKEN.match(value)
    if not m:
        raise ChallengeError("no auth scheme")
    spans = _scan(value, m.end())
    keys: dict[str, bytes] = {}
    drop = []
    for idx, (s, e, name, raw) in enumerate(spans):
        if name in ("ck", "ik"):
            if name in keys:
                raise ChallengeError(f"{name} given twice")
            if not _HEX32.fullmatch(raw):
                raise ChallengeError(f"{name} is not 32 hex digits")
            keys[name] = bytes.fromhex(raw)
            drop.append(idx)
    if not drop:
        return StrippedChallenge(value, None, None)
    keep = [sp for i, sp in enumerate(spans) if i not in drop]
    if not keep:
        out = value[:m.end()]
    else:
        # rebuild from the original text: scheme + whitespace up to the first kept param,
        # then each kept param with the separator text that followed its predecessor
        first = keep[0]
        lead_end = spans[0][0]
        out = value[:lead_end] + value[first[0]:first[1]]
        for prev, cur in zip(keep, keep[1:]):
            # the separator that originally preceded `cur`
            sep_start = max(sp[1] for sp in spans if sp[1] <= cur[0])
            out += value[sep_start:cur[0]] + value[cur[0]:cur[1]]
        last_end = spans[-1][1]
        out += value[last_end:] if spans[-1] in keep else value[spans[-1][1]:]
    return StrippedChallenge(out, keys.get("ck"), keys.get("ik"))
