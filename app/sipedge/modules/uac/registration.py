"""Outbound registration state machine (RFC 3261 10.2), sans-IO.

One `Registration` per row. The glue asks `due(now)` when the timer from `get_timer()`
fires, sends the REGISTER it gets (through a client transaction that also answers the
digest challenge), and feeds the final reply with `on_reply()` or a local failure with
`on_failed()`. Transitions (all in `_TABLE`):

    DISABLED --enable--> WAITING --due--> REGISTERING --2xx--> REGISTERED --refresh--> REGISTERING
                                          REGISTERING --423--> REGISTERING (Min-Expires)
                                          REGISTERING --other--> FAILED --retry due--> REGISTERING
    any --disable--> DISABLED (a REGISTERED one first sends Expires: 0)

Retries never loop tightly: after a failure the delay doubles from `retry_min_s` to
`retry_max_s`; 401/407 left after our answer (wrong password) and 403/404 (a wrong
account) wait `forbidden_retry_s`; a registrar that answers
garbage counts as a failure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ...errors import LocalProtocolError


class RegState(enum.Enum):
    DISABLED = "disabled"
    WAITING = "waiting"  # enabled, first REGISTER not sent yet
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"  # waiting for the retry


class RegInput(enum.Enum):
    DUE = "due"
    OK = "2xx"
    TOO_BRIEF = "423"
    FAILED = "failure"
    ENABLE = "enable"
    DISABLE = "disable"


S, In = RegState, RegInput
# (state, input) -> next state; anything else is a LocalProtocolError (a bug of the glue)
_TABLE: dict[tuple[RegState, RegInput], RegState] = {
    (S.WAITING, In.DUE): S.REGISTERING,
    (S.REGISTERED, In.DUE): S.REGISTERING,
    (S.FAILED, In.DUE): S.REGISTERING,
    (S.REGISTERING, In.OK): S.REGISTERED,
    (S.REGISTERING, In.TOO_BRIEF): S.REGISTERING,
    (S.REGISTERING, In.FAILED): S.FAILED,
    (S.DISABLED, In.ENABLE): S.WAITING,
    **{(s, In.ENABLE): s for s in (S.WAITING, S.REGISTERING, S.REGISTERED, S.FAILED)},
    **{(s, In.DISABLE): S.DISABLED for s in RegState},
}


@dataclass(frozen=True)
class RegRow:
    """One registration as configured (config entry or list-file line)."""

    id: str
    username: str
    domain: str
    auth_username: str = ""
    password: str = ""
    ha1: str = ""
    proxy: str = ""
    expires: int = 3600
    flags: int = 0
    trunk: str = ""

    def __repr__(self) -> str:  # never the password
        return f"RegRow(id={self.id!r}, aor={self.aor!r}, proxy={self.proxy!r})"

    @property
    def aor(self) -> str:
        return f"sip:{self.username}@{self.domain}"

    @property
    def disabled(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True)
class RegTiming:
    refresh_ratio: float = 0.8
    retry_min_s: float = 5.0
    retry_max_s: float = 300.0
    forbidden_retry_s: float = 1800.0


@dataclass(frozen=True)
class SendRegister:
    """Send a REGISTER for `reg_id` with this Expires (0: remove the binding)."""

    reg_id: str
    expires: int
    cseq: int


class Registration:
    def __init__(self, row: RegRow, timing: RegTiming, now: float) -> None:
        self.row = row
        self.timing = timing
        self.state = RegState.DISABLED
        self.cseq = 0  # last CSeq used (the glue reports challenge retries through `sent`)
        self.expires = row.expires  # what we ask for (raised by 423 Min-Expires)
        self.granted = 0  # what the registrar granted last
        self.registered_until: float | None = None
        self.next_at: float | None = None
        self.failures = 0
        self.last_error = ""
        self.last_status = 0
        self.registers_sent = 0
        self._unregister = False
        if not row.disabled:
            self._go(In.ENABLE, now)
            self.next_at = now

    # -- the table ------------------------------------------------------------------

    def _go(self, inp: RegInput, now: float) -> None:
        nxt = _TABLE.get((self.state, inp))
        if nxt is None:
            raise LocalProtocolError(f"registration {self.row.id}: {inp.value} in "
                                     f"{self.state.value}")
        self.state = nxt

    # -- timer ----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self.state is RegState.REGISTERING:
            return None  # the transaction's own timeout ends it
        return self.next_at

    def due(self, now: float) -> SendRegister | None:
        """The timer fired: what to send (None: nothing due)."""
        if self._unregister and self.state is RegState.DISABLED:
            self._unregister = False
            self.next_at = None
            self.cseq += 1
            self.registers_sent += 1
            return SendRegister(self.row.id, 0, self.cseq)
        if self.next_at is None or now < self.next_at or \
                self.state in (RegState.DISABLED, RegState.REGISTERING):
            return None
        self._go(In.DUE, now)
        self.next_at = None
        self.cseq += 1
        self.registers_sent += 1
        return SendRegister(self.row.id, self.expires, self.cseq)

    def sent(self, cseq: int) -> None:
        """The glue used CSeq `cseq` (a challenge answered adds one)."""
        self.cseq = max(self.cseq, cseq)

    # -- results ----------------------------------------------------------------------

    def on_reply(self, status: int, granted: int | None, min_expires: int | None,
                 now: float) -> SendRegister | None:
        """The final reply to our REGISTER. `granted`: the lifetime the registrar gave our
        contact (None when the 2xx does not say); `min_expires`: a 423's Min-Expires."""
        if self.state is not RegState.REGISTERING:
            return None  # the answer to an un-REGISTER, or disabled meanwhile
        self.last_status = status
        if 200 <= status < 300:
            if granted is None or granted <= 0:
                granted = self.expires if granted is None else 0
            if granted <= 0:
                return self._fail("registrar granted no lifetime to our contact", now)
            self._go(In.OK, now)
            self.failures = 0
            self.last_error = ""
            self.granted = granted
            self.registered_until = now + granted
            self.next_at = now + max(1.0, granted * self.timing.refresh_ratio)
            return None
        if status == 423:
            if min_expires is None or not self.expires < min_expires <= 604800:
                return self._fail("423 without a usable Min-Expires", now)
            self._go(In.TOO_BRIEF, now)
            self.expires = min_expires
            self.cseq += 1
            self.registers_sent += 1
            return SendRegister(self.row.id, self.expires, self.cseq)
        if status in (401, 403, 404, 407):
            # refused credentials (a challenge left after ours) or account: do not hammer
            reason = "credentials refused" if status in (401, 407) else "account refused"
            return self._fail(f"{status}: {reason}", now, self.timing.forbidden_retry_s)
        return self._fail(f"{status}", now)

    def on_failed(self, reason: str, now: float) -> None:
        """No final reply (timeout, transport, DNS), or an unusable one."""
        if self.state is RegState.REGISTERING:
            self._fail(reason, now)

    def _fail(self, reason: str, now: float, delay: float | None = None) -> None:
        self._go(In.FAILED, now)
        self.failures += 1
        self.last_error = reason
        if delay is None:
            delay = min(self.timing.retry_max_s,
                        self.timing.retry_min_s * 2 ** min(self.failures - 1, 30))
        self.next_at = now + delay
        if self.registered_until is not None and self.registered_until <= now:
            self.registered_until = None
        return None

    # -- operator ---------------------------------------------------------------------

    def enable(self, now: float) -> None:
        if self.state is RegState.DISABLED:
            self._go(In.ENABLE, now)
            self.next_at = now
            self._unregister = False

    def disable(self, now: float) -> None:
        """Stop; a live binding is removed with Expires: 0 (sent by the next `due`)."""
        was = self.state
        self._go(In.DISABLE, now)
        if was is RegState.REGISTERED:
            self._unregister = True
            self.next_at = now
        else:
            self.next_at = None
        self.registered_until = None

    def refresh(self, now: float) -> None:
        """Register again now (uac.reg_refresh)."""
        if self.state in (RegState.WAITING, RegState.REGISTERED, RegState.FAILED):
            self.next_at = now

    def status(self, now: float) -> dict:
        """For uac.reg_list: never the password."""
        return {"id": self.row.id, "aor": self.row.aor, "state": self.state.value,
                "expires_in_s": (round(self.registered_until - now, 1)
                                 if self.registered_until is not None else None),
                "granted_s": self.granted, "requested_s": self.expires,
                "next_action_in_s": (round(self.next_at - now, 1)
                                     if self.next_at is not None else None),
                "failures": self.failures, "last_status": self.last_status,
                "last_error": self.last_error, "registers_sent": self.registers_sent,
                "proxy": self.row.proxy, "trunk": self.row.trunk}


def granted_expires(contacts: list[str], expires_header: str | None, our_user: str) -> int | None:
    """The lifetime a 2xx gives our contact: its Contact `expires` param, else the Expires
    header (RFC 3261 10.2.4). None when the reply does not say. Garbage values: None."""
    for c in contacts:
        if f"sip:{our_user}@" not in c and f"sips:{our_user}@" not in c:
            continue
        for param in c.split(">", 1)[-1].split(";"):
            k, _, v = param.strip().partition("=")
            if k.lower() == "expires":
                return int(v) if v.strip().isdigit() else None
    if expires_header is not None and expires_header.strip().isdigit():
        return int(expires_header.strip())
    return None


def parse_list_file(text: str, source: str) -> tuple[list[RegRow], list[str]]:
    """uacreg-like rows: `id username domain auth_username password proxy expires flags`
    (`-` for an empty column; expires and flags optional). Returns (rows, errors as
    `file:line: reason`)."""
    rows: list[RegRow] = []
    errors: list[str] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cols = [("" if c == "-" else c) for c in line.split()]
        if not 3 <= len(cols) <= 8:
            errors.append(f"{source}:{n}: want 3 to 8 columns, got {len(cols)}")
            continue
        cols += [""] * (8 - len(cols))
        rid, user, domain, auser, pw, proxy, exp, flags = cols
        if not rid or not user or not domain:
            errors.append(f"{source}:{n}: id, username and domain are required")
            continue
        if rid in seen:
            errors.append(f"{source}:{n}: id {rid!r} given twice")
            continue
        try:
            expires = int(exp) if exp else 3600
            fl = int(flags) if flags else 0
            if not 10 <= expires <= 604800 or fl not in (0, 1):
                raise ValueError
        except ValueError:
            errors.append(f"{source}:{n}: expires must be 10..604800 and flags 0 or 1")
            continue
        seen.add(rid)
        rows.append(RegRow(rid, user, domain, auser, pw, "", proxy, expires, fl))
    return rows, errors


__all__ = ["RegInput", "RegRow", "RegState", "RegTiming", "Registration", "SendRegister",
           "granted_expires", "parse_list_file"]
