"""dispatcher: load balancing and fail-over over destination sets, with health probing.

The core (`core.Dispatcher`) is sans-IO; `aio.Prober` drives probing over asyncio. See
README.md. The config section lives in `params`; `MODULE` imports it on first access only.
"""

from __future__ import annotations

from .. import ModuleSpec, lazy_package


def _spec() -> ModuleSpec:
    from .params import DispatcherParams
    from .rpc import RPC

    return ModuleSpec(name="dispatcher", params=DispatcherParams, depends=("tm",), rpc=RPC,
                      script_api="sipedge.modules.dispatcher.api")


__getattr__ = lazy_package(__name__, {
    "DestinationStateChanged": ".core",
    "Dispatcher": ".core",
    "DispatcherError": ".core",
    "MessageFields": ".core",
    "Selection": ".core",
    "SendProbe": ".core",
    "Settings": ".core",
    "State": ".health",
    "DispatcherParams": ".params",
    "Destination": ".table",
    "DispatcherListError": ".table",
    "DispatcherTable": ".table",
    "parse_list": ".table",
}, _spec)

__all__ = ["Destination", "DestinationStateChanged", "Dispatcher", "DispatcherError",
           "DispatcherListError", "DispatcherTable", "MessageFields", "Selection", "SendProbe",
           "Settings", "State", "parse_list"]
