"""enum: E.164 numbers to SIP URIs through NAPTR records (RFC 6116, RFC 3402/3403).

`core.EnumResolution` is sans-IO; `aio.EnumLookup` drives it with the project's resolver.
Importing this package does not register the `[enum]` config section (`params` does).
"""

from __future__ import annotations

from .. import ModuleSpec, lazy_package


def _spec() -> ModuleSpec:
    from .params import EnumParams
    from .rpc import RPC

    return ModuleSpec(name="enum", params=EnumParams, depends=("dns",), rpc=RPC,
                      script_api="sipedge.modules.enum.api")


__getattr__ = lazy_package(__name__, {
    "DnsFailure": ".core",
    "EnumNumberError": ".core",
    "EnumResolution": ".core",
    "EnumResult": ".core",
    "Found": ".core",
    "Naptr": ".core",
    "NotFound": ".core",
    "enum_domain": ".core",
    "normalize_number": ".core",
    "EnumParams": ".params",
}, _spec)

__all__ = ["DnsFailure", "EnumNumberError", "EnumResolution", "EnumResult", "Found",
           "Naptr", "NotFound", "enum_domain", "normalize_number"]
