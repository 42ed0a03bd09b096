"""Value types of the XFRM plan: selectors, SAs, policies, and the kernel algorithm names.

All immutable; built by the ims_pcscf plan (`modules/ims_pcscf/plan.py`), applied by
`sipedge.io.xfrm.XfrmClient`. Addresses are text (IPv4 or IPv6), ports host order.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPPROTO_ESP = 50
DIR_IN = 0  # XFRM_POLICY_IN
DIR_OUT = 1  # XFRM_POLICY_OUT

# sec-agree names (TS 33.203) -> (kernel name, key bits, ICV truncation bits)
AUTH_ALGS: dict[str, tuple[str, int, int]] = {
    "hmac-md5-96": ("hmac(md5)", 128, 96),
    "hmac-sha-1-96": ("hmac(sha1)", 160, 96),
}
ENC_ALGS: dict[str, tuple[str, int]] = {
    "aes-cbc": ("cbc(aes)", 128),
    "des-ede3-cbc": ("cbc(des3_ede)", 192),
    "null": ("ecb(cipher_null)", 0),
}


def family_of(ip: str) -> int:
    """AF_INET (2) or AF_INET6 (10), without importing socket (sans-IO layer)."""
    return 10 if ipaddress.ip_address(ip).version == 6 else 2


@dataclass(frozen=True)
class Selector:
    """Traffic selector: host-to-host (prefix /32 or /128), ports exact, proto 0 = UDP and
    TCP alike (the kernel compares ports for every port-carrying protocol)."""

    src: str
    dst: str
    sport: int
    dport: int
    proto: int = 0
    src_prefix: int | None = None  # None: the whole address (/32, /128)
    dst_prefix: int | None = None

    @property
    def family(self) -> int:
        return family_of(self.dst)

    @property
    def prefixlen(self) -> int:
        return 128 if self.family == 10 else 32

    @property
    def prefixlen_s(self) -> int:
        return self.prefixlen if self.src_prefix is None else self.src_prefix

    @property
    def prefixlen_d(self) -> int:
        return self.prefixlen if self.dst_prefix is None else self.dst_prefix


@dataclass(frozen=True)
class SaSpec:
    """One transport-mode ESP SA."""

    src: str
    dst: str
    spi: int
    reqid: int
    auth: str  # sec-agree alg name (AUTH_ALGS)
    auth_key: bytes
    enc: str  # sec-agree ealg name (ENC_ALGS)
    enc_key: bytes
    selector: Selector
    hard_seconds: int  # kernel hard lifetime (add-expires)
    soft_seconds: int = 0
    replay_window: int = 32
    offload_ifindex: int = 0  # `offload dev`: 0 = none
    offload_inbound: bool = False

    @property
    def family(self) -> int:
        return family_of(self.dst)

    def __repr__(self) -> str:  # never print keys
        return (f"SaSpec({self.src}->{self.dst} spi=0x{self.spi:08x} reqid={self.reqid} "
                f"{self.auth}/{self.enc})")


@dataclass(frozen=True)
class PolicySpec:
    """One transport-mode policy with a single ESP template (`level required`)."""

    selector: Selector
    direction: int  # DIR_IN / DIR_OUT
    reqid: int
    tmpl_src: str
    tmpl_dst: str
    hard_seconds: int
    priority: int = 2080

    @property
    def family(self) -> int:
        return self.selector.family


@dataclass(frozen=True)
class SaSet:
    """Exactly the four SA/policy pairs of one registration (TS 33.203 7.1)."""

    sas: tuple[SaSpec, ...]
    policies: tuple[PolicySpec, ...]

    def __post_init__(self) -> None:
        if len(self.sas) != 4 or len(self.policies) != 4:
            raise ValueError("an SA set has exactly 4 SAs and 4 policies")
