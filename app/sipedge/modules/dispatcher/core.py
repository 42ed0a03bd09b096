"""The dispatcher core, sans-IO: selection, health, probe scheduling. `now` is passed in.

    disp = Dispatcher(table, settings)
    sel = disp.select(1, "hash_to", MessageFields(to_uri="sip:bob@example.com"), now)
    sel.current                       # Destination to relay to (None: nothing active)
    disp.next_destination(sel)        # failure route: the next candidate, or None
    disp.mark_inactive(sel.current, now)
    disp.relay_failed(dest, now)      # counts towards inactive_after

Probing (the driver, e.g. `aio.Prober`, does the sending)::

    when = disp.get_timer()                         # monotonic deadline, or None
    for action in disp.handle_timer(now):           # SendProbe(dest, token) actions
        send OPTIONS to action.dest.uri, remember action.token
    disp.probe_result(dest, ok, rtt, now, token)    # on a reply; timeouts are the core's job

Timed-out probes are failed inside `handle_timer`. State changes are queued as
`DestinationStateChanged` events (`next_event()` drains them).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from ...errors import EdgeError, RemoteProtocolError
from ...sip.uri import parse_uri
from .algorithms import (
    HASH_FIELDS,
    SmoothWeights,
    algorithm_name,
    hash_key,
    order_by_hash,
    order_least_calls,
    order_round_robin,
)
from .health import ADMIN_INPUT, Health, Input, State, initial_state
from .settings import Settings, parse_code_pattern
from .table import Destination, DispatcherTable


class DispatcherError(EdgeError):
    """Misuse of the dispatcher API: unknown set, unknown destination, bad state name."""


@dataclass(frozen=True, slots=True)
class MessageFields:
    """What the hash algorithms read from a request (plain strings, no parsing needed)."""

    call_id: str = ""
    from_uri: str = ""
    to_uri: str = ""
    ruri: str = ""


@dataclass
class Selection:
    """The ordered candidates of one selection; `current` is the one in use.

    Falsy when nothing was selectable. Kept by the TU with the transaction, for
    `next_destination()` in a failure route."""

    set_id: int
    algorithm: str
    candidates: tuple[Destination, ...]
    index: int = 0

    @property
    def current(self) -> Destination | None:
        return self.candidates[self.index] if self.index < len(self.candidates) else None

    @property
    def remaining(self) -> tuple[Destination, ...]:
        return self.candidates[self.index + 1:]

    def __bool__(self) -> bool:
        return self.current is not None


@dataclass(frozen=True, slots=True)
class SendProbe:
    """Action: send a probe request (OPTIONS by default) to `dest.uri`; quote `token` back."""

    dest: Destination
    token: int


@dataclass(frozen=True, slots=True)
class DestinationStateChanged:
    """Event: a destination changed health state."""

    set_id: int
    uri: str
    old: State
    new: State
    reason: str
    at: float


@dataclass
class _Pending:
    token: int
    sent_at: float
    deadline: float


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    kind: str = field(compare=False)  # "probe" or "timeout"
    key: tuple[int, str] = field(compare=False)
    token: int = field(compare=False, default=0)


class Dispatcher:
    """Selection plus health over an immutable `DispatcherTable` (replaced on reload)."""

    def __init__(self, table: DispatcherTable, settings: Settings | None = None,
                 now: float = 0.0) -> None:
        self.settings = settings or Settings()
        self._ok_ranges = [parse_code_pattern(c) for c in self.settings.ok_codes]
        self.table = DispatcherTable()
        self.health: dict[tuple[int, str], Health] = {}
        self._rr: dict[int, int] = {}
        self._weights: dict[int, SmoothWeights] = {}
        self._pending: dict[tuple[int, str], _Pending] = {}
        self._timers: list[_Timer] = []
        self._probe_gen: dict[tuple[int, str], int] = {}  # live probe chain per destination
        self._by_key: dict[tuple[int, str], Destination] = {}
        self._seq = 0
        self._token = 0
        self._events: deque[DestinationStateChanged] = deque()
        self.reloads = 0
        self.reload(table, now)
        self.reloads = 0

    # ------------------------------------------------------------------ table, reload

    def reload(self, table: DispatcherTable, now: float) -> dict[str, int]:
        """Switch to a new table. Destinations whose (set, URI) and flags are unchanged keep
        their health, counters and probe schedule; new or changed ones start from their
        flags. Returns {"added", "removed", "kept"} counts."""
        old_dests = {d.key: d for d in self.table.destinations()}
        new_health: dict[tuple[int, str], Health] = {}
        kept = added = 0
        for i, d in enumerate(table.destinations()):
            prev = old_dests.get(d.key)
            if prev is not None and prev.flags == d.flags and d.key in self.health:
                new_health[d.key] = self.health[d.key]
                kept += 1
            else:
                new_health[d.key] = Health(state=initial_state(d.flags), since=now)
                added += 1
                self._pending.pop(d.key, None)
                # spread first probes over the interval so N boxes are not probed at once
                self._start_probe_chain(d.key, now + self._spread(i))
        removed = len(set(self.health) - set(new_health))
        for key in set(self.health) - set(new_health):
            self._pending.pop(key, None)
            self._probe_gen.pop(key, None)
        self.table = table
        self.health = new_health
        self._by_key = {d.key: d for d in table.destinations()}
        self._weights.clear()
        self.reloads += 1
        return {"added": added, "removed": removed, "kept": kept}

    def _spread(self, i: int) -> float:
        return (i * 0.137 % 1.0) * min(self.settings.probe_interval_s, 1.0)

    def destination(self, set_id: int, uri: str) -> Destination:
        """The destination of `set_id` with this URI (as written in the table, or any
        spelling that parses to the same URI)."""
        d = self._by_key.get((set_id, uri))
        if d is None:
            try:
                d = self._by_key.get((set_id, str(parse_uri(uri.strip()))))
            except RemoteProtocolError:
                d = None
        if d is None:
            raise DispatcherError(f"no destination {uri} in set {set_id}")
        return d

    def health_of(self, dest: Destination) -> Health:
        try:
            return self.health[dest.key]
        except KeyError:
            raise DispatcherError(f"{dest.uri} is not in the current table") from None

    # ------------------------------------------------------------------ selection

    def select(self, set_id: int, alg: str | int, fields: MessageFields | None = None,
               now: float = 0.0) -> Selection:
        """Order the set's selectable destinations by `alg` (see algorithms.py). An empty
        Selection (falsy) means no destination of the set is active."""
        name = algorithm_name(alg)
        dset = self.table.get(set_id)
        if dset is None:
            raise DispatcherError(f"no dispatcher set {set_id}")
        health = self.health
        active = [d for d in dset.destinations if health[d.key].state.selectable]
        if name in HASH_FIELDS:
            value = getattr(fields or MessageFields(), HASH_FIELDS[name])
            ordered = order_by_hash(active, hash_key(HASH_FIELDS[name], value))
        elif name == "round_robin":
            cursor = self._rr.get(set_id, 0)
            self._rr[set_id] = cursor + 1
            ordered = order_round_robin(active, cursor)
        elif name == "weight":
            ordered = self._weights.setdefault(set_id, SmoothWeights()).order(active)
        elif name == "priority":
            ordered = active
        else:  # least_calls
            ordered = order_least_calls(active, self.health_of)
        if ordered:
            health[ordered[0].key].selected += 1
        return Selection(set_id, name, tuple(ordered))

    def next_destination(self, selection: Selection) -> Destination | None:
        """Advance to the next candidate that is still selectable (health may have changed
        since the selection); None when the list is exhausted."""
        while True:
            selection.index += 1
            d = selection.current
            if d is None:
                return None
            h = self.health.get(d.key)
            if h is not None and h.state.selectable:
                h.selected += 1
                return d

    # ------------------------------------------------------------------ health inputs

    def mark_inactive(self, dest: Destination, now: float, reason: str = "marked") -> None:
        """Failure route: take the destination out of selection at once (probes bring it
        back after `active_after` successes)."""
        self._feed(dest.key, Input.MARKED_INACTIVE, now, reason)

    def relay_failed(self, dest: Destination, now: float) -> None:
        """A relay to `dest` timed out or got a 5xx: counts like a failed probe."""
        h = self.health.get(dest.key)
        if h is not None:
            h.relays_failed += 1
            self._feed(dest.key, Input.RELAY_FAILED, now, "relay failed")

    def set_state(self, set_id: int, uri: str, state: str | State, now: float) -> State:
        """Admin command (dispatcher.set_state). Returns the new state."""
        try:
            target = state if isinstance(state, State) else State(str(state).lower())
        except ValueError:
            raise DispatcherError(f"unknown state {state!r} (one of "
                                  f"{', '.join(s.value for s in State)})") from None
        dest = self.destination(set_id, uri)
        self._feed(dest.key, ADMIN_INPUT[target], now, "admin")
        if target is not State.DISABLED:
            self._start_probe_chain(dest.key, now)  # probe at once, then every interval
        return self.health[dest.key].state

    def mirror_state(self, set_id: int, uri: str, state: str | State, now: float) -> bool:
        """Take the state another dispatcher decided (a worker that does not probe follows
        the one that does). No probe is scheduled and no event queued. Returns whether the
        state changed; an unknown destination or state is ignored (tables may differ for a
        moment around a reload)."""
        try:
            target = state if isinstance(state, State) else State(str(state).lower())
            dest = self.destination(set_id, uri)
        except (ValueError, DispatcherError):
            return False
        h = self.health[dest.key]
        if h.state is target:
            return False
        h.apply(ADMIN_INPUT[target], now, inactive_after=self.settings.inactive_after,
                active_after=self.settings.active_after)
        return True

    def call_started(self, dest: Destination) -> None:
        """least_calls bookkeeping: the TU saw a call to `dest` start (e.g. 200 to INVITE)."""
        h = self.health.get(dest.key)
        if h is not None:
            h.active_calls += 1

    def call_ended(self, dest: Destination) -> None:
        h = self.health.get(dest.key)
        if h is not None and h.active_calls > 0:
            h.active_calls -= 1

    def is_probe_ok(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self._ok_ranges)

    def _feed(self, key: tuple[int, str], inp: Input, now: float, reason: str) -> None:
        h = self.health.get(key)
        if h is None:
            return
        old = h.state
        new = h.apply(inp, now, inactive_after=self.settings.inactive_after,
                      active_after=self.settings.active_after)
        if new is not None:
            self._events.append(DestinationStateChanged(key[0], key[1], old, new, reason, now))

    def next_event(self) -> DestinationStateChanged | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[DestinationStateChanged]:
        out = list(self._events)
        self._events.clear()
        return out

    # ------------------------------------------------------------------ probing

    def wants_probe(self, dest: Destination) -> bool:
        h = self.health.get(dest.key)
        if h is None or h.state is State.DISABLED:
            return False
        if h.state is not State.ACTIVE:
            return True  # inactive and probing-only destinations come back only by probes
        return self.settings.probe_mode == "all" or dest.probed_by_flag

    def _schedule(self, when: float, kind: str, key: tuple[int, str], token: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._timers, _Timer(when, self._seq, kind, key, token))

    def _start_probe_chain(self, key: tuple[int, str], when: float) -> None:
        gen = self._probe_gen.get(key, 0) + 1
        self._probe_gen[key] = gen
        self._schedule(when, "probe", key, gen)

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called (monotonic seconds), or None."""
        while self._timers and not self._timer_live(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0].when if self._timers else None

    def _timer_live(self, t: _Timer) -> bool:
        if t.key not in self.health:
            return False
        if t.kind == "timeout":
            p = self._pending.get(t.key)
            return p is not None and p.token == t.token
        return self._probe_gen.get(t.key) == t.token

    def handle_timer(self, now: float) -> list[SendProbe]:
        """Fail timed-out probes and return the probes now due. Each probe timer re-arms
        itself one interval later, so destinations that are not probed now (active with
        probe_mode "flagged") start being probed as soon as they become inactive."""
        out: list[SendProbe] = []
        while self._timers and self._timers[0].when <= now:
            t = heapq.heappop(self._timers)
            if not self._timer_live(t):
                continue
            if t.kind == "timeout":
                del self._pending[t.key]
                h = self.health[t.key]
                h.probes_failed += 1
                h.last_status = None
                self._feed(t.key, Input.PROBE_FAILED, now, "probe timed out")
                continue
            self._schedule(t.when + self.settings.probe_interval_s if
                           t.when + self.settings.probe_interval_s > now
                           else now + self.settings.probe_interval_s, "probe", t.key, t.token)
            dest = self._by_key.get(t.key)
            if dest is None or not self.wants_probe(dest) or t.key in self._pending:
                continue
            self._token += 1
            self._pending[t.key] = _Pending(self._token, now, now + self.settings.probe_timeout_s)
            self._schedule(now + self.settings.probe_timeout_s, "timeout", t.key, self._token)
            self.health[t.key].probes_sent += 1
            out.append(SendProbe(dest, self._token))
        return out

    def probe_result(self, dest: Destination, ok: bool, rtt: float | None, now: float,
                     token: int | None = None, status: int | None = None) -> bool:
        """A probe answer arrived (or the driver knows it failed, e.g. ICMP unreachable).
        Returns False when no probe of that token/destination is outstanding (late or
        duplicate answers are ignored)."""
        p = self._pending.get(dest.key)
        if p is None or (token is not None and p.token != token):
            return False
        del self._pending[dest.key]
        h = self.health[dest.key]
        h.last_status = status
        if ok:
            h.probes_ok += 1
            if rtt is not None:
                h.last_rtt_s = rtt
                a = self.settings.rtt_alpha
                h.avg_rtt_s = rtt if h.avg_rtt_s is None else (1 - a) * h.avg_rtt_s + a * rtt
            self._feed(dest.key, Input.PROBE_OK, now, "probe answered")
        else:
            h.probes_failed += 1
            self._feed(dest.key, Input.PROBE_FAILED, now,
                       f"probe answered {status}" if status else "probe failed")
        return True

    def pending_token(self, dest: Destination) -> int | None:
        p = self._pending.get(dest.key)
        return p.token if p is not None else None

    # ------------------------------------------------------------------ views

    def snapshot(self, now: float) -> list[dict]:
        """Every destination with its state, latency and counters (dispatcher.list)."""
        out = []
        for d in self.table.destinations():
            h = self.health[d.key]
            out.append({
                "set": d.set_id, "uri": str(d.uri), "state": h.state.value,
                "flags": d.flags, "priority": d.priority, "weight": d.weight, "duid": d.duid,
                "attrs": dict(d.attrs), "probed": self.wants_probe(d),
                "since_s": round(now - h.since, 3),
                "rtt_ms": None if h.last_rtt_s is None else round(h.last_rtt_s * 1000, 3),
                "avg_rtt_ms": None if h.avg_rtt_s is None else round(h.avg_rtt_s * 1000, 3),
                "last_status": h.last_status,
                "probes_sent": h.probes_sent, "probes_ok": h.probes_ok,
                "probes_failed": h.probes_failed, "relays_failed": h.relays_failed,
                "selected": h.selected, "active_calls": h.active_calls,
            })
        return out


def fields_of(msg) -> MessageFields:
    """MessageFields from a `sipedge.sip.Request` (Call-ID, From/To URIs, R-URI)."""
    def uri_of(name: str) -> str:
        try:
            return str(msg.address(name).uri)
        except RemoteProtocolError:  # a malformed header hashes as empty
            return ""

    return MessageFields(msg.call_id, uri_of("from"), uri_of("to"), msg.uri_text)

