"""The P-CSCF's sec-agree state (sans-IO): per UE its SA sets and their lifecycle.

Inputs are SIP messages (sipedge.sip.message), the arrival (UE ip/port, our local port) and
`now`; outputs are the header edits (done on the message in place), a reply to send
instead, and `XfrmAction`s the runtime carries out on the kernel (install / update /
remove a whole set). The runtime reports install failures back (`install_failed`).

Lifecycle of one set:
  pending  created at the 401 (short kernel lifetime `pending_lifetime_s`)
  active   after the 200 to the REGISTER protected by it (lifetime = expires + margin)
  old      a newer set became active; deleted at the first request on the newer set,
           or when its own registration expires
  deleted  removed from the kernel, its SPIs and ports released
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...sip.message import Request, Response
from ...xfrm.model import DIR_IN, DIR_OUT, PolicySpec, SaSet, SaSpec, Selector
from .alloc import Allocator, Lease
from .keys import encryption_key, integrity_key
from .secagree import (
    Offer,
    Preference,
    choose,
    format_mechanism,
    has_option_tag,
    parse_security_client,
    verify_matches,
)
from .wwwauth import ChallengeError, strip_keys

SEC_HEADERS = ("security-client", "security-verify", "security-server")
# where a UE names the sec-agree option tag (TS 24.229 5.1.1.2: Require and Proxy-Require)
SEC_AGREE_TAG_HEADERS = ("require", "proxy-require", "supported")


@dataclass(frozen=True)
class Settings:
    pcscf_ip: str
    preference: Preference = Preference()
    spi_min: int = 0x10000
    spi_max: int = 0x1FFFF
    port_base: int = 5100
    slots: int = 16
    reqid_base: int = 0x5E0000
    pending_lifetime_s: int = 60
    lifetime_margin_s: int = 30
    require_sec_agree: bool = True
    missing_keys_status: int = 500
    offload_ifindex: int = 0

    @property
    def reqid_range(self) -> range:
        return range(self.reqid_base, self.reqid_base + self.slots)


@dataclass
class UeSet:
    """One SA set: the UE's offer, our lease and the derived kernel objects."""

    ue_ip: str
    offer: Offer  # the UE's chosen Security-Client offer (its SPIs and ports)
    lease: Lease
    sa_set: SaSet
    server: Offer  # what we sent in Security-Server
    created: float
    state: str = "pending"
    expires_at: float = 0.0
    aor: str = ""
    used: bool = False  # a request other than the authenticating REGISTER came on it
    dereg: bool = False  # the last REGISTER through this set asked for expires=0

    @property
    def reqid(self) -> int:
        return self.sa_set.sas[0].reqid

    def summary(self, now: float) -> dict:
        return {"ue": self.ue_ip, "aor": self.aor, "state": self.state,
                "alg": self.offer.alg, "ealg": self.offer.ealg,
                "ue_port_c": self.offer.port_c, "ue_port_s": self.offer.port_s,
                "port_ps": self.lease.port_ps, "port_pc": self.lease.port_pc,
                "spi_uc": self.offer.spi_c, "spi_us": self.offer.spi_s,
                "spi_pc": self.lease.spi_pc, "spi_ps": self.lease.spi_ps,
                "expires_in": round(self.expires_at - now, 1) if self.expires_at else None}


@dataclass(frozen=True)
class XfrmAction:
    kind: str  # "install" | "update" | "remove"
    ue_set: UeSet
    hard_seconds: int = 0


@dataclass
class Outcome:
    """What to do with a message: `reply` (status, reason, headers) to send instead of
    relaying, and kernel actions to run (in order)."""

    reply: tuple[int, str, tuple[tuple[str, str], ...]] | None = None
    actions: list[XfrmAction] = field(default_factory=list)
    ue_set: UeSet | None = None
    note: str = ""


def build_sa_set(ue_ip: str, pcscf_ip: str, offer: Offer, lease: Lease, ck: bytes,
                 ik: bytes, reqid: int, hard_s: int, offload_ifindex: int = 0) -> SaSet:
    """The four transport-mode SAs and policies of TS 33.203 7.1 (the receiver picks the
    SPI): UE port_uc -> our port_ps (spi_ps), our port_ps -> UE port_uc (spi_uc), our
    port_pc -> UE port_us (spi_us), UE port_us -> our port_pc (spi_pc). Selectors are
    host/port exact with protocol 0 so UDP and TCP share them."""
    ka = integrity_key(offer.alg, ik)
    ke = encryption_key(offer.ealg, ck)
    ue, us = ue_ip, pcscf_ip
    flows = [  # (src, sport, dst, dport, spi, direction)
        (ue, offer.port_c, us, lease.port_ps, lease.spi_ps, DIR_IN),
        (us, lease.port_ps, ue, offer.port_c, offer.spi_c, DIR_OUT),
        (us, lease.port_pc, ue, offer.port_s, offer.spi_s, DIR_OUT),
        (ue, offer.port_s, us, lease.port_pc, lease.spi_pc, DIR_IN),
    ]
    sas, pols = [], []
    for src, sport, dst, dport, spi, direction in flows:
        sel = Selector(src, dst, sport, dport, 0)
        sas.append(SaSpec(src, dst, spi, reqid, offer.alg, ka, offer.ealg, ke, sel, hard_s,
                          offload_ifindex=offload_ifindex if direction == DIR_OUT else 0))
        pols.append(PolicySpec(sel, direction, reqid, src, dst, hard_s))
    return SaSet(tuple(sas), tuple(pols))


def _cseq_key(msg) -> tuple[str, int]:
    return (msg.call_id, msg.cseq.seq)


def _expires_of(resp: Response) -> int:
    """The registration lifetime the 200 grants: the largest Contact expires param, else
    the Expires header, else 3600; 0 when the 200 lists no Contact (nothing registered)."""
    if not resp.has("contact"):
        return 0
    best = None
    for c in resp.get_all("contact"):
        for p in c.split(";")[1:]:
            k, _, v = p.partition("=")
            if k.strip().lower() == "expires" and v.strip().isdigit():
                best = max(best or 0, int(v.strip()))
    if best is None:
        e = resp.get("expires")
        best = int(e) if e and e.strip().isdigit() else 3600
    return best


def _remove_option_tag(msg, name: str, tag: str = "sec-agree") -> None:
    """Take `tag` out of every `name` header (each may list several option tags), and the
    header itself when nothing is left (RFC 3329 2.3.1, TS 24.228 6.2: "as the
    Proxy-Require header is empty, it removes this header completely")."""
    values = msg.get_all(name)
    if not values:
        return
    tags = [t.strip() for v in values for t in v.split(",") if t.strip()]
    kept = [t for t in tags if t.lower() != tag]
    if len(kept) == len(tags):
        return
    msg.remove(name)
    if kept:
        msg.add(name, ", ".join(kept))


class PCSCF:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.alloc = Allocator(settings.spi_min, settings.spi_max, settings.port_base,
                               settings.slots)
        self.sets: list[UeSet] = []
        self._offers: dict[tuple[str, int], tuple[str, Offer, float, str]] = {}
        self._reg_tx: dict[tuple[str, int], UeSet] = {}  # protected REGISTER -> its set
        self.kernel_spis: set[int] = set()  # SPIs the kernel has that are not ours to use
        self.counters = {"registers": 0, "sets_installed": 0, "sets_removed": 0,
                         "install_failures": 0, "verify_failures": 0, "exhausted": 0,
                         "missing_keys": 0, "keys_stripped": 0}

    # -- lookup
    def protected_ports(self) -> list[int]:
        return self.alloc.ports()

    def set_for(self, ue_ip: str, ue_port: int, local_port: int) -> UeSet | None:
        """The set whose protected ports this arrival used (UE port_uc -> our port_ps, or UE
        port_us -> our port_pc)."""
        for st in self.sets:
            if st.ue_ip != ue_ip or st.state == "deleted":
                continue
            if (local_port == st.lease.port_ps and ue_port == st.offer.port_c) or \
                    (local_port == st.lease.port_pc and ue_port == st.offer.port_s):
                return st
        return None

    def active_set(self, ue_ip: str) -> UeSet | None:
        act = [st for st in self.sets if st.ue_ip == ue_ip and st.state == "active"]
        return max(act, key=lambda st: st.created) if act else None

    def is_protected_port(self, port: int) -> bool:
        return self.alloc.slot_of_port(port) is not None

    # -- requests from the UE
    def on_request(self, req: Request, ue_ip: str, ue_port: int, local_port: int,
                   now: float) -> Outcome:
        """Every request from the UE side. REGISTER on the unprotected port: remember the
        chosen offer (494 when none is acceptable). On a protected port: Security-Verify
        must match (494/403 otherwise); the first request on a newer active set removes
        the older ones. sec-agree headers are removed before the request goes on."""
        out = Outcome()
        protected = self.is_protected_port(local_port)
        if protected:
            st = self.set_for(ue_ip, ue_port, local_port)
            if st is None:
                return Outcome(reply=(403, "Forbidden", ()), note="no SA set for this port")
            out.ue_set = st
            if req.method == "REGISTER":
                why = verify_matches(req.get_all("security-verify"), st.server)
                if why is not None:
                    self.counters["verify_failures"] += 1
                    status = 494 if not req.has("security-verify") else 403
                    return Outcome(reply=(status, "Security Agreement Required"
                                          if status == 494 else "Forbidden", ()), note=why)
                self._register_common(req, ue_ip, now, protected_st=st)
                self._reg_tx[_cseq_key(req)] = st
                st.dereg = _is_deregister(req)
            if st.state == "active":
                out.actions += self._retire_older(st, now)
            _strip_sec_headers(req)
            _mark_integrity(req, "yes")
            return out
        if req.method != "REGISTER":
            if self.active_set(ue_ip) is not None:
                return Outcome(reply=(403, "Forbidden", ()),
                               note="registered UE sent an unprotected request")
            return out
        return self._register_common(req, ue_ip, now, protected_st=None)

    def _register_common(self, req: Request, ue_ip: str, now: float,
                         protected_st: UeSet | None) -> Outcome:
        self.counters["registers"] += 1
        offers, rejected = parse_security_client(req.get_all("security-client"))
        out = Outcome(ue_set=protected_st)
        if not offers and not rejected:
            if protected_st is None and self.s.require_sec_agree:
                return Outcome(reply=(494, "Security Agreement Required",
                                      self._required_headers()), note="no Security-Client")
            _strip_sec_headers(req)
            _mark_integrity(req, "no")
            return out
        chosen = choose(offers, self.s.preference)
        if chosen is None:
            why = "; ".join(r.reason for r in rejected) or "no offer with an allowed algorithm"
            return Outcome(reply=(494, "Security Agreement Required", self._required_headers()),
                           note=why)
        tagged = any(has_option_tag(req.get_all(h)) for h in SEC_AGREE_TAG_HEADERS)
        self._offers[_cseq_key(req)] = (str(req.to.uri), chosen, now, ue_ip, tagged)
        self._gc_offers(now)
        _strip_sec_headers(req)
        _mark_integrity(req, "yes" if protected_st is not None else "no")
        return out

    def _required_headers(self) -> tuple[tuple[str, str], ...]:
        p = self.s.preference
        mechs = []
        for e in list(p.ealgs) + (["null"] if p.allow_null else []):
            for a in p.algs:
                mechs.append(f"ipsec-3gpp;alg={a};ealg={e};prot=esp;mod=trans")
        return (("Require", "sec-agree"), ("Security-Server", ", ".join(mechs)))

    def _gc_offers(self, now: float) -> None:
        for table in (self._offers, self._reg_tx):
            if len(table) > 4096:
                for k in list(table)[:1024]:
                    del table[k]

    def _retire_older(self, st: UeSet, now: float) -> list[XfrmAction]:
        acts = []
        for other in list(self.sets):
            if other is not st and other.ue_ip == st.ue_ip and other.state == "old" and \
                    other.created < st.created:
                acts.append(self._remove(other))
        return acts

    # -- replies from the S-CSCF side
    def on_reply(self, resp: Response, now: float) -> Outcome:
        """401/407 to a REGISTER: strip ck/ik (always), create a pending set, add exactly
        one Security-Server. 2xx: the protecting set becomes active (or is deleted after
        this reply for a de-REGISTER)."""
        if resp.cseq.method != "REGISTER":
            return Outcome()
        key = _cseq_key(resp)
        if resp.status in (401, 407):
            self._reg_tx.pop(key, None)
            return self._on_challenge(resp, key, now)
        if resp.status < 200:
            return Outcome()
        self._offers.pop(key, None)
        st = self._reg_tx.pop(key, None)
        if 200 <= resp.status < 300 and st is not None and st.state != "deleted":
            return self.registered(st, resp, now)
        return Outcome(ue_set=st)

    def _on_challenge(self, resp: Response, key, now: float) -> Outcome:
        hname = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        ck = ik = None
        bad = ""
        for h in resp.headers:
            if h[0] == hname:
                try:
                    sc = strip_keys(h[2])
                except ChallengeError as exc:
                    bad = str(exc)
                    continue
                if sc.ck is not None or sc.ik is not None:
                    self.counters["keys_stripped"] += 1
                    h[2] = sc.value
                    ck = ck or sc.ck
                    ik = ik or sc.ik
        resp.remove("security-server")
        entry = self._offers.pop(key, None)
        if entry is None:
            return Outcome(note="challenge without a sec-agree REGISTER")
        aor, offer, _, ue_ip, tagged = entry
        if ck is None or ik is None:
            self.counters["missing_keys"] += 1
            return self._error(resp, self.s.missing_keys_status,
                               f"challenge without {'ck' if ck is None else 'ik'} "
                               f"{bad}".strip())
        lease = self.alloc.allocate(lambda spi: spi in self.kernel_spis)
        if lease is None:
            self.counters["exhausted"] += 1
            return self._error(resp, 503, "no free protected ports or SPIs")
        reqid = self.s.reqid_base + lease.slot
        hard = self.s.pending_lifetime_s
        sa_set = build_sa_set(ue_ip, self.s.pcscf_ip, offer, lease, ck, ik, reqid, hard,
                              self.s.offload_ifindex)
        server = Offer(alg=offer.alg, ealg=offer.ealg, spi_c=lease.spi_pc,
                       spi_s=lease.spi_ps, port_c=lease.port_pc, port_s=lease.port_ps)
        st = UeSet(ue_ip, offer, lease, sa_set, server, created=now,
                   expires_at=now + hard, aor=aor)
        self.sets.append(st)
        resp.add("Security-Server", format_mechanism(server))
        if tagged and not has_option_tag(resp.get_all("require")):
            # RFC 3261 8.2.2.3: an extension applied to a (non-421) response is listed in
            # its Require; the UE asked for sec-agree (Require/Proxy-Require/Supported)
            resp.add("Require", "sec-agree")
        return Outcome(actions=[XfrmAction("install", st, hard)], ue_set=st)

    def _error(self, resp: Response, status: int, why: str) -> Outcome:
        """Turn the challenge into an error the UE gets instead (no keys, no SA)."""
        resp.status = status
        resp.reason = {500: "Server Internal Error", 503: "Service Unavailable",
                       403: "Forbidden"}.get(status, "Error")
        resp.remove("www-authenticate")
        resp.remove("proxy-authenticate")
        resp.remove("security-server")
        return Outcome(note=why)

    def install_failed(self, st: UeSet, resp: Response | None, why: str) -> None:
        """The kernel refused the set (already rolled back by the adapter)."""
        self.counters["install_failures"] += 1
        st.state = "deleted"
        self.alloc.release(st.lease)
        self.sets.remove(st)
        if resp is not None:
            self._error(resp, self.s.missing_keys_status, why)

    def installed(self, st: UeSet) -> None:
        self.counters["sets_installed"] += 1

    def registered(self, st: UeSet, resp: Response, now: float) -> Outcome:
        """2xx to a REGISTER that arrived through `st`."""
        expires = _expires_of(resp)
        if expires == 0 or st.dereg:
            # de-REGISTER: this 200 still goes out through the SAs; remove afterwards
            acts = [self._remove(o) for o in list(self.sets)
                    if o.ue_ip == st.ue_ip and o.state != "deleted"]
            return Outcome(actions=acts, note="deregistered")
        acts = []
        if st.state == "pending":
            for o in list(self.sets):
                if o is not st and o.ue_ip == st.ue_ip and o.state == "active":
                    o.state = "old"
                elif o is not st and o.ue_ip == st.ue_ip and o.state == "pending":
                    acts.append(self._remove(o))
            st.state = "active"
        st.expires_at = now + expires
        hard = int(math.ceil(now - st.created + expires + self.s.lifetime_margin_s))
        acts.append(XfrmAction("update", st, hard))
        return Outcome(actions=acts, ue_set=st)

    def _remove(self, st: UeSet) -> XfrmAction:
        """Forget the set; its ports and SPIs stay leased until the runtime reports the
        kernel objects gone (`removed`), so they are never handed out while the kernel
        still has them."""
        st.state = "deleted"
        self.counters["sets_removed"] += 1
        if st in self.sets:
            self.sets.remove(st)
        return XfrmAction("remove", st)

    def removed(self, st: UeSet) -> None:
        """The kernel no longer has the set (deleted, or gone by its hard lifetime)."""
        self.alloc.release(st.lease)

    def expire(self, now: float) -> list[XfrmAction]:
        """Sets past their registration (or pending) lifetime."""
        return [self._remove(st) for st in list(self.sets) if st.expires_at <= now]

    def snapshot(self, now: float) -> list[dict]:
        return [st.summary(now) for st in self.sets]


def _is_deregister(req: Request) -> bool:
    contacts = req.get_all("contact")
    if any(c.strip() == "*" for c in contacts):
        return True
    exp = req.get("expires")
    values = []
    for c in contacts:
        ce = None
        for prm in c.split(";")[1:]:
            k, _, v = prm.partition("=")
            if k.strip().lower() == "expires":
                ce = v.strip()
        values.append(ce if ce is not None else exp)
    return bool(values) and all(v is not None and v.strip() == "0" for v in values)


def _strip_sec_headers(req: Request) -> None:
    for name in SEC_HEADERS:
        req.remove(name)
    for name in SEC_AGREE_TAG_HEADERS:  # sec-agree is hop-by-hop: UE <-> P-CSCF only
        _remove_option_tag(req, name)


def _mark_integrity(req: Request, value: str) -> None:
    """TS 24.229 5.2.2: the P-CSCF tells the S-CSCF whether the REGISTER was protected
    (`integrity-protected` in Authorization)."""
    if req.method != "REGISTER":
        return
    for h in req.headers:
        if h[0] == "authorization" and "integrity-protected" not in h[2].lower():
            h[2] = f'{h[2]}, integrity-protected="{value}"'


__all__ = [
    "PCSCF",
    "Outcome",
    "Settings",
    "UeSet",
    "XfrmAction",
    "build_sa_set",
    "has_option_tag",
]
