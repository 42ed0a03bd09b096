"""asyncio glue of the uac module inside one worker (the logic is in digest.py, core.py,
cseq.py and registration.py, all sans-IO).

- `UacClient`: requests we originate (send_request, REGISTER). Each goes through a
  `ClientTransaction` (retransmissions, Timer B/F), to the outbound proxy or the R-URI's host
  through RFC 3263 (the next target on timeout, 503 or a transport error), and a 401/407 is
  answered once per challenge with the configured credentials (CSeq + 1, new branch).
  Our Via branch is `z9hG4bK<worker>xtu...`: the worker hands replies to their owner like
  the stateful proxy's.
- `UacRuntime`: what io/modules.py loads: the CSeq map hooks (every request before the
  script, every reply before the transactions), the registrations (worker 0 runs them),
  the worker RPC and the script facade (`ksr.uac`, api.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from ...config.loader import config_relative
from ...errors import RemoteProtocolError
from ...resolve import literal_target
from ...sip.message import Request, Response
from ...sip.proxy import NextHop
from ...sip.transaction import (
    ClientTransaction,
    ResponseReceived,
    TimerValues,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    response_key,
)
from ...sip.uri import URI, parse_uri
from .core import Answer, Credentials, Trunk, answer, strip_credentials
from .cseq import CSeqMap
from .digest import ChallengeMemory, Secret
from .registration import (
    RegRow,
    RegTiming,
    Registration,
    SendRegister,
    granted_expires,
    parse_list_file,
)

log = logging.getLogger("sipedge.modules.uac")

START_DELAY_S = 0.5  # first REGISTERs: once the worker's listeners are open
MAX_CHALLENGES = 3  # answered per request at most (one per realm and hop)


@dataclass
class UacResult:
    """The final reply of an originated request (a local 408/503 when none came)."""

    response: Response
    cseq: int  # last CSeq used (challenges add one each)
    local: bool = False  # the reply is ours (timeout, no route)

    @property
    def status(self) -> int:
        return self.response.status


class _Pending:
    __slots__ = ("ct", "future", "handle", "armed", "peer")

    def __init__(self, ct: ClientTransaction, peer: tuple[str, str, int]) -> None:
        self.ct = ct
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.handle: asyncio.TimerHandle | None = None
        self.armed: float | None = None
        self.peer = peer


class UacClient:
    def __init__(self, *, index: int, send: Callable[[str, bytes, str, int], None],
                 sent_by: Callable[[str], str], resolver: Any, timers: TimerValues,
                 creds: Credentials, user_agent: str = "sipedge") -> None:
        self.index = index
        self._send = send
        self._sent_by = sent_by
        self.resolver = resolver
        self.timers = timers
        self.creds = creds
        self.user_agent = user_agent
        self._pending: dict[object, _Pending] = {}
        self.stats = {"sent": 0, "challenges_answered": 0, "challenges_not_answered": 0,
                      "timeouts": 0}
        self._warned: set[tuple[str, str]] = set()

    # -- replies from the worker ------------------------------------------------------------

    def take_response(self, resp: Response) -> bool:
        """A reply from the network: True when it belongs to one of our requests."""
        if not self._pending:
            return False
        key = response_key(resp)
        p = self._pending.get(key) if key is not None else None
        if p is None:
            return False
        p.ct.receive_response(resp, self._now())
        self._drain(p)
        return True

    # -- requests ---------------------------------------------------------------------

    async def request(self, req: Request, *, dest: URI | None = None,
                      secret: Secret | None = None) -> UacResult:
        """Send `req` (no Via yet; Call-ID, From tag and CSeq set) and return its final
        reply. 401/407 are answered with `secret`, else with the trunk of the challenge's
        realm."""
        memory = ChallengeMemory()
        target_uri = dest or req.uri
        for _ in range(MAX_CHALLENGES + 1):
            result = await self._send_resolved(req, target_uri)
            resp = result.response
            if result.local or resp.status not in (401, 407):
                return result
            ans = answer(method=req.method, uri=req.uri_text, body=req.body,
                         status=resp.status,
                         reply_headers=[(h[0], h[2]) for h in resp.headers],
                         upstream_cseq=req.cseq.seq, creds=self.creds, memory=memory,
                         cnonce=secrets.token_hex(8), only=secret)
            if not isinstance(ans, Answer):
                self._warn_once(ans.realm, ans.reason, req.call_id)
                return result
            strip_credentials(req.headers, ans.realms)
            for name, value in ans.headers:
                req.add(name, value)
            req.set("CSeq", f"{ans.cseq} {req.method}")
            self.stats["challenges_answered"] += 1
        return result

    async def send_plain(self, req: Request, dest: URI | None = None) -> UacResult:
        """Send without answering challenges."""
        return await self._send_resolved(req, dest or req.uri)

    def _warn_once(self, realm: str, reason: str, call_id: str) -> None:
        self.stats["challenges_not_answered"] += 1
        key = (realm, reason.split(":")[0])
        if key in self._warned:
            log.debug("call_id=%s challenge not answered realm=%s: %s", call_id, realm, reason)
            return
        if len(self._warned) < 1024:
            self._warned.add(key)
        log.warning("call_id=%s challenge not answered realm=%s: %s (logged once)", call_id,
                    realm, reason)

    async def _send_resolved(self, req: Request, uri: URI) -> UacResult:
        """Through RFC 3263: the next target after a timeout, 503 or transport error."""
        host = uri.host_bare if uri.is_sip else ""
        target = literal_target(uri, host) if host else None
        res = None
        if target is None and host and self.resolver is not None:
            transport = (uri.param("transport") or "").lower() or "udp"
            res = self.resolver.resolution(NextHop(uri, host, uri.port or 5060, transport))
            target = await self.resolver.next_target(res)
        if target is None:
            return UacResult(self._local(req, 503, "Next Hop Unresolvable"), req.cseq.seq, True)
        while True:
            result = await self._send_once(req, target.transport, target.ip, target.port)
            failed = result.local or result.response.status == 503
            if not failed or res is None:
                return result
            nxt = await self.resolver.next_target(res)
            if nxt is None:
                return result
            log.info("call_id=%s %d from %s:%d, trying the next server of %s", req.call_id,
                     result.status, target.ip, target.port, host)
            target = nxt

    async def _send_once(self, req: Request, proto: str, ip: str, port: int) -> UacResult:
        out = copy_without_via(req)
        branch = f"z9hG4bK{self.index}xtu{secrets.token_hex(8)}"
        out.add_top("Via", f"SIP/2.0/{proto.upper()} {self._sent_by(proto)};branch={branch};rport")
        if not out.has("max-forwards"):
            out.add("Max-Forwards", "70")
        if not out.has("user-agent"):
            out.add("User-Agent", self.user_agent)
        out.set("Content-Length", str(len(out.body)))
        now = self._now()
        ct = ClientTransaction(out, out.to_bytes(), now, reliable=proto != "udp",
                               timers=self.timers)
        p = _Pending(ct, (proto, ip, port))
        self._pending[ct.key] = p
        self.stats["sent"] += 1
        self._drain(p)
        try:
            resp, local = await p.future
        finally:
            self._forget(p)
        return UacResult(resp, req.cseq.seq, local)

    # -- the transaction --------------------------------------------------------------

    def _drain(self, p: _Pending) -> None:
        ct = p.ct
        proto, ip, port = p.peer
        for data in ct.data_to_send():
            try:
                self._send(proto, data, ip, port)
            except OSError as exc:
                log.info("send to %s:%s:%d failed: %s", proto, ip, port, exc)
                ct.transport_error(self._now())
        while (ev := ct.next_event()) is not None:
            if isinstance(ev, ResponseReceived):
                if ev.response.status >= 200 and not p.future.done():
                    p.future.set_result((ev.response, False))
            elif isinstance(ev, (TransactionTimedOut, TransportFailed)):
                if not p.future.done():
                    self.stats["timeouts"] += 1
                    status = (408, "Request Timeout") if isinstance(ev, TransactionTimedOut) \
                        else (503, "Service Unavailable")
                    p.future.set_result((self._local(ct.request, *status), True))
            elif isinstance(ev, TransactionTerminated):
                self._forget(p)
        when = ct.get_timer()
        if when != p.armed:
            if p.handle is not None:
                p.handle.cancel()
                p.handle = None
            p.armed = when
            if when is not None and not ct.terminated:
                p.handle = asyncio.get_running_loop().call_at(when, self._on_timer, p)

    def _on_timer(self, p: _Pending) -> None:
        due = p.armed or 0.0
        p.handle = None
        p.armed = None
        p.ct.handle_timer(max(self._now(), due))
        self._drain(p)

    def _forget(self, p: _Pending) -> None:
        if p.ct.terminated or p.future.done():
            # keep matching late 2xx retransmissions only while the transaction lives
            if p.ct.terminated:
                if self._pending.get(p.ct.key) is p:
                    del self._pending[p.ct.key]
                if p.handle is not None:
                    p.handle.cancel()
                    p.handle = None

    @staticmethod
    def _local(req: Request, status: int, reason: str) -> Response:
        resp = Response(status, reason)
        for h in req.headers:
            if h[0] in ("via", "from", "to", "call-id", "cseq"):
                resp.headers.append([h[0], h[1], h[2]])
        return resp

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def copy_without_via(req: Request) -> Request:
    out = Request(req.method, req.uri_text,
                  [[h[0], h[1], h[2]] for h in req.headers if h[0] != "via"], req.body)
    return out


def new_request(method: str, ruri: str, from_: str, to: str, *, call_id: str | None = None,
                from_tag: str | None = None, cseq: int = 1,
                headers: list[tuple[str, str]] | tuple = (), body: bytes = b"",
                contact: str | None = None) -> Request:
    """A request we originate (8.1.1), Via added when sent. Raises ValueError for a bad
    URI or header."""
    method = method.upper()
    if not method.isalpha() or method in ("ACK", "CANCEL", "INVITE"):
        # INVITE would need a dialog (2xx ACK, BYE): not what uac_req_send is for
        raise ValueError(f"cannot originate {method!r}")
    try:
        uri = parse_uri(ruri)
        parse_uri(_bare(from_))
        parse_uri(_bare(to))
    except RemoteProtocolError as exc:
        raise ValueError(f"bad URI: {exc.reason}") from None
    req = Request(method, uri)
    tag = from_tag or secrets.token_hex(6)
    req.add("From", f"{_addr(from_)};tag={tag}")
    req.add("To", _addr(to))
    req.add("Call-ID", call_id or f"{secrets.token_hex(12)}@sipedge")
    req.add("CSeq", f"{cseq} {method}")
    if contact:
        req.add("Contact", contact)
    for name, value in headers:
        if "\r" in value or "\n" in value or not name or ":" in name:
            raise ValueError(f"bad header {name!r}")
        if name.lower() in ("via", "call-id", "cseq", "from", "to", "content-length"):
            raise ValueError(f"header {name} is set by send_request")
        req.add(name, value)
    req.body = body
    return req


def _bare(text: str) -> str:
    text = text.strip()
    if "<" in text:
        return text[text.index("<") + 1:text.index(">")] if ">" in text else text
    return text


def _addr(text: str) -> str:
    text = text.strip()
    return text if "<" in text else f"<{text}>"


# -- the runtime (io/modules.py loads it) -----------------------------------------------------


def trunks_of(params) -> list[Trunk]:
    return [Trunk(t.name, t.realm, t.username, t.password or None, t.ha1 or None,
                  t.outbound_proxy) for t in params.trunk]


def reg_rows(config) -> tuple[list[RegRow], list[str]]:
    """The config's registrations plus the list file's; errors as text lines."""
    p = config.uac
    rows = [RegRow(r.id, r.username, r.domain, r.auth_username, r.password, r.ha1, r.proxy,
                   r.expires, r.flags, r.trunk) for r in p.registration]
    errors: list[str] = []
    path = list_file_path(config)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return rows, [f"{path}:0: {exc}"]
        more, errors = parse_list_file(text, path)
        ids = {r.id for r in rows}
        for r in more:
            if r.id in ids:
                errors.append(f"{path}: id {r.id!r} is also in [[uac.registration]]")
            else:
                rows.append(r)
    return rows, errors


def list_file_path(config) -> str | None:
    name = config.uac.reg_list_file
    return config_relative(config, name) if name else None


class UacRuntime:
    name = "uac"
    depends: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.client: UacClient | None = None
        self.cseq = CSeqMap()
        self.facade = None
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.worker_rpc: dict[str, Callable[[dict], Any]] = {}
        self.regs: dict[str, Registration] = {}
        self.contacts: dict[str, str] = {}  # reg id -> our Contact URI
        self._env = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self.script_function: Callable[[str], Any] = lambda name: None

    async def start(self, env) -> None:
        from .api import UacApi

        self._env = env
        # one Call-ID per registration and boot cycle (RFC 3261 10.2): a restarted box does
        # not reuse an old Call-ID with a CSeq starting again at 1
        self._boot = secrets.token_hex(4)
        if getattr(env, "script_function", None) is not None:
            self.script_function = env.script_function
        p = env.config.uac
        tm = env.config.tm
        timers = TimerValues(tm.t1_ms / 1000, max(tm.t1_ms, tm.t2_ms) / 1000, tm.t4_ms / 1000,
                             tm.timer_d_s)
        self.creds = Credentials(trunks_of(p))
        self.cseq = CSeqMap(p.cseq_map_size, p.cseq_map_idle_s)
        self.client = UacClient(index=env.index, send=env.send, sent_by=env.sent_by,
                                resolver=env.resolver, timers=timers, creds=self.creds,
                                user_agent=env.config.core.server_header)
        self.facade = UacApi(self)
        self.timers = [(60.0, self._purge)]
        self.timing = RegTiming(p.refresh_ratio, p.retry_min_s, p.retry_max_s,
                                p.forbidden_retry_s)
        rows, errors = reg_rows(env.config)
        for e in errors:
            log.error("uac registration list: %s", e)
        now = time.monotonic()
        # every worker knows the rows (reg_lookup); worker 0 alone registers
        self.regs = {r.id: Registration(r, self.timing, now) for r in rows}
        self.worker_rpc = self._rpc_methods()
        if env.index == 0 and env.send is not None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run_registrations())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for t in list(self._inflight):
            t.cancel()

    async def _purge(self) -> None:
        self.cseq.purge(time.monotonic())

    def default_from(self) -> str:
        p = self._env.config.uac
        return p.from_uri or f"sip:sipedge@{self._env.sent_by('udp')}"

    def track(self, task: asyncio.Task) -> None:
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def deliver(self, name: str, task: asyncio.Task) -> None:
        """A sync route's send_request finished: its reply to the script function `name`."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("send_request failed: %s: %s", type(exc).__name__, exc)
            return
        fn = self.script_function(name)
        if fn is None:
            return
        try:
            fn(task.result())
        except Exception as exc:  # noqa: BLE001 - a script bug must not stop the proxy
            log.error("event route %s failed: %s: %s", name, type(exc).__name__, exc)

    # -- hooks called by the worker ----------------------------------------------------

    def request_hook(self, req: Request) -> None:
        """Every request before the script (after the transactions took theirs): the
        CSeq shift of an authenticated dialog."""
        if len(self.cseq) and req.to.tag is not None:
            self.cseq.fix_request(req, time.monotonic())

    def response_hook(self, resp: Response) -> bool:
        """Every reply before the transactions: ours (True), else the CSeq shift back."""
        if self.client is not None and self.client.take_response(resp):
            return True
        if len(self.cseq):
            self.cseq.fix_response(resp, time.monotonic())
        return False

    # -- registrations (worker 0) ----------------------------------------------------

    def _our_contact(self, row: RegRow) -> str:
        env = self._env
        return f"sip:{row.id}@{env.sent_by('udp')}"

    async def _run_registrations(self) -> None:
        assert self._wake is not None
        await asyncio.sleep(START_DELAY_S)  # the worker opens its listeners after the modules
        while True:
            now = time.monotonic()
            for reg in list(self.regs.values()):
                todo = reg.due(now)
                if todo is not None:
                    self._spawn_register(reg, todo)
            timers = [t for t in (r.get_timer() for r in self.regs.values()) if t is not None]
            delay = max(0.05, min(timers) - now) if timers else 3600.0
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), min(delay, 3600.0))
            except asyncio.TimeoutError:
                pass

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _spawn_register(self, reg: Registration, todo: SendRegister) -> None:
        task = asyncio.get_running_loop().create_task(self._register(reg, todo))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _reg_secret(self, row: RegRow) -> tuple[Secret | None, str]:
        trunk = self.creds.by_name.get(row.trunk) if row.trunk else None
        user = row.auth_username or (trunk.username if trunk else row.username)
        proxy = row.proxy or (trunk.outbound_proxy if trunk else "")
        if row.password or row.ha1:
            return Secret(user, row.password or None, row.ha1 or None), proxy
        if trunk is not None:
            return Secret(user, trunk.password, trunk.ha1), proxy
        return None, proxy

    async def _register(self, reg: Registration, todo: SendRegister) -> None:
        assert self.client is not None
        row = reg.row
        contact = self._our_contact(row)
        secret, proxy = self._reg_secret(row)
        try:
            req = new_request("REGISTER", f"sip:{row.domain}", row.aor, row.aor,
                              call_id=f"reg-{row.id}-{self._boot}@sipedge",
                              from_tag=f"r{self._boot}", cseq=todo.cseq,
                              contact=f"<{contact}>;expires={todo.expires}",
                              headers=[("Expires", str(todo.expires))])
            dest = parse_uri(proxy) if proxy else None
        except (ValueError, RemoteProtocolError) as exc:
            reg.on_failed(f"bad registration: {exc}", time.monotonic())
            self._poke()
            return
        log.debug("uac registration id=%s REGISTER expires=%d cseq=%d", row.id, todo.expires,
                  todo.cseq)
        result = await self.client.request(req, dest=dest, secret=secret)
        now = time.monotonic()
        reg.sent(result.cseq)
        resp = result.response
        if result.local:
            reg.on_failed(f"{resp.status} {resp.reason} (local)", now)
        else:
            granted = None
            if 200 <= resp.status < 300:
                granted = granted_expires(resp.get_all("contact"), resp.get("expires"), row.id)
            me = resp.get("min-expires")
            min_expires = int(me) if me is not None and me.strip().isdigit() else None
            again = reg.on_reply(resp.status, granted, min_expires, now)
            if again is not None:
                self._spawn_register(reg, again)
        prev = reg.state.value
        log.info("uac registration id=%s status=%d state=%s%s", row.id, resp.status, prev,
                 f" error={reg.last_error}" if reg.last_error else "")
        self._poke()

    def lookup(self, ruri_user: str | None) -> str | None:
        """reg_lookup: the registration whose Contact user is this."""
        if ruri_user and ruri_user in self.regs:
            return ruri_user
        return None

    # -- RPC (worker side) ----------------------------------------------------------------

    def _rpc_methods(self) -> dict[str, Callable[[dict], Any]]:
        def arg(p: dict) -> str:
            if "id" in p:
                return str(p["id"])
            args = p.get("args") or []
            if not args:
                raise KeyError("id")
            return str(args[0])

        def one(p: dict) -> Registration:
            rid = arg(p)
            reg = self.regs.get(rid)
            if reg is None:
                raise ValueError(f"no registration {rid!r}")
            return reg

        def reg_list(p: dict) -> dict:
            now = time.monotonic()
            return {"worker": self._env.index, "registering": self._task is not None,
                    "registrations": [r.status(now) for r in self.regs.values()]}

        def reg_refresh(p: dict) -> dict:
            reg = one(p)
            reg.refresh(time.monotonic())
            self._poke()
            return reg.status(time.monotonic())

        def reg_enable(p: dict) -> dict:
            reg = one(p)
            reg.enable(time.monotonic())
            self._poke()
            return reg.status(time.monotonic())

        def reg_disable(p: dict) -> dict:
            reg = one(p)
            reg.disable(time.monotonic())
            self._poke()
            return reg.status(time.monotonic())

        def reg_reload(p: dict) -> dict:
            return self.reload()

        return {"uac.reg_list": reg_list, "uac.reg_refresh": reg_refresh,
                "uac.reg_enable": reg_enable, "uac.reg_disable": reg_disable,
                "uac.reg_reload": reg_reload,
                "uac.stats": lambda p: {**(self.client.stats if self.client else {}),
                                        "cseq_shifts": len(self.cseq)}}

    def reload(self) -> dict:
        """Read the rows again; only added, removed or changed rows are touched."""
        rows, errors = reg_rows(self._env.config)
        if errors:
            raise ValueError("uac.reg_reload refused: " + "; ".join(errors[:5]))
        now = time.monotonic()
        new = {r.id: r for r in rows}
        added, removed, changed = [], [], []
        for rid, reg in list(self.regs.items()):
            if rid not in new:
                if reg.state.value == "registered":
                    reg.disable(now)  # Expires: 0 first
                    self._removing(reg)
                del self.regs[rid]
                removed.append(rid)
            elif new[rid] != reg.row:
                row = new[rid]
                same_binding = (row.username, row.domain, row.proxy, row.trunk) == \
                    (reg.row.username, reg.row.domain, reg.row.proxy, reg.row.trunk)
                if reg.state.value == "registered" and not same_binding:
                    reg.disable(now)  # the old binding goes; the new one is another AOR
                    self._removing(reg)
                fresh = Registration(row, self.timing, now)
                fresh.cseq = reg.cseq + 1  # same Call-ID: keep counting up (RFC 3261 10.2.4)
                self.regs[rid] = fresh
                changed.append(rid)
        for rid, row in new.items():
            if rid not in self.regs:
                self.regs[rid] = Registration(row, self.timing, now)
                added.append(rid)
        self._poke()
        return {"added": added, "removed": removed, "changed": changed,
                "unchanged": len(self.regs) - len(added) - len(changed)}

    def _removing(self, reg: Registration) -> None:
        if self._task is None:
            return
        todo = reg.due(time.monotonic())
        if todo is not None:
            self._spawn_register(reg, todo)
