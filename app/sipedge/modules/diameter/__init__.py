"""diameter: Diameter peers (RFC 6733 CER/DWR/DPR with the RFC 3539 watchdog), realm routing,
a relay agent (DRA) and a client API for routing scripts.

The codec and the peer state machine are the sans-IO core in `sipedge.diameter`; `core.Node`
(peers + routing + relay) is sans-IO too; `aio.DiameterService` runs it over asyncio;
`runtime.DiameterRuntime` is the worker glue; `python -m sipedge.modules.diameter CONFIG` runs a
standalone node (a DRA). See README.md and docs/diameter.md.
"""

from __future__ import annotations

from .. import ModuleSpec, lazy_package


def _spec() -> ModuleSpec:
    from .params import DiameterParams
    from .rpc import RPC

    return ModuleSpec(name="diameter", params=DiameterParams, rpc=RPC,
                      script_api="sipedge.modules.diameter.api")


__getattr__ = lazy_package(__name__, {
    "DiameterParams": ".params",
}, _spec)

__all__ = ["MODULE", "DiameterParams"]
