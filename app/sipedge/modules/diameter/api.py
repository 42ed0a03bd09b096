"""Script-facing API: `ksr.diameter`.

    answer = await ksr.diameter.request("cx", "UAR", [("User-Name", "alice@ims.test"),
                                        ("Public-Identity", "sip:alice@ims.test")],
                                        dest_realm="hss.ims.test", timeout=3)
    if answer.result_code == 2001: ...
    def diameter_relay_route(req):   # in the routing script: called for every request the
        req.add_avp("Session-Priority", 0)  # relay agent forwards (req: RelayedRequest)

AVPs are given as (name, value) pairs (names from the dictionary; grouped AVPs take a list of
pairs) or `Avp` objects. A Session-Id is generated when none is given.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...diameter import base
from ...diameter import dictionary as dd
from ...diameter.codec import Avp, Message
from ...errors import EdgeError
from .core import DiameterError


class DiameterUnavailable(EdgeError):
    """The diameter node does not run in this process (it runs in worker 0)."""


@dataclass
class Answer:
    """A Diameter answer as the script sees it."""

    message: Message

    @property
    def result_code(self) -> int | None:
        return base.result_code(self.message)

    @property
    def is_error(self) -> bool:
        return self.message.is_error

    def get(self, name: str, default: Any = None) -> Any:
        return dd.get(self.message.avps, name, default)

    def get_all(self, name: str) -> list[Any]:
        return dd.get_all(self.message.avps, name)

    def to_json(self) -> list[dict]:
        return [dd.to_json(a) for a in self.message.avps]


class RelayedRequest:
    """A request passing through the relay agent, as the hook sees it."""

    def __init__(self, msg: Message, from_peer: str) -> None:
        self.message = msg
        self.from_peer = from_peer
        self.reject_with: int | None = None

    @property
    def command(self) -> str:
        return dd.command_name(self.message.code, True)

    @property
    def application(self) -> int:
        return self.message.application

    def get(self, name: str, default: Any = None) -> Any:
        return dd.get(self.message.avps, name, default)

    def add_avp(self, name: str | int, value: Any, vendor: int = 0) -> None:
        """Append an AVP: a dictionary name, or a code with raw bytes (and a vendor id)."""
        if isinstance(name, int):
            self.message.avps.append(Avp(name, bytes(value), 0x40, vendor))
        else:
            self.message.avps.append(dd.avp(name, value))

    def reject(self, result_code: int) -> None:
        """Answer the request ourselves with this result code instead of relaying it."""
        self.reject_with = int(result_code)


def make_avps(items) -> list[Avp]:
    out = []
    for it in items or []:
        if isinstance(it, Avp):
            out.append(it)
        else:
            name, value = it
            out.append(dd.avp(name, value))
    return out


_sid = itertools.count(1)


class DiameterApi:
    DiameterError = DiameterError  # `except ksr.diameter.DiameterError` in scripts

    def __init__(self, service=None, origin_host: str = "") -> None:
        self._service = service
        self._origin = origin_host
        self._hook: Callable[[RelayedRequest], Any] | None = None
        self._boot = int(time.time())

    async def request(self, app: str | int, cmd: str | int, avps=(), *, dest_realm: str,
                      dest_host: str | None = None, timeout: float = 5.0) -> Answer:
        """Send a request and wait for the answer. Raises DiameterError (result_code 3002
        when there is no route or no answer within `timeout`)."""
        if self._service is None:
            raise DiameterUnavailable("the diameter node is not running in this process")
        items = make_avps(avps)
        if not any(a.code == 263 and not a.vendor for a in items):
            items.insert(0, dd.avp("Session-Id", f"{self._origin};{self._boot};{next(_sid)}"))
        else:
            items.sort(key=lambda a: 0 if a.code == 263 and not a.vendor else 1)
        msg = await self._service.request(dd.application_id(app), dd.command_code(cmd), items,
                                          dest_realm=dest_realm, dest_host=dest_host,
                                          timeout=timeout)
        return Answer(msg)

    def relay_hook(self, fn: Callable[[RelayedRequest], Any] | None) -> None:
        """Call `fn(req)` for every request the relay agent forwards (None: no hook)."""
        self._hook = fn
        if self._service is not None and hasattr(self._service, "node"):
            self._service.node.request_hook = self._run_hook if fn is not None else None

    def script_hook(self, lookup: Callable[[], Callable[[RelayedRequest], Any] | None]) -> None:
        """Use whatever `lookup()` returns at each relayed request (the routing script's
        `diameter_relay_route`); `relay_hook(fn)` set explicitly wins."""
        self._lookup = lookup
        if self._service is not None and hasattr(self._service, "node"):
            self._service.node.request_hook = self._run_hook

    _lookup: Callable[[], Any] | None = None

    def _run_hook(self, msg: Message, from_peer: str) -> int | None:
        fn = self._hook or (self._lookup() if self._lookup is not None else None)
        if fn is None:
            return None
        req = RelayedRequest(msg, from_peer)
        fn(req)
        return req.reject_with
