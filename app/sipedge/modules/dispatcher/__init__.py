"""dispatcher: load balancing and fail-over over destination sets, with health probing.

The core (`core.Dispatcher`) is sans-IO; `aio.Prober` drives probing over asyncio. The
config section lives in `params` (imported by the loader, not here: importing this package
must not register config sections).
"""

from .core import (DestinationStateChanged, Dispatcher, DispatcherError, MessageFields,
                   Selection, SendProbe, Settings)
from .health import State
from .table import Destination, DispatcherListError, DispatcherTable, parse_list

# The module's surface for the composition root (names, resolved lazily).
MODULE = {
    "name": "dispatcher",
    "params": "sipedge.modules.dispatcher.params:DispatcherParams",
    "depends": ("tm",),
    "script_api": "sipedge.modules.dispatcher.api:DispatcherApi",
    "rpc": "sipedge.modules.dispatcher.rpc:methods",
    "driver": "sipedge.modules.dispatcher.aio:Prober",
}

__all__ = ["MODULE", "Destination", "DestinationStateChanged", "Dispatcher", "DispatcherError",
           "DispatcherListError", "DispatcherTable", "MessageFields", "Selection", "SendProbe",
           "Settings", "State", "parse_list"]
