"""A stand-in for `sipedge --config FILE` that speaks the supervisor's contracts.

It serves `core.health` (JSON-RPC 2.0, one object per line) on `[core] ctl_socket` and answers
SIP OPTIONS on the first UDP `[[listen]]` with 200. FAKE_PROXY_MODE picks a misbehaviour:

    ok           healthy until SIGTERM (then exits 0)
    crash        exits with status 3 at once
    hang-after   healthy for FAKE_PROXY_HANG_S seconds, then stops answering (loop blocked)
    ignore-term  healthy, but ignores SIGTERM (needs SIGKILL)
    deaf-sip     heartbeat fine, but never answers OPTIONS
    lag          heartbeat reports a 5 s loop lag

Each start appends "<pid> cwd=<dir> <argv...>" to $FAKE_PROXY_LOG. Like the proxy, it asks
for SIGTERM when the process named by SIPEDGE_PARENT_PID dies (run-supervisor's early start).
"""

import asyncio
import json
import os
import signal
import sys
import time
import tomllib


def main() -> int:
    argv = sys.argv[1:]
    mode = os.environ.get("FAKE_PROXY_MODE", "ok")
    from sipedge.cli import die_with_parent

    die_with_parent()
    logf = os.environ.get("FAKE_PROXY_LOG")
    if logf:
        with open(logf, "a") as f:
            f.write(f"{os.getpid()} cwd={os.getcwd()} {' '.join(argv)}\n")
    if mode == "crash":
        return 3
    cfg = {}
    if "--config" in argv:
        with open(argv[argv.index("--config") + 1], "rb") as f:
            cfg = tomllib.load(f)
    ctl = cfg.get("core", {}).get("ctl_socket", "/run/sipedge/ctl.sock")
    udp = [x for x in cfg.get("listen", []) if x.get("proto", "udp") == "udp"]
    return asyncio.run(serve(mode, ctl, udp[0] if udp else None))


class Sip(asyncio.DatagramProtocol):
    def __init__(self, mode):
        self.mode = mode

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if self.mode == "deaf-sip" or not data.startswith(b"OPTIONS "):
            return
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [h for h in head[1:] if h.split(b":", 1)[0].strip().lower()
                in (b"via", b"from", b"to", b"call-id", b"cseq")]
        reply = b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0", b"", b""])
        self.transport.sendto(reply, addr)


async def serve(mode, ctl, udp):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    started = time.monotonic()

    async def handle(reader, writer):
        line = await reader.readline()
        req = json.loads(line)
        lag = 5000.0 if mode == "lag" else 1.5
        result = {"workers_alive": 2, "workers_expected": 2, "loop_lag_ms": lag,
                  "uptime_s": time.monotonic() - started}
        writer.write(json.dumps({"jsonrpc": "2.0", "id": req.get("id"), "result": result})
                     .encode() + b"\n")
        await writer.drain()
        writer.close()

    if os.path.exists(ctl):
        os.unlink(ctl)
    server = await asyncio.start_unix_server(handle, ctl)
    if udp is not None:
        await loop.create_datagram_endpoint(lambda: Sip(mode),
                                            local_addr=(udp.get("address", "127.0.0.1"),
                                                        udp.get("port", 5060)))
    if mode == "hang-after":
        await asyncio.sleep(float(os.environ.get("FAKE_PROXY_HANG_S", "1")))
        time.sleep(3600)  # the loop is blocked: no heartbeat, no OPTIONS, like a real hang
    await stop.wait()
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
