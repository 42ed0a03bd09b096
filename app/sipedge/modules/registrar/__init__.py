"""registrar: REGISTER processing (RFC 3261 10.3, RFC 3327 Path), the location service and
its SQLite store, NAT helpers. See README.md."""

from __future__ import annotations

from .. import ModuleSpec, lazy_package


def _spec() -> ModuleSpec:
    from .params import RegistrarParams
    from .rpc import RPC

    return ModuleSpec(name="registrar", params=RegistrarParams, depends=(), rpc=RPC,
                      script_api="sipedge.modules.registrar.api")


__getattr__ = lazy_package(__name__, {
    "RegistrarParams": ".params",
}, _spec)
