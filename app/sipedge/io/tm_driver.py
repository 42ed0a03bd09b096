"""asyncio glue of the transaction-stateful proxy (sip/stateful.py) in one worker.

The worker calls five methods: `match_request()` before the routing script (absorbs
retransmissions, hop-by-hop ACKs and CANCELs of known INVITEs), `execute()` for the
`Relay` / `TReply` actions a script recorded, `receive_response_data()` with a UDP reply's
bytes before any parse (a 1xx/2xx of our transaction is spliced and forwarded there),
`receive_response()` before stateless reply handling, and `stats()`. Everything else is
the aioquic pattern: feed the core with `loop.time()` as `now`, send what `data_to_send()`
returns, keep exactly one `call_at()` armed, never later than `get_timer()` (a call that
finds nothing due just re-arms).

The core calls back into the script through the `Hooks` port: `on_reply` runs the global
`reply_route` and the transaction's `t_on_reply` function, `on_failure` runs the
`t_on_failure` function with the request as the script left it and the winning reply.

Which worker owns a transaction: the one the request reached. Retransmissions, the ACK of a
non-2xx reply and the CANCEL come from the same UA socket, so SO_REUSEPORT delivers them to
the same worker. Replies carry the owner's index in our Via branch (`z9hG4bK<w>xt...`) and
the worker hands every reply to a transaction branch over to its owner.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from functools import partial
from typing import TYPE_CHECKING

from ..errors import LocalProtocolError, RemoteProtocolError
from ..resolve import literal_target
from ..script.api import Drop, Forward, Relay, ReplyMsg, RequestMsg, TReply
from ..sip.grammar import stat_method
from ..sip.message import Request, Response
from ..sip.proxy import Source
from ..sip.stateful import (
    Branch,
    BranchTarget,
    Peer,
    ResponseContext,
    StatefulProxy,
    TmParams,
    Transmit,
    copy_request,
)
from ..sip.transaction import TimerValues
from ..sip.uri import URI

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("sipedge.tm")


def tm_params(config) -> TmParams:
    p = config.tm
    return TmParams(TimerValues(p.t1_ms / 1000, max(p.t1_ms, p.t2_ms) / 1000, p.t4_ms / 1000,
                                p.timer_d_s, p.wait_timer_s),
                    fr_timeout=p.fr_timeout_s, fr_inv_timeout=p.fr_inv_timeout_s)


class TmDriver:
    def __init__(self, worker: "Worker") -> None:
        self.w = worker
        self.proxy = StatefulProxy(worker.core, tm_params(worker.config), hooks=self,
                                   salt=secrets.token_hex(2), counters=worker.stats)
        self._handle: asyncio.TimerHandle | None = None
        self._armed: float | None = None

    # -- called by the worker ------------------------------------------------------

    def match_request(self, msg: Request, src: Source) -> bool:
        """Before the script: True when a transaction took the request."""
        if self.proxy.match_request(msg, src, self._now()):
            self._flush()
            return True
        return False

    def receive_response(self, msg: Response) -> bool:
        """True when the reply belonged to a client transaction (handled here)."""
        if self.proxy.receive_response(msg, self._now()):
            self._flush()
            return True
        return False

    def receive_response_data(self, data: bytes) -> bool:
        """A UDP reply as received, before any parse: True when it was a 1xx/2xx of one of
        this worker's client transactions and went upstream as spliced bytes
        (`StatefulProxy.receive_response_data`); False: parse it and go on as usual.
        The caller checks first that no module hook reads replies."""
        if self.proxy.receive_response_data(data, self._now()):
            self._flush()
            return True
        return False

    def execute(self, action: Relay | TReply, ctx: RequestMsg, msg: Request, src: Source) -> None:
        """Carry out t_relay() / t_reply() recorded by request_route."""
        if msg.method == "ACK":
            # ACK never has a transaction: the 2xx ACK goes end to end, statelessly
            if isinstance(action, Relay):
                self.w.forward(msg, src, Forward(action.uri))
            return
        if msg.method == "CANCEL" and isinstance(action, Relay):
            # no INVITE transaction here (match_request would have taken it): 16.10 says
            # forward it statelessly
            self.w.forward(msg, src, Forward(action.uri))
            return
        now = self._now()
        try:
            rctx = self.proxy.create(msg, src, now)
        except LocalProtocolError:
            log.debug("call_id=%s transaction exists already", msg.call_id)
            return
        self.w.stats["tm_created"] += 1
        if ctx._tm is not None:
            rctx.routes.update(ctx._tm.routes)
            rctx.user = ctx._tm.vars  # msg.vars travels with the transaction
        if isinstance(action, TReply):
            self.proxy.reply(rctx, action.status, action.reason, action.headers, action.body,
                             action.content_type, now)
        else:
            self._relay(rctx, ctx, action, now)
        self._flush()

    def stats(self) -> dict:
        return self.proxy.stats()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # -- branches --------------------------------------------------------------------

    def _relay(self, rctx: ResponseContext, smsg: RequestMsg, action: Relay, now: float) -> None:
        """Build, resolve and send the branches of a t_relay()."""
        base = smsg.raw
        main = copy_request(base)
        wanted: list[tuple[Request, URI | None]] = [(main, action.uri)]
        if smsg._tm is not None:
            for route in reversed(smsg._tm.main_path):
                main.add_top("Route", route)
            opts = smsg._tm.branch_opts
            for i, ruri in enumerate(smsg._tm.branches):
                req = copy_request(base)
                req.uri = ruri
                dst, path, sock = opts[i] if i < len(opts) else (None, (), None)
                req.send_socket = sock
                for route in reversed(path):
                    req.add_top("Route", route)
                wanted.append((req, dst))
        branch_route = rctx.routes.get("branch")
        if branch_route:
            wanted = self._run_branch_route(rctx, branch_route, wanted)
        if self.proxy.params.send_trying:
            self.proxy.trying(rctx, now)
        targets: list[BranchTarget] = []
        pending: list[tuple[Request, object, object]] = []
        for req, dst in wanted:
            try:
                hop = self.w.core.next_hop(req, dst)
            except RemoteProtocolError as exc:
                log.info("call_id=%s branch not routable: %s", req.call_id, exc.reason)
                continue
            found, res = self._resolve_nowait(hop)
            if found is _PENDING:
                pending.append((req, hop, res))
            elif found is not None:
                t = self._target(rctx, req, found, res)
                if t is not None:
                    targets.append(t)
        if pending:
            rctx.taken_over = True
            self.w._spawn(self._relay_after_dns(rctx, targets, pending))
            return
        self._send_branches(rctx, targets, now)

    async def _relay_after_dns(self, rctx: ResponseContext, targets: list[BranchTarget],
                               pending: list) -> None:
        for req, hop, res in pending:
            found = await self.w.resolver.next_target(res)
            if found is not None:
                t = self._target(rctx, req, found, res)
                if t is not None:
                    targets.append(t)
        self._send_branches(rctx, targets, self._now())
        self._flush()

    def _send_branches(self, rctx: ResponseContext, targets: list[BranchTarget],
                       now: float) -> None:
        if not targets:
            if rctx.pending or rctx.final_status:
                return
            if rctx.canceled:
                self.proxy.send_best(rctx, now)  # 487
            else:
                self.proxy.reply(rctx, 503, "Next Hop Unresolvable", now=now)
            return
        for t in targets:
            self.w.stats["fwd_req_" + stat_method(t.request.method)] += 1
        self.proxy.relay(rctx, targets, now)

    def _target(self, rctx: ResponseContext, req: Request, found, res=None) -> BranchTarget | None:
        ip, port, proto = found.ip, found.port, found.transport
        out = self.w._pick_listener(proto, ip, rctx.src, req.send_socket)
        if out is None:
            log.warning("call_id=%s no %s listener for %s", req.call_id, proto, ip)
            return None
        # a name with more targets: keep the resolution and a clean copy of the request for
        # RFC 3263 fail-over (on_branch_failed)
        data = (res, copy_request(req)) if res is not None and not res.exhausted else None
        return BranchTarget(req, Peer(proto, ip, port, out.index, None,
                                      getattr(found, "server_name", None)), out, data)

    def _resolve_nowait(self, hop):
        """(target or None or _PENDING, the Resolution or None for a numeric host)."""
        target = literal_target(hop.uri, hop.host)
        if target is not None:
            return target, None
        from .dns import PENDING

        res = self.w.resolver.resolution(hop)
        found = self.w.resolver.next_target_nowait(res)
        return (_PENDING if found is PENDING else found), res

    def _run_branch_route(self, rctx: ResponseContext, name: str,
                          wanted: list[tuple[Request, URI | None]]) -> list:
        fn = self._script_function(name)
        if fn is None:
            return wanted
        kept = []
        for i, (req, dst) in enumerate(wanted):
            bmsg = RequestMsg(req, rctx.src, self.w.core)
            bmsg.dst_uri = dst
            bmsg.tm.branch_index = len(rctx.branches) + i
            try:
                fn(bmsg)
            except Exception as exc:  # noqa: BLE001 - a script bug must not stop the proxy
                self._script_error(name, req.call_id, exc)
                kept.append((req, dst))
                continue
            if any(isinstance(a, Drop) for a in bmsg.actions):
                continue
            kept.append((req, bmsg.dst_uri))
        return kept

    # -- Hooks (called by StatefulProxy) -----------------------------------------------

    def reads_replies(self, ctx: ResponseContext) -> bool:
        """reply_route or a t_on_reply function reads every reply of the transaction."""
        script = self.w.script
        return script is not None and (script.reply_route is not None
                                       or bool(ctx.routes.get("reply")))

    def on_reply(self, ctx: ResponseContext, branch: Branch, resp: Response) -> bool:
        script = self.w.script
        if script is None:
            return True
        name = ctx.routes.get("reply")
        fns = []
        if script.reply_route is not None:
            fns.append(("reply_route", script.reply_route))
        if name:
            fn = self._script_function(name)
            if fn is not None:
                fns.append((name, fn))
        if not fns:
            return True
        peer = branch.peer
        rmsg = ReplyMsg(resp, Source(peer.proto, peer.ip, peer.port, peer.listener))
        for fname, fn in fns:
            try:
                fn(rmsg)
            except Exception as exc:  # noqa: BLE001 - a script bug must not stop the proxy
                self._script_error(fname, resp.call_id, exc)
        return not any(isinstance(a, Drop) for a in rmsg.actions)

    def on_branch_failed(self, ctx: ResponseContext, branch: Branch, resp: Response,
                         now: float) -> bool:
        """RFC 3263 4.3: 503 or no answer from one server of a name: the next one."""
        res, template = branch.data  # type: ignore[misc]
        from .dns import PENDING

        found = self.w.resolver.next_target_nowait(res)
        if found is None:
            return False
        log.info("call_id=%s %d from %s:%d, trying the next server of %s", template.call_id,
                 resp.status, branch.peer.ip, branch.peer.port, res.host)
        if found is PENDING:
            self.w._spawn(self._failover_after_dns(ctx, res, template))
            return True
        t = self._target(ctx, copy_request(template), found, res)
        if t is None:
            return False
        self.proxy.relay(ctx, [t], now)
        return True

    async def _failover_after_dns(self, ctx: ResponseContext, res, template: Request) -> None:
        found = await self.w.resolver.next_target(res)
        now = self._now()
        t = self._target(ctx, copy_request(template), found, res) if found is not None else None
        if t is not None and not ctx.final_status and not ctx.canceled:
            self.proxy.relay(ctx, [t], now)
        else:
            self.proxy.resume(ctx, now)
        self._flush()

    def on_failure(self, ctx: ResponseContext, now: float) -> bool:
        name = ctx.routes.get("failure")
        ctx.routes["failure"] = None  # armed once; the failure route may arm it again
        fn = self._script_function(name) if name else None
        if fn is None:
            return False
        fmsg = RequestMsg(copy_request(ctx.request), ctx.src, self.w.core)
        best = ctx.best
        st = fmsg.tm
        st.vars = ctx.user  # the same dict as the request route's msg.vars
        if best is not None and ctx.user and not ctx.canceled and (
                best.status == 408 or best.status >= 500):
            for hook in self.w.modules.relay_failed_hooks:  # dispatcher: count the failure
                try:
                    hook(ctx.user, best.status)
                except Exception:  # noqa: BLE001 - a module hook must not stop the proxy
                    log.exception("call_id=%s relay-failed hook", ctx.request.call_id)
        if best is not None:
            st.reply = ReplyMsg(best, ctx.src)
        st.canceled = ctx.canceled
        try:
            fn(fmsg)
        except Exception as exc:  # noqa: BLE001 - a script bug must not stop the proxy
            self._script_error(name or "", ctx.request.call_id, exc)
            return False
        action = next((a for a in fmsg.actions if isinstance(a, (Relay, TReply))), None)
        if action is None:
            return False
        if isinstance(action, TReply):
            self.proxy.reply(ctx, action.status, action.reason, action.headers, action.body,
                             action.content_type, now)
            return True
        if ctx.canceled:
            log.info("call_id=%s not relaying again: the caller CANCELled", ctx.request.call_id)
            return False
        for k, v in st.routes.items():
            ctx.routes[k] = v
        caller_cseq = ctx.request.get("cseq")
        ctx.request = fmsg.raw
        self._relay(ctx, fmsg, action, now)
        if fmsg.raw.get("cseq") != caller_cseq and caller_cseq is not None:
            # uac_auth raised the CSeq of the branches; our own replies to the caller (408,
            # 487) must carry the caller's (the branches copied the request already)
            ctx.request = copy_request(fmsg.raw)
            ctx.request.set("CSeq", caller_cseq)
        return True

    # -- plumbing ------------------------------------------------------------------------

    def _script_function(self, name: str):
        fn = self.w._script_function(name)
        if fn is None:
            log.error("route %r is not a function of the routing script", name)
            return None
        return fn

    def _script_error(self, name: str, call_id: str, exc: Exception) -> None:
        from ..script.loader import error_location

        self.w.stats["script_errors"] += 1
        path = self.w.script.path if self.w.script else "?"
        log.error("call_id=%s %s failed at %s: %s: %s", call_id, name,
                  error_location(exc, path), type(exc).__name__, exc)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _flush(self) -> None:
        for tx in self.proxy.data_to_send():
            self._transmit(tx)
        when = self.proxy.get_timer()
        # re-armed only when something is due earlier than the armed call: a later (or no)
        # deadline lets the armed call fire early once and re-arm then, instead of a cancel
        # and a new loop timer for nearly every message
        if when is not None and (self._armed is None or when < self._armed):
            if self._handle is not None:
                self._handle.cancel()
            self._armed = when
            self._handle = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        due = self._armed
        self._handle = None
        self._armed = None
        try:
            # the loop may call back a little early (uvloop rounds to ms): what was due is due
            self.proxy.handle_timer(max(self._now(), due or 0.0))
        except Exception:  # noqa: BLE001 - timer boundary: like the per-message boundary
            self.w.stats["internal_errors"] += 1
            log.exception("transaction timer failed")
        self._flush()

    def _transmit(self, tx: Transmit) -> None:
        peer = tx.peer
        if peer.conn_id is not None:
            conn = self.w.conns.get(peer.conn_id)
            if conn is not None and not conn.closed:
                conn.send(tx.data)
                return
        on_error = None if tx.key is None else partial(self._transport_error, tx.key)
        self.w._send(peer.proto, tx.data, peer.ip, peer.port, peer.listener, peer.server_name,
                     on_error)

    def _transport_error(self, key: object) -> None:
        """A branch's request could not be sent (connect refused, TLS handshake failed):
        the branch gets its 503 now (failure route, next DNS target)."""
        try:
            self.proxy.transport_error(key, self._now())
        except Exception:  # noqa: BLE001 - callback boundary, like the per-message one
            self.w.stats["internal_errors"] += 1
            log.exception("transport error handling failed")
        self._flush()


_PENDING = object()
