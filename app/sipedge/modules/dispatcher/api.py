"""Script-facing API: `ksr.dispatcher.*`.

    def request_route(msg):
        sel = ksr.dispatcher.select(msg, 1, "hash_to")   # sets the destination URI
        if not sel:
            msg.reply(503, "No Destination Available")
            return
        msg.t_on_failure("failover")
        msg.t_relay()

    def failover(msg):
        if msg.t_check_status("408|5[0-9][0-9]"):
            if msg.reply_status == 408:
                ksr.dispatcher.mark_inactive(msg)
            if ksr.dispatcher.next_destination(msg):
                msg.t_on_failure("failover")
                msg.t_relay()

The selection travels with the transaction in the message's per-transaction variables
(`msg.vars`, carried into the failure route by io/tm_driver.py); a message object without
`vars` gets a dict of its own, which lives only as long as that object.
"""

from __future__ import annotations

from typing import Any, Callable

from .algorithms import HASH_FIELDS, algorithm_name
from .core import Dispatcher, Selection, fields_of
from .table import Destination

VAR = "dispatcher.selection"


def transaction_vars(msg: Any) -> dict:
    """Per-transaction variables of a script message (`msg.vars` when the runtime provides
    it, else a dict attached to this message object)."""
    store = getattr(msg, "vars", None)
    if isinstance(store, dict):
        return store
    store = msg.__dict__.setdefault("_dispatcher_vars", {})
    return store


class DispatcherApi:
    """Bound to one worker's Dispatcher and its monotonic clock. Every call takes the
    script's `msg`."""

    def __init__(self, dispatcher: Dispatcher, clock: Callable[[], float],
                 vars_of: Callable[[Any], dict] = transaction_vars) -> None:
        self._d = dispatcher
        self._clock = clock
        self._vars = vars_of

    def select(self, msg: Any, set_id: int, alg: str | int = "round_robin") -> Selection:
        """Choose a destination of `set_id` with `alg` and set it as the destination URI.
        Returns the Selection (falsy when no destination is active: answer 503). Raises
        DispatcherError for an unknown set and ValueError for an unknown algorithm."""
        raw = getattr(msg, "raw", None)
        # only the hash algorithms read the message (round robin, weight, ... do not)
        fields = (fields_of(raw) if raw is not None and algorithm_name(alg) in HASH_FIELDS
                  else None)
        sel = self._d.select(int(set_id), alg, fields, self._clock())
        self._vars(msg)[VAR] = sel
        if sel.current is not None:
            msg.set_dst_uri(sel.current.uri_text)
        return sel

    def next_destination(self, msg: Any) -> Destination | None:
        """Failure route: move to the next candidate and set it as the destination URI.
        None when every candidate was tried."""
        sel = self._vars(msg).get(VAR)
        if sel is None:
            return None
        dest = self._d.next_destination(sel)
        if dest is not None:
            msg.set_dst_uri(dest.uri_text)
        return dest

    def current(self, msg: Any) -> Destination | None:
        sel = self._vars(msg).get(VAR)
        return sel.current if sel is not None else None

    def mark_inactive(self, msg: Any) -> bool:
        """Failure route: take the current destination out of selection at once."""
        dest = self.current(msg)
        if dest is None:
            return False
        self._d.mark_inactive(dest, self._clock())
        return True

    def relay_failed(self, msg: Any) -> bool:
        """Failure route: count one failed relay for the current destination (it goes
        inactive after `inactive_after` in a row)."""
        dest = self.current(msg)
        if dest is None:
            return False
        self._d.relay_failed(dest, self._clock())
        return True

    def call_started(self, msg: Any) -> None:
        """For `least_calls`: the call to the current destination was answered."""
        dest = self.current(msg)
        if dest is not None:
            self._d.call_started(dest)

    def call_ended(self, msg: Any, dest_uri: str | None = None, set_id: int | None = None) -> None:
        """For `least_calls`: the call ended (BYE). In-dialog requests do not carry the
        selection, so the destination can be named by set and URI."""
        dest = self.current(msg)
        if dest is None and dest_uri is not None and set_id is not None:
            dest = self._d.destination(int(set_id), dest_uri)
        if dest is not None:
            self._d.call_ended(dest)
