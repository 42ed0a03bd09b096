"""The Diameter node: peers, connections, realm routing, the relay agent (RFC 6733 6.1) and
requests of our own (the script client API). Sans-IO like the L0 core it drives:

- input: `connection_made(conn, peer, now, local_ip)` (peer None for an accepted connection),
  `connect_failed(peer, now)`, `data_received(conn, data, now)`, `connection_lost(conn, now)`,
  `send_request(...)`, `handle_timer(now)`;
- output: `actions()` (`ConnectTo`, `Send`, `Close`), `events()` (`LocalAnswer`,
  `PeerStateChanged`, ...) and `get_timer()`.

Relay rules: Route-Record gets the sender's identity, the hop-by-hop id is replaced (and
restored on the answer), the end-to-end id and every other byte are kept; a request that
already carries our identity in Route-Record is answered 3005 (E bit) and not forwarded; peers
named in Route-Record are never chosen (predictive loop avoidance); no route -> 3002 at once.
A pending request whose peer drops or turns SUSPECT is resent with the T flag to a peer chosen
at that moment (a peer that came up after the first routing is a candidate); one pinned by
Destination-Host gets 3002. The pending table is bounded (3004 when full) and every entry has a
deadline (3002 at expiry). An answer whose origin connection is gone is dropped and counted.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...diameter import base
from ...diameter import dictionary as dd
from ...diameter.base import Identity
from ...diameter.codec import (
    FLAG_P,
    FLAG_R,
    FLAG_T,
    HEADER_LEN,
    LOOP_DETECTED,
    TOO_BUSY,
    UNABLE_TO_DELIVER,
    UNKNOWN_PEER,
    Avp,
    DiameterDecodeError,
    Framer,
    FramingError,
    Message,
    append_avps,
    decode,
    decode_header,
    set_hop_by_hop,
)
from ...diameter.peer import (
    Close,
    Connect,
    MessageReceived,
    Peer,
    PeerSettings,
    PeerStateChanged,
    PeerUnusable,
    PeerUsable,
    Send,
)
from ...errors import EdgeError
from .routing import RoutingTable

COMMAND_UNSUPPORTED = 3001


class DiameterError(EdgeError):
    """A request of ours failed: no route, no answer in time, too busy (`result_code`)."""

    def __init__(self, result_code: int, reason: str) -> None:
        super().__init__(f"{reason} (result {result_code})")
        self.result_code = result_code
        self.reason = reason


@dataclass(frozen=True)
class PeerConfig:
    host: str  # Diameter identity
    address: str = ""  # IP to connect to ("" : accept only)
    port: int = 3868
    transport: str = "tcp"
    settings: PeerSettings = field(default_factory=PeerSettings)


@dataclass
class NodeSettings:
    relay: bool = True  # act as a relay agent (DRA) for requests not meant for us
    accept_unknown_peers: bool = False  # accept CERs from hosts not configured
    unknown_peer_settings: PeerSettings = field(default_factory=lambda: PeerSettings(
        connect=False))
    max_pending: int = 100000
    request_timeout_s: float = 10.0
    first_message_timeout_s: float = 10.0
    max_message_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class ConnectTo:
    peer: str
    address: str
    port: int
    transport: str


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """The outcome of `send_request`: the answer, or `message` None and a local result
    code (3002 no route / timeout, 3004 too busy)."""

    token: int
    message: Message | None
    result_code: int | None
    peer: str | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AnswerDropped:
    peer: str
    reason: str
    command: int


@dataclass(slots=True)
class Pending:
    msg: Message  # the request as received / built (original hop-by-hop)
    raw: bytes  # the bytes to forward (Route-Record added), hop-by-hop not yet set
    origin: str | None  # peer name, None for our own request
    origin_conn: int | None
    exclude: set[str]
    realm: str
    dest_host: str | None
    deadline: float
    token: int | None = None
    out_peer: str | None = None
    out_hbh: int = 0
    done: bool = False
    retransmitted: bool = False


class _Conn:
    __slots__ = ("deadline", "framer", "local_ip", "outgoing", "peer")

    def __init__(self, max_bytes: int, peer: str | None, deadline: float | None,
                 local_ip: str | None, outgoing: bool) -> None:
        self.framer = Framer(max_bytes)
        self.peer = peer
        self.deadline = deadline
        self.local_ip = local_ip
        self.outgoing = outgoing


RequestHook = Callable[[Message, str], "int | None"]
MAX_RESULT_KEYS = 256


def _cmd(code: int, request: bool) -> str:
    """Stats key of a command: its short name, or other-R/other-A (a peer cannot grow the
    counters without bound with made-up command codes)."""
    if code in dd.CMD_BY_CODE:
        return dd.command_name(code, request)
    return "other-R" if request else "other-A"


class _ResultStats(Counter):
    """Counter of result codes with a bounded number of distinct keys (the rest: "other")."""

    def __missing__(self, key):
        return 0

    def __setitem__(self, key, value) -> None:
        if key not in self and len(self) >= MAX_RESULT_KEYS:
            key = "other"
        super().__setitem__(key, value)


class Node:
    def __init__(self, me: Identity, peers: list[PeerConfig], routing: RoutingTable | None = None,
                 settings: NodeSettings | None = None, rng: random.Random | None = None) -> None:
        self.me = me
        self.settings = settings or NodeSettings()
        self.rng = rng or random.Random()
        self.routing = routing or RoutingTable()
        self.peer_configs: dict[str, PeerConfig] = {p.host.lower(): p for p in peers}
        self.peers: dict[str, Peer] = {}
        for pc in peers:
            self.peers[pc.host.lower()] = Peer(pc.host, me, pc.settings, self.rng)
        self.conns: dict[int, _Conn] = {}
        self.pending: dict[str, dict[int, Pending]] = {}  # out peer -> out hbh -> entry
        self.npending = 0
        self._deadlines: list[tuple[float, int, Pending]] = []
        self._seq = 0
        self._token = 0
        self._e2e = (self.rng.randrange(1 << 12) << 20)
        self._actions: list = []
        self._events: list = []
        self.request_hook: RequestHook | None = None
        self.local_handler: Callable[[Message, str], Message | None] | None = None
        self.stats: Counter = Counter()
        self.result_stats: Counter = _ResultStats()
        self.me_l = me.origin_host.lower()
        self._now = 0.0  # the latest `now` seen (for work queued between inputs)

    # ------------------------------------------------------------------ outputs

    def actions(self) -> list:
        self._collect()
        out, self._actions = self._actions, []
        stats = self.stats
        for a in out:
            if type(a) is Send and len(a.data) >= HEADER_LEN:
                d = a.data
                stats["tx " + _cmd(int.from_bytes(d[5:8], "big"), bool(d[4] & 0x80))] += 1
        return out

    def events(self) -> list:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        ts = [t for t in (p.get_timer() for p in self.peers.values()) if t is not None]
        ts += [c.deadline for c in self.conns.values() if c.deadline is not None]
        while self._deadlines and self._deadlines[0][2].done:
            heapq.heappop(self._deadlines)
        if self._deadlines:
            ts.append(self._deadlines[0][0])
        return min(ts) if ts else None

    # ------------------------------------------------------------------ lifecycle

    def start(self, now: float) -> None:
        for p in self.peers.values():
            if p.settings.connect:
                p.start(now)
        self._collect(now)

    def stop(self, now: float) -> None:
        """DPR to every open peer (each waits for its DPA up to dpr_timeout_s)."""
        for p in self.peers.values():
            p.stop(now, base.REBOOTING, disable=True)
        self._collect(now)

    def all_closed(self) -> bool:
        return all(p.state.value == "Closed" for p in self.peers.values())

    def set_enabled(self, name: str, enabled: bool, now: float) -> Peer:
        p = self.peers.get(name.lower())
        if p is None:
            raise KeyError(f"no peer {name!r}")
        if enabled:
            p.start(now)
        else:
            p.stop(now, base.DO_NOT_WANT_TO_TALK_TO_YOU, disable=True)
        self._collect(now)
        return p

    # ------------------------------------------------------------------ transport input

    def connection_made(self, conn: int, peer: str | None, now: float,
                        local_ip: str | None = None) -> None:
        if peer is None:
            self.conns[conn] = _Conn(self.settings.max_message_bytes, None,
                                     now + self.settings.first_message_timeout_s, local_ip, False)
            return
        self.conns[conn] = _Conn(self.settings.max_message_bytes, peer.lower(), None, local_ip,
                                 True)
        self.peers[peer.lower()].connected(conn, now, local_ip)
        self._collect(now)

    def connect_failed(self, peer: str, now: float, reason: str = "connect failed") -> None:
        p = self.peers.get(peer.lower())
        if p is not None:
            p.connect_failed(now, reason)
            self._collect(now)

    def connection_lost(self, conn: int, now: float, reason: str = "connection lost") -> None:
        c = self.conns.pop(conn, None)
        if c is None or c.peer is None:
            return
        p = self.peers.get(c.peer)
        if p is not None:
            p.connection_lost(conn, now, reason)
            self._collect(now)
            if p.dynamic and p.state.value == "Closed" and p.conn is None:
                self._forget(p)

    def _forget(self, p: Peer) -> None:
        if self.peers.get(p.name.lower()) is p and p.name.lower() not in self.peer_configs:
            del self.peers[p.name.lower()]

    def data_received(self, conn: int, data: bytes, now: float) -> None:
        c = self.conns.get(conn)
        if c is None:
            return
        try:
            frames = c.framer.feed(data)
        except FramingError as exc:
            self.stats["framing_errors"] += 1
            self._actions.append(Close(conn, f"framing error: {exc.reason}"))
            self.connection_lost(conn, now, f"framing error: {exc.reason}")
            return
        for raw in frames:
            if conn not in self.conns:
                break
            self._frame(conn, c, raw, now)
        self._collect(now)

    def _frame(self, conn: int, c: _Conn, raw: bytes, now: float) -> None:
        try:
            msg = decode(raw)
        except DiameterDecodeError as exc:
            self.stats["decode_errors"] += 1
            self._decode_error(conn, c, raw, exc, now)
            return
        self.stats["rx " + _cmd(msg.code, msg.is_request)] += 1
        if c.peer is None:
            self._first_message(conn, c, msg, now)
            return
        p = self.peers.get(c.peer)
        if p is None:
            self._actions.append(Close(conn, "peer forgotten"))
            return
        p.received(conn, msg, raw, now)

    def _decode_error(self, conn: int, c: _Conn, raw: bytes, exc: DiameterDecodeError,
                      now: float) -> None:
        try:
            hdr = decode_header(raw)
        except DiameterDecodeError:
            hdr = None
        if c.peer is None or hdr is None or not hdr[2] & FLAG_R:
            # before the CER, or an answer we cannot read: nothing sensible to say
            if c.peer is None:
                self._actions.append(Close(conn, f"undecodable first message: {exc.reason}"))
                self.conns.pop(conn, None)
            return
        ans = base.error_answer_raw(hdr, self.me, exc.result_code, exc.failed_avp, exc.reason)
        self.result_stats[exc.result_code] += 1
        self._actions.append(Send(conn, ans.encode()))

    def _first_message(self, conn: int, c: _Conn, msg: Message, now: float) -> None:
        if msg.code != base.CER or not msg.is_request:
            self.stats["non_cer_first"] += 1
            self._actions.append(Close(conn, "first message is not a CER"))
            self.conns.pop(conn, None)
            return
        try:
            host = dd.get(msg.avps, "Origin-Host", "")
        except DiameterDecodeError:
            host = ""
        if not host:
            self._actions.append(Send(conn, base.answer(msg, self.me, 5005).encode()))
            self._actions.append(Close(conn, "CER without Origin-Host"))
            self.conns.pop(conn, None)
            return
        p = self.peers.get(host.lower())
        if p is None:
            if not self.settings.accept_unknown_peers:
                self.stats["unknown_peer"] += 1
                self._actions.append(Send(conn, base.answer(msg, self.me, UNKNOWN_PEER).encode()))
                self._actions.append(Close(conn, f"unknown peer {host}"))
                self.conns.pop(conn, None)
                return
            p = Peer(host, self.me, self.settings.unknown_peer_settings, self.rng, dynamic=True)
            self.peers[host.lower()] = p
        c.peer = host.lower()
        c.deadline = None
        p.incoming_cer(conn, msg, now, c.local_ip)
        if p.dynamic and p.state.value == "Closed":
            self._forget(p)

    # ------------------------------------------------------------------ timers

    def handle_timer(self, now: float) -> None:
        for conn, c in list(self.conns.items()):
            if c.deadline is not None and now >= c.deadline:
                self._actions.append(Close(conn, "no CER in time"))
                del self.conns[conn]
        for p in list(self.peers.values()):
            t = p.get_timer()
            if t is not None and now >= t:
                p.handle_timer(now)
        self._collect(now)
        while self._deadlines and (self._deadlines[0][2].done or self._deadlines[0][0] <= now):
            _, _, pe = heapq.heappop(self._deadlines)
            if pe.done:
                continue
            self.stats["timeouts"] += 1
            self._drop_pending(pe)
            self._fail(pe, UNABLE_TO_DELIVER, "no answer before the transaction timeout", now)
        self._collect(now)

    # ------------------------------------------------------------------ peer events

    def _collect(self, now: float | None = None) -> None:
        if now is None:
            now = self._now
        else:
            self._now = now
        for p in list(self.peers.values()):
            while True:
                acts, evs = p.actions(), p.events()
                if not acts and not evs:
                    break
                for a in acts:
                    if isinstance(a, Connect):
                        pc = self.peer_configs.get(p.name.lower())
                        if pc is None or not pc.address:
                            p.connect_failed(now or 0.0, "no address to connect to")
                            continue
                        self._actions.append(ConnectTo(p.name, pc.address, pc.port,
                                                       pc.transport))
                    else:
                        if isinstance(a, Close):
                            self.conns.pop(a.conn, None)
                        self._actions.append(a)
                for ev in evs:
                    if isinstance(ev, MessageReceived):
                        self._on_message(p, ev.message, ev.raw, now or 0.0)
                    elif isinstance(ev, PeerUnusable):
                        self._events.append(ev)
                        self._failover(p, now or 0.0)
                    else:
                        self._events.append(ev)

    def _on_message(self, p: Peer, msg: Message, raw: bytes, now: float) -> None:
        if msg.is_request:
            self._on_request(p, msg, raw, now)
        else:
            self._on_answer(p, msg, raw, now)

    # ------------------------------------------------------------------ relay

    def _on_request(self, p: Peer, msg: Message, raw: bytes, now: float) -> None:
        try:
            rr = {v.lower() for v in dd.get_all(msg.avps, "Route-Record")}
            dest_host = dd.get(msg.avps, "Destination-Host")
            realm = dd.get(msg.avps, "Destination-Realm")
            origin = dd.get(msg.avps, "Origin-Host", "")
        except DiameterDecodeError as exc:
            self._answer(p, msg, exc.result_code, exc.reason)
            return
        if self.me_l in rr:
            self.stats["loops"] += 1
            self._answer(p, msg, LOOP_DETECTED, "our identity is in Route-Record")
            return
        for_us = (dest_host is not None and dest_host.lower() == self.me_l) or \
            not msg.flags & FLAG_P or not self.settings.relay or \
            (realm is not None and realm.lower() == self.me.origin_realm.lower()
             and dest_host is None and self.local_handler is not None)
        if for_us:
            ans = self.local_handler(msg, p.name) if self.local_handler else None
            if ans is None:
                self._answer(p, msg, COMMAND_UNSUPPORTED, "no local application for this "
                             "command")
            else:
                self._send_answer(p, ans)
            return
        if realm is None:
            self._answer(p, msg, 5005, "Destination-Realm missing",
                         failed=[dd.avp("Destination-Realm", "")])
            return
        if self.request_hook is not None:
            n = len(msg.avps)
            try:
                reject = self.request_hook(msg, p.name)
            except Exception as exc:  # noqa: BLE001 - per-message boundary: a script bug
                self.stats["hook_errors"] += 1
                self._answer(p, msg, 5012, f"request hook failed: {type(exc).__name__}")
                return
            if reject:
                self._answer(p, msg, int(reject), "rejected by the routing script")
                return
            if len(msg.avps) != n:
                raw = msg.encode()  # AVPs added or removed (unknown ones stay verbatim)
        if self.npending >= self.settings.max_pending:
            self.stats["too_busy"] += 1
            self._answer(p, msg, TOO_BUSY, "pending table full")
            return
        fwd = append_avps(raw, [Avp(282, p.name.encode(), 0x40)])
        exclude = rr | {p.name.lower(), origin.lower()}
        pe = Pending(msg, fwd, p.name.lower(), p.conn, exclude, realm, dest_host,
                     now + self.settings.request_timeout_s)
        self._route(pe, now)

    def _route(self, pe: Pending, now: float) -> None:
        msg = pe.msg
        target, how = self.routing.select(pe.realm, msg.application, self.peers, pe.exclude,
                                          pe.dest_host)
        if target is None:
            self.stats["no_route"] += 1
            reason = ("Destination-Host is not connected" if how == "host-down"
                      else f"no route to realm {pe.realm}")
            self._fail(pe, UNABLE_TO_DELIVER, reason, now)
            return
        hbh = target.next_hbh()
        per = self.pending.setdefault(target.name.lower(), {})
        while hbh in per:
            hbh = target.next_hbh()
        data = set_hop_by_hop(pe.raw, hbh, set_t=pe.retransmitted)
        if not target.send(data):
            self._fail(pe, UNABLE_TO_DELIVER, "peer not open", now)
            return
        pe.out_peer, pe.out_hbh = target.name.lower(), hbh
        pe.exclude.add(target.name.lower())
        if not pe.retransmitted and pe.deadline is not None:
            self._seq += 1
            heapq.heappush(self._deadlines, (pe.deadline, self._seq, pe))
        per[hbh] = pe
        self.npending += 1
        for a in target.actions():
            self._actions.append(a)

    def _drop_pending(self, pe: Pending) -> None:
        if pe.out_peer is not None:
            per = self.pending.get(pe.out_peer)
            if per is not None and per.pop(pe.out_hbh, None) is not None:
                self.npending -= 1
                if not per:
                    del self.pending[pe.out_peer]
        pe.out_peer = None

    def _on_answer(self, p: Peer, msg: Message, raw: bytes, now: float) -> None:
        per = self.pending.get(p.name.lower())
        pe = per.pop(msg.hop_by_hop, None) if per else None
        if pe is None:
            self.stats["answers_unmatched"] += 1
            self._events.append(AnswerDropped(p.name, "no pending request (late or unknown "
                                              "hop-by-hop id)", msg.code))
            return
        self.npending -= 1
        if not per:
            del self.pending[p.name.lower()]
        pe.done = True
        pe.out_peer = None
        rc = base.result_code(msg)
        self.result_stats[rc] += 1
        if pe.token is not None:
            self._events.append(LocalAnswer(pe.token, msg, rc, p.name))
            return
        origin = self.peers.get(pe.origin or "")
        if origin is None or origin.conn != pe.origin_conn or origin.conn is None:
            self.stats["answers_dropped_origin_gone"] += 1
            self._events.append(AnswerDropped(pe.origin or "?", "origin connection gone",
                                              msg.code))
            return
        origin.send(set_hop_by_hop(raw, pe.msg.hop_by_hop))
        for a in origin.actions():
            self._actions.append(a)

    def _failover(self, p: Peer, now: float) -> None:
        per = self.pending.pop(p.name.lower(), None)
        if not per:
            return
        self.npending -= len(per)
        for pe in per.values():
            pe.out_peer = None
            if pe.done:
                continue
            self.stats["failovers"] += 1
            if pe.dest_host and pe.dest_host.lower() in self.peers:
                self._fail(pe, UNABLE_TO_DELIVER, "Destination-Host went down", now)
                continue
            pe.retransmitted = True
            self._route(pe, now)

    def _fail(self, pe: Pending, code: int, reason: str, now: float) -> None:
        pe.done = True
        if pe.token is not None:
            self.result_stats[code] += 1
            self._events.append(LocalAnswer(pe.token, None, code, None, reason))
            return
        origin = self.peers.get(pe.origin or "")
        if origin is None or origin.conn != pe.origin_conn or origin.conn is None:
            self.result_stats[code] += 1
            self.stats["answers_dropped_origin_gone"] += 1
            self._events.append(AnswerDropped(pe.origin or "?", "origin connection gone",
                                              pe.msg.code))
            return
        self._answer(origin, pe.msg, code, reason)

    def _answer(self, p: Peer, req: Message, code: int, reason: str,
                failed: list[Avp] | None = None) -> None:
        ans = base.answer(req, self.me, code, error_message=reason, failed_avp=failed)
        if code >= 3000:
            ans.avps.append(dd.avp("Error-Reporting-Host", self.me.origin_host, mandatory=False))
        self.result_stats[code] += 1
        self._send_answer(p, ans)

    def _send_answer(self, p: Peer, ans: Message) -> None:
        p.send(ans.encode())
        for a in p.actions():
            self._actions.append(a)

    # ------------------------------------------------------------------ our own requests

    def send_request(self, app: int, code: int, avps: list[Avp], now: float, *,
                     dest_realm: str, dest_host: str | None = None,
                     timeout_s: float | None = None, proxiable: bool = True) -> int:
        """Send a request of ours; the outcome arrives as a `LocalAnswer(token)` event.
        `avps` are added after Origin-Host/Origin-Realm/Destination-Realm/Destination-Host
        (a Session-Id given first stays first)."""
        self._token += 1
        token = self._token
        self._e2e = (self._e2e + 1) & 0xFFFFFFFF
        head: list[Avp] = []
        rest = list(avps)
        if rest and rest[0].code == 263 and not rest[0].vendor:
            head.append(rest.pop(0))
        head += self.me.base_avps() + [dd.avp("Destination-Realm", dest_realm)]
        if dest_host:
            head.append(dd.avp("Destination-Host", dest_host))
        msg = Message(code, FLAG_R | (FLAG_P if proxiable else 0), app, 0, self._e2e,
                      head + rest)
        if self.npending >= self.settings.max_pending:
            self._events.append(LocalAnswer(token, None, TOO_BUSY, None, "pending table full"))
            return token
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        pe = Pending(msg, msg.encode(), None, None, {self.me_l}, dest_realm, dest_host,
                     now + timeout, token=token)
        self._route(pe, now)
        self._collect(now)
        return token

    # ------------------------------------------------------------------ management

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for p in self.peers.values():
            row = p.snapshot(now)
            pc = self.peer_configs.get(p.name.lower())
            row["address"] = f"{pc.address}:{pc.port}" if pc and pc.address else None
            row["pending"] = len(self.pending.get(p.name.lower(), ()))
            rows.append(row)
        return rows

    def stats_snapshot(self) -> dict[str, Any]:
        return {"counters": dict(sorted(self.stats.items())),
                "result_codes": {str(k): v for k, v in sorted(
                    self.result_stats.items(), key=lambda kv: (isinstance(kv[0], str),
                                                               str(kv[0])))},
                "pending": self.npending, "connections": len(self.conns)}


__all__ = [
    "FLAG_T",
    "HEADER_LEN",
    "AnswerDropped",
    "ConnectTo",
    "LocalAnswer",
    "Node",
    "NodeSettings",
    "PeerConfig",
    "PeerStateChanged",
    "PeerUsable",
]
