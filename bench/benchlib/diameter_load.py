#!/usr/bin/env python3
"""Diameter load generator for the DRA benchmark (one process, asyncio, raw bytes).

Connects to a relay as `--identity`, does CER/CEA, then keeps `--window` requests outstanding
(closed loop) or sends at `--rate` per second, for at most `--requests` requests and
`--duration` seconds. Answers DWRs. Prints one JSON line: sent, answered, result codes,
latency percentiles, the slowest answer, answers slower than `--slow-ms` and requests
still unanswered at the end. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "app"))

from sipedge.diameter import base
from sipedge.diameter import dictionary as dd
from sipedge.diameter.base import Identity
from sipedge.diameter.codec import FLAG_P, FLAG_R, Framer, Message, decode

CX = 16777216


class Load(asyncio.Protocol):
    def __init__(self, args) -> None:
        self.args = args
        self.me = Identity(args.identity, args.realm, ("127.0.0.1",), auth_apps=(CX,))
        self.framer = Framer(1 << 20)
        self.open = asyncio.get_event_loop().create_future()
        self.sent_at: dict[int, float] = {}
        self.latencies: list[float] = []
        self.codes: dict[int, int] = {}
        self.sent = self.answered = 0
        self.lost = False
        self.hbh = 1
        self.free = asyncio.Event()
        req = Message(300, FLAG_R | FLAG_P, CX, 0, 0, [
            dd.avp("Session-Id", f"{args.identity};bench;000000000000"),
            dd.avp("Auth-Session-State", 1), *self.me.base_avps(),
            dd.avp("Destination-Realm", args.dest_realm), dd.avp("User-Name", "bench@ims.test"),
            dd.avp("Public-Identity", "sip:bench@ims.test")])
        self.template = bytearray(req.encode())
        self.sid_at = self.template.index(b"000000000000")

    def connection_made(self, transport) -> None:
        self.tr = transport
        cer = base.request(257, 0, self.me, base.capabilities_avps(self.me, "127.0.0.1")[2:],
                           0x7FFFFFFF, 0x7FFFFFFF)
        transport.write(cer.encode())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        for raw in self.framer.feed(data):
            flags = raw[4]
            code = int.from_bytes(raw[5:8], "big")
            hbh = struct.unpack_from("!I", raw, 12)[0]
            if code == 257:
                m = decode(raw)
                if not self.open.done():
                    self.open.set_result(base.result_code(m))
                continue
            if code == 280 and flags & FLAG_R:
                self.tr.write(base.answer(decode(raw), self.me, 2001).encode())
                continue
            t = self.sent_at.pop(hbh, None)
            if t is None:
                continue
            self.answered += 1
            self.latencies.append(now - t)
            rc = base.result_code(decode(raw)) or 0
            self.codes[rc] = self.codes.get(rc, 0) + 1
            self.free.set()

    def connection_lost(self, exc) -> None:
        self.lost = True
        if not self.open.done():
            self.open.set_result(None)
        self.free.set()

    def send_one(self) -> None:
        self.hbh += 1
        buf = self.template
        struct.pack_into("!II", buf, 12, self.hbh, self.hbh)
        buf[self.sid_at:self.sid_at + 12] = b"%012d" % self.hbh
        self.sent_at[self.hbh] = time.monotonic()
        self.tr.write(bytes(buf))
        self.sent += 1


async def main(args) -> dict:
    loop = asyncio.get_running_loop()
    proto = Load(args)
    await loop.create_connection(lambda: proto, "127.0.0.1", args.port)
    rc = await asyncio.wait_for(proto.open, 10)
    if rc != 2001:
        return {"error": f"CEA result {rc}"}
    await asyncio.sleep(args.settle)
    t0 = time.monotonic()
    end = t0 + args.duration
    if args.rate:
        interval = 1.0 / args.rate
        nxt = t0
        while proto.sent < args.requests and time.monotonic() < end and not proto.lost:
            now = time.monotonic()
            while nxt <= now and proto.sent < args.requests:
                proto.send_one()
                nxt += interval
            await asyncio.sleep(max(0.0, min(0.002, nxt - time.monotonic())))
    else:
        while proto.sent < args.requests and time.monotonic() < end and not proto.lost:
            while len(proto.sent_at) < args.window and proto.sent < args.requests:
                proto.send_one()
            proto.free.clear()
            try:
                await asyncio.wait_for(proto.free.wait(), 5)
            except TimeoutError:
                break
    send_end = time.monotonic()
    deadline = send_end + args.drain
    while proto.sent_at and time.monotonic() < deadline and not proto.lost:
        await asyncio.sleep(0.01)
    elapsed = (send_end if args.rate else time.monotonic()) - t0
    lat = sorted(proto.latencies)
    pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2)) if lat else \
        (lambda q: None)
    proto.tr.close()
    return {"sent": proto.sent, "answered": proto.answered, "elapsed_s": round(elapsed, 3),
            "rate": round(proto.answered / elapsed, 1) if elapsed else 0,
            "codes": {str(k): v for k, v in sorted(proto.codes.items())},
            "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 1) if lat else None,
            "slow": sum(1 for x in lat if x * 1000 > args.slow_ms),
            "unanswered": len(proto.sent_at), "connection_lost": proto.lost}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--identity", default="load.cli")
    ap.add_argument("--realm", default="cli")
    ap.add_argument("--dest-realm", default="srv")
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--drain", type=float, default=5.0)
    ap.add_argument("--slow-ms", type=float, default=1000.0,
                    help="count the answers that took longer than this")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main(a))), flush=True)
