"""`msg.vars`: the per-transaction dict of the routing API travels with the transaction
(io/tm_driver.py) into the failure route, and a round that ended with 408/5xx reaches the
modules' relay-failed hooks (the dispatcher counts it). A fake worker on a real event loop;
no sockets."""

from __future__ import annotations

import asyncio
import types
from collections import Counter

from sipedge.config import load_text
from sipedge.io.tm_driver import TmDriver
from sipedge.io.worker import Worker
from sipedge.script.api import RequestMsg
from sipedge.sip.message import parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore, Source

from sip_harness import reply_to

LA = LocalAddress(0, "udp", "127.0.0.1", 5060, "127.0.0.1", 5060)
SRC = Source("udp", "127.0.0.1", 5999, 0)


class FakeWorker:
    def __init__(self, failure) -> None:
        self.config = load_text("")
        self.core = ProxyCore([LA], domains=("localhost",))
        self.stats: Counter[str] = Counter()
        self.sent: list[tuple[bytes, str, int]] = []
        self.conns: dict = {}
        self.resolver = None
        self.hook_calls: list[tuple[dict, int]] = []
        self.modules = types.SimpleNamespace(
            relay_failed_hooks=[lambda v, status: self.hook_calls.append((v, status))])
        self.script = types.SimpleNamespace(module=types.SimpleNamespace(failover=failure),
                                            reply_route=None, path="route.py")
        self.tm = TmDriver(self)

    _script_function = Worker._script_function  # the worker's own lookup of script routes

    def _pick_listener(self, proto, ip, src, prefer=None):
        return LA

    def _send(self, proto, data, ip, port, listener, server_name=None, on_error=None):
        self.sent.append((data, ip, port))

    def _spawn(self, coro):
        asyncio.get_running_loop().create_task(coro)


def _invite() -> bytes:
    return (b"INVITE sip:bob@localhost SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKvars1;rport\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=a1\r\n"
            b"To: <sip:bob@localhost>\r\nCall-ID: vars-1\r\nCSeq: 1 INVITE\r\n"
            b"Content-Length: 0\r\n\r\n")


def test_vars_reach_the_failure_route_and_the_relay_failed_hooks():
    seen = []

    def failover(fmsg: RequestMsg) -> None:
        seen.append((dict(fmsg.vars), fmsg.reply_status))
        fmsg.vars["round"] = 2
        fmsg.t_reply(480, "Tried Everything")

    async def main():
        w = FakeWorker(failover)
        req = parse_message(_invite())
        ctx = RequestMsg(req, SRC, w.core, "udp:127.0.0.1:5060")
        ctx.vars["dispatcher.selection"] = "sel"
        ctx.t_on_failure("failover")
        ctx.t_relay("sip:127.0.0.1:5071")
        w.tm.execute(ctx.actions[0], ctx, req, SRC)
        out = [s for s in w.sent if s[2] == 5071]
        assert len(out) == 1
        w.tm.receive_response(parse_message(reply_to(out[0][0], "503 Service Unavailable", "b1")))
        assert seen == [({"dispatcher.selection": "sel"}, 503)]
        assert w.hook_calls and w.hook_calls[0][1] == 503
        assert ctx.vars["round"] == 2  # one dict for the whole transaction
        replies = [d for d, ip, port in w.sent if port == 5999 and d.startswith(b"SIP/2.0 4")]
        assert replies and replies[-1].startswith(b"SIP/2.0 480 Tried Everything")
        w.tm.close()

    asyncio.run(main())


def test_no_hook_for_a_4xx_and_no_vars_no_cost():
    seen = []

    async def main():
        w = FakeWorker(lambda fmsg: seen.append(dict(fmsg.vars)))
        req = parse_message(_invite())
        ctx = RequestMsg(req, SRC, w.core)
        ctx.t_on_failure("failover")
        ctx.t_relay("sip:127.0.0.1:5071")
        w.tm.execute(ctx.actions[0], ctx, req, SRC)
        out = [s for s in w.sent if s[2] == 5071]
        w.tm.receive_response(parse_message(reply_to(out[0][0], "486 Busy Here", "b1")))
        assert seen == [{}] and w.hook_calls == []
        w.tm.close()

    asyncio.run(main())
