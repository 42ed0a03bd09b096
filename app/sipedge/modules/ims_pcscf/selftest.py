"""`ipsec.selftest`: a short throughput test of the cipher and MAC drivers ESP uses, through
AF_ALG: once with the kernel's choice, once forced to the generic software driver, and once
with every other implementation /proc/crypto lists for the algorithm (a hardware engine such
as virtio-crypto or CAAM, CPU instructions), so the box shows which driver serves each
algorithm and what it gains (or loses) against the others."""

from __future__ import annotations

import socket
import time

from .crypto import best_for, parse_proc_crypto

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


def read_proc_crypto(path: str = "/proc/crypto") -> str:
    """The text of /proc/crypto ("" when it cannot be read): the one reader of the file (the
    runtime, the RPCs, the self-test, the command line); from asyncio, call it in a thread.
    crypto.py parses the text (sans-IO)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def selftest(seconds: float = 0.3) -> dict:
    """{name: {"kernel_choice": {mb_per_s, driver, kind}, "generic": {...},
    "others": {driver: {...}}}}: MB/s of each implementation the kernel has for it."""
    seconds = max(0.05, min(seconds, 2.0))
    out = {}
    for kind, name, generic, keylen in CASES:
        choice = _run(kind, name, keylen, seconds)
        # after the bind: the kernel's pick is instantiated
        impls = parse_proc_crypto(read_proc_crypto())
        best = best_for(impls, name)
        if best is not None and "error" not in choice:
            choice.update(driver=best.driver, kind=best.kind)
        row = {"kernel_choice": choice,
               "generic": {**_run(kind, generic, keylen, seconds), "driver": generic},
               "others": {}}
        for impl in impls:
            if impl.name != name or impl.type == "larval" or impl.driver in (
                    generic, best.driver if best else None):
                continue
            row["others"][impl.driver] = {**_run(kind, impl.driver, keylen, seconds),
                                          "kind": impl.kind, "priority": impl.priority}
        out[name] = row
    return out
