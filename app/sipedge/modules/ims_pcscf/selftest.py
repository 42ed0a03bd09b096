"""`ipsec.selftest`: a short throughput test of the cipher and MAC drivers ESP uses, through
AF_ALG, once with the kernel's choice and once forced to the generic software driver, so
the difference a hardware engine or CPU instructions make is visible."""

from __future__ import annotations

import socket
import time

CASES = [  # (type, name the kernel resolves, generic driver, key bytes)
    ("skcipher", "cbc(aes)", "cbc(aes-generic)", 16),
    ("skcipher", "cbc(des3_ede)", "cbc(des3_ede-generic)", 24),
    ("hash", "hmac(sha1)", "hmac(sha1-generic)", 20),
    ("hash", "hmac(md5)", "hmac(md5-generic)", 16),
]
CHUNK = 16384


def _run(kind: str, name: str, keylen: int, seconds: float) -> dict:
    try:
        alg = socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0)
    except (OSError, AttributeError) as exc:
        return {"error": f"AF_ALG: {exc}"}
    try:
        alg.bind((kind, name))
        alg.setsockopt(socket.SOL_ALG, socket.ALG_SET_KEY, b"\x5a" * keylen)
        op, _ = alg.accept()
        data = b"\0" * CHUNK
        done = 0
        end = time.monotonic() + seconds
        start = time.monotonic()
        with op:
            while time.monotonic() < end:
                if kind == "skcipher":
                    op.sendmsg_afalg([data], op=socket.ALG_OP_ENCRYPT, iv=b"\1" * 16
                                     if "aes" in name else b"\1" * 8)
                    op.recv(CHUNK)
                else:
                    op.sendall(data)
                    op.recv(64)
                done += CHUNK
        secs = time.monotonic() - start
        return {"mb_per_s": round(done / secs / 1e6, 1), "bytes": done}
    except OSError as exc:
        return {"error": str(exc)}
    finally:
        alg.close()


def selftest(seconds: float = 0.3) -> dict:
    """{name: {"kernel_choice": {...}, "generic": {...}}} with MB/s for each."""
    seconds = max(0.05, min(seconds, 2.0))
    out = {}
    for kind, name, generic, keylen in CASES:
        out[name] = {"kernel_choice": _run(kind, name, keylen, seconds),
                     "generic": _run(kind, generic, keylen, seconds)}
    return out
