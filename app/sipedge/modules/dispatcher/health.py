"""Health of one destination: every transition of the state machine lives in this file.

States
- ACTIVE    selectable; probed when probing is on for it (probe_mode "all" or flag 8).
- INACTIVE  not selectable; always probed; `active_after` successful probes in a row make it
            ACTIVE again. Reached after `inactive_after` failed probes or failed relays in a
            row, or at once by `mark_inactive()` from a failure route.
- PROBING   probing-only: not selectable, probed; `active_after` successes make it ACTIVE.
            The start state of flag 2 ("trying") and an admin state (`set_state probing`).
- DISABLED  admin-disabled: neither selected nor probed; only an admin command leaves it.

Inputs are `PROBE_OK`, `PROBE_FAILED`, `RELAY_FAILED`, `MARKED_INACTIVE` and the admin inputs
`ADMIN_<STATE>`. `TRANSITIONS[(state, input)]` gives (counter rule, next state); a pair
missing from the table is a bug (`LocalProtocolError`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ...errors import LocalProtocolError


class State(enum.Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    PROBING = "probing"
    DISABLED = "disabled"

    @property
    def selectable(self) -> bool:
        return self is State.ACTIVE


class Input(enum.Enum):
    PROBE_OK = "probe_ok"
    PROBE_FAILED = "probe_failed"
    RELAY_FAILED = "relay_failed"
    MARKED_INACTIVE = "marked_inactive"
    ADMIN_ACTIVE = "admin_active"
    ADMIN_INACTIVE = "admin_inactive"
    ADMIN_PROBING = "admin_probing"
    ADMIN_DISABLED = "admin_disabled"


ADMIN_INPUT = {State.ACTIVE: Input.ADMIN_ACTIVE, State.INACTIVE: Input.ADMIN_INACTIVE,
               State.PROBING: Input.ADMIN_PROBING, State.DISABLED: Input.ADMIN_DISABLED}

# counter rules: "fail" counts a failure (state changes when the failure streak reaches
# inactive_after), "ok" counts a success (changes when the success streak reaches
# active_after), "now" changes at once and resets both streaks, "ignore" changes nothing
# (a late probe answer for a disabled destination).
_S, _I = State, Input
TRANSITIONS: dict[tuple[State, Input], tuple[str, State]] = {
    (_S.ACTIVE, _I.PROBE_OK): ("ok", _S.ACTIVE),
    (_S.ACTIVE, _I.PROBE_FAILED): ("fail", _S.INACTIVE),
    (_S.ACTIVE, _I.RELAY_FAILED): ("fail", _S.INACTIVE),
    (_S.ACTIVE, _I.MARKED_INACTIVE): ("now", _S.INACTIVE),
    (_S.INACTIVE, _I.PROBE_OK): ("ok", _S.ACTIVE),
    (_S.INACTIVE, _I.PROBE_FAILED): ("fail", _S.INACTIVE),
    (_S.INACTIVE, _I.RELAY_FAILED): ("fail", _S.INACTIVE),
    (_S.INACTIVE, _I.MARKED_INACTIVE): ("now", _S.INACTIVE),
    (_S.PROBING, _I.PROBE_OK): ("ok", _S.ACTIVE),
    (_S.PROBING, _I.PROBE_FAILED): ("fail", _S.PROBING),
    (_S.PROBING, _I.RELAY_FAILED): ("fail", _S.PROBING),
    (_S.PROBING, _I.MARKED_INACTIVE): ("now", _S.INACTIVE),
    (_S.DISABLED, _I.PROBE_OK): ("ignore", _S.DISABLED),
    (_S.DISABLED, _I.PROBE_FAILED): ("ignore", _S.DISABLED),
    (_S.DISABLED, _I.RELAY_FAILED): ("ignore", _S.DISABLED),
    (_S.DISABLED, _I.MARKED_INACTIVE): ("ignore", _S.DISABLED),
}
for _state in State:
    for _target, _inp in ADMIN_INPUT.items():
        TRANSITIONS[(_state, _inp)] = ("now", _target)


@dataclass
class Health:
    """Mutable runtime record of one destination (owned by the Dispatcher)."""

    state: State = State.ACTIVE
    fail_streak: int = 0
    ok_streak: int = 0
    since: float = 0.0  # when the current state was entered (monotonic)
    # counters and latency (dispatcher.list)
    probes_sent: int = 0
    probes_ok: int = 0
    probes_failed: int = 0
    relays_failed: int = 0
    selected: int = 0
    active_calls: int = 0
    last_rtt_s: float | None = None
    avg_rtt_s: float | None = None  # exponentially weighted moving average
    last_status: int | None = None

    def apply(self, inp: Input, now: float, *, inactive_after: int,
              active_after: int) -> State | None:
        """Feed one input. Returns the new state when it changed, else None."""
        try:
            rule, target = TRANSITIONS[(self.state, inp)]
        except KeyError:
            raise LocalProtocolError(f"no transition for {self.state.value} + {inp.value}") from None
        if rule == "ignore":
            return None
        if rule == "ok":
            self.fail_streak = 0
            self.ok_streak += 1
            change = self.ok_streak >= active_after
        elif rule == "fail":
            self.ok_streak = 0
            self.fail_streak += 1
            change = self.fail_streak >= inactive_after
        else:  # now
            self.ok_streak = self.fail_streak = 0
            change = True
        if not change or target is self.state:
            return None
        self.state = target
        self.since = now
        self.ok_streak = self.fail_streak = 0
        return target


def initial_state(flags: int) -> State:
    """Start state from the list-file flags (4 disabled > 1 inactive > 2 trying > active)."""
    if flags & 4:
        return State.DISABLED
    if flags & 1:
        return State.INACTIVE
    if flags & 2:
        return State.PROBING
    return State.ACTIVE
