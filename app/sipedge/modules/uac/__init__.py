"""uac: the proxy as a client: answer upstream 401/407 challenges (uac_auth), outbound
registrations (uac_reg), requests originated by the routing script. See README.md."""

from __future__ import annotations

from .. import ModuleSpec, lazy_package


def _spec() -> ModuleSpec:
    from .params import UacParams
    from .rpc import RPC

    return ModuleSpec(name="uac", params=UacParams, rpc=RPC, script_api="sipedge.modules.uac.api")


__getattr__ = lazy_package(__name__, {
    "UacParams": ".params",
}, _spec)
