"""Runs inside user-mode-linux (tests/integration/ims/uml.py; the host kernel has no SCTP):
Diameter over SCTP on 127.0.0.1 with freeDiameter on both sides of our relay.

  fdc.cli (freeDiameter + fdpeer client) --SCTP--> dra.test (ours, relay, SCTP listener)
  dra.test --SCTP--> fd1.srv (freeDiameter + fdpeer server, answers 2001)

argv: RESULT_JSON FDPEER_EXT WORKDIR. Writes what was seen as JSON; the test checks it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import traceback
from pathlib import Path

from diameter_harness import (
    FdClient,
    Route,
    fast,
    fd_requests,
    fd_server,
    free_port,
    wait_for,
)
from sipedge.diameter.base import Identity
from sipedge.modules.diameter.aio import DiameterService
from sipedge.modules.diameter.core import Node, NodeSettings, PeerConfig
from sipedge.modules.diameter.routing import RoutingTable

RESULT, EXT, WORK = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
out: dict = {}


def sctp_assocs() -> int:
    try:
        return len(Path("/proc/net/sctp/assocs").read_text().splitlines()) - 1
    except OSError:
        return -1


async def main() -> None:
    out["kernel_sctp"] = Path("/proc/net/sctp").is_dir()
    # freeDiameter wants one non-loopback address of its own for the CER (it refuses to start
    # with SCTP otherwise): a dummy interface that exists only inside UML
    subprocess.run("ip link add fd0 type dummy && ip addr add 10.99.1.1/32 dev fd0 && "
                   "ip link set fd0 up", shell=True, check=True)
    dport, p1 = free_port("tcp"), free_port("tcp")
    node = Node(Identity("dra.test", "mid", ("127.0.0.1",), auth_apps=(0xFFFFFFFF,)),
                [PeerConfig("fdc.cli", settings=fast(False, tw=30)),
                 PeerConfig("fd1.srv", "127.0.0.1", p1, transport="sctp",
                            settings=fast(True, tw=2))],
                RoutingTable([Route("srv", "fd1.srv", 1)]),
                NodeSettings(relay=True, request_timeout_s=10))
    fd1 = fd_server(WORK, EXT, "fd1.srv", "srv", "dra.test", WORK, p1, sctp=True).start()
    await wait_for(fd1.ready, 20, "fd1 listening")
    svc = DiameterService(node, [("127.0.0.1", dport, "sctp")])
    await svc.start()
    cli = FdClient(WORK, EXT, "fdc.cli", "cli", "dra.test", dport, WORK, sctp=True).start()
    try:
        await wait_for(lambda: all(node.peers[n].usable for n in ("fdc.cli", "fd1.srv")), 30,
                       "both peers open over SCTP")
        # we are open once our CEA is sent; the client only once it has read it (a request
        # sent before that gets 3002 from the client itself)
        await wait_for(lambda: cli.fd.is_open("dra.test"), 10, "open on the client's side")
        out["open"] = True
        out["protos"] = sorted({tr.get_extra_info("socket").proto
                                for tr in svc._transports.values()})
        out["assocs"] = sctp_assocs()
        cli.send("s", "srv", 20)
        await wait_for(lambda: len(cli.answers()) >= 20, 20, "20 answers")
        out["answers"] = cli.answers()
        out["server_requests"] = fd_requests(WORK, "fd1.srv")
        # DWR/DWA over SCTP (our Tw towards fd1 is 2 s), then our DPR, answered
        await wait_for(lambda: node.stats["rx DWA"] >= 1, 15, "DWA over SCTP")
        await svc.stop(timeout=5)
        out["stats"] = dict(node.stats)
    finally:
        await svc.stop(timeout=1)
        cli.stop()
        fd1.stop()
        out["fd1_log_tail"] = fd1.log()[-1500:]
        out["cli_log_tail"] = cli.fd.log()[-1500:]


try:
    asyncio.run(main())
except Exception:  # noqa: BLE001 - the test reads the traceback from the result
    out["error"] = traceback.format_exc()
Path(RESULT).write_text(json.dumps(out, default=str))
