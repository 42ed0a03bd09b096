"""Runtime glue of ims_pcscf inside a worker (L3): the XFRM client, the capability probe and
start-up cleanup, the expiry timer, the protected listeners, and `ksr.ims_pcscf`.

Kernel requests (8 acknowledged netlink round trips for a set) never run on the event loop:
they go, in order, to one thread of their own (a single-thread executor, so an install, its
lifetime update and its removal reach the kernel in the order the core asked for them).
Whatever depends on a set being in the kernel waits for it:
- the 401 that carries the Security-Server is held (`hold_response`, before the transaction
  layer) until its set is installed, then goes on (`resume_response`); an install error
  turns it into the configured error instead. A second 401 to the same REGISTER (the
  S-CSCF answering a retransmission) while one is held is dropped;
- the removal after a de-REGISTER's 200 is queued on the next loop turn, after the 200 went
  out through the SAs;
- ports and SPIs of a removed set are released only when the thread reports the kernel
  objects gone.
The start-up probe and cleanup run before the listeners open, so they may block.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ...modules import ReplySpec
from .core import PCSCF, Outcome, Settings, UeSet, XfrmAction
from .crypto import accelerated, parse_proc_crypto
from .selftest import read_proc_crypto
from .secagree import has_option_tag

log = logging.getLogger("sipedge.ims_pcscf")


def protected_listeners(config) -> list:
    """UDP and TCP listeners on every protected port (the worker opens them like [[listen]]
    entries)."""
    from ...config.sections import ListenParams

    p = config.ims_pcscf
    if not p.address:
        return []
    out = []
    for port in range(p.port_base, p.port_base + 2 * p.slots):
        for proto in ("udp", "tcp"):
            out.append(ListenParams(proto=proto, address=p.address, port=port))
    return out


def _port_of(listener: str) -> int:
    try:
        return int(listener.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


class ImsPcscfApi:
    """`ksr.ims_pcscf` in the routing script.

        def request_route(msg):
            reply = ksr.ims_pcscf.on_request(msg)     # every request from the UE side
            if reply: return msg.t_reply(*reply)
            msg.t_on_reply("from_core"); return msg.t_relay("sip:icscf...")

        def from_core(reply):
            ksr.ims_pcscf.on_reply(reply)             # optional: done before the tm layer
    """

    def __init__(self, rt: ImsPcscfRuntime) -> None:
        self._rt = rt

    @property
    def enabled(self) -> bool:
        """False when the capability probe disabled sec-agree."""
        return self._rt.enabled

    def on_request(self, msg) -> ReplySpec | None:
        """A request from a UE: sec-agree checks and header clean-up. Returns the reply to
        send instead of relaying (494, 403, 503), or None to go on."""
        return self._rt.on_request(msg)

    def on_reply(self, msg) -> None:
        """A reply from the core side to a UE's REGISTER. The module handles these itself
        before the transaction layer (401 held until its SAs are in the kernel); this call
        is kept for scripts that make it and does nothing for a reply already handled."""
        self._rt.on_reply(msg)

    def is_protected(self, msg) -> bool:
        """The request arrived on one of our protected ports through an SA set."""
        return self._rt.pc is not None and self._rt.pc.is_protected_port(_port_of(msg.listener))

    def route_to_ue(self, msg, ue_ip: str | None = None) -> bool:
        """For a request towards a registered UE (after registrar lookup): send it to the
        UE's protected server port from our protected client port of its active set
        (same transport as the R-URI asks for). False when the UE has no active set."""
        pc = self._rt.pc
        if pc is None:
            return False
        ip = ue_ip or msg.ruri_host.strip("[]")
        st = pc.active_set(ip)
        if st is None:
            return False
        proto = "tcp" if "transport=tcp" in msg.ruri.lower() else "udp"
        host = f"[{ip}]" if ":" in ip else ip
        us = pc.s.pcscf_ip
        ushost = f"[{us}]" if ":" in us else us
        msg.set_dst_uri(f"sip:{host}:{st.offer.port_s}" + (";transport=tcp" if proto == "tcp"
                                                           else ""))
        msg.force_send_socket(f"{proto}:{ushost}:{st.lease.port_pc}")
        return True


class ImsPcscfRuntime:
    name = "ims_pcscf"
    depends: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.pc: PCSCF | None = None
        self.xfrm = None
        self.enabled = False
        self.refuse = False
        self.probe_result: dict = {}
        self.facade = ImsPcscfApi(self)
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.worker_rpc: dict[str, Callable[[dict], Any]] = {}
        self.offload_requested = ""
        # one thread for every kernel request: ordered, never on the event loop
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: set[asyncio.Future] = set()
        self._held: dict[tuple[str, int], Any] = {}  # (Call-ID, CSeq) -> held 401
        self._handled: Any = None  # the reply hold_response already dealt with
        self._resume: Callable[[Any, Any], None] | None = None
        self.selftest_running = False  # ipsec.selftest: one at a time

    # -- lifecycle
    async def start(self, env) -> None:
        from ...io.xfrm import XfrmClient, XfrmError, probe
        from . import rpc

        p = env.config.ims_pcscf
        if not p.address:
            raise RuntimeError("ims_pcscf: [ims_pcscf] address is required")
        pref = p.preference()  # `accelerated` is filled in after the probe (below)
        offload_ifindex = 0
        if p.offload_dev:
            try:
                offload_ifindex = socket.if_nametoindex(p.offload_dev)
                self.offload_requested = p.offload_dev
            except OSError:
                log.error("ims_pcscf offload_dev %s: no such interface (offload off)",
                          p.offload_dev)
        settings = Settings(pcscf_ip=p.address, preference=pref, spi_min=p.spi_min,
                            spi_max=p.spi_max, port_base=p.port_base, slots=p.slots,
                            reqid_base=p.reqid_base, pending_lifetime_s=p.pending_lifetime_s,
                            lifetime_margin_s=p.lifetime_margin_s,
                            require_sec_agree=p.require_sec_agree,
                            missing_keys_status=p.missing_keys_status,
                            offload_ifindex=offload_ifindex)
        self.pc = PCSCF(settings)
        self._resume = env.resume_response
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                           thread_name_prefix="xfrm")
        try:
            self.xfrm = XfrmClient(mark_mask=p.xfrm_mark_mask)
            ports = self.pc.protected_ports()
            removed = self.xfrm.cleanup(settings.reqid_range, ports)
            if any(removed):
                log.warning("ims_pcscf start-up cleanup removed %d policies and %d SAs left "
                            "by an earlier run", *removed)
            suites = [(a, e) for e in pref.ealgs + (("null",) if pref.allow_null else ())
                      for a in pref.algs]
            self.probe_result = probe(self.xfrm, p.address, suites, settings.reqid_base)
            self.pc.kernel_spis = {sa.spi for sa in self.xfrm.sas()
                                   if not self.xfrm.owns(sa, settings.reqid_range)}
        except (OSError, XfrmError) as exc:
            self.probe_result = {("*", "*"): f"XFRM unavailable: {exc}"}
        # the probe instantiated the algorithms: /proc/crypto now names their drivers
        from dataclasses import replace

        impls = parse_proc_crypto(read_proc_crypto())
        pref = replace(pref, accelerated=accelerated(impls, list(p.algs) + list(p.ealgs)))
        self.pc.s = replace(self.pc.s, preference=pref)
        settings = self.pc.s
        ok = [s for s, r in self.probe_result.items() if r == "ok"]
        if not ok:
            why = "; ".join(f"{a}/{e}: {r}" for (a, e), r in self.probe_result.items())
            if p.on_no_esp == "refuse":
                self.refuse = True
                log.error("ims_pcscf: no usable ESP suite (%s): REGISTERs get 503", why)
            else:
                log.error("ims_pcscf: no usable ESP suite (%s): sec-agree disabled", why)
        else:
            bad = {s: r for s, r in self.probe_result.items() if r != "ok"}
            if bad:
                # keep only algorithms that work in at least one probed suite
                algs = tuple(a for a in pref.algs if any(s[0] == a for s in ok))
                ealgs = tuple(e for e in pref.ealgs if any(s[1] == e for s in ok))
                self.pc.s = replace(settings, preference=replace(pref, algs=algs,
                                                                 ealgs=ealgs))
                log.warning("ims_pcscf: suites the kernel refused: %s",
                            ", ".join(f"{a}/{e} ({r})" for (a, e), r in bad.items()))
            self.enabled = True
            try:
                for port in self.pc.protected_ports():  # plaintext to them: kernel drops it
                    self.xfrm.add_block(p.address, port)
            except (OSError, XfrmError) as exc:
                log.error("ims_pcscf block policies for the protected ports: %s", exc)
        self.timers = [(p.expire_interval_s, self._expire)]
        self.worker_rpc = rpc.methods(self)
        log.info("ims_pcscf address=%s protected ports %d-%d sec-agree=%s", p.address,
                 p.port_base, p.port_base + 2 * p.slots - 1,
                 "on" if self.enabled else ("refuse" if self.refuse else "off"))

    async def stop(self) -> None:
        if self.xfrm is not None and self.pc is not None:
            for st in list(self.pc.sets):
                self._submit(self.pc._remove(st))
            if self._pending:
                await asyncio.wait(list(self._pending), timeout=10)
            try:
                await self._in_thread(self.xfrm.cleanup, self.pc.s.reqid_range,
                                      self.pc.protected_ports())
            except Exception as exc:  # noqa: BLE001 - XfrmError or OSError; stopping anyway
                log.error("ims_pcscf cleanup at stop: %s", exc)
            self.xfrm.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def _expire(self) -> None:
        if self.pc is None:
            return
        for act in self.pc.expire(time.monotonic()):
            self._submit(act)

    # -- kernel actions: in the XFRM thread, in order; results back on the loop
    def _in_thread(self, fn, *args) -> asyncio.Future:
        assert self._pool is not None
        fut = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut

    def kernel_sas(self) -> asyncio.Future:
        """The kernel's SAs (ipsec.list), dumped in the XFRM thread after whatever the
        core queued before."""
        assert self.xfrm is not None
        return self._in_thread(self.xfrm.sas)

    def _kernel(self, act: XfrmAction) -> list[str]:
        """Runs in the XFRM thread: the netlink requests of one action."""
        assert self.xfrm is not None
        if act.kind == "install":
            self.xfrm.apply(act.ue_set.sa_set)
            return []
        if act.kind == "update":
            self.xfrm.update_lifetime(act.ue_set.sa_set, act.hard_seconds)
            return []
        return self.xfrm.remove(act.ue_set.sa_set)

    def _submit(self, act: XfrmAction) -> asyncio.Future | None:
        """Queue an action for the kernel; its outcome is applied to the core on the loop.
        An install's outcome is applied by whoever holds its 401 (`_install_done`)."""
        if self.xfrm is None or self._pool is None:
            return None
        fut = self._in_thread(self._kernel, act)
        if act.kind != "install":
            fut.add_done_callback(partial(self._action_done, act))
        return fut

    def _action_done(self, act: XfrmAction, fut: asyncio.Future) -> None:
        assert self.pc is not None
        exc = fut.exception() if not fut.cancelled() else RuntimeError("cancelled")
        if exc is not None:
            log.error("ims_pcscf %s for %s failed: %s", act.kind, act.ue_set.ue_ip, exc)
            return  # a removal that failed keeps its lease: those SPIs/ports are not reused
        problems = fut.result()
        if problems:
            log.error("ims_pcscf remove %s: %s", act.ue_set.ue_ip, "; ".join(problems))
        elif act.kind == "remove":
            self.pc.removed(act.ue_set)

    def _install_done(self, act: XfrmAction, resp, fut: asyncio.Future) -> None:
        """On the loop: the set is in the kernel (or refused and rolled back)."""
        assert self.pc is not None
        exc = fut.exception() if not fut.cancelled() else RuntimeError("cancelled")
        if exc is None:
            self.pc.installed(act.ue_set)
            return
        log.error("ims_pcscf install for %s failed: %s", act.ue_set.ue_ip, exc)
        self.pc.install_failed(act.ue_set, resp, str(exc))
        if getattr(exc, "errno", None) == errno.EEXIST:
            self._refresh_kernel_spis()  # someone else took an SPI since start

    def _refresh_kernel_spis(self) -> None:
        assert self.pc is not None and self.xfrm is not None
        ours = self.pc.s.reqid_range
        xc = self.xfrm
        fut = self._in_thread(xc.sas)

        def done(f: asyncio.Future) -> None:
            if f.cancelled() or f.exception() is not None:
                log.error("ims_pcscf SA dump: %s", None if f.cancelled() else f.exception())
                return
            assert self.pc is not None
            self.pc.kernel_spis = {sa.spi for sa in f.result() if not xc.owns(sa, ours)}

        fut.add_done_callback(done)

    # -- messages
    def on_request(self, msg) -> ReplySpec | None:
        pc = self.pc
        if pc is None:
            return None
        local_port = _port_of(msg.listener)
        if not self.enabled:
            if self.refuse and msg.method == "REGISTER":
                return ReplySpec(503, "Service Unavailable", (("Retry-After", "60"),))
            if has_option_tag(msg.raw.get_all("proxy-require")):
                # sec-agree is off here: RFC 3261 16.3 / RFC 3329 2.3.1, the UE learns it
                # from a 420 naming the tag rather than from a REGISTER that goes on
                return ReplySpec(420, "Bad Extension", (("Unsupported", "sec-agree"),))
            return None
        out: Outcome = pc.on_request(msg.raw, msg.src_ip, msg.src_port, local_port,
                                     time.monotonic())
        if out.note:
            log.info("ims_pcscf %s %s from %s:%d: %s", msg.method,
                     "refused" if out.reply else "", msg.src_ip, msg.src_port, out.note)
        for act in out.actions:
            self._later(act)
        if out.reply is not None:
            return ReplySpec(*out.reply)
        return None

    def hold_response(self, resp, src) -> bool:
        """Every reply, before the transaction layer. A reply to a REGISTER goes through the
        core here, whatever the script does (ck/ik never reach the UE). A 401/407 that
        created a set is held until the set is in the kernel: True."""
        pc = self.pc
        if pc is None or resp.cseq.method != "REGISTER":
            return False
        key = (resp.call_id, resp.cseq.seq)
        if key in self._held:
            log.info("ims_pcscf %d %s: dropped, the first answer waits for its SAs",
                     resp.status, resp.call_id)
            return True
        out = pc.on_reply(resp, time.monotonic())
        self._handled = resp
        self._log_outcome(resp, out)
        install = None
        for act in out.actions:
            if act.kind == "install":
                install = act
            elif act.kind == "remove":
                self._later(act)  # after this reply went out through the SAs
            else:
                self._submit(act)
        if install is None:
            return False
        fut = self._submit(install)
        if fut is None:  # no XFRM socket: nothing to wait for
            self._install_done(install, resp, _failed(OSError("XFRM unavailable")))
            return False
        self._held[key] = resp
        fut.add_done_callback(partial(self._release, key, install, resp, src))
        return True

    def _release(self, key, act: XfrmAction, resp, src, fut: asyncio.Future) -> None:
        """The held 401's set is installed (or refused): let the reply go on."""
        self._held.pop(key, None)
        try:
            self._install_done(act, resp, fut)
        except Exception:  # noqa: BLE001 - the reply must go on (or the UE waits forever)
            log.exception("ims_pcscf install outcome for %s", resp.call_id)
        if self._resume is None:
            return
        self._handled = resp
        try:
            self._resume(resp, src)
        except Exception:  # noqa: BLE001 - callback boundary, like the worker's per message
            log.exception("ims_pcscf relaying the held %d %s", resp.status, resp.call_id)
        finally:
            self._handled = None

    def on_reply(self, msg) -> None:
        """The script's call (kept for scripts written for the first version): the reply
        already went through `hold_response`, so this does nothing then."""
        pc = self.pc
        resp = msg.raw
        if pc is None or resp is self._handled:
            return
        out = pc.on_reply(resp, time.monotonic())  # a reply the worker did not route
        self._log_outcome(resp, out)
        for act in out.actions:
            if act.kind == "install":
                fut = self._submit(act)
                if fut is not None:
                    fut.add_done_callback(partial(self._install_done, act, None))
            elif act.kind == "remove":
                self._later(act)
            else:
                self._submit(act)

    def _log_outcome(self, resp, out: Outcome) -> None:
        pc = self.pc
        assert pc is not None
        if out.note:
            # the AoR names the UE: a 500 for a challenge without ik is the S-CSCF's doing
            log.log(logging.WARNING if resp.status >= 500 else logging.INFO,
                    "ims_pcscf %d %s %s: %s", resp.status, resp.call_id,
                    out.ue_set.aor if out.ue_set else str(resp.to.uri), out.note)
            if resp.status == 503:
                log.warning("ims_pcscf %d of %d slots leased; sets: %s", pc.alloc.in_use,
                            pc.s.slots, [(r["ue"], r["aor"], r["state"], r["port_ps"])
                                         for r in pc.snapshot(time.monotonic())])

    def _later(self, act: XfrmAction) -> None:
        """Queue after the current message is done (a reply being relayed goes out first:
        the worker sends it synchronously once the route returns)."""
        try:
            asyncio.get_running_loop().call_soon(self._submit, act)
        except RuntimeError:
            self._submit(act)

    # -- reporting
    def sets(self) -> list[UeSet]:
        return list(self.pc.sets) if self.pc else []

    def pid(self) -> int:
        return os.getpid()


def _failed(exc: BaseException) -> concurrent.futures.Future:
    f: concurrent.futures.Future = concurrent.futures.Future()
    f.set_exception(exc)
    return f
