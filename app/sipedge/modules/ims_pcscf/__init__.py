"""ims_pcscf: IMS P-CSCF sec-agree (RFC 3329, TS 33.203, TS 24.229) with kernel IPsec ESP.

The core (`core.PCSCF`, `secagree`, `wwwauth`, `keys`, `alloc`, `crypto`) is sans-IO;
`aio.ImsPcscfRuntime` drives the kernel through `sipedge.io.xfrm`. See README.md.
"""

from __future__ import annotations

from .. import ModuleSpec, lazy_package


def _spec() -> ModuleSpec:
    from .params import ImsPcscfParams
    from .rpc import RPC

    return ModuleSpec(name="ims_pcscf", params=ImsPcscfParams, depends=("tm",), rpc=RPC,
                      script_api="sipedge.modules.ims_pcscf.aio")


__getattr__ = lazy_package(__name__, {
    "PCSCF": ".core",
    "Settings": ".core",
    "build_sa_set": ".core",
    "ImsPcscfParams": ".params",
}, _spec)

__all__ = ["MODULE", "PCSCF", "Settings", "build_sa_set"]
