"""Script-facing API: `ksr.uac.*`.

In a failure route, answer the upstream's challenge and relay again (Kamailio's uac_auth)::

    def failure(msg):
        if msg.t_check_status("401|407") and ksr.uac.auth(msg):
            msg.t_relay(TRUNK)

Originate a request (Kamailio's uac_req_send); `await` it in an async route, or let a sync
route's request be answered in the script function `uac_reply(reply)`::

    ksr.uac.send_request("MESSAGE", "sip:operator@10.0.0.9", "sip:edge@box",
                         "sip:operator@10.0.0.9", body="112 call from ...",
                         headers={"Content-Type": "text/plain"})

Requests to the Contact of an outbound registration (`ksr.uac.reg_lookup(msg)` -> its id).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .core import Answer, answer, strip_credentials
from .digest import ChallengeMemory, Secret

if TYPE_CHECKING:
    from .aio import UacResult, UacRuntime

log = logging.getLogger("sipedge.modules.uac")

VAR_MEMORY = "uac.memory"  # msg.vars: the challenges answered for this transaction
VAR_SHIFT = "uac.shift"  # msg.vars: how many times this transaction's CSeq went up
VAR_BASE = "uac.base"  # msg.vars: the dialog's CSeq shift before this transaction


@dataclass(frozen=True)
class UacReply:
    """The final reply of an originated request (`local`: ours, 408 timeout / 503 no
    route)."""

    status: int
    reason: str
    call_id: str
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    local: bool = False

    def get_hf(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class UacApi:
    def __init__(self, runtime: "UacRuntime") -> None:
        self._rt = runtime

    # -- uac_auth ----------------------------------------------------------------------

    def auth(self, msg) -> bool:
        """Failure route: add credentials answering the winning 401/407 and raise the CSeq
        (relay with `msg.t_relay()` next). False: nothing to answer (no challenge, unknown
        realm or algorithm, the same challenge again, malformed): the reply goes upstream."""
        reply = msg.winning_reply
        if reply is None or reply.status not in (401, 407):
            return False
        req = msg.raw
        tvars = msg.vars
        memory = tvars.get(VAR_MEMORY)
        if memory is None:
            memory = tvars[VAR_MEMORY] = ChallengeMemory()
        shift = tvars.get(VAR_SHIFT, 0)
        upstream = req.cseq.seq + shift
        rt = self._rt
        ans = answer(method=req.method, uri=req.uri_text, body=req.body, status=reply.status,
                     reply_headers=[(h[0], h[2]) for h in reply.raw.headers],
                     upstream_cseq=upstream, creds=rt.creds, memory=memory,
                     cnonce=secrets.token_hex(8))
        if not isinstance(ans, Answer):
            if ans.malformed:
                msg.log.info("uac_auth: malformed challenge (%s): an ordinary failure",
                             ans.reason)
            elif rt.client is not None:
                rt.client._warn_once(ans.realm, ans.reason, req.call_id)
            return False
        strip_credentials(req.headers, ans.realms)
        for name, value in ans.headers:
            req.add(name, value)
        from_tag = req.from_.tag
        # the dialog's shift before this transaction (in-dialog requests were shifted by it
        # before the routing script ran)
        base = tvars.get(VAR_BASE)
        if base is None:
            base = tvars[VAR_BASE] = (rt.cseq.delta(req.call_id, from_tag)
                                      if req.to.tag is not None else 0)
        caller = req.cseq.seq - base
        req.set("CSeq", f"{ans.cseq} {req.method}")
        tvars[VAR_SHIFT] = shift + 1
        rt.cseq.shifted(req.call_id, from_tag, caller, ans.cseq, base, time.monotonic())
        if rt.client is not None:
            rt.client.stats["challenges_answered"] += 1
        msg.log.debug("uac_auth: answered realm=%s, CSeq %d -> %d", ",".join(ans.realms),
                      upstream, ans.cseq)
        return True

    # -- uac_req_send --------------------------------------------------------------------

    def send_request(self, method: str, ruri: str, from_: str | None = None,
                     to: str | None = None, *,
                     headers: dict[str, str] | list[tuple[str, str]] | None = None,
                     body: bytes | str = b"", call_id: str | None = None,
                     outbound_proxy: str | None = None, auth: str | bool | None = None,
                     event_route: str | None = "uac_reply") -> "asyncio.Task[UacReply]":
        """Send a request through a client transaction. Returns a task: `await` it for the
        final reply (`UacReply`). Called from a sync route, the script function named
        `event_route` (if the script has one) gets the reply instead.

        `auth`: a trunk name (its credentials answer any challenge; its outbound proxy is
        used unless `outbound_proxy` is given), None (the trunk of the challenge's realm),
        False (challenges are not answered). Raises ValueError for bad arguments."""
        from .aio import new_request

        rt = self._rt
        if rt.client is None:
            raise RuntimeError("uac is not started")
        secret: Secret | None = None
        proxy = outbound_proxy or ""
        if isinstance(auth, str):
            trunk = rt.creds.by_name.get(auth)
            if trunk is None:
                raise ValueError(f"no [[uac.trunk]] named {auth!r}")
            secret = trunk.secret
            proxy = proxy or trunk.outbound_proxy
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
        if isinstance(body, str):
            body = body.encode()
        from_ = from_ or rt.default_from()
        req = new_request(method, ruri, from_, to or ruri, call_id=call_id,
                          headers=pairs, body=body)
        from ...errors import RemoteProtocolError
        from ...sip.uri import parse_uri

        try:
            dest = parse_uri(proxy) if proxy else None
        except RemoteProtocolError as exc:
            raise ValueError(f"bad outbound proxy {proxy!r}: {exc.reason}") from None
        client = rt.client
        if auth is False:
            client_creds = None
        else:
            client_creds = secret
        sync = _in_sync_route()
        task = asyncio.get_running_loop().create_task(
            self._send(client, req, dest, client_creds, auth is False))
        rt.track(task)
        if sync and event_route:
            task.add_done_callback(lambda t: rt.deliver(event_route, t))
        return task

    @staticmethod
    async def _send(client, req, dest, secret, no_auth: bool) -> UacReply:
        if no_auth:
            result = await client.send_plain(req, dest)
        else:
            result = await client.request(req, dest=dest, secret=secret)
        return to_reply(result, req)

    # -- uac_reg ------------------------------------------------------------------------

    def reg_lookup(self, msg) -> str | None:
        """The local id of the outbound registration whose Contact this request's R-URI is
        (Kamailio's uac_reg_lookup), else None."""
        user = msg.ruri_user
        if not user or not msg.is_myself():
            return None
        return self._rt.lookup(user)

    def reg_status(self, reg_id: str) -> dict | None:
        """State of one registration (as uac.reg_list shows it)."""
        reg = self._rt.regs.get(reg_id)
        return reg.status(time.monotonic()) if reg is not None else None


def to_reply(result: "UacResult", req) -> UacReply:
    r = result.response
    return UacReply(r.status, r.reason, req.call_id, req.method,
                    tuple((h[1], h[2]) for h in r.headers), r.body, result.local)


def _in_sync_route() -> bool:
    try:
        return asyncio.current_task() is None
    except RuntimeError:
        return True


__all__ = ["UacApi", "UacReply"]
