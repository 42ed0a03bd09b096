"""auth: digest authentication of subscribers (RFC 3261 22, RFC 7616, RFC 8760).
See README.md."""

from __future__ import annotations

from .. import ModuleSpec, lazy_package


def _spec() -> ModuleSpec:
    from .params import AuthParams
    from .rpc import RPC

    return ModuleSpec(name="auth", params=AuthParams, depends=("registrar",), rpc=RPC,
                      script_api="sipedge.modules.auth.api")


__getattr__ = lazy_package(__name__, {
    "AuthParams": ".params",
}, _spec)
