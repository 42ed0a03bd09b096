"""dispatcher: load balancing and fail-over over destination sets, with health probing.

The core (`core.Dispatcher`) is sans-IO; `aio.Prober` drives probing over asyncio. See
README.md. The config section lives in `params`; `MODULE` imports it on first access only.
"""

from .. import ModuleSpec
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
from .params import DispatcherParams
from .rpc import RPC
from .table import Destination, DispatcherListError, DispatcherTable, parse_list

MODULE = ModuleSpec(name="dispatcher", params=DispatcherParams, depends=("tm",), rpc=RPC,
                    script_api="sipedge.modules.dispatcher.api")


__all__ = ["Destination", "DestinationStateChanged", "Dispatcher", "DispatcherError",
           "DispatcherListError", "DispatcherTable", "MessageFields", "Selection", "SendProbe",
           "Settings", "State", "parse_list"]
