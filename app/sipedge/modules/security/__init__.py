"""security: flood blocking (pike), failed-login blocking (fail2ban), scanner User-Agent
deny list and per-listener CIDR ACLs. See README.md."""

from __future__ import annotations

from .. import ModuleSpec, lazy_package


def _spec() -> ModuleSpec:
    from .params import SecurityParams
    from .rpc import RPC

    return ModuleSpec(name="security", params=SecurityParams, rpc=RPC,
                      script_api="sipedge.modules.security.api")


__getattr__ = lazy_package(__name__, {
    "SecurityParams": ".params",
}, _spec)
