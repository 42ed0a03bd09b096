"""SIP transactions (RFC 3261 17, RFC 6026), sans-IO.

Four machines: the INVITE client transaction (ICT), the non-INVITE client transaction
(NICT), the INVITE server transaction (IST) and the non-INVITE server transaction (NIST).
Every transition of every machine is in the tables below and nowhere else; a transaction
looks up ``(state, input)`` in its table and gets ``(next state, side effect)``. A missing key
is an illegal transition and raises ``LocalProtocolError`` (we misused the API). Network
inputs (responses, retransmitted requests, ACKs) have an entry in every state, so nothing a
peer sends can raise.

The interface follows aioquic: feed input with ``now`` (monotonic seconds), then drain
``data_to_send()`` (bytes for the transaction's peer) and ``next_event()`` (events for the
transaction user). ``get_timer()`` says when ``handle_timer(now)`` must be called next.
Transactions do not know addresses or sockets; the caller sends the bytes to the peer it
created the transaction for.

Deviations and choices:

- RFC 6026: a 2xx moves the IST and the ICT to ACCEPTED (timers L and M, 64*T1). 2xx
  retransmissions are passed to the TU (client) or sent (server) while ACCEPTED. Timer M is
  configurable (`TimerValues.timer_m`): the proxy (sip/stateful.py) keeps its ICT in Accepted
  for Kamailio's 5 s wait, not 32 s; see there why.
- A transaction keeps only what its next transitions need: the request goes once a final
  response is sent or received (nothing is built from it any more), the last response is
  kept only where it is repeated (IST Completed, NIST Completed).
- Over reliable transports timers A, E and G are never started and D, I, J, K are zero.
- Timer D is configurable (RFC: "at least 32 s" for unreliable transports).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import LocalProtocolError
from .headers.via import MAGIC_COOKIE
from .message import Request, Response


class _Singletons(enum.Enum):
    """Members are singletons: identity hashing in C instead of Enum.__hash__ in Python
    (every transition-table lookup and timer dict hashes them)."""

    __hash__ = object.__hash__


class Kind(_Singletons):
    ICT = "ict"
    NICT = "nict"
    IST = "ist"
    NIST = "nist"


class State(_Singletons):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Input(_Singletons):
    # from the network
    RCV_1XX = "1xx"
    RCV_2XX = "2xx"
    RCV_FINAL = "300-699"
    RCV_REQUEST = "request retransmission"
    RCV_ACK = "ACK"
    # from the transaction user
    SEND_1XX = "send 1xx"
    SEND_2XX = "send 2xx"
    SEND_FINAL = "send 300-699"
    ABANDON = "abandon"
    TRANSPORT_ERROR = "transport error"
    # timers (RFC 3261 17, RFC 6026)
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"


S, I = State, Input
_RCV_CLIENT = (I.RCV_1XX, I.RCV_2XX, I.RCV_FINAL)
_RCV_SERVER = (I.RCV_REQUEST, I.RCV_ACK)
_IGNORE = "ignore"

# (state, input) -> (next state, side effect). Side effects are method names of the
# transaction class ("_do_<name>"); "ignore" does nothing.
ICT_TRANSITIONS: dict[tuple[State, Input], tuple[State, str]] = {
    (S.CALLING, I.TIMER_A): (S.CALLING, "retransmit"),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, "time_out"),
    (S.CALLING, I.RCV_1XX): (S.PROCEEDING, "pass_response"),
    (S.CALLING, I.RCV_2XX): (S.ACCEPTED, "accept"),
    (S.CALLING, I.RCV_FINAL): (S.COMPLETED, "complete_with_ack"),
    (S.PROCEEDING, I.RCV_1XX): (S.PROCEEDING, "pass_response"),
    (S.PROCEEDING, I.RCV_2XX): (S.ACCEPTED, "accept"),
    (S.PROCEEDING, I.RCV_FINAL): (S.COMPLETED, "complete_with_ack"),
    (S.ACCEPTED, I.RCV_1XX): (S.ACCEPTED, _IGNORE),
    (S.ACCEPTED, I.RCV_2XX): (S.ACCEPTED, "pass_response"),
    (S.ACCEPTED, I.RCV_FINAL): (S.ACCEPTED, _IGNORE),
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, "terminate"),
    (S.COMPLETED, I.RCV_1XX): (S.COMPLETED, _IGNORE),
    (S.COMPLETED, I.RCV_2XX): (S.COMPLETED, _IGNORE),
    (S.COMPLETED, I.RCV_FINAL): (S.COMPLETED, "resend_ack"),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, "terminate"),
}

NICT_TRANSITIONS: dict[tuple[State, Input], tuple[State, str]] = {
    (S.TRYING, I.TIMER_E): (S.TRYING, "retransmit"),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, "time_out"),
    (S.TRYING, I.RCV_1XX): (S.PROCEEDING, "pass_response"),
    (S.TRYING, I.RCV_2XX): (S.COMPLETED, "complete"),
    (S.TRYING, I.RCV_FINAL): (S.COMPLETED, "complete"),
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, "retransmit"),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, "time_out"),
    (S.PROCEEDING, I.RCV_1XX): (S.PROCEEDING, "pass_response"),
    (S.PROCEEDING, I.RCV_2XX): (S.COMPLETED, "complete"),
    (S.PROCEEDING, I.RCV_FINAL): (S.COMPLETED, "complete"),
    (S.COMPLETED, I.RCV_1XX): (S.COMPLETED, _IGNORE),
    (S.COMPLETED, I.RCV_2XX): (S.COMPLETED, _IGNORE),
    (S.COMPLETED, I.RCV_FINAL): (S.COMPLETED, _IGNORE),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, "terminate"),
}

IST_TRANSITIONS: dict[tuple[State, Input], tuple[State, str]] = {
    (S.PROCEEDING, I.RCV_REQUEST): (S.PROCEEDING, "resend_last"),
    (S.PROCEEDING, I.RCV_ACK): (S.PROCEEDING, _IGNORE),
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, "send"),
    (S.PROCEEDING, I.SEND_2XX): (S.ACCEPTED, "send_accept"),
    (S.PROCEEDING, I.SEND_FINAL): (S.COMPLETED, "send_complete_ist"),
    (S.ACCEPTED, I.RCV_REQUEST): (S.ACCEPTED, _IGNORE),
    (S.ACCEPTED, I.RCV_ACK): (S.ACCEPTED, "pass_ack"),
    (S.ACCEPTED, I.SEND_2XX): (S.ACCEPTED, "send"),
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, "terminate"),
    (S.COMPLETED, I.RCV_REQUEST): (S.COMPLETED, "resend_last"),
    (S.COMPLETED, I.RCV_ACK): (S.CONFIRMED, "confirm"),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, "retransmit"),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, "time_out"),
    (S.CONFIRMED, I.RCV_REQUEST): (S.CONFIRMED, _IGNORE),
    (S.CONFIRMED, I.RCV_ACK): (S.CONFIRMED, _IGNORE),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, "terminate"),
}

NIST_TRANSITIONS: dict[tuple[State, Input], tuple[State, str]] = {
    (S.TRYING, I.RCV_REQUEST): (S.TRYING, _IGNORE),
    (S.TRYING, I.RCV_ACK): (S.TRYING, _IGNORE),
    (S.TRYING, I.SEND_1XX): (S.PROCEEDING, "send"),
    (S.TRYING, I.SEND_2XX): (S.COMPLETED, "send_complete_nist"),
    (S.TRYING, I.SEND_FINAL): (S.COMPLETED, "send_complete_nist"),
    (S.PROCEEDING, I.RCV_REQUEST): (S.PROCEEDING, "resend_last"),
    (S.PROCEEDING, I.RCV_ACK): (S.PROCEEDING, _IGNORE),
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, "send"),
    (S.PROCEEDING, I.SEND_2XX): (S.COMPLETED, "send_complete_nist"),
    (S.PROCEEDING, I.SEND_FINAL): (S.COMPLETED, "send_complete_nist"),
    (S.COMPLETED, I.RCV_REQUEST): (S.COMPLETED, "resend_last"),
    (S.COMPLETED, I.RCV_ACK): (S.COMPLETED, _IGNORE),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, "terminate"),
}

TRANSITIONS: dict[Kind, dict[tuple[State, Input], tuple[State, str]]] = {
    Kind.ICT: ICT_TRANSITIONS, Kind.NICT: NICT_TRANSITIONS,
    Kind.IST: IST_TRANSITIONS, Kind.NIST: NIST_TRANSITIONS,
}
INITIAL_STATE = {Kind.ICT: S.CALLING, Kind.NICT: S.TRYING, Kind.IST: S.PROCEEDING,
                 Kind.NIST: S.TRYING}

# The TU may give up on any live transaction, and the transport may fail under it.
for _kind, _table in TRANSITIONS.items():
    for _state in {s for s, _ in _table}:
        _table[(_state, I.ABANDON)] = (S.TERMINATED, "terminate")
        _table[(_state, I.TRANSPORT_ERROR)] = (S.TERMINATED, "transport_failed")
    # a terminated transaction that is still fed by the network ignores it
    for _inp in (_RCV_CLIENT if _kind in (Kind.ICT, Kind.NICT) else _RCV_SERVER):
        _table[(S.TERMINATED, _inp)] = (S.TERMINATED, _IGNORE)
    _table[(S.TERMINATED, I.ABANDON)] = (S.TERMINATED, _IGNORE)
del _kind, _table, _state, _inp

# the tables with each side effect as the method name it calls (None: ignore), for _apply
_METHODS: dict[Kind, dict[tuple[State, Input], tuple[State, str | None]]] = {
    kind: {k: (nxt, None if effect == _IGNORE else "_do_" + effect)
           for k, (nxt, effect) in table.items()}
    for kind, table in TRANSITIONS.items()}


# -- configuration and events --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TimerValues:
    """T1, T2, T4 (RFC 3261 17.1.1.1, 17.1.2.2), Timer D and Timer M (RFC 6026: how long
    an ICT stays in Accepted; None: 64*T1), in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    timer_m: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2 or self.t4 <= 0 or self.timer_d < 0 or (
                self.timer_m is not None and self.timer_m < 0):
            raise ValueError("need 0 < T1 <= T2, T4 > 0, Timer D >= 0, Timer M >= 0")


# per message: not frozen (see sip/proxy.py Source), never assigned to
@dataclass(slots=True, unsafe_hash=True)
class ResponseReceived:
    """A client transaction passes a response to the TU."""

    response: Response


# per message: not frozen (see sip/proxy.py Source), never assigned to
@dataclass(slots=True, unsafe_hash=True)
class AckReceived:
    """An ACK reached an IST in ACCEPTED (RFC 6026 7.1: passed to the TU)."""

    request: Request


# per message: not frozen (see sip/proxy.py Source), never assigned to
@dataclass(slots=True, unsafe_hash=True)
class TransactionTimedOut:
    """Timer B or F (no final response) or H (no ACK) fired."""

    timer: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The TU reported that the transport could not deliver."""


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached TERMINATED; the TU forgets it."""


Event = ResponseReceived | AckReceived | TransactionTimedOut | TransportFailed | TransactionTerminated


def response_input(status: int) -> Input:
    if status < 200:
        return I.RCV_1XX
    if status < 300:
        return I.RCV_2XX
    return I.RCV_FINAL


# -- matching (17.1.3, 17.2.3) ----------------------------------------------------------

def client_key(branch: str, method: str) -> tuple[str, str]:
    """Key of a client transaction: our branch and the CSeq method (ACK counts as INVITE)."""
    return branch, "INVITE" if method == "ACK" else method


def response_key(resp: Response) -> tuple[str, str] | None:
    """Client transaction key a response matches (17.1.3), None without a branch."""
    branch = resp.via.branch
    if not branch:
        return None
    return client_key(branch, resp.cseq.method)


def server_key(req: Request, method: str | None = None) -> tuple:
    """Key of the server transaction a request matches (17.2.3). ACK matches its INVITE;
    pass `method="INVITE"` to find the INVITE a CANCEL applies to (9.2)."""
    via = req.via
    m = method or ("INVITE" if req.method == "ACK" else req.method)
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return branch, via.host.lower(), via.port, m
    # RFC 2543 peers (17.2.3 last paragraphs), simplified: the dialog-ish identity
    return ("2543", req.call_id, req.from_.tag, req.cseq.seq, str(via), m)


# -- the machines -----------------------------------------------------------------

class Transaction:
    """Shared mechanics: table lookup, timers, output and event queues."""

    __slots__ = ("kind", "state", "key", "reliable", "timers", "_table", "_timers",
                 "_out", "_events", "owner", "_next", "armed")

    def __init__(self, kind: Kind, key: object, reliable: bool, timers: TimerValues) -> None:
        self.kind = kind
        self.state = INITIAL_STATE[kind]
        self.key = key
        self.reliable = reliable
        self.timers = timers
        self._table = _METHODS[kind]  # (state, input) -> (next state, method name)
        self._timers: dict[Input, float] = {}
        self._next: float | None = None
        self._out: list[bytes] = []
        self._events: list[Event] = []  # a deque costs 600 bytes; this holds 0-3 items
        self.owner: object = None  # the TU's context (opaque here)
        self.armed: float | None = None  # the TU's timer bookkeeping (opaque here)

    # -- API ---------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When handle_timer() must be called next, or None."""
        return self._next

    def handle_timer(self, now: float) -> None:
        while self._timers and self.state is not S.TERMINATED:
            name = min(self._timers, key=self._timers.__getitem__)
            if self._timers[name] > now:
                break
            del self._timers[name]
            self._update_next()
            self._apply(name, now, None)

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    def abandon(self, now: float) -> None:
        """The TU gives up (e.g. its own final-response timer fired before any reply)."""
        self._apply(I.ABANDON, now, None)

    def transport_error(self, now: float) -> None:
        self._apply(I.TRANSPORT_ERROR, now, None)

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    # -- machinery ---------------------------------------------------------------

    def _apply(self, inp: Input, now: float, arg: object) -> None:
        try:
            nxt, effect = self._table[(self.state, inp)]
        except KeyError:
            raise LocalProtocolError(
                f"{self.kind.name}: no transition from {self.state.value} on {inp.value}") from None
        prev = self.state
        self.state = nxt
        if effect is not None:
            getattr(self, effect)(now, arg)
        if nxt is S.TERMINATED and prev is not S.TERMINATED:
            self._timers.clear()
            self._next = None
            self._events.append(TransactionTerminated())

    def _start(self, name: Input, now: float, duration: float) -> None:
        when = now + duration
        timers = self._timers
        if name in timers:  # restarted: its old deadline may have been the earliest
            timers[name] = when
            self._update_next()
        else:
            timers[name] = when
            if self._next is None or when < self._next:
                self._next = when

    def _stop(self, *names: Input) -> None:
        for n in names:
            self._timers.pop(n, None)
        self._update_next()

    def _update_next(self) -> None:
        self._next = min(self._timers.values()) if self._timers else None

    # -- side effects shared by all kinds ------------------------------------------

    def _do_terminate(self, now: float, arg: object) -> None:
        pass  # _apply clears timers and reports TransactionTerminated

    def _do_time_out(self, now: float, arg: object) -> None:
        self._events.append(TransactionTimedOut(arg if isinstance(arg, str) else "B/F/H"))

    def _do_transport_failed(self, now: float, arg: object) -> None:
        self._events.append(TransportFailed())

    def __repr__(self) -> str:
        return f"<{self.kind.name} {self.state.value} {self.key!r}>"


class ClientTransaction(Transaction):
    """ICT or NICT. Created with the request exactly as it goes on the wire; sends it."""

    __slots__ = ("request", "data", "_interval", "ack")

    def __init__(self, request: Request, data: bytes, now: float, *, reliable: bool = False,
                 timers: TimerValues = TimerValues(), key: object = None) -> None:
        kind = Kind.ICT if request.method == "INVITE" else Kind.NICT
        if request.method == "ACK":
            raise LocalProtocolError("ACK never creates a client transaction")
        if key is None:
            key = client_key(request.via.branch or "", request.method)
        super().__init__(kind, key, reliable, timers)
        self.request = request
        self.data = data
        self.ack: bytes | None = None
        self._interval = timers.t1
        self._out.append(data)
        # A and B (ICT) or E and F (NICT), set as _start() would: the first two timers
        last = now + 64 * timers.t1
        if reliable:
            self._timers = {I.TIMER_B if kind is Kind.ICT else I.TIMER_F: last}
            self._next = last
        else:
            first = now + timers.t1
            if kind is Kind.ICT:
                self._timers = {I.TIMER_A: first, I.TIMER_B: last}
            else:
                self._timers = {I.TIMER_E: first, I.TIMER_F: last}
            self._next = min(first, last)

    def receive_response(self, resp: Response, now: float) -> None:
        self._apply(response_input(resp.status), now, resp)

    def receive_status(self, status: int, reply: object, now: float) -> None:
        """A response known by its status only; `reply` is passed to the TU as it is."""
        self._apply(response_input(status), now, reply)

    # side effects
    def _do_retransmit(self, now: float, arg: object) -> None:
        self._out.append(self.data)
        if self.kind is Kind.ICT:
            self._interval *= 2  # 17.1.1.2: A doubles, no cap
            self._start(I.TIMER_A, now, self._interval)
        else:
            # 17.1.2.2: E doubles up to T2; in Proceeding it fires every T2
            if self.state is S.PROCEEDING:
                self._interval = self.timers.t2
            else:
                self._interval = min(2 * self._interval, self.timers.t2)
            self._start(I.TIMER_E, now, self._interval)

    def _do_time_out(self, now: float, arg: object) -> None:
        self._events.append(TransactionTimedOut("B" if self.kind is Kind.ICT else "F"))

    def _do_pass_response(self, now: float, arg: object) -> None:
        # arg: the Response, or whatever stands for it (the proxy's spliced 1xx/2xx bytes)
        if self.kind is Kind.ICT:
            self._stop(I.TIMER_A, I.TIMER_B)
        elif self.state is S.PROCEEDING and I.TIMER_E in self._timers:
            self._interval = self.timers.t2
        self._events.append(ResponseReceived(arg))

    def _do_accept(self, now: float, arg: object) -> None:
        self._do_pass_response(now, arg)
        m = self.timers.timer_m
        self._start(I.TIMER_M, now, 64 * self.timers.t1 if m is None else m)
        self._release()

    def _release(self) -> None:
        """Nothing is retransmitted or built from the request any more: free it (a proxy
        keeps thousands of transactions in Accepted / Completed)."""
        self.data = b""
        self.request = None  # type: ignore[assignment]

    def _do_complete_with_ack(self, now: float, arg: object) -> None:
        assert isinstance(arg, Response)
        self._do_pass_response(now, arg)
        self.ack = build_ack(self.request, arg).to_bytes()
        self._out.append(self.ack)
        self._start(I.TIMER_D, now, 0.0 if self.reliable else self.timers.timer_d)
        self._release()

    def _do_resend_ack(self, now: float, arg: object) -> None:
        if self.ack is not None:
            self._out.append(self.ack)

    def _do_complete(self, now: float, arg: object) -> None:
        self._stop(I.TIMER_E, I.TIMER_F)
        self._release()
        self._events.append(ResponseReceived(arg))
        self._start(I.TIMER_K, now, 0.0 if self.reliable else self.timers.t4)


class ServerTransaction(Transaction):
    """IST or NIST. Created for a request that matched no transaction."""

    __slots__ = ("request", "last_response", "last_status", "_interval")

    def __init__(self, request: Request, now: float, *, reliable: bool = False,
                 timers: TimerValues = TimerValues(), key: object = None) -> None:
        if request.method == "ACK":
            raise LocalProtocolError("ACK never creates a server transaction")
        kind = Kind.IST if request.method == "INVITE" else Kind.NIST
        super().__init__(kind, key if key is not None else server_key(request), reliable, timers)
        self.request = request
        self.last_response: bytes | None = None
        self.last_status = 0
        self._interval = timers.t1

    def receive_request(self, req: Request, now: float) -> None:
        """A request that matched this transaction: a retransmission, or the ACK of a
        non-2xx final response."""
        self._apply(I.RCV_ACK if req.method == "ACK" else I.RCV_REQUEST, now, req)

    def send_response(self, status: int, data: bytes, now: float) -> None:
        """The TU sends a response (already serialised)."""
        self._apply(I.SEND_1XX if status < 200 else I.SEND_2XX if status < 300
                    else I.SEND_FINAL, now, (status, data))

    # side effects
    def _do_send(self, now: float, arg: object) -> None:
        status, data = arg  # type: ignore[misc]
        self.last_status = status
        self.last_response = data
        self._out.append(data)

    def _do_resend_last(self, now: float, arg: object) -> None:
        if self.last_response is not None:
            self._out.append(self.last_response)

    def _do_send_accept(self, now: float, arg: object) -> None:
        self._do_send(now, arg)
        self._start(I.TIMER_L, now, 64 * self.timers.t1)
        self.last_response = None  # Accepted repeats nothing: the UAS retransmits its 2xx
        self.request = None  # type: ignore[assignment]

    def _do_send_complete_ist(self, now: float, arg: object) -> None:
        self._do_send(now, arg)
        self.request = None  # type: ignore[assignment]  # Completed repeats only the bytes
        if not self.reliable:
            self._start(I.TIMER_G, now, self.timers.t1)
        self._start(I.TIMER_H, now, 64 * self.timers.t1)

    def _do_send_complete_nist(self, now: float, arg: object) -> None:
        self._do_send(now, arg)
        self.request = None  # type: ignore[assignment]  # Completed repeats only the bytes
        self._start(I.TIMER_J, now, 0.0 if self.reliable else 64 * self.timers.t1)

    def _do_retransmit(self, now: float, arg: object) -> None:  # Timer G
        self._do_resend_last(now, arg)
        self._interval = min(2 * self._interval, self.timers.t2)
        self._start(I.TIMER_G, now, self._interval)

    def _do_time_out(self, now: float, arg: object) -> None:
        self._events.append(TransactionTimedOut("H"))

    def _do_confirm(self, now: float, arg: object) -> None:
        self._stop(I.TIMER_G, I.TIMER_H)
        self._start(I.TIMER_I, now, 0.0 if self.reliable else self.timers.t4)

    def _do_pass_ack(self, now: float, arg: object) -> None:
        assert isinstance(arg, Request)
        self._events.append(AckReceived(arg))


# -- requests a transaction builds --------------------------------------------------

_ACK_COPY = ("call-id", "from", "route", "max-forwards")


def build_ack(invite: Request, resp: Response) -> Request:
    """The ACK for a non-2xx final response (17.1.1.3): same Request-URI, Call-ID, From,
    CSeq number, top Via and Route set as the INVITE; To from the response."""
    ack = Request("ACK", invite.uri_text)
    ack.headers.append(["via", "Via", invite.get("via") or ""])
    for h in invite.headers:
        if h[0] in _ACK_COPY:
            ack.headers.append([h[0], h[1], h[2]])
    ack.headers.append(["to", "To", resp.get("to") or invite.get("to") or ""])
    ack.headers.append(["cseq", "CSeq", f"{invite.cseq.seq} ACK"])
    return ack


def build_cancel(invite: Request) -> Request:
    """CANCEL for a request we sent (9.1): same Request-URI, Call-ID, To, From, CSeq number,
    top Via (so the same branch) and Route set; method CANCEL."""
    cancel = Request("CANCEL", invite.uri_text)
    cancel.headers.append(["via", "Via", invite.get("via") or ""])
    for h in invite.headers:
        if h[0] in ("call-id", "from", "to", "route", "max-forwards"):
            cancel.headers.append([h[0], h[1], h[2]])
    cancel.headers.append(["cseq", "CSeq", f"{invite.cseq.seq} CANCEL"])
    return cancel


def transition_table_markdown(kind: Kind) -> str:
    """The machine's table as Markdown (docs/transactions.md is generated from this and a test
    keeps it in step). Rows for TERMINATED, ABANDON and TRANSPORT_ERROR are left out: they
    are the same for every machine and described once in the doc."""
    rows = ["| state | input | next state | side effect |", "|---|---|---|---|"]
    for (state, inp), (nxt, effect) in TRANSITIONS[kind].items():
        if state is S.TERMINATED or inp in (I.ABANDON, I.TRANSPORT_ERROR):
            continue
        name = inp.value if not inp.name.startswith("TIMER_") else f"Timer {inp.value}"
        rows.append(f"| {state.value} | {name} | {nxt.value} | {effect} |")
    return "\n".join(rows)
