"""Run a standalone Diameter node (e.g. a DRA) from a config file's `[diameter]` section:

    python -m sipedge.modules.diameter sipedge.toml [--ctl /run/sipedge/diameter.sock]

SIGTERM/SIGINT: DPR to every peer, bounded wait for the DPAs, exit 0. The RPC commands
(diameter.peers/routes/stats/enable/disable) are served on `--ctl` (JSON-RPC, sipedgectl).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from ...config.loader import load_file
from ...errors import ConfigError
from . import rpc as dia_rpc
from .aio import DiameterService


async def _run(args) -> int:
    try:
        config = load_file(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    p = config.diameter
    if not p.identity or not p.realm:
        print(f"{args.config}: [diameter] identity and realm are required",
              file=sys.stderr)
        return 2
    node = p.build_node(origin_state_id=int(time.time()) & 0xFFFFFFFF)
    svc = DiameterService(node, p.listeners())
    await svc.start()
    rpc_server = None
    if args.ctl:
        from ...io.rpc import RpcServer

        rpc_server = RpcServer(args.ctl, dia_rpc.methods(node, svc.now, svc.pump))
        await rpc_server.start()
    if args.ready:
        with open(args.ready, "w") as f:
            f.write(" ".join(f"{a}:{port}" for a, port in svc.bound) + "\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await svc.stop(timeout=p.dpr_timeout_s)
    if rpc_server is not None:
        await rpc_server.close()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sipedge.modules.diameter",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--ctl", help="JSON-RPC control socket path")
    ap.add_argument("--ready", help="write the bound listener addresses to this file")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
