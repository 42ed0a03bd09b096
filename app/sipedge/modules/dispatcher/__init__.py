"""dispatcher: load balancing and fail-over over destination sets, with health probing.

The core (`core.Dispatcher`) is sans-IO; `aio.Prober` drives probing over asyncio. See
README.md. The config section lives in `params`; `MODULE` imports it on first access only.
"""

from .core import (
    DestinationStateChanged,
    Dispatcher,
    DispatcherError,
    MessageFields,
    Selection,
    SendProbe,
    Settings,
)
from .health import State
from .table import Destination, DispatcherListError, DispatcherTable, parse_list


def __getattr__(attr: str):
    """`MODULE` (a ModuleSpec) is built on first access: it imports `params`, which registers
    the `[dispatcher]` config section, and plain imports of this package must not do that."""
    if attr == "MODULE":
        from .. import ModuleSpec
        from .params import DispatcherParams
        from .rpc import RPC

        spec = ModuleSpec(name="dispatcher", params=DispatcherParams, depends=("tm",), rpc=RPC,
                          script_api="sipedge.modules.dispatcher.api")
        globals()["MODULE"] = spec
        return spec
    raise AttributeError(attr)


__all__ = ["Destination", "DestinationStateChanged", "Dispatcher", "DispatcherError",
           "DispatcherListError", "DispatcherTable", "MessageFields", "Selection", "SendProbe",
           "Settings", "State", "parse_list"]
