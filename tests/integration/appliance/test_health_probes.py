"""Health probes against real sockets on 127.0.0.1 and a UNIX socket in tmp_path."""

import asyncio
import json

from sipedge.appliance.health import CoreHealthProbe, SipOptionsProbe, rpc_request


async def serve_rpc(path, reply):
    async def handle(reader, writer):
        line = await reader.readline()
        req = json.loads(line)
        writer.write((reply(req) + "\n").encode())
        await writer.drain()
        writer.close()
    return await asyncio.start_unix_server(handle, str(path))


async def test_core_health_ok_and_workers_missing(tmp_path):
    sock = tmp_path / "ctl.sock"
    result = {"workers_alive": 2, "workers_expected": 2, "loop_lag_ms": 4.5, "uptime_s": 1}
    server = await serve_rpc(sock, lambda r: json.dumps(
        {"jsonrpc": "2.0", "id": r["id"], "result": result}))
    async with server:
        r = await CoreHealthProbe(str(sock)).probe()
        assert r.ok and r.loop_lag_ms == 4.5 and r.workers_alive == 2
        result["workers_alive"] = 1
        r = await CoreHealthProbe(str(sock)).probe()
        assert not r.ok and r.detail == "workers 1/2 alive"


async def test_core_health_errors_never_raise(tmp_path):
    missing = (await CoreHealthProbe(str(tmp_path / "none")).probe()).detail
    assert missing == f"proxy control socket {tmp_path / 'none'} not open (proxy starting, or " \
        "not running)"  # words, not "[Errno 2] No such file or directory"
    sock = tmp_path / "bad.sock"
    replies = iter(["not json", json.dumps({"jsonrpc": "2.0", "id": 1, "error":
                                            {"code": -32601, "message": "no such method"}}),
                    json.dumps({"jsonrpc": "2.0", "id": 1, "result": [1]}),
                    json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"workers_alive": "x"}})])
    server = await serve_rpc(sock, lambda r: next(replies))
    async with server:
        details = [(await CoreHealthProbe(str(sock)).probe()).detail for _ in range(4)]
    assert details == ["core.health: reply is not JSON", "core.health: no such method",
                       "core.health: result is not an object", "core.health: malformed result"]


async def test_core_health_timeout(tmp_path):
    sock = tmp_path / "slow.sock"

    async def handle(reader, writer):
        await asyncio.sleep(10)

    server = await asyncio.start_unix_server(handle, str(sock))
    async with server:
        r = await CoreHealthProbe(str(sock), timeout=0.2).probe()
    assert not r.ok
    assert r.detail == "proxy did not answer core.health within 0.2s (hung or overloaded)"


class Responder(asyncio.DatagramProtocol):
    def __init__(self, code):
        self.code = code

    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        head = data.split(b"\r\n\r\n")[0].split(b"\r\n")
        cid = [h for h in head if h.lower().startswith(b"call-id:")][0]
        self.t.sendto(b"SIP/2.0 100 Trying\r\n" + cid + b"\r\n\r\n", addr)  # ignored
        self.t.sendto(b"SIP/2.0 %d X\r\n" % self.code + cid + b"\r\n\r\n", addr)


async def test_options_probe_on_loopback():
    loop = asyncio.get_running_loop()
    t, proto = await loop.create_datagram_endpoint(lambda: Responder(200),
                                                   local_addr=("127.0.0.1", 0))
    port = t.get_extra_info("sockname")[1]
    try:
        assert (await SipOptionsProbe("127.0.0.1", port).probe()).ok
        proto.code = 503
        r = await SipOptionsProbe("127.0.0.1", port).probe()
        assert not r.ok and r.detail == "OPTIONS: answered 503"
    finally:
        t.close()
    r = await SipOptionsProbe("127.0.0.1", port, timeout=0.3).probe()
    assert not r.ok  # nobody listens: refused or no reply


async def test_rpc_request_roundtrip(tmp_path):
    sock = tmp_path / "x.sock"
    server = await serve_rpc(sock, lambda r: json.dumps(
        {"jsonrpc": "2.0", "id": r["id"], "result": {"m": r["method"], "p": r["params"]}}))
    async with server:
        assert await rpc_request(str(sock), "a.b", {"k": 1}) == {"m": "a.b", "p": {"k": 1}}


async def test_core_health_lag_unknown_yet(tmp_path):
    sock = tmp_path / "ctl.sock"
    result = {"workers_alive": 2, "workers_expected": 2, "loop_lag_ms": None, "uptime_s": 0.1}
    server = await serve_rpc(sock, lambda r: json.dumps(
        {"jsonrpc": "2.0", "id": r["id"], "result": result}))
    async with server:
        r = await CoreHealthProbe(str(sock)).probe()
    assert r.ok and r.loop_lag_ms == 0.0
