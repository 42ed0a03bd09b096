"""The Diameter peer state machine (RFC 6733 5.6) with the transport watchdog (RFC 3539 3.4).

One `Peer` per remote Diameter node. Connections are opaque ids chosen by the adapter. Input:
`start`, `connected`, `connect_failed`, `incoming_cer`, `received`, `connection_lost`, `stop`,
`handle_timer`, all with `now`. Output: `actions()` (`Connect`, `Send`, `Close`), events
(`PeerStateChanged`, `PeerUsable`, `PeerUnusable`, `MessageReceived`) and `get_timer()`.

Every transition of the RFC 6733 5.6 table that we implement is listed in `TRANSITIONS`
(state, event) -> next state; anything else raises LocalProtocolError (the caller fed an event
the machine cannot take in that state). Election (5.6.4): the side with the higher Origin-Host
keeps the connection the other side opened.

Watchdog (RFC 3539): Tw = `tw_s` plus a uniform jitter of up to +-2 s (at most Tw/4); no
traffic for Tw sends a DWR; a DWR unanswered for one more Tw makes the peer SUSPECT (its pending
requests fail over), one more Tw closes the connection (DOWN) and reconnects after Tc. A
connection re-established after a failure is REOPEN and is used for routing only after
`reopen_dwa` DWAs in a row (watchdog success).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from ..errors import LocalProtocolError
from . import base
from . import dictionary as d
from .base import Capabilities, Identity
from .codec import (
    FLAG_R,
    NO_COMMON_APPLICATION,
    SUCCESS,
    UNABLE_TO_COMPLY,
    DiameterDecodeError,
    Message,
)


class State(str, Enum):
    CLOSED = "Closed"
    WAIT_CONN_ACK = "Wait-Conn-Ack"
    WAIT_I_CEA = "Wait-I-CEA"
    WAIT_CONN_ACK_ELECT = "Wait-Conn-Ack/Elect"
    WAIT_RETURNS = "Wait-Returns"
    R_OPEN = "R-Open"
    I_OPEN = "I-Open"
    CLOSING = "Closing"


class Watchdog(str, Enum):
    INITIAL = "INITIAL"
    OKAY = "OKAY"
    SUSPECT = "SUSPECT"
    DOWN = "DOWN"
    REOPEN = "REOPEN"


S = State
# (state, event) -> next state. Events use the RFC 6733 5.6 names.
TRANSITIONS: dict[tuple[State, str], State] = {
    (S.CLOSED, "Start"): S.WAIT_CONN_ACK,
    (S.CLOSED, "R-Conn-CER"): S.R_OPEN,  # R-Accept, Process-CER, R-Snd-CEA
    (S.CLOSED, "R-Conn-CER-Reject"): S.CLOSED,  # no common application: CEA 5010, close
    (S.WAIT_CONN_ACK, "I-Rcv-Conn-Ack"): S.WAIT_I_CEA,  # I-Snd-CER
    (S.WAIT_CONN_ACK, "I-Rcv-Conn-Nack"): S.CLOSED,
    (S.WAIT_CONN_ACK, "R-Conn-CER"): S.WAIT_CONN_ACK_ELECT,
    (S.WAIT_CONN_ACK, "Timeout"): S.CLOSED,
    (S.WAIT_I_CEA, "I-Rcv-CEA"): S.I_OPEN,
    (S.WAIT_I_CEA, "I-Rcv-CEA-Fail"): S.CLOSED,
    (S.WAIT_I_CEA, "R-Conn-CER"): S.WAIT_RETURNS,  # R-Accept, Process-CER, Elect
    (S.WAIT_I_CEA, "I-Peer-Disc"): S.CLOSED,
    (S.WAIT_I_CEA, "I-Rcv-Non-CEA"): S.CLOSED,
    (S.WAIT_I_CEA, "Timeout"): S.CLOSED,
    (S.WAIT_CONN_ACK_ELECT, "I-Rcv-Conn-Ack"): S.WAIT_RETURNS,  # I-Snd-CER, Elect
    (S.WAIT_CONN_ACK_ELECT, "I-Rcv-Conn-Nack"): S.R_OPEN,  # R-Snd-CEA
    (S.WAIT_CONN_ACK_ELECT, "R-Peer-Disc"): S.WAIT_CONN_ACK,
    (S.WAIT_CONN_ACK_ELECT, "Timeout"): S.CLOSED,
    (S.WAIT_RETURNS, "Win-Election"): S.R_OPEN,  # I-Disc, R-Snd-CEA
    (S.WAIT_RETURNS, "I-Peer-Disc"): S.R_OPEN,  # I-Disc, R-Snd-CEA
    (S.WAIT_RETURNS, "I-Rcv-CEA"): S.I_OPEN,  # R-Disc
    (S.WAIT_RETURNS, "I-Rcv-CEA-Fail"): S.CLOSED,
    (S.WAIT_RETURNS, "R-Peer-Disc"): S.WAIT_I_CEA,  # R-Disc
    (S.WAIT_RETURNS, "I-Rcv-Non-CEA"): S.CLOSED,
    (S.WAIT_RETURNS, "Timeout"): S.CLOSED,
    (S.R_OPEN, "Rcv-DPR"): S.CLOSED,  # Snd-DPA, then Disc (the DPA is written first)
    (S.I_OPEN, "Rcv-DPR"): S.CLOSED,
    (S.R_OPEN, "Stop"): S.CLOSING,  # Snd-DPR
    (S.I_OPEN, "Stop"): S.CLOSING,
    (S.R_OPEN, "Peer-Disc"): S.CLOSED,
    (S.I_OPEN, "Peer-Disc"): S.CLOSED,
    (S.R_OPEN, "Watchdog-Down"): S.CLOSED,
    (S.I_OPEN, "Watchdog-Down"): S.CLOSED,
    (S.CLOSING, "Rcv-DPA"): S.CLOSED,
    (S.CLOSING, "Timeout"): S.CLOSED,
    (S.CLOSING, "Peer-Disc"): S.CLOSED,
    (S.CLOSING, "Rcv-DPR"): S.CLOSED,
    (S.WAIT_CONN_ACK, "Stop"): S.CLOSED,
    (S.WAIT_I_CEA, "Stop"): S.CLOSED,
    (S.WAIT_CONN_ACK_ELECT, "Stop"): S.CLOSED,
    (S.WAIT_RETURNS, "Stop"): S.CLOSED,
}


def transition_table_markdown() -> str:
    """The TRANSITIONS table as Markdown (docs/diameter.md embeds it; a test compares)."""
    rows = ["| State | Event | Next state |", "|---|---|---|"]
    for (state, event), new in TRANSITIONS.items():
        rows.append(f"| {state.value} | {event} | {new.value} |")
    return "\n".join(rows)


# states in which a second connection of the same peer is refused (R-Reject)
REJECT_STATES = {S.WAIT_RETURNS, S.R_OPEN, S.I_OPEN, S.CLOSING, S.WAIT_CONN_ACK_ELECT}
OPEN = (S.R_OPEN, S.I_OPEN)


# ------------------------------------------------------------------ actions and events


@dataclass(frozen=True, slots=True)
class Connect:
    peer: str


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    conn: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PeerStateChanged:
    peer: str
    old: State
    new: State


@dataclass(frozen=True, slots=True)
class PeerUsable:
    peer: str


@dataclass(frozen=True, slots=True)
class PeerUnusable:
    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    peer: str
    message: Message
    raw: bytes


@dataclass
class PeerSettings:
    """Timers and policy of one peer (seconds)."""

    connect: bool = True  # we open connections (else we only accept)
    tc_s: float = 30.0  # reconnect interval (RFC 6733 2.1 Tc)
    tw_s: float = 30.0  # watchdog interval (RFC 3539 Tw)
    cea_timeout_s: float = 10.0  # connect + CER/CEA must finish within this time
    dpr_timeout_s: float = 5.0  # our DPR waits this long for the DPA
    reopen_dwa: int = 3  # DWAs in a row before a reopened connection is used
    hold_after_dpr_s: float = 300.0  # no reconnect for this long after BUSY/DO_NOT_WANT


# ------------------------------------------------------------------ the machine


class Peer:
    """One remote node, its connections and its watchdog."""

    def __init__(self, name: str, me: Identity, settings: PeerSettings | None = None,
                 rng: random.Random | None = None, dynamic: bool = False) -> None:
        self.name = name  # the peer's Diameter identity (Origin-Host)
        self.me = me
        self.settings = settings or PeerSettings()
        self.rng = rng or random.Random(0)
        self.dynamic = dynamic  # accepted from an unknown host: forgotten when closed
        self.enabled = True
        self.state = State.CLOSED
        self.watchdog = Watchdog.INITIAL
        self.caps: Capabilities | None = None
        self.applications: set[int] = set()  # common applications (the relay id: any)
        self.i_conn: int | None = None
        self.r_conn: int | None = None
        self.conn: int | None = None  # the open connection
        self._r_cer: Message | None = None
        self._local_ip: str | None = None
        self._actions: list = []
        self._events: list = []
        self._timer: float | None = None  # state timer (connect, CEA, DPR, reconnect)
        self._tw: float | None = None  # watchdog timer
        self._dwr_pending = False
        self._num_dwa = 0
        self._hbh = self.rng.randrange(1 << 32)
        self.last_activity: float | None = None
        self.opened_at: float | None = None
        self.disconnect_cause: int | None = None
        self.failures = 0
        self._reconnect_now = False  # enabled again while our DPR was pending

    # -------------------------------------------------------------- outputs

    def actions(self) -> list:
        out, self._actions = self._actions, []
        return out

    def events(self) -> list:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        ts = [t for t in (self._timer, self._tw) if t is not None]
        return min(ts) if ts else None

    @property
    def usable(self) -> bool:
        return self.enabled and self.state in OPEN and self.watchdog == Watchdog.OKAY

    def next_hbh(self) -> int:
        self._hbh = (self._hbh + 1) & 0xFFFFFFFF
        return self._hbh

    # -------------------------------------------------------------- helpers

    def _go(self, event: str) -> None:
        try:
            new = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise LocalProtocolError(f"peer {self.name}: event {event} in state "
                                     f"{self.state.value}") from None
        old, self.state = self.state, new
        if old != new:
            self._events.append(PeerStateChanged(self.name, old, new))

    def _send(self, conn: int | None, msg: Message) -> None:
        if conn is not None:
            self._actions.append(Send(conn, msg.encode()))

    def _close(self, conn: int | None, reason: str) -> None:
        if conn is not None:
            self._actions.append(Close(conn, reason))

    def _tw_interval(self) -> float:
        jitter = min(2.0, self.settings.tw_s / 4)
        return self.settings.tw_s + self.rng.uniform(-jitter, jitter)

    def _cer(self, local_ip: str | None) -> Message:
        return base.request(base.CER, 0, self.me, base.capabilities_avps(self.me, local_ip)[2:],
                            self.next_hbh(), self.next_hbh())

    def _cea(self, cer: Message, code: int, local_ip: str | None) -> Message:
        avps = base.capabilities_avps(self.me, local_ip)[2:]
        return base.answer(cer, self.me, code, avps)

    def _opened(self, conn: int, caps: Capabilities, now: float) -> None:
        self.conn = conn
        self.caps = caps
        self.applications = base.common_applications(self.me, caps)
        self.opened_at = self.last_activity = now
        self._timer = None
        self._dwr_pending = False
        if self.watchdog in (Watchdog.DOWN, Watchdog.SUSPECT):
            # RFC 3539: a connection after a failure proves itself first
            self.watchdog = Watchdog.REOPEN
            self._num_dwa = 0
            self._send_dwr(now)
        else:
            self.watchdog = Watchdog.OKAY
            self._events.append(PeerUsable(self.name))
        self._tw = now + self._tw_interval()

    def _closed(self, now: float, reason: str, hold: float | None = None,
                failure: bool = True) -> None:
        was_usable = self.watchdog == Watchdog.OKAY
        for c in {self.conn, self.i_conn, self.r_conn} - {None}:
            self._close(c, reason)
        self.conn = self.i_conn = self.r_conn = None
        self._r_cer = None
        self._tw = None
        self._dwr_pending = False
        if not failure:
            self.watchdog = Watchdog.INITIAL  # an orderly DPR/DPA: no reopen probation
        elif self.watchdog in (Watchdog.OKAY, Watchdog.SUSPECT, Watchdog.REOPEN):
            self.watchdog = Watchdog.DOWN
        if was_usable:
            self._events.append(PeerUnusable(self.name, reason))
        if self._reconnect_now:
            hold, self._reconnect_now = 0.0, False
        if self.settings.connect and self.enabled and not self.dynamic:
            self._timer = now + (self.settings.tc_s if hold is None else hold)
        else:
            self._timer = None

    def _send_dwr(self, now: float) -> None:
        self._send(self.conn, base.request(base.DWR, 0, self.me,
                                           [d.avp("Origin-State-Id", self.me.origin_state_id)],
                                           self.next_hbh(), self.next_hbh()))
        self._dwr_pending = True

    def _accept_caps(self, cer_or_cea: Message) -> tuple[Capabilities | None, int]:
        try:
            caps = base.parse_capabilities(cer_or_cea)
        except DiameterDecodeError as exc:
            return None, exc.result_code
        if not base.common_applications(self.me, caps):
            return caps, NO_COMMON_APPLICATION
        return caps, SUCCESS

    def _elect(self) -> bool:
        """True when we win (RFC 6733 5.6.4: the higher Origin-Host wins)."""
        return self.me.origin_host.lower() > self.name.lower()

    # -------------------------------------------------------------- inputs

    def start(self, now: float) -> None:
        """Begin connecting (a configured peer we connect to)."""
        self.enabled = True
        if self.state == S.CLOSING and self.settings.connect and not self.dynamic:
            self._reconnect_now = True  # enabled before the DPA: connect once closed, not Tc
        if self.state == S.CLOSED and self.settings.connect and not self.dynamic:
            self._timer = None
            self._go("Start")
            self._timer = now + self.settings.cea_timeout_s
            self._actions.append(Connect(self.name))

    def connected(self, conn: int, now: float, local_ip: str | None = None) -> None:
        """Our outgoing connection is up (I-Rcv-Conn-Ack)."""
        if self.state not in (S.WAIT_CONN_ACK, S.WAIT_CONN_ACK_ELECT):
            self._close(conn, "not expected")  # a late connect after we gave up
            return
        self.i_conn = conn
        self._local_ip = local_ip
        self._send(conn, self._cer(local_ip))
        if self.state == S.WAIT_CONN_ACK:
            self._go("I-Rcv-Conn-Ack")
            self._timer = now + self.settings.cea_timeout_s
            return
        self._go("I-Rcv-Conn-Ack")  # -> Wait-Returns, elect now
        self._election(now)

    def connect_failed(self, now: float, reason: str = "connect failed") -> None:
        if self.state == S.WAIT_CONN_ACK:
            self._go("I-Rcv-Conn-Nack")
            self.failures += 1
            self._closed(now, reason)
        elif self.state == S.WAIT_CONN_ACK_ELECT:
            self._go("I-Rcv-Conn-Nack")
            self._send(self.r_conn, self._cea(self._r_cer, SUCCESS, self._local_ip))
            self._opened(self.r_conn, self.caps, now)
            self.r_conn = None

    def incoming_cer(self, conn: int, cer: Message, now: float,
                     local_ip: str | None = None) -> None:
        """A new incoming connection whose first message was a CER from this peer."""
        self.last_activity = now
        if not self.enabled:
            self._send(conn, self._cea(cer, UNABLE_TO_COMPLY, local_ip))
            self._close(conn, "peer disabled")
            return
        if self.state in REJECT_STATES:
            self._close(conn, "R-Reject: already connected")
            return
        caps, code = self._accept_caps(cer)
        if code != SUCCESS:
            self._send(conn, self._cea(cer, code, local_ip))
            self._close(conn, f"CER refused with {code}")
            if self.state == S.CLOSED:
                self._go("R-Conn-CER-Reject")
            return
        self.caps = caps
        self._local_ip = local_ip
        if self.state == S.CLOSED:
            self._go("R-Conn-CER")
            self._send(conn, self._cea(cer, SUCCESS, local_ip))
            self._opened(conn, caps, now)
        elif self.state == S.WAIT_CONN_ACK:
            self.r_conn, self._r_cer = conn, cer
            self._go("R-Conn-CER")
        elif self.state == S.WAIT_I_CEA:
            self.r_conn, self._r_cer = conn, cer
            self._go("R-Conn-CER")
            self._election(now)

    def _election(self, now: float) -> None:
        if self._elect():
            self._go("Win-Election")
            self._close(self.i_conn, "election won: keeping the peer's connection")
            self.i_conn = None
            self._send(self.r_conn, self._cea(self._r_cer, SUCCESS, self._local_ip))
            conn, self.r_conn = self.r_conn, None
            self._opened(conn, self.caps, now)
        # lost: wait for the CEA on our connection (Wait-Returns)

    def received(self, conn: int, msg: Message, raw: bytes, now: float) -> None:
        """A decoded message on one of this peer's connections."""
        self.last_activity = now
        st = self.state
        if st in (S.WAIT_I_CEA, S.WAIT_RETURNS) and conn == self.i_conn:
            if msg.code != base.CER or msg.is_request:
                self._go("I-Rcv-Non-CEA")
                self.failures += 1
                self._closed(now, "non-CEA before capabilities exchange")
                return
            caps, code = self._accept_caps(msg)
            rc = base.result_code(msg)
            if rc != SUCCESS or code != SUCCESS:
                self._go("I-Rcv-CEA-Fail")
                self.failures += 1
                self.caps = caps
                self._closed(now, f"CEA result {rc}" if rc != SUCCESS
                             else "no common application")
                return
            self._go("I-Rcv-CEA")
            if self.r_conn is not None:
                self._close(self.r_conn, "election lost")
                self.r_conn = None
            conn, self.i_conn = self.i_conn, None
            self._opened(conn, caps, now)
            return
        if conn != self.conn:
            if conn == self.r_conn:
                return  # the loser's connection during an election: ignore
            self._close(conn, "stray connection")
            return
        # open or closing
        self._watchdog_traffic(msg, now)
        code = msg.code
        if code == base.DWR and msg.is_request:
            self._send(conn, base.answer(msg, self.me, SUCCESS,
                                         [d.avp("Origin-State-Id", self.me.origin_state_id)]))
            return
        if code == base.DWR:
            return
        if code == base.DPR and msg.is_request:
            try:
                cause = d.get(msg.avps, "Disconnect-Cause", base.REBOOTING)
            except DiameterDecodeError:
                cause = base.REBOOTING
            self.disconnect_cause = cause
            self._send(conn, base.answer(msg, self.me, SUCCESS))
            self._go("Rcv-DPR")
            hold = None if cause == base.REBOOTING else self.settings.hold_after_dpr_s
            self._closed(now, f"DPR received (cause {cause})", hold=hold, failure=False)
            return
        if code == base.DPR:
            if st == S.CLOSING:
                self._go("Rcv-DPA")
                self._closed(now, "DPA received", failure=False)
            return
        if code == base.CER:
            if msg.is_request:
                self._send(conn, self._cea(msg, SUCCESS, self._local_ip))
            return
        self._events.append(MessageReceived(self.name, msg, raw))

    def _watchdog_traffic(self, msg: Message, now: float) -> None:
        wd = self.watchdog
        is_dwa = msg.code == base.DWR and not msg.flags & FLAG_R
        if wd == Watchdog.REOPEN:
            if is_dwa:
                self._dwr_pending = False
                self._num_dwa += 1
                if self._num_dwa >= self.settings.reopen_dwa:
                    self.watchdog = Watchdog.OKAY
                    self._events.append(PeerUsable(self.name))
            return
        if is_dwa:
            self._dwr_pending = False
        if wd == Watchdog.SUSPECT:
            self.watchdog = Watchdog.OKAY
            self._dwr_pending = False
            self._events.append(PeerUsable(self.name))
        self._tw = now + self._tw_interval()

    def connection_lost(self, conn: int, now: float, reason: str = "connection lost") -> None:
        st = self.state
        if conn == self.conn:
            self.conn = None
            self.failures += 1
            self._go("Peer-Disc")
            self._closed(now, reason)
        elif conn == self.i_conn:
            self.i_conn = None
            if st == S.WAIT_RETURNS:
                self._go("I-Peer-Disc")
                self._send(self.r_conn, self._cea(self._r_cer, SUCCESS, self._local_ip))
                c, self.r_conn = self.r_conn, None
                self._opened(c, self.caps, now)
            elif st == S.WAIT_I_CEA:
                self._go("I-Peer-Disc")
                self.failures += 1
                self._closed(now, reason)
        elif conn == self.r_conn:
            self.r_conn = None
            self._r_cer = None
            if st == S.WAIT_RETURNS or st == S.WAIT_CONN_ACK_ELECT:
                self._go("R-Peer-Disc")

    def stop(self, now: float, cause: int = base.REBOOTING, disable: bool = False) -> None:
        """Disconnect: DPR when open (the DPA is awaited for `dpr_timeout_s`), else just close.
        `disable`: no reconnection until `start()`."""
        if disable:
            self.enabled = False
            self._reconnect_now = False
        if self.state in OPEN:
            self._go("Stop")
            self._send(self.conn, base.request(base.DPR, 0, self.me,
                                               [d.avp("Disconnect-Cause", cause)],
                                               self.next_hbh(), self.next_hbh()))
            self._timer = now + self.settings.dpr_timeout_s
            self._tw = None
            if self.watchdog == Watchdog.OKAY:
                self._events.append(PeerUnusable(self.name, "disconnecting"))
                self.watchdog = Watchdog.INITIAL
        elif self.state != S.CLOSED and self.state != S.CLOSING:
            self._go("Stop")
            self._closed(now, "stopped")
            if disable:
                self._timer = None
        elif self.state == S.CLOSED and disable:
            self._timer = None

    def handle_timer(self, now: float) -> None:
        if self._timer is not None and now >= self._timer:
            self._timer = None
            st = self.state
            if st == S.CLOSED:
                self.start(now)
            elif st == S.CLOSING:
                self._go("Timeout")
                self._closed(now, "no DPA before the timeout", hold=None)
                if not self.enabled:
                    self._timer = None
            elif st in (S.WAIT_CONN_ACK, S.WAIT_I_CEA, S.WAIT_CONN_ACK_ELECT, S.WAIT_RETURNS):
                self._go("Timeout")
                self.failures += 1
                self._closed(now, "capabilities exchange timed out")
        if self._tw is not None and now >= self._tw and self.state in OPEN:
            wd = self.watchdog
            if wd == Watchdog.OKAY:
                if self._dwr_pending:
                    self.watchdog = Watchdog.SUSPECT
                    self._events.append(PeerUnusable(self.name, "watchdog: no DWA (SUSPECT)"))
                else:
                    self._send_dwr(now)
                self._tw = now + self._tw_interval()
            elif wd == Watchdog.SUSPECT:
                self._go("Watchdog-Down")
                self._closed(now, "watchdog: peer DOWN")
            elif wd == Watchdog.REOPEN:
                if self._dwr_pending:
                    self._go("Watchdog-Down")
                    self._closed(now, "watchdog: no DWA while reopening")
                else:
                    self._send_dwr(now)
                    self._tw = now + self._tw_interval()

    # -------------------------------------------------------------- sending

    def send(self, data: bytes) -> bool:
        """Queue bytes on the open connection (False when there is none)."""
        if self.conn is None or self.state not in (S.R_OPEN, S.I_OPEN, S.CLOSING):
            return False
        self._actions.append(Send(self.conn, data))
        return True

    def snapshot(self, now: float) -> dict:
        caps = self.caps
        return {"host": self.name, "state": self.state.value, "watchdog": self.watchdog.value,
                "enabled": self.enabled, "usable": self.usable,
                "realm": caps.origin_realm if caps else None,
                "product": caps.product_name if caps else None,
                "applications": sorted(self.applications),
                "last_activity_s_ago": (round(now - self.last_activity, 3)
                                        if self.last_activity is not None else None),
                "failures": self.failures, "dynamic": self.dynamic}
