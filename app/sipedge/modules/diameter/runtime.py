"""Worker glue of the diameter module: worker 0 runs the node (one Diameter identity per box);
every worker's script gets `ksr.diameter`; the other workers hand their requests to worker 0
over a local datagram socket (forward.py). The main process answers the RPC commands by asking
worker 0."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import rpc as dia_rpc
from .aio import DiameterService
from .api import DiameterApi
from .forward import RemoteService, serve_node

log = logging.getLogger("sipedge.modules.diameter")

NODE_WORKER = 0
RPC_METHODS = ("diameter.peers", "diameter.routes", "diameter.stats", "diameter.enable",
               "diameter.disable")


class DiameterRuntime:
    name = "diameter"
    depends: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.service: DiameterService | None = None
        self.remote: RemoteService | None = None
        self.endpoint = None
        self.facade: DiameterApi | None = None
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.worker_rpc: dict[str, Callable[[dict], Any]] = {}

    async def start(self, env) -> None:
        p = env.config.diameter
        if env.index != NODE_WORKER:
            # requests of this worker's scripts go to worker 0's node (forward.py)
            self.remote = RemoteService(env.run_id, env.index) if env.run_id else None
            if self.remote is not None:
                await self.remote.start()
            self.facade = DiameterApi(self.remote, p.identity)
            # the main process asks every worker; only worker 0's answer counts
            self.worker_rpc = {m: (lambda params, i=env.index: {"worker": i})
                               for m in RPC_METHODS}
            return
        node = p.build_node(origin_state_id=int(time.time()) & 0xFFFFFFFF)
        self.service = DiameterService(node, p.listeners())
        await self.service.start()
        if env.run_id:
            self.endpoint = await serve_node(self.service, env.run_id)
        self.facade = DiameterApi(self.service, p.identity)
        if env.script_function is not None:
            # the script's `diameter_relay_route(req)`, looked up at each relayed request so a
            # reloaded script takes effect at once (Kamailio-style event route)
            self.facade.script_hook(lambda: env.script_function("diameter_relay_route"))
        clock = self.service.now
        self.worker_rpc = {k: (lambda params, f=f: {"worker": env.index, **f(params)})
                           for k, f in dia_rpc.methods(node, clock, self.service.pump).items()}
        log.info("diameter node %s (realm %s) in worker pid=%d", p.identity, p.realm,
                 os.getpid())

    async def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
        if self.remote is not None:
            await self.remote.stop()
        if self.service is not None:
            await self.service.stop(timeout=self.service.node.peers and max(
                p.settings.dpr_timeout_s for p in self.service.node.peers.values()) or 1.0)


def main_rpc(ask_workers: Callable[[str, dict], Awaitable[list]]) -> dict[str, Callable]:
    """Main-process RPC: forwarded to the worker that runs the node."""

    def forward(method: str):
        async def call(params: dict) -> Any:
            for r in await ask_workers(method, params):
                if isinstance(r, dict) and r.get("worker") == NODE_WORKER:
                    r.pop("worker", None)
                    return r
            raise ValueError("the diameter node (worker 0) did not answer")
        return call

    return {m: forward(m) for m in RPC_METHODS}
