"""Config section `[ims_pcscf]` (importing this module registers it with the loader)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.schema import option, section
from .secagree import KNOWN_ALGS, KNOWN_EALGS, Preference


@section("ims_pcscf")
@dataclass(frozen=True)
class ImsPcscfParams:
    """IMS P-CSCF: sec-agree (RFC 3329, TS 33.203) with kernel IPsec ESP on the Gm side."""

    address: str = option("", "our IP address on the Gm side (the UE's SAs end here; IPv4 "
                          "or IPv6). Required when the module is loaded", reloadable=False)
    port_base: int = option(5100, "first protected port: UE slot i uses port_base+2i as our "
                            "protected server port and port_base+2i+1 as our protected "
                            "client port (UDP and TCP listeners are opened for every slot)",
                            min=1024, max=65534, reloadable=False)
    slots: int = option(16, "SA sets that can exist at once (a re-registration holds two "
                        "for a moment); more gives 503 to the REGISTER", min=1, max=4096,
                        reloadable=False)
    spi_min: int = option(65536, "lowest SPI we allocate for our inbound SAs",
                          min=256, max=4294967294, reloadable=False)
    spi_max: int = option(131071, "highest SPI we allocate", min=257, max=4294967295,
                          reloadable=False)
    reqid_base: int = option(0x5E0000, "our SAs and policies carry reqid reqid_base+slot; "
                             "start-up cleanup removes only SAs/policies that carry our "
                             "mark (xfrm_mark_mask) and a reqid in this range (two "
                             "P-CSCFs on one box need ranges that do not overlap)",
                             min=1, max=0x7FFFFFFF, reloadable=False)
    xfrm_mark_mask: int = option(0x5E000000, "our SAs and policies carry XFRMA_MARK value 0 "
                                 "with this mask: the ownership tag start-up cleanup looks "
                                 "for. The kernel applies them only to packets whose mark "
                                 "has none of these bits, so pick bits nothing on the box "
                                 "sets (fwmark, SO_MARK, nftables `meta mark`); default 0x5E000000",
                                 min=1, max=0xFFFFFFFF, reloadable=False)
    algs: list[str] = option(default_factory=lambda: ["hmac-sha-1-96", "hmac-md5-96"],
                             doc="integrity algorithms we accept, best first",
                             reloadable=False)
    ealgs: list[str] = option(default_factory=lambda: ["aes-cbc", "des-ede3-cbc"],
                              doc="encryption algorithms we accept, best first (`null` only "
                              "with allow_null)",
                              reloadable=False)
    allow_null: bool = option(False, "accept ealg=null (integrity only)", reloadable=False)
    prefer_accelerated: bool = option(False, "among the accepted suites, prefer one the "
                                      "kernel runs on a hardware engine or CPU crypto "
                                      "instructions (see `sipedgectl ipsec.crypto`)",
                                      reloadable=False)
    require_sec_agree: bool = option(True, "answer 494 to an initial REGISTER without "
                                     "Security-Client (false: let it through unprotected)",
                                     reloadable=False)
    pending_lifetime_s: int = option(60, "kernel hard lifetime of the SAs made at the 401, "
                                     "until the protected REGISTER succeeds", min=5, max=3600,
                                     reloadable=False)
    lifetime_margin_s: int = option(30, "kernel hard lifetime = registration expiry + this",
                                    min=1, max=3600,
                                    reloadable=False)
    missing_keys_status: int = option(500, "status sent to the UE instead of a 401 that "
                                      "lacks ck or ik (or whose SAs the kernel refused)",
                                      min=400, max=599,
                                      reloadable=False)
    on_no_esp: str = option("disable", "when the capability probe finds no ESP support: "
                            "`disable` sec-agree (REGISTERs pass unprotected) or `refuse` "
                            "registrations with 503", choices=("disable", "refuse"),
                            reloadable=False)
    offload_dev: str = option("", "network interface for `offload dev` on outbound SAs "
                              "(NIC inline ESP); reported as `requested, not active` when the "
                              "kernel fell back to software",
                              reloadable=False)
    expire_interval_s: float = option(1.0, "how often expired SA sets are removed",
                                      min=0.1, max=60,
                                      reloadable=False)

    def preference(self, accelerated: frozenset[str] = frozenset()) -> Preference:
        for a in self.algs:
            if a not in KNOWN_ALGS:
                raise ValueError(f"algs: unknown {a!r} (known: {', '.join(KNOWN_ALGS)})")
        for e in self.ealgs:
            if e not in KNOWN_EALGS:
                raise ValueError(f"ealgs: unknown {e!r} (known: {', '.join(KNOWN_EALGS)})")
            if e == "null" and not self.allow_null:
                raise ValueError("ealgs: null needs allow_null = true")
        return Preference(tuple(self.algs), tuple(self.ealgs), self.allow_null,
                          self.prefer_accelerated, accelerated)
