"""Which kernel implementation serves each algorithm: /proc/crypto parsing and
classification (sans-IO: text in, rows out)."""

from __future__ import annotations

from dataclasses import dataclass

# the crypto API names the sec-agree suites need (inside authenc(...))
SUITE_PRIMITIVES = {
    "hmac-sha-1-96": "sha1", "hmac-md5-96": "md5",
    "aes-cbc": "cbc(aes)", "des-ede3-cbc": "cbc(des3_ede)", "null": "ecb(cipher_null)",
}
_CPU_HINTS = ("-ce", "-neon", "aesni", "-avx", "-ssse3", "-sse2", "-ni", "arm64", "-asm",
              "padlock", "sha1-arm", "sha256-arm")
_GENERIC_HINTS = ("-generic", "_generic", "-lib", "cipher_null", "ecb(", "cbc(aes-generic)")


@dataclass(frozen=True)
class CryptoImpl:
    name: str
    driver: str
    module: str
    priority: int
    is_async: bool
    type: str

    @property
    def kind(self) -> str:
        """generic software / CPU instructions / hardware engine."""
        d = self.driver.lower()
        if self.module not in ("kernel", "") and not any(h in d for h in _CPU_HINTS) and \
                not any(h in d for h in _GENERIC_HINTS) and not d.startswith(("cbc(", "hmac(")):
            return "hardware engine"
        if any(h in d for h in _CPU_HINTS):
            return "CPU instructions"
        if self.is_async and not any(h in d for h in _GENERIC_HINTS):
            return "hardware engine"
        return "generic software"


def parse_proc_crypto(text: str) -> list[CryptoImpl]:
    out = []
    for block in text.split("\n\n"):
        kv = {}
        for line in block.splitlines():
            k, sep, v = line.partition(":")
            if sep:
                kv[k.strip()] = v.strip()
        if "name" in kv and "driver" in kv:
            try:
                prio = int(kv.get("priority", "0"))
            except ValueError:
                prio = 0
            out.append(CryptoImpl(kv["name"], kv["driver"], kv.get("module", ""), prio,
                                  kv.get("async", "no") == "yes", kv.get("type", "")))
    return out


def best_for(impls: list[CryptoImpl], name: str) -> CryptoImpl | None:
    """The implementation the kernel picks for `name`: highest priority (ties: first)."""
    cands = [i for i in impls if i.name == name and i.type not in ("larval",)]
    return max(cands, key=lambda i: i.priority) if cands else None


def classify_suites(impls: list[CryptoImpl], names: list[str]) -> dict[str, dict]:
    """For each sec-agree alg/ealg name: the serving driver, priority, async, and kind."""
    out = {}
    for n in names:
        prim = SUITE_PRIMITIVES.get(n, n)
        impl = best_for(impls, prim)
        if impl is None:
            out[n] = {"primitive": prim, "driver": None, "kind": "not loaded yet"}
            continue
        out[n] = {"primitive": prim, "driver": impl.driver, "module": impl.module,
                  "priority": impl.priority, "async": impl.is_async, "kind": impl.kind,
                  # every implementation registered for it, the kernel's pick first
                  "candidates": [{"driver": i.driver, "priority": i.priority,
                                  "kind": i.kind}
                                 for i in sorted((i for i in impls if i.name == prim and
                                                  i.type != "larval"),
                                                 key=lambda i: -i.priority)]}
    return out


def esp_instances(impls: list[CryptoImpl]) -> list[str]:
    """The drivers of the AEAD instances ESP made (after its first SA), e.g.
    `authenc(hmac(sha1-generic),virtio_crypto_aes_cbc)`: what really serves the SAs."""
    return sorted({i.driver for i in impls if i.name.startswith(("authenc(", "echainiv(",
                                                                  "seqiv("))})


def accelerated(impls: list[CryptoImpl], names: list[str]) -> frozenset[str]:
    rows = classify_suites(impls, names)
    return frozenset(n for n, r in rows.items() if r.get("kind") in ("hardware engine",
                                                                    "CPU instructions"))
