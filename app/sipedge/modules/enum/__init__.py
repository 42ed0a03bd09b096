"""enum: E.164 numbers to SIP URIs through NAPTR records (RFC 6116, RFC 3402/3403).

`core.EnumResolution` is sans-IO; `aio.EnumLookup` drives it with the project's resolver.
Importing this package does not register the `[enum]` config section (`params` does).
"""

from .. import ModuleSpec
from .core import (
    DnsFailure,
    EnumNumberError,
    EnumResolution,
    EnumResult,
    Found,
    Naptr,
    NotFound,
    enum_domain,
    normalize_number,
)
from .params import EnumParams
from .rpc import RPC

MODULE = ModuleSpec(name="enum", params=EnumParams, depends=("dns",), rpc=RPC,
                    script_api="sipedge.modules.enum.api")


__all__ = ["DnsFailure", "EnumNumberError", "EnumResolution", "EnumResult", "Found",
           "Naptr", "NotFound", "enum_domain", "normalize_number"]
