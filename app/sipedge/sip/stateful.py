"""Transaction-stateful proxy (RFC 3261 16 with the transactions of 17), sans-IO.

One `StatefulProxy` per worker holds every server and client transaction of that worker and
the *response contexts* (16.7) that join them: one server transaction, one client transaction
per branch. The caller (io/tm_driver.py) feeds requests, responses and `now`, drains
`data_to_send()` (a list of `Transmit`) and keeps one timer armed at `get_timer()`.

What the routing script decides (which branches, failure and reply routes) reaches this module
through two doors: `relay(ctx, targets, now)` / `reply(ctx, ...)` called by the driver, and
the `Hooks` object (a port) that the proxy calls when a reply arrives and when every branch has
failed. Nothing here does I/O or reads a clock.

Final-response timers work like Kamailio's: `fr_timeout` runs from the moment a branch is
sent until its first reply; for INVITE a provisional reply restarts it as `fr_inv_timeout`.
When it fires the branch ends with a local 408 (an INVITE branch that got a provisional is
also CANCELled) and the 408 takes part in best-response selection like any other reply.

Lifetime and size (docs/transactions.md "How long a finished transaction stays"): the INVITE
client transaction leaves Accepted after `ACCEPTED_WAIT` (5 s, Kamailio's wait timer; a 2xx
retransmission after it is forwarded statelessly along the same path). When the final
response went upstream and every client transaction left is in Completed (or gone), the
context is dropped
and the server transaction becomes an `Absorber` (IST Accepted: Timer L, NIST Completed:
Timer J, both 64*T1): its key, the bytes to repeat, the reply address, the deadline.

Replies: `receive_response_data()` takes a 1xx/2xx of a client transaction as bytes, cuts
our Via line out (`splice_reply`) and forwards the rest unchanged, unless a hook reads the
replies (`Hooks.reads_replies`); everything else is parsed and goes to `receive_response()`.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from ..errors import LocalProtocolError
from .headers.via import MAGIC_COOKIE
from .message import Request, Response
from .proxy import LocalAddress, ProxyCore, Source
from .transaction import (
    AckReceived,
    ClientTransaction,
    Input,
    Kind,
    ResponseReceived,
    ServerTransaction,
    State,
    TimerValues,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    build_cancel,
    response_key,
    server_key,
)


# per message: not frozen (see sip/proxy.py Source), never assigned to
@dataclass(slots=True, unsafe_hash=True)
class Peer:
    """Where a transaction's messages go."""

    proto: str  # udp | tcp
    ip: str
    port: int
    listener: int
    conn_id: int | None = None
    server_name: str | None = None  # TLS: the name the server certificate must match


# per message: not frozen (see sip/proxy.py Source), never assigned to
@dataclass(slots=True, unsafe_hash=True)
class Transmit:
    peer: Peer
    data: bytes
    key: object = None  # the client transaction sending it: for `transport_error()`


# per message: not frozen (see sip/proxy.py Source), never assigned to
@dataclass(slots=True, unsafe_hash=True)
class BranchTarget:
    """A resolved branch: the request to send (R-URI already set), where, and from which
    listener. The proxy adds Max-Forwards, Record-Route and its Via."""

    request: Request
    peer: Peer
    out: LocalAddress
    data: object = None  # the driver's, kept on the Branch (e.g. the DNS resolution)


# How long the proxy's INVITE client transaction stays in Accepted after a 2xx (Timer M;
# RFC 6026 says 64*T1). Kamailio's wait timer: see the module doc.
ACCEPTED_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class TmParams:
    timers: TimerValues = TimerValues(timer_m=ACCEPTED_WAIT)
    fr_timeout: float = 30.0  # until the first reply of a branch
    fr_inv_timeout: float = 120.0  # INVITE: from the first provisional to the final reply
    send_trying: bool = True  # 100 Trying to the caller as soon as an INVITE is relayed


class Hooks(Protocol):
    def reads_replies(self, ctx: "ResponseContext") -> bool:
        """Whether on_reply() looks at the replies of `ctx` (False: the proxy may forward a
        1xx/2xx as spliced bytes, never building a Response)."""

    def on_reply(self, ctx: "ResponseContext", branch: "Branch", resp: Response) -> bool:
        """Every reply of a branch (our Via already removed), before it is forwarded; may
        change `resp`. False: do not forward it (honoured for provisional replies only)."""

    def on_failure(self, ctx: "ResponseContext", now: float) -> bool:
        """Every branch ended without a 2xx (`ctx.best` is the winning reply). True: the hook
        took over and calls relay() or reply() on `ctx`, now or later."""

    def on_branch_failed(self, ctx: "ResponseContext", branch: "Branch", resp: Response,
                         now: float) -> bool:
        """A branch got 503, or no reply at all (timeout, transport error): RFC 3263 4.3
        says try the next server. True: the hook relays a replacement branch (now, or later
        followed by relay() or resume())."""


class NoHooks:
    def reads_replies(self, ctx: "ResponseContext") -> bool:
        return False

    def on_reply(self, ctx: "ResponseContext", branch: "Branch", resp: Response) -> bool:
        return True

    def on_failure(self, ctx: "ResponseContext", now: float) -> bool:
        return False

    def on_branch_failed(self, ctx: "ResponseContext", branch: "Branch", resp: Response,
                         now: float) -> bool:
        return False


_seq = itertools.count(1)


class Branch:
    """One client transaction of a response context, and its final-response timer."""

    __slots__ = ("ctx", "index", "request", "peer", "ct", "status", "final", "provisional",
                 "cancel_pending", "cancel_ct", "fr_deadline", "armed", "seq", "data",
                 "local")

    def __init__(self, ctx: "ResponseContext", index: int, request: Request, peer: Peer) -> None:
        self.ctx = ctx
        self.index = index
        self.request = request
        self.peer = peer
        self.ct: ClientTransaction | None = None
        self.status = 0  # last status seen (0: none yet)
        self.final: Response | None = None  # final reply, None while pending
        self.provisional = False
        self.cancel_pending = False
        self.cancel_ct: ClientTransaction | None = None
        self.fr_deadline: float | None = None
        self.armed: float | None = None
        self.seq = next(_seq)
        self.data: object = None  # BranchTarget.data
        self.local = False  # the final reply is ours (timeout, transport error)

    @property
    def done(self) -> bool:
        return self.final is not None

    def get_timer(self) -> float | None:
        return self.fr_deadline

    def __repr__(self) -> str:
        return f"<Branch {self.index} status={self.status} done={self.done}>"


class ResponseContext:
    """The proxy's state for one relayed request (16.7): its server transaction, branches,
    the best reply so far and the routes the script armed."""

    __slots__ = ("st", "request", "src", "reply_peer", "branches", "best", "final_status",
                 "canceled", "routes", "taken_over", "live", "key", "user", "is_invite")

    def __init__(self, st: ServerTransaction, request: Request, src: Source,
                 reply_peer: Peer) -> None:
        self.st = st
        self.request = request  # as the script left it; each branch gets its own copy
        self.src = src
        self.reply_peer = reply_peer
        self.branches: list[Branch] = []
        self.best: Response | None = None
        self.final_status = 0  # final status sent upstream (0: none yet)
        self.canceled = False
        self.routes: dict[str, str | None] = {"failure": None, "reply": None, "branch": None}
        self.taken_over = False  # a failure hook will call relay()/reply()
        self.live = 1  # transactions alive (the server transaction counts)
        self.key = st.key
        self.user: dict = {}  # free for the driver / script
        self.is_invite = request.method == "INVITE"

    @property
    def pending(self) -> list[Branch]:
        return [b for b in self.branches if b.final is None]

    def __repr__(self) -> str:
        return f"<ResponseContext {self.request.method} {self.request.call_id} " \
               f"branches={len(self.branches)} final={self.final_status}>"


def is_stateful_branch(branch: str | None) -> bool:
    """Our transaction branches are `z9hG4bK<worker>xt...`; stateless ones are
    `z9hG4bK<worker>x<hex>` (ProxyCore.branch)."""
    if not branch or not branch.startswith(MAGIC_COOKIE):
        return False
    x = branch.find("x", 7)
    return x > 7 and branch[x + 1:x + 2] == "t"


def copy_request(req: Request) -> Request:
    """A deep enough copy: own header list, own entries; values are immutable strings. The
    parsed values (top Via, CSeq, From, To, Request-URI: immutable, and true of the same
    header text) come along, so the copy does not parse them again."""
    out = Request(req.method, req.uri_text, [[h[0], h[1], h[2]] for h in req.headers],
                  req.body, req.version)
    out.send_socket = req.send_socket
    out.record_route = req.record_route
    out._uri = req._uri
    out._via = req._via
    out._cseq = req._cseq
    out._from = req._from
    out._to = req._to
    return out


def _copy_response(resp: Response) -> Response:
    return Response(resp.status, resp.reason, [[h[0], h[1], h[2]] for h in resp.headers],
                    resp.body, resp.version)


class Absorber:
    """What is left of a server transaction that only absorbs retransmissions once its
    context is gone (`_maybe_detach`): an IST in Accepted (RFC 6026 Timer L: INVITE
    retransmissions are dropped, ACKs too) or a NIST in Completed (Timer J: a retransmission
    gets the final response again). Lives in `StatefulProxy.server` under the transaction's
    key until `until`; a few hundred bytes instead of a machine with its timer table, queues
    and context."""

    __slots__ = ("response", "peer", "until")

    def __init__(self, response: bytes | None, peer: Peer, until: float) -> None:
        self.response = response
        self.peer = peer
        self.until = until


class SplicedReply:
    """A 1xx or 2xx of a client transaction forwarded as bytes (`receive_response_data`):
    the status, and the datagram without our Via. Stands where `_on_response` and
    `_send_reply` would otherwise take a parsed Response."""

    __slots__ = ("status", "data")

    def __init__(self, status: int, data: bytes) -> None:
        self.status = status
        self.data = data

    def to_bytes(self) -> bytes:
        return self.data


_VIA_LINE = re.compile(rb"\n(?:via|v)[ \t]*:")  # over the lowered head
_FOLDED = re.compile(rb"\n[ \t]")  # (one pass; see sip/message.py)
_CSEQ_LINE = re.compile(rb"\ncseq[ \t]*:[ \t]*[0-9]+[ \t]+([^ \t\r\n]+)[ \t]*\r")


def splice_reply(data: bytes) -> tuple[int, str, str, bytes] | None:
    """(status, top Via branch, CSeq method, the datagram without our Via) of a 1xx/2xx
    reply with a Via after ours (a second line, or a second value in the same line); None
    for anything else (folded lines, a quote in the top Via line, no CRLF CRLF, an odd status
    line, several CSeq): the full parse handles those. The head is lowered once and searched
    by two patterns that start with a literal LF, so the regex engine jumps from line to
    line."""
    if data[:8] != b"SIP/2.0 " or data[11:12] != b" " or data[8:9] not in (b"1", b"2"):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    status = data[8:11]
    head = data[:end + 2].lower()  # the last header line keeps its CRLF
    if not status.isdigit() or _FOLDED.search(head) is not None:
        return None
    vias = _VIA_LINE.finditer(head)
    top = next(vias, None)
    if top is None:
        return None
    cseq = _CSEQ_LINE.search(head)
    if cseq is None or _CSEQ_LINE.search(head, cseq.end() - 1) is not None:
        return None
    start = top.start() + 1  # the top Via line
    stop = head.find(b"\r\n", start)
    value = top.end()  # just after its colon
    if b'"' in head[value:stop]:
        return None
    # our Via is the line's first value; SIPp's [last_Via:] and some stacks put all the
    # Vias in one line, comma-separated
    first, comma, _ = head[value:stop].partition(b",")
    p = first.find(b";branch=")
    if p < 0:
        return None
    p += 8
    q = first.find(b";", p)
    q = len(first) if q < 0 else q
    if comma:  # the line keeps the values after ours
        after = value + len(first) + 1
        while data[after:after + 1] in (b" ", b"\t"):
            after += 1
        if after >= stop:
            return None
        out = data[:value] + b" " + data[after:]
    else:
        if next(vias, None) is None:
            return None  # no Via left after ours: the reply was for us
        out = data[:start] + data[stop + 2:]
    try:
        # the branch as sent (case kept): our own, compared byte for byte
        branch = data[value + p:value + q].strip().decode("ascii")
        method = data[cseq.start(1):cseq.end(1)].decode("ascii")
    except UnicodeDecodeError:
        return None
    return int(status), branch, method, out


_RCV_1XX = Input.RCV_1XX
_RCV_2XX = Input.RCV_2XX
_PREFERRED_4XX = (401, 407, 415, 420, 484)
# [relayed][status class] -> the counter key (fwd_rpl_2xx, snd_rpl_1xx, ...)
_COUNTER_KEYS = tuple(tuple(f"{'fwd' if r else 'snd'}_rpl_{c}xx" for c in range(10))
                      for r in (False, True))
_QUIET = (State.ACCEPTED, State.COMPLETED, State.CONFIRMED)
_DONE = Response(0, "done")  # a finished branch after compaction


def best_response(responses: list[Response]) -> Response | None:
    """16.7 step 6: any 6xx; else the lowest class, preferring 401/407/415/420/484 in 4xx."""
    if not responses:
        return None
    six = [r for r in responses if r.status >= 600]
    if six:
        return six[0]
    low = min(r.status // 100 for r in responses)
    cands = [r for r in responses if r.status // 100 == low]
    if low == 4:
        for r in cands:
            if r.status in _PREFERRED_4XX:
                return r
    return cands[0]


class StatefulProxy:
    """All transactions of one worker. See the module doc."""

    def __init__(self, core: ProxyCore, params: TmParams = TmParams(), *,
                 hooks: Hooks | None = None, salt: str = "0",
                 counters: dict[str, int] | None = None) -> None:
        self.core = core
        # message counters shared with the caller (the worker's `stats`): fwd_rpl_<n>xx for
        # replies relayed upstream, snd_rpl_<n>xx for replies we generate
        self.counters: dict[str, int] = counters if counters is not None else {}
        self.params = params
        self.hooks: Hooks = hooks or NoHooks()
        self.salt = salt
        self.server: dict[object, ServerTransaction | Absorber] = {}
        # keys of the absorbers in the order they expire (all live 64*T1 from their final)
        self._absorbing: deque = deque()
        self.client: dict[object, ClientTransaction] = {}
        self.active = {k: 0 for k in Kind}
        self.total = {k: 0 for k in Kind}
        self.contexts = 0
        self.absorbers = 0
        self._out: list[Transmit] = []
        self._heap: list[tuple[float, int, object]] = []
        self._branch_seq = itertools.count(1)
        self._heap_seq = itertools.count()
        self._stale = 0
        # the request match_request() last found no transaction for, and its key: create()
        # for the same request reuses it (the key of the request as it came, before the
        # script and the Via stamp, which is what a retransmission's key is computed from)
        self._missed: tuple[Request, tuple] | None = None

    # -- output and timers ----------------------------------------------------------

    def data_to_send(self) -> list[Transmit]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        heap = self._heap
        first = None
        while heap:
            when, _, obj = heap[0]
            if obj.armed == when:  # type: ignore[attr-defined]
                first = when
                break
            heapq.heappop(heap)  # stale entry
        absorbing = self._absorbing
        while absorbing:
            a = self.server.get(absorbing[0])
            if type(a) is Absorber:
                if first is None or a.until < first:  # type: ignore[union-attr]
                    first = a.until  # type: ignore[union-attr]
                break
            absorbing.popleft()  # replaced meanwhile
        return first

    def handle_timer(self, now: float) -> None:
        absorbing = self._absorbing
        server = self.server
        while absorbing:
            a = server.get(absorbing[0])
            if type(a) is Absorber:
                if a.until > now:  # type: ignore[union-attr]
                    break
                del server[absorbing[0]]
                self.absorbers -= 1
            absorbing.popleft()
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, obj = heapq.heappop(heap)
            if obj.armed != when:  # type: ignore[attr-defined]
                continue
            obj.armed = None  # type: ignore[attr-defined]
            if isinstance(obj, Branch):
                self._fr_expired(obj, now)
            else:
                obj.handle_timer(now)  # type: ignore[attr-defined]
                self._drain(obj, now)  # type: ignore[arg-type]

    def _arm(self, obj: ServerTransaction | ClientTransaction | Branch) -> None:
        # get_timer() of a branch / of a transaction, read without the call
        when = obj.fr_deadline if type(obj) is Branch else obj._next  # type: ignore[union-attr]
        if when != obj.armed:  # type: ignore[union-attr]
            if obj.armed is not None:  # type: ignore[union-attr]
                self._stale += 1
            obj.armed = when  # type: ignore[union-attr]
            if when is not None:
                heapq.heappush(self._heap, (when, next(self._heap_seq), obj))
            if self._stale > 256 and 2 * self._stale > len(self._heap):
                self._sweep_heap()

    def _disarm(self, obj: Branch) -> None:
        if obj.armed is not None:
            obj.armed = None
            self._stale += 1
            if self._stale > 256 and 2 * self._stale > len(self._heap):
                self._sweep_heap()

    def _sweep_heap(self) -> None:
        """Stale heap entries (timers stopped or moved) would keep finished calls in memory
        until their old deadline (fr_inv_timeout: minutes); drop them once they are the
        majority."""
        if self._stale > 256 and 2 * self._stale > len(self._heap):
            self._heap = [e for e in self._heap if e[2].armed == e[0]]  # type: ignore[attr-defined]
            heapq.heapify(self._heap)
            self._stale = 0

    def stats(self) -> dict:
        return {"active": {k.value: v for k, v in self.active.items()},
                "total": {k.value: v for k, v in self.total.items()},
                "contexts": self.contexts, "absorbing": self.absorbers}

    # -- requests ----------------------------------------------------------------------

    def match_request(self, msg: Request, src: Source, now: float) -> bool:
        """Give a request to the transaction it matches (17.2.3): retransmissions are
        absorbed, the ACK of a non-2xx final is taken hop by hop, a CANCEL of a known INVITE
        is answered and applied (16.10). True: consumed, the script does not see it."""
        if not self.server:
            return False
        key = server_key(msg)
        st = self.server.get(key)
        if st is not None:
            if type(st) is Absorber:
                if st.response is not None and msg.method != "ACK":  # type: ignore[union-attr]
                    self._out.append(Transmit(st.peer, st.response))  # type: ignore[union-attr]
                return True
            st.receive_request(msg, now)  # type: ignore[union-attr]
            self._drain(st, now)  # type: ignore[arg-type]
            return True
        if msg.method == "CANCEL":
            ist = self.server.get(server_key(msg, "INVITE"))
            if ist is not None and type(ist) is not Absorber and \
                    isinstance(ist.owner, ResponseContext):  # type: ignore[union-attr]
                self._receive_cancel(msg, src, ist.owner, now)  # type: ignore[union-attr]
                return True
            if ist is not None and (type(ist) is Absorber or
                                    isinstance(ist.owner, Peer)):  # type: ignore[union-attr]
                # the INVITE's final response went out and its context is gone (detached):
                # 16.10, answer the CANCEL and do nothing else
                cst = self._new_server(msg, src, now)
                cst.owner = self._reply_peer(msg, src)
                self._send_reply(cst, self.core.make_reply(msg, 200, "OK"), now)
                return True
        self._missed = (msg, key)
        return False

    def _receive_cancel(self, cancel: Request, src: Source, ctx: ResponseContext,
                        now: float) -> None:
        st = self._new_server(cancel, src, now)
        st.owner = self._reply_peer(cancel, src)  # a CANCEL's own transaction: just a peer
        self._send_reply(st, self.core.make_reply(cancel, 200, "OK"), now)
        if ctx.final_status:
            return  # too late: 16.10, the final response already went out
        ctx.canceled = True
        self.cancel_branches(ctx, now)

    def cancel_branches(self, ctx: ResponseContext, now: float,
                        keep: Branch | None = None) -> None:
        """CANCEL every pending branch (9.1: only once it has a provisional reply; the others
        get their CANCEL when one arrives)."""
        if not ctx.is_invite:
            return
        for b in ctx.branches:
            if b is keep or b.final is not None or b.cancel_ct is not None:
                continue
            if b.provisional:
                self._send_cancel(b, now)
            else:
                b.cancel_pending = True

    def _send_cancel(self, b: Branch, now: float) -> None:
        cancel = build_cancel(b.request)
        ct = ClientTransaction(cancel, cancel.to_bytes(), now, reliable=b.peer.proto != "udp",
                               timers=self.params.timers)
        ct.owner = b
        b.cancel_ct = ct
        b.cancel_pending = False
        # 9.1: without a final reply 64*T1 after the CANCEL the branch is given up
        limit = now + 64 * self.params.timers.t1
        if b.fr_deadline is None or b.fr_deadline > limit:
            b.fr_deadline = limit
            self._arm(b)
        self._add_client(ct, b.ctx)
        self._drain(ct, now)

    def create(self, msg: Request, src: Source, now: float) -> ResponseContext:
        """The response context and server transaction for a request the script relays or
        answers statefully (t_relay / t_reply)."""
        if msg.method == "ACK":
            raise LocalProtocolError("ACK never creates a transaction")
        missed, self._missed = self._missed, None
        key = missed[1] if missed is not None and missed[0] is msg else server_key(msg)
        if key in self.server:
            raise LocalProtocolError("a transaction for this request exists already")
        st = self._new_server(msg, src, now, key)
        ctx = ResponseContext(st, msg, src, self._reply_peer(msg, src))
        st.owner = ctx
        self.contexts += 1
        return ctx

    def _new_server(self, msg: Request, src: Source, now: float,
                    key: object = None) -> ServerTransaction:
        st = ServerTransaction(msg, now, reliable=src.proto != "udp", timers=self.params.timers,
                               key=key)
        self.server[st.key] = st
        self.active[st.kind] += 1
        self.total[st.kind] += 1
        return st

    @staticmethod
    def _reply_peer(msg: Request, src: Source) -> Peer:
        """Where responses go (18.2.2, RFC 3581): the connection for streams; over UDP the
        source address, and the source port when the Via asked for rport."""
        via = msg.via
        if src.proto == "udp":
            # maddr (its first value) and rport in one pass over the parameters
            maddr = rport = False
            for k, v in via.params:
                k = k.lower()
                if k == "maddr" and not maddr:
                    if v:
                        break
                    maddr = True
                elif k == "rport":
                    rport = True
            else:
                return Peer("udp", src.ip, src.port if rport else (via.port or 5060),
                            src.listener)
        ip, port = via.response_target()
        return Peer(src.proto, ip, port, src.listener, src.conn_id)

    def trying(self, ctx: ResponseContext, now: float) -> None:
        """100 Trying for an INVITE (17.2.1), unless something was sent already."""
        if ctx.is_invite and ctx.st.last_status == 0:
            self._send_reply(ctx.st, self.core.make_reply(ctx.request, 100, "Trying"), now)

    def new_branch_id(self, req: Request) -> str:
        """Our Via branch: worker index first (hand-off), unique, loop hash last (16.6.8)."""
        return (f"{MAGIC_COOKIE}{self.core.worker}xt{self.salt}{next(self._branch_seq):x}."
                f"{self.core._loop_hash(req)}")

    def relay(self, ctx: ResponseContext, targets: list[BranchTarget], now: float) -> list[Branch]:
        """Send the request on new branches (parallel forking; serial forking when called
        again from a failure route)."""
        if ctx.final_status:
            raise LocalProtocolError("the transaction has a final response already")
        ctx.taken_over = False
        if ctx.canceled or not targets:
            self.send_best(ctx, now)  # CANCELled meanwhile (487), or nothing to try
            return []
        made = []
        if ctx.is_invite and self.params.send_trying:
            self.trying(ctx, now)
        for t in targets:
            req = t.request
            b = Branch(ctx, len(ctx.branches), req, t.peer)
            b.data = t.data
            ctx.branches.append(b)
            branch = self.new_branch_id(req)
            data = self.core.finalize_request(req, ctx.src, t.out, branch)
            # keyed by the branch it was given (what `client_key(req.via.branch)` reads back)
            ct = ClientTransaction(req, data, now, reliable=t.peer.proto != "udp",
                                   timers=self.params.timers, key=(branch, req.method))
            ct.owner = b
            b.ct = ct
            b.fr_deadline = now + self.params.fr_timeout
            self._arm(b)
            self._add_client(ct, ctx)
            self._drain(ct, now)
            made.append(b)
        return made

    def _add_client(self, ct: ClientTransaction, ctx: ResponseContext) -> None:
        self.client[ct.key] = ct
        self.active[ct.kind] += 1
        self.total[ct.kind] += 1
        ctx.live += 1

    def reply(self, ctx: ResponseContext, status: int, reason: str,
              headers: list[tuple[str, str]] | tuple = (), body: bytes = b"",
              content_type: str | None = None, now: float = 0.0) -> None:
        """Answer statefully (t_reply): pending branches of an INVITE are CANCELled."""
        if ctx.final_status:
            raise LocalProtocolError("the transaction has a final response already")
        resp = self.core.make_reply(ctx.request, status, reason, headers, body, content_type)
        ctx.taken_over = False
        if status >= 200:
            ctx.final_status = status
            self.cancel_branches(ctx, now)
        self._send_reply(ctx.st, resp, now)

    def _send_reply(self, st: ServerTransaction, resp: Response, now: float,
                    relayed: bool = False) -> None:
        key = _COUNTER_KEYS[relayed][resp.status // 100]
        self.counters[key] = self.counters.get(key, 0) + 1
        two = 200 <= resp.status < 300
        if st.state in (State.PROCEEDING, State.TRYING) or (st.state is State.ACCEPTED and two):
            st.send_response(resp.status, resp.data if type(resp) is SplicedReply
                             else resp.to_bytes(), now)
            self._drain(st, now)
            owner = st.owner
            if resp.status >= 200 and isinstance(owner, ResponseContext):
                self._maybe_detach(owner)
        elif two and isinstance(st.owner, ResponseContext) and st.owner.is_invite:
            # a 2xx after a non-2xx final went upstream: forward it statelessly (RFC 6026 8.1)
            self._out.append(Transmit(st.owner.reply_peer, resp.to_bytes()))

    # -- responses ---------------------------------------------------------------------

    def receive_response(self, resp: Response, now: float) -> bool:
        """A response from the network. True when it matched a client transaction (and was
        handled); False: no transaction, the caller forwards it statelessly (16.7 step 3)."""
        if not self.client:
            return False
        key = response_key(resp)
        ct = self.client.get(key) if key is not None else None
        if ct is None:
            return False
        ct.receive_response(resp, now)
        self._drain(ct, now)
        return True

    def receive_response_data(self, data: bytes, now: float) -> bool:
        """The byte-level path for a 1xx/2xx of one of our client transactions: matched by
        the top Via's branch and the CSeq method, our Via line cut out, the rest forwarded as
        it came (no Response is built). True: handled. False: not for this path (no such
        transaction, a non-2xx final, a reply the hooks read, anything `splice_reply`
        leaves to the parser): the caller parses it and calls receive_response()."""
        if not self.client:
            return False
        # cheap first look: the first branch must be one of our transaction branches
        # (`z9hG4bK<worker>xt...`), else this is a stateless branch's reply or a stray
        p = data.find(b";branch=z9hG4bK")
        x = data.find(b"x", p + 16, p + 24) if p > 0 else -1
        if x < 0 or data[x + 1:x + 2] != b"t":
            return False
        cut = splice_reply(data)
        if cut is None:
            return False
        status, branch, method, rest = cut
        ct = self.client.get((branch, "INVITE" if method == "ACK" else method))
        if ct is None:
            return False
        b = ct.owner
        if not isinstance(b, Branch) or b.ct is not ct or self.hooks.reads_replies(b.ctx):
            return False
        ct._apply(_RCV_1XX if status < 200 else _RCV_2XX, now, SplicedReply(status, rest))
        self._drain(ct, now)  # (ct.receive_status without its two calls)
        return True

    def transport_error(self, key: object, now: float) -> None:
        """The transport could not deliver what the client transaction `key` sent (TCP or
        TLS connect failed, no route). The transaction ends and its branch behaves as if it
        received a 503 (RFC 3261 16.9), so a failure route or the next RFC 3263 target runs
        now rather than after the final-response timer."""
        ct = self.client.get(key)
        if ct is None or ct.terminated:
            return
        ct.transport_error(now)
        self._drain(ct, now)

    # -- events of the transactions ----------------------------------------------------

    def _drain(self, txn: ServerTransaction | ClientTransaction, now: float) -> None:
        # the transaction's queues read in place (data_to_send() and next_event() are the
        # same, one call each per item)
        data = txn._out
        if data:
            txn._out = []
            owner = txn.owner
            t = type(owner)
            peer = owner.peer if t is Branch else owner.reply_peer if t is ResponseContext \
                else self._peer_of(txn)
            if peer is not None:
                key = txn.key if type(txn) is ClientTransaction else None
                for d in data:
                    self._out.append(Transmit(peer, d, key))
        events = txn._events
        while events:
            ev = events.pop(0)
            if type(ev) is ResponseReceived:
                owner = txn.owner
                if isinstance(owner, Branch) and txn is owner.ct:
                    self._on_response(owner, ev.response, now)
            elif isinstance(ev, (TransactionTimedOut, TransportFailed)):
                owner = txn.owner
                if isinstance(owner, Branch) and txn is owner.ct and owner.final is None:
                    status, reason = (408, "Request Timeout") \
                        if isinstance(ev, TransactionTimedOut) else (503, "Service Unavailable")
                    owner.local = True
                    self._branch_final(owner, self._local_reply(owner.ctx, status, reason), now)
            elif isinstance(ev, TransactionTerminated):
                self._forget(txn)
            elif isinstance(ev, AckReceived):
                pass  # a 2xx ACK with the INVITE's branch: nothing to do for a proxy
        self._arm(txn)

    def _peer_of(self, txn: ServerTransaction | ClientTransaction) -> Peer | None:
        owner = txn.owner
        if isinstance(owner, Branch):
            return owner.peer
        if isinstance(owner, ResponseContext):
            return owner.reply_peer
        return owner if isinstance(owner, Peer) else None

    def _forget(self, txn: ServerTransaction | ClientTransaction) -> None:
        if isinstance(txn, ServerTransaction):
            if self.server.get(txn.key) is txn:
                del self.server[txn.key]
            ctx = txn.owner if isinstance(txn.owner, ResponseContext) else None
        else:
            if self.client.get(txn.key) is txn:
                del self.client[txn.key]
            ctx = txn.owner.ctx if isinstance(txn.owner, Branch) else None
        # no reference cycle outlives a transaction (owner -> branch/context -> transaction):
        # reference counting frees it now, not the cyclic collector later
        txn.owner = None
        self.active[txn.kind] -= 1
        if ctx is not None and ctx.live > 0:  # 0: the context ended already (detached)
            ctx.live -= 1
            if ctx.live == 0:
                self._end_context(ctx)
            else:
                self._maybe_detach(ctx)

    def _end_context(self, ctx: ResponseContext) -> None:
        ctx.live = 0
        self.contexts -= 1
        branches, ctx.branches = ctx.branches, []
        ctx.request = ctx.best = None  # type: ignore[assignment]
        for b in branches:  # the final-response timers die with the context
            b.fr_deadline = None
            self._disarm(b)
            # a client transaction in Completed still points at its branch: keep it small
            b.request = b.data = None  # type: ignore[assignment]
            if b.final is not None:
                b.final = _DONE

    def _maybe_detach(self, ctx: ResponseContext) -> None:
        """The final response went upstream and every client transaction left is in
        Completed (it only repeats its ACK or absorbs retransmitted replies, for timers D and
        K: no reply reaches the core any more): the server transaction only absorbs
        retransmissions (IST Accepted or Completed/Confirmed, NIST Completed, up to 64*T1)
        and needs nothing but its key, its last response and where replies go. It keeps just
        that; the context, its branches and its request go now."""
        st = ctx.st
        if not ctx.final_status or st is None or st.owner is not ctx or st.state not in _QUIET:
            return
        if ctx.live > 1:
            for b in ctx.branches:
                for ct in (b.ct, b.cancel_ct):
                    if ct is not None and ct.state is not State.COMPLETED \
                            and ct.state is not State.TERMINATED:
                        return  # an ICT in Accepted still forwards 2xx retransmissions
        self._end_context(ctx)
        until = st.get_timer()
        if until is not None and self.server.get(st.key) is st and (
                st.state is State.ACCEPTED or st.kind is Kind.NIST):
            # only the key, the response to repeat and where: an Absorber
            st.owner = None
            ctx.st = None  # type: ignore[assignment]  # stale timer entries may hold ctx
            self.server[st.key] = Absorber(st.last_response, ctx.reply_peer, until)
            self._absorbing.append(st.key)
            self.absorbers += 1
            self.active[st.kind] -= 1
            if st.armed is not None:
                st.armed = None
                self._stale += 1
            st._timers.clear()  # a stale heap entry keeps the object until the next sweep
            st.last_response = None
        else:  # IST Completed (Timer G, H) or Confirmed: the machine goes on
            st.owner = ctx.reply_peer

    def _local_reply(self, ctx: ResponseContext, status: int, reason: str) -> Response:
        if ctx.request is None:  # compacted: the final answer went upstream already
            return _DONE
        return self.core.make_reply(ctx.request, status, reason)

    def _on_response(self, b: Branch, resp: Response, now: float) -> None:
        ctx = b.ctx
        # our Via goes (16.7 step 3); a reply with no Via left was for us. A spliced reply
        # is without it already and has another.
        if type(resp) is not SplicedReply:
            resp.pop_first("via")
            if not resp.has("via"):
                return
        status = resp.status
        if b.final is not None and not (200 <= status < 300 and ctx.is_invite):
            return  # the branch ended already (local 408 or CANCEL); absorb
        b.status = status
        forward = self.hooks.on_reply(ctx, b, resp)
        if status < 200:
            if not b.provisional:
                b.provisional = True
                if ctx.is_invite:
                    b.fr_deadline = now + self.params.fr_inv_timeout
                    self._arm(b)
            if b.cancel_pending:
                self._send_cancel(b, now)
            if status > 100 and forward and not ctx.final_status \
                    and ctx.st.state in (State.PROCEEDING, State.TRYING):
                self._send_reply(ctx.st, resp, now, relayed=True)
            return
        if 200 <= status < 300:
            if b.final is None:
                b.final = resp
                self._stop_fr(b)
            if ctx.is_invite:
                # every 2xx of an INVITE goes upstream, retransmissions too (16.7 step 5)
                ctx.final_status = ctx.final_status or status
                self._send_reply(ctx.st, resp, now, relayed=True)
                self.cancel_branches(ctx, now, keep=b)
                self._compact(ctx)
            elif not ctx.final_status:
                ctx.final_status = status
                self._send_reply(ctx.st, resp, now, relayed=True)
                self._compact(ctx)
            return
        if status >= 600 and ctx.is_invite:
            self.cancel_branches(ctx, now, keep=b)
        self._branch_final(b, resp, now)

    def _stop_fr(self, b: Branch) -> None:
        b.fr_deadline = None
        self._disarm(b)

    def _branch_final(self, b: Branch, resp: Response, now: float) -> None:
        answered = b.status != 0  # any reply from the next hop before this one
        b.final = resp
        b.status = resp.status
        self._stop_fr(b)
        ctx = b.ctx
        if (resp.status == 503 or not answered) and not ctx.final_status and not ctx.canceled \
                and b.data is not None and self.hooks.on_branch_failed(ctx, b, resp, now):
            if not ctx.pending and not ctx.final_status:
                ctx.taken_over = True  # the replacement comes later (DNS)
        if not ctx.pending and not ctx.final_status and not ctx.taken_over:
            self._finish(ctx, now)
        if ctx.final_status:
            self._compact(ctx)

    @staticmethod
    def _compact(ctx: ResponseContext) -> None:
        """The final answer went upstream: finished branches keep only what late replies
        need (status, peer); the winning reply is dropped."""
        ctx.best = None
        ctx.request = None  # type: ignore[assignment]
        for b in ctx.branches:
            if b.final is not None:
                b.final = _DONE
                b.request = None  # type: ignore[assignment]
                b.data = None

    def _fr_expired(self, b: Branch, now: float) -> None:
        """fr_timer / fr_inv_timer fired: the branch ends with a local 408. An INVITE branch
        with a provisional reply is CANCELled; its transaction then gets 64*T1 for the
        final reply (9.1) before it is abandoned, which is what this timer does when it
        fires a second time."""
        ct = b.ct
        if b.final is not None:
            if ct is not None and ct.state in (State.CALLING, State.PROCEEDING):
                ct.abandon(now)
                self._drain(ct, now)
            st = b.ctx.st
            if b.ctx.final_status == 408 and not b.ctx.is_invite and not st.terminated:
                st.abandon(now)  # the RFC 4320 silence is over
                self._drain(st, now)
            return
        cancelled = False
        if ct is not None and not ct.terminated:
            if ct.kind is Kind.ICT and b.provisional and ct.state is State.PROCEEDING:
                if b.cancel_ct is None:
                    self._send_cancel(b, now)
                cancelled = True  # the ICT lives on to ACK the 487
            else:
                ct.abandon(now)
                self._drain(ct, now)
        if b.final is None:
            b.local = True
            self._branch_final(b, self._local_reply(b.ctx, 408, "Request Timeout"), now)
        if cancelled and ct is not None and not ct.terminated:
            b.fr_deadline = now + 64 * self.params.timers.t1
            self._arm(b)

    def _finish(self, ctx: ResponseContext, now: float) -> None:
        """Every branch has a final non-2xx reply: failure route, else the best reply goes
        upstream (a CANCELled request gets 487)."""
        finals = [b.final for b in ctx.branches if b.final is not None]
        best = best_response(finals)
        if best is None:
            best = self._local_reply(ctx, 408, "Request Timeout")
        ctx.best = best
        if ctx.routes.get("failure") and self.hooks.on_failure(ctx, now):
            if ctx.final_status or ctx.pending:
                return  # the hook replied or relayed again
            ctx.taken_over = True
            return  # the driver calls relay() or reply() later
        self.send_best(ctx, now)

    def resume(self, ctx: ResponseContext, now: float) -> None:
        """A hook that took over (on_branch_failed) has nothing more to try: carry on with
        the failure route / best reply if every branch has ended."""
        ctx.taken_over = False
        if not ctx.pending and not ctx.final_status:
            self._finish(ctx, now)

    def send_best(self, ctx: ResponseContext, now: float) -> None:
        """Send the winning reply upstream (after the failure route left it alone)."""
        ctx.taken_over = False
        if ctx.final_status:
            return
        best = ctx.best or self._local_reply(ctx, 408, "Request Timeout")
        if ctx.canceled and best.status < 600:
            best = best if best.status == 487 else self._local_reply(ctx, 487, "Request Terminated")
        elif best.status == 503:
            # 16.7 step 6: a 503 from downstream becomes 500 (the next hop is unavailable,
            # not this proxy)
            best = _copy_response(best)
            best.status, best.reason = 500, "Server Internal Error"
        elif best.status in (401, 407):
            best = self._merge_challenges(ctx, best)
        relayed = any(b.final is best and not b.local for b in ctx.branches)
        if best.status == 408 and not ctx.is_invite and not relayed:
            # RFC 4320 4.1: no 408 to a non-INVITE request; the client's Timer F ends it.
            # The server transaction keeps absorbing retransmissions until then (64*T1),
            # kept by the last branch's timer (see _fr_expired).
            ctx.final_status = 408
            if ctx.branches:
                b = ctx.branches[-1]
                b.fr_deadline = now + 64 * self.params.timers.t1
                self._arm(b)
            else:
                ctx.st.abandon(now)
                self._drain(ctx.st, now)
            return
        ctx.final_status = best.status
        self._send_reply(ctx.st, best, now, relayed=relayed)

    @staticmethod
    def _merge_challenges(ctx: ResponseContext, best: Response) -> Response:
        """16.7 step 7: a 401/407 upstream carries the challenges of every branch that
        answered 401 or 407."""
        others = [b.final for b in ctx.branches
                  if b.final is not None and b.final is not best and b.final.status in (401, 407)]
        if not others:
            return best
        merged = _copy_response(best)
        for r in others:
            for h in r.headers:
                if h[0] in ("www-authenticate", "proxy-authenticate"):
                    merged.headers.append([h[0], h[1], h[2]])
        return merged


__all__ = ["ACCEPTED_WAIT", "Absorber", "BranchTarget", "Branch", "Hooks", "NoHooks", "Peer",
           "ResponseContext", "SplicedReply", "StatefulProxy", "TmParams", "Transmit",
           "best_response", "copy_request", "is_stateful_branch", "splice_reply"]
