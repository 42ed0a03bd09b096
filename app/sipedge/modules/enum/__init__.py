"""enum: E.164 numbers to SIP URIs through NAPTR records (RFC 6116, RFC 3402/3403).

`core.EnumResolution` is sans-IO; `aio.EnumLookup` drives it with the project's resolver.
Importing this package does not register the `[enum]` config section (`params` does).
"""

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


def __getattr__(attr: str):
    """`MODULE` (a ModuleSpec) is built on first access: it imports `params`, which registers
    the `[enum]` config section, and plain imports of this package must not do that."""
    if attr == "MODULE":
        from .. import ModuleSpec
        from .params import EnumParams
        from .rpc import RPC

        spec = ModuleSpec(name="enum", params=EnumParams, depends=("dns",), rpc=RPC,
                          script_api="sipedge.modules.enum.api")
        globals()["MODULE"] = spec
        return spec
    raise AttributeError(attr)


__all__ = ["DnsFailure", "EnumNumberError", "EnumResolution", "EnumResult", "Found",
           "Naptr", "NotFound", "enum_domain", "normalize_number"]
