"""ims_pcscf: IMS P-CSCF sec-agree (RFC 3329, TS 33.203, TS 24.229) with kernel IPsec ESP.

The core (`core.PCSCF`, `secagree`, `wwwauth`, `keys`, `alloc`, `crypto`) is sans-IO;
`aio.ImsPcscfRuntime` drives the kernel through `sipedge.io.xfrm`. See README.md.
"""

from .. import ModuleSpec
from .core import PCSCF, Settings, build_sa_set
from .params import ImsPcscfParams
from .rpc import RPC

MODULE = ModuleSpec(name="ims_pcscf", params=ImsPcscfParams, depends=("tm",), rpc=RPC,
                    script_api="sipedge.modules.ims_pcscf.aio")

__all__ = ["MODULE", "PCSCF", "Settings", "build_sa_set"]
