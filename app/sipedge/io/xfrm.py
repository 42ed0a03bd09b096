"""Kernel XFRM adapter: pyroute2 netlink message classes for SAs and policies, and a small
client that applies a whole SA set with NLM_F_ACK on every request, rolls it back on any
error, and reconciles our reqid range at start (Kamailio's `ipsec_cleanall`, but only ours).

pyroute2 (0.7..0.9) has no XFRM state/policy messages, only the NETLINK_XFRM constant, so the
messages are declared here in its `fields` + `nla_map` style. Layouts follow
<linux/xfrm.h> (64-bit kernels with matching userland, and 32-bit ARM EABI):
xfrm_usersa_info 224 bytes, xfrm_userpolicy_info 168, xfrm_usersa_id 24,
xfrm_userpolicy_id 64, xfrm_user_tmpl 64. The nested structs (xfrm_selector, xfrm_id,
xfrm_lifetime_cfg/cur, xfrm_stats) are flattened into prefixed fields.

Tagging: a client made with `mark_mask=M` (M nonzero) writes XFRMA_MARK {v: 0, m: M} on
every SA and policy it adds, updates or deletes. The kernel selects an SA when
(skb mark & m) == v and a policy when (flow mark & m) == v, so with v = 0 our objects still
match traffic whose mark has none of M's bits (unmarked traffic, inbound ESP included),
while a dump reports mark 0/M on them and no XFRMA_MARK on an unmarked foreign object: that
is the ownership tag. Policy lookups by selector (delete, update) compare v and m exactly,
so a foreign policy with the same selector and no mark is a different policy and is never
touched. Start-up cleanup removes an object only when it carries our mark *and* its reqid
is in our range (two P-CSCF instances on one box share the mask but not the reqids); block
policies have no template, they are ours by mark, action and protected port.
XFRMA_IF_ID is declared (written when asked for) but not used: an if_id policy matches only
traffic routed through an xfrm interface.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    nla,
    nlmsg,
)

from ..xfrm.model import (
    AUTH_ALGS,
    DIR_IN,
    ENC_ALGS,
    IPPROTO_ESP,
    PolicySpec,
    SaSet,
    SaSpec,
    Selector,
)

NETLINK_XFRM = 6
NLMSG_ERROR = 2
NLMSG_DONE = 3

XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_UPDPOLICY = 0x19
XFRM_MSG_UPDSA = 0x1A

XFRM_MODE_TRANSPORT = 0
XFRM_POLICY_ALLOW = 0
XFRM_POLICY_BLOCK = 1
BLOCK_PRIORITY = 0x7E5EC  # our catch-all "block plaintext" inbound policies carry this
XFRM_OFFLOAD_IPV6 = 1
XFRM_OFFLOAD_INBOUND = 2
XFRM_INF = 0xFFFFFFFFFFFFFFFF

_SELECTOR = (
    ("sel_daddr", "16s"),
    ("sel_saddr", "16s"),
    ("sel_dport", ">H"),
    ("sel_dport_mask", ">H"),
    ("sel_sport", ">H"),
    ("sel_sport_mask", ">H"),
    ("sel_family", "H"),
    ("sel_prefixlen_d", "B"),
    ("sel_prefixlen_s", "B"),
    ("sel_proto", "B"),
    ("__sel_pad", "3x"),
    ("sel_ifindex", "i"),
    ("sel_user", "I"),
)  # struct xfrm_selector: 56 bytes
_LIFETIME_CFG = tuple((f"lft_{n}", "Q") for n in (
    "soft_byte_limit", "hard_byte_limit", "soft_packet_limit", "hard_packet_limit",
    "soft_add_expires_seconds", "hard_add_expires_seconds",
    "soft_use_expires_seconds", "hard_use_expires_seconds"))  # 64 bytes
_LIFETIME_CUR = tuple((f"curlft_{n}", "Q") for n in ("bytes", "packets", "add_time",
                                                      "use_time"))  # 32 bytes


class xfrm_algo(nla):
    """struct xfrm_algo { char alg_name[64]; unsigned int alg_key_len /* bits */;
    char alg_key[]; }"""

    fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_key", "s"))

    def ft_decode(self, offset):
        """Fields are read by `decode` (the generic "s" decoder runs past the end of a
        zero-length key, i.e. ealg null, when this is the message's last attribute)."""

    def decode(self):
        nla.decode(self)  # header
        name, bits = struct.unpack_from("64sI", self.data, self.offset + 4)
        self["alg_name"] = name.rstrip(b"\0").decode()
        self["alg_key_len"] = bits
        self["alg_key"] = bytes(self.data[self.offset + 72:self.offset + 72 + bits // 8])


class xfrm_algo_auth(nla):
    """struct xfrm_algo_auth { char alg_name[64]; unsigned int alg_key_len;
    unsigned int alg_trunc_len /* bits */; char alg_key[]; }"""

    fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_trunc_len", "I"),
              ("alg_key", "s"))

    ft_decode = xfrm_algo.ft_decode

    def decode(self):
        nla.decode(self)
        name, bits, trunc = struct.unpack_from("64sII", self.data, self.offset + 4)
        self["alg_name"] = name.rstrip(b"\0").decode()
        self["alg_key_len"] = bits
        self["alg_trunc_len"] = trunc
        self["alg_key"] = bytes(self.data[self.offset + 76:self.offset + 76 + bits // 8])


class xfrm_mark(nla):
    """struct xfrm_mark { __u32 v; __u32 m; }"""

    fields = (("v", "I"), ("m", "I"))


class xfrm_user_offload(nla):
    """struct xfrm_user_offload { int ifindex; __u8 flags; } (8 bytes)"""

    fields = (("ifindex", "i"), ("flags", "B"), ("__pad", "3x"))


class xfrm_user_tmpl(nla):
    """struct xfrm_user_tmpl (64 bytes): xfrm_id (daddr, spi, proto), family, saddr,
    reqid, mode, share, optional, aalgos, ealgos, calgos. One per XFRMA_TMPL here."""

    fields = (
        ("id_daddr", "16s"),
        ("id_spi", ">I"),
        ("id_proto", "B"),
        ("__id_pad", "3x"),
        ("family", "H"),
        ("__pad1", "2x"),
        ("saddr", "16s"),
        ("reqid", "I"),
        ("mode", "B"),
        ("share", "B"),
        ("optional", "B"),
        ("__pad2", "x"),
        ("aalgos", "I"),
        ("ealgos", "I"),
        ("calgos", "I"),
    )


_NLA_MAP = (
    (0, "XFRMA_UNSPEC", "none"),
    (1, "XFRMA_ALG_AUTH", "xfrm_algo"),
    (2, "XFRMA_ALG_CRYPT", "xfrm_algo"),
    (5, "XFRMA_TMPL", "xfrm_user_tmpl"),
    (20, "XFRMA_ALG_AUTH_TRUNC", "xfrm_algo_auth"),
    (21, "XFRMA_MARK", "xfrm_mark"),
    (28, "XFRMA_OFFLOAD_DEV", "xfrm_user_offload"),
    (31, "XFRMA_IF_ID", "uint32"),
)


class _xfrm_msg(nlmsg):
    nla_map = _NLA_MAP
    xfrm_algo = xfrm_algo
    xfrm_algo_auth = xfrm_algo_auth
    xfrm_mark = xfrm_mark
    xfrm_user_offload = xfrm_user_offload
    xfrm_user_tmpl = xfrm_user_tmpl


class xfrm_usersa_info(_xfrm_msg):
    """struct xfrm_usersa_info (224 bytes): selector, id {daddr, spi, proto}, saddr,
    lifetime cfg/cur, stats, seq, reqid, family, mode, replay_window, flags."""

    fields = _SELECTOR + (
        ("id_daddr", "16s"),
        ("id_spi", ">I"),
        ("id_proto", "B"),
        ("__id_pad", "3x"),
        ("saddr", "16s"),
    ) + _LIFETIME_CFG + _LIFETIME_CUR + (
        ("stats_replay_window", "I"),
        ("stats_replay", "I"),
        ("stats_integrity_failed", "I"),
        ("seq", "I"),
        ("reqid", "I"),
        ("family", "H"),
        ("mode", "B"),
        ("replay_window", "B"),
        ("flags", "B"),
        ("__pad", "7x"),
    )


class xfrm_usersa_id(_xfrm_msg):
    """struct xfrm_usersa_id (24 bytes): daddr, spi, family, proto."""

    fields = (("daddr", "16s"), ("spi", ">I"), ("family", "H"), ("proto", "B"),
              ("__pad", "x"))


class xfrm_userpolicy_info(_xfrm_msg):
    """struct xfrm_userpolicy_info (168 bytes): selector, lifetime cfg/cur, priority,
    index, dir, action, flags, share."""

    fields = _SELECTOR + _LIFETIME_CFG + _LIFETIME_CUR + (
        ("priority", "I"),
        ("index", "I"),
        ("dir", "B"),
        ("action", "B"),
        ("flags", "B"),
        ("share", "B"),
        ("__pad", "4x"),
    )


class xfrm_userpolicy_id(_xfrm_msg):
    """struct xfrm_userpolicy_id (64 bytes): selector, index, dir."""

    fields = _SELECTOR + (("index", "I"), ("dir", "B"), ("__pad", "3x"))


STRUCT_SIZES = {xfrm_usersa_info: 224, xfrm_userpolicy_info: 168, xfrm_usersa_id: 24,
                xfrm_userpolicy_id: 64, xfrm_user_tmpl: 64}


# -- building messages from the plan -----------------------------------------------------


def _addr(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed.ljust(16, b"\0")


def _unaddr(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:16] if family == 10 else raw[:4]))


def _selector_fields(sel: Selector) -> dict:
    return {
        "sel_daddr": _addr(sel.dst), "sel_saddr": _addr(sel.src),
        "sel_dport": sel.dport, "sel_dport_mask": 0xFFFF if sel.dport else 0,
        "sel_sport": sel.sport, "sel_sport_mask": 0xFFFF if sel.sport else 0,
        "sel_family": sel.family, "sel_prefixlen_d": sel.prefixlen_d,
        "sel_prefixlen_s": sel.prefixlen_s, "sel_proto": sel.proto,
        "sel_ifindex": 0, "sel_user": 0,
    }


def _lifetime(hard_s: int, soft_s: int = 0) -> dict:
    out = {name: XFRM_INF for name, _ in _LIFETIME_CFG}
    out["lft_hard_add_expires_seconds"] = hard_s
    out["lft_soft_add_expires_seconds"] = soft_s
    out["lft_soft_use_expires_seconds"] = 0
    out["lft_hard_use_expires_seconds"] = 0
    return out


def _finish(msg: nlmsg, msg_type: int, flags: int, seq: int) -> bytes:
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def newsa_msg(sa: SaSpec, seq: int = 1, mark: tuple[int, int] | None = None,
              if_id: int = 0, update: bool = False) -> bytes:
    """XFRM_MSG_NEWSA (or UPDSA) for one transport-mode ESP SA, with NLM_F_ACK."""
    auth_name, auth_bits, trunc = AUTH_ALGS[sa.auth]
    enc_name, enc_bits = ENC_ALGS[sa.enc]
    if len(sa.auth_key) * 8 != auth_bits or len(sa.enc_key) * 8 != enc_bits:
        raise ValueError(f"key length does not fit {sa.auth}/{sa.enc}")
    msg = xfrm_usersa_info()
    msg.update(_selector_fields(sa.selector))
    msg.update({"id_daddr": _addr(sa.dst), "id_spi": sa.spi, "id_proto": IPPROTO_ESP,
                "saddr": _addr(sa.src), "seq": 0, "reqid": sa.reqid, "family": sa.family,
                "mode": XFRM_MODE_TRANSPORT, "replay_window": sa.replay_window, "flags": 0})
    msg.update(_lifetime(sa.hard_seconds, sa.soft_seconds))
    msg.update({name: 0 for name, _ in _LIFETIME_CUR})
    msg.update({"stats_replay_window": 0, "stats_replay": 0, "stats_integrity_failed": 0})
    attrs: list = [
        ("XFRMA_ALG_AUTH_TRUNC", {"alg_name": auth_name.encode(), "alg_key_len": auth_bits,
                                  "alg_trunc_len": trunc, "alg_key": sa.auth_key}),
        ("XFRMA_ALG_CRYPT", {"alg_name": enc_name.encode(), "alg_key_len": enc_bits,
                             "alg_key": sa.enc_key}),
    ]
    if mark is not None:
        attrs.append(("XFRMA_MARK", {"v": mark[0], "m": mark[1]}))
    if if_id:
        attrs.append(("XFRMA_IF_ID", if_id))
    if sa.offload_ifindex:
        flags = (XFRM_OFFLOAD_IPV6 if sa.family == 10 else 0) | (
            XFRM_OFFLOAD_INBOUND if sa.offload_inbound else 0)
        attrs.append(("XFRMA_OFFLOAD_DEV", {"ifindex": sa.offload_ifindex, "flags": flags}))
    msg["attrs"] = attrs
    kind = XFRM_MSG_UPDSA if update else XFRM_MSG_NEWSA
    flags = NLM_F_REQUEST | NLM_F_ACK | (0 if update else NLM_F_CREATE | NLM_F_EXCL)
    return _finish(msg, kind, flags, seq)


def delsa_msg(dst: str, spi: int, seq: int = 1, mark: tuple[int, int] | None = None) -> bytes:
    msg = xfrm_usersa_id()
    fam = 10 if ":" in dst else 2
    msg.update({"daddr": _addr(dst), "spi": spi, "family": fam, "proto": IPPROTO_ESP})
    msg["attrs"] = [("XFRMA_MARK", {"v": mark[0], "m": mark[1]})] if mark else []
    return _finish(msg, XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK, seq)


def newpolicy_msg(pol: PolicySpec, seq: int = 1, mark: tuple[int, int] | None = None,
                  if_id: int = 0, update: bool = False) -> bytes:
    msg = xfrm_userpolicy_info()
    msg.update(_selector_fields(pol.selector))
    msg.update(_lifetime(pol.hard_seconds))
    msg.update({name: 0 for name, _ in _LIFETIME_CUR})
    msg.update({"priority": pol.priority, "index": 0, "dir": pol.direction,
                "action": XFRM_POLICY_ALLOW, "flags": 0, "share": 0})
    attrs: list = [("XFRMA_TMPL", {
        "id_daddr": _addr(pol.tmpl_dst), "id_spi": 0, "id_proto": IPPROTO_ESP,
        "family": pol.family, "saddr": _addr(pol.tmpl_src), "reqid": pol.reqid,
        "mode": XFRM_MODE_TRANSPORT, "share": 0, "optional": 0,
        "aalgos": 0xFFFFFFFF, "ealgos": 0xFFFFFFFF, "calgos": 0xFFFFFFFF})]
    if mark is not None:
        attrs.append(("XFRMA_MARK", {"v": mark[0], "m": mark[1]}))
    if if_id:
        attrs.append(("XFRMA_IF_ID", if_id))
    msg["attrs"] = attrs
    if update:
        return _finish(msg, XFRM_MSG_UPDPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq)
    return _finish(msg, XFRM_MSG_NEWPOLICY,
                   NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq)


def delpolicy_msg(sel: Selector, direction: int, seq: int = 1,
                  mark: tuple[int, int] | None = None) -> bytes:
    msg = xfrm_userpolicy_id()
    msg.update(_selector_fields(sel))
    msg.update({"index": 0, "dir": direction})
    msg["attrs"] = [("XFRMA_MARK", {"v": mark[0], "m": mark[1]})] if mark else []
    return _finish(msg, XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq)


def dump_msg(msg_type: int, seq: int = 1) -> bytes:
    body = b"\0" * (24 if msg_type == XFRM_MSG_GETSA else 64)
    return struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq,
                       0) + body


# -- what the kernel reports ---------------------------------------------------------------


@dataclass(frozen=True)
class KernelSa:
    src: str
    dst: str
    spi: int
    reqid: int
    family: int
    auth: str  # kernel names, e.g. "hmac(sha1)"
    enc: str
    bytes: int
    packets: int
    add_time: int
    hard_seconds: int
    offload_ifindex: int = 0
    mark: tuple[int, int] | None = None  # (v, m) of XFRMA_MARK; None: the SA has none


@dataclass(frozen=True)
class KernelPolicy:
    selector: Selector
    direction: int
    reqid: int
    index: int
    hard_seconds: int
    priority: int = 0
    action: int = 0
    mark: tuple[int, int] | None = None


def parse_messages(data: bytes) -> list[nlmsg]:
    """Split a netlink datagram and decode SA/policy messages with the classes above;
    NLMSG_ERROR / NLMSG_DONE come back as (type, seq, error) tuples."""
    out: list = []
    off = 0
    while off + 16 <= len(data):
        length, mtype, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16:
            break
        chunk = data[off:off + length]
        if mtype == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", chunk, 16)
            out.append(("error", seq, -err))
        elif mtype == NLMSG_DONE:
            out.append(("done", seq, 0))
        elif mtype in (XFRM_MSG_NEWSA, XFRM_MSG_NEWPOLICY):
            cls = xfrm_usersa_info if mtype == XFRM_MSG_NEWSA else xfrm_userpolicy_info
            msg = cls(chunk)
            msg.decode()
            out.append(msg)
        off += (length + 3) & ~3
    return out


def _sel_from(msg) -> Selector:
    fam = msg["sel_family"]
    full = 128 if fam == 10 else 32
    ps, pd = msg["sel_prefixlen_s"], msg["sel_prefixlen_d"]
    return Selector(_unaddr(msg["sel_saddr"], fam), _unaddr(msg["sel_daddr"], fam),
                    msg["sel_sport"], msg["sel_dport"], msg["sel_proto"],
                    None if ps == full else ps, None if pd == full else pd)


def _mark_of(msg) -> tuple[int, int] | None:
    m = msg.get_attr("XFRMA_MARK")
    return (m["v"], m["m"]) if m else None


def kernel_sa(msg) -> KernelSa:
    fam = msg["family"]
    auth = msg.get_attr("XFRMA_ALG_AUTH_TRUNC") or msg.get_attr("XFRMA_ALG_AUTH") or {}
    enc = msg.get_attr("XFRMA_ALG_CRYPT") or {}
    off = msg.get_attr("XFRMA_OFFLOAD_DEV") or {}
    return KernelSa(_unaddr(msg["saddr"], fam), _unaddr(msg["id_daddr"], fam), msg["id_spi"],
                    msg["reqid"], fam, auth.get("alg_name", ""), enc.get("alg_name", ""),
                    msg["curlft_bytes"], msg["curlft_packets"], msg["curlft_add_time"],
                    msg["lft_hard_add_expires_seconds"], off.get("ifindex", 0),
                    _mark_of(msg))


def kernel_policy(msg) -> KernelPolicy:
    tmpl = msg.get_attr("XFRMA_TMPL") or {}
    return KernelPolicy(_sel_from(msg), msg["dir"], tmpl.get("reqid", 0), msg["index"],
                        msg["lft_hard_add_expires_seconds"], msg["priority"], msg["action"],
                        _mark_of(msg))


def block_policy_msg(dst: str, port: int, seq: int = 1,
                     mark: tuple[int, int] | None = None) -> bytes:
    """An inbound `action block` policy for any source to dst:port (UDP and TCP) at
    BLOCK_PRIORITY: plaintext to a protected port is dropped by the kernel, while the per-UE
    policies (priority 2080, which wins) let ESP-protected traffic through."""
    fam = 10 if ":" in dst else 2
    any_ip = "::" if fam == 10 else "0.0.0.0"
    msg = xfrm_userpolicy_info()
    msg.update(_selector_fields(Selector(any_ip, dst, 0, port, src_prefix=0)))
    msg.update(_lifetime(0))
    msg["lft_hard_add_expires_seconds"] = 0
    msg.update({name: 0 for name, _ in _LIFETIME_CUR})
    msg.update({"priority": BLOCK_PRIORITY, "index": 0, "dir": DIR_IN,
                "action": XFRM_POLICY_BLOCK, "flags": 0, "share": 0})
    msg["attrs"] = [("XFRMA_MARK", {"v": mark[0], "m": mark[1]})] if mark else []
    return _finish(msg, XFRM_MSG_NEWPOLICY,
                   NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq)


# -- the client ------------------------------------------------------------------------------


class XfrmError(Exception):
    """A request the kernel refused: `errno` and what was asked."""

    def __init__(self, err: int, what: str) -> None:
        super().__init__(f"{what}: {os.strerror(err)} (errno {err})")
        self.errno = err
        self.what = what


class XfrmClient:
    """Blocking NETLINK_XFRM client (run it in a thread from asyncio: ims_pcscf gives it a
    thread of its own). Every request carries NLM_F_ACK and its reply is read and checked;
    one lock serialises requests, so another thread (an RPC dump) may share the socket.

    `mark_mask` nonzero: every SA and policy this client adds, updates or deletes carries
    XFRMA_MARK {v: 0, m: mark_mask} (the ownership tag, see the module docstring)."""

    def __init__(self, mark_mask: int = 0) -> None:
        if not 0 <= mark_mask <= 0xFFFFFFFF:
            raise ValueError("mark_mask is a 32-bit value")
        self.mark: tuple[int, int] | None = (0, mark_mask) if mark_mask else None
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        self.sock.bind((0, 0))
        self.sock.settimeout(5.0)
        self._seq = 0
        self._lock = threading.Lock()
        self._seq_lock = threading.Lock()

    def close(self) -> None:
        self.sock.close()

    def _next(self) -> int:
        with self._seq_lock:
            self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
            return self._seq

    def _ack(self, data: bytes, seq: int, what: str) -> None:
        with self._lock:
            self.sock.send(data)
            while True:
                for item in parse_messages(self.sock.recv(1 << 16)):
                    if isinstance(item, tuple) and item[1] == seq:
                        if item[0] == "error" and item[2] != 0:
                            raise XfrmError(item[2], what)
                        return

    def _dump(self, msg_type: int) -> list:
        seq = self._next()
        out = []
        with self._lock:
            self.sock.send(dump_msg(msg_type, seq))
            while True:
                for item in parse_messages(self.sock.recv(1 << 20)):
                    if isinstance(item, tuple):
                        if item[1] != seq:
                            continue
                        if item[0] == "error" and item[2] != 0:
                            raise XfrmError(item[2], "dump")
                        return out
                    out.append(item)

    # -- single objects
    def add_sa(self, sa: SaSpec) -> None:
        seq = self._next()
        self._ack(newsa_msg(sa, seq, mark=self.mark), seq,
                  f"add SA {sa.dst} spi 0x{sa.spi:08x}")

    def del_sa(self, dst: str, spi: int) -> None:
        seq = self._next()
        self._ack(delsa_msg(dst, spi, seq, mark=self.mark), seq,
                  f"delete SA {dst} spi 0x{spi:08x}")

    def add_policy(self, pol: PolicySpec) -> None:
        seq = self._next()
        d = "in" if pol.direction == DIR_IN else "out"
        s = pol.selector
        self._ack(newpolicy_msg(pol, seq, mark=self.mark), seq,
                  f"add policy {s.src}:{s.sport} -> {s.dst}:{s.dport} dir {d}")

    def del_policy(self, sel: Selector, direction: int) -> None:
        seq = self._next()
        self._ack(delpolicy_msg(sel, direction, seq, mark=self.mark), seq,
                  f"delete policy {sel.src}:{sel.sport} -> {sel.dst}:{sel.dport}")

    def sas(self) -> list[KernelSa]:
        return [kernel_sa(m) for m in self._dump(XFRM_MSG_GETSA)]

    def policies(self) -> list[KernelPolicy]:
        return [kernel_policy(m) for m in self._dump(XFRM_MSG_GETPOLICY)]

    # -- whole sets
    def apply(self, sa_set: SaSet) -> None:
        """Install 4 SAs then 4 policies. On any refusal, everything installed so far is
        removed again (reverse order) and the XfrmError is raised."""
        done: list = []
        try:
            for sa in sa_set.sas:
                self.add_sa(sa)
                done.append(sa)
            for pol in sa_set.policies:
                self.add_policy(pol)
                done.append(pol)
        except (XfrmError, OSError):
            for obj in reversed(done):
                try:
                    self._remove(obj)
                except (XfrmError, OSError):
                    pass
            raise

    def update_lifetime(self, sa_set: SaSet, hard_seconds: int) -> None:
        """New hard lifetime (seconds from each object's creation) for a whole set: UPDSA
        and UPDPOLICY, each acknowledged."""
        from dataclasses import replace

        for sa in sa_set.sas:
            seq = self._next()
            self._ack(newsa_msg(replace(sa, hard_seconds=hard_seconds), seq, mark=self.mark,
                                update=True),
                      seq, f"update SA {sa.dst} spi 0x{sa.spi:08x}")
        for pol in sa_set.policies:
            seq = self._next()
            self._ack(newpolicy_msg(replace(pol, hard_seconds=hard_seconds), seq,
                                    mark=self.mark, update=True), seq, "update policy")

    def _remove(self, obj) -> None:
        if isinstance(obj, SaSpec):
            self.del_sa(obj.dst, obj.spi)
        else:
            self.del_policy(obj.selector, obj.direction)

    def remove(self, sa_set: SaSet) -> list[str]:
        """Policies first (no window where traffic would go out in clear), then SAs.
        Objects already gone (hard lifetime) are fine; other errors are returned."""
        problems = []
        for obj in (*sa_set.policies, *sa_set.sas):
            try:
                self._remove(obj)
            except XfrmError as exc:
                if exc.errno not in (errno.ENOENT, errno.ESRCH):
                    problems.append(str(exc))
        return problems

    def add_block(self, dst: str, port: int) -> None:
        seq = self._next()
        self._ack(block_policy_msg(dst, port, seq, mark=self.mark), seq,
                  f"add block policy {dst}:{port}")

    def owns(self, obj: KernelSa | KernelPolicy, reqids: Iterable[int] | range) -> bool:
        """Ours: our mark (when this client tags) and a reqid in `reqids`."""
        return obj.mark == self.mark and obj.reqid in reqids

    def _owns_block(self, pol: KernelPolicy, ports: set[int]) -> bool:
        return pol.mark == self.mark and pol.priority == BLOCK_PRIORITY and \
            pol.action == XFRM_POLICY_BLOCK and pol.selector.dport in ports

    def cleanup(self, reqids: Iterable[int] | range,
                block_ports: Iterable[int] = ()) -> tuple[int, int]:
        """Remove every SA and policy that is ours (`owns`: our mark and a reqid in
        `reqids`), and our block policies on `block_ports`; foreign ones stay, also a
        foreign policy with the same selector as one of ours (the delete carries our mark,
        which the kernel compares exactly). Returns (policies, SAs) removed."""
        rng = reqids
        ports = set(block_ports)
        npol = nsa = 0
        for pol in self.policies():
            if self.owns(pol, rng) or self._owns_block(pol, ports):
                try:
                    self.del_policy(pol.selector, pol.direction)
                    npol += 1
                except XfrmError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ESRCH):
                        raise
        for sa in self.sas():
            if self.owns(sa, rng):
                try:
                    self.del_sa(sa.dst, sa.spi)
                    nsa += 1
                except XfrmError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ESRCH):
                        raise
        return npol, nsa


def probe(client: XfrmClient, local_ip: str, algs: Iterable[tuple[str, str]],
          reqid: int) -> dict[tuple[str, str], str]:
    """Capability probe: try to add (and at once delete) a short-lived SA for each
    (alg, ealg) on `local_ip`; returns {suite: "ok" | reason}. ESP missing from the kernel
    gives EPROTONOSUPPORT, a missing algorithm ENOENT/ENOSYS."""
    out = {}
    spi = 0x5EC00000 + (os.getpid() & 0xFFFF)
    for alg, ealg in algs:
        key_a = b"\x11" * (AUTH_ALGS[alg][1] // 8)
        key_e = b"\x22" * (ENC_ALGS[ealg][1] // 8)
        sel = Selector(local_ip, local_ip, 9, 9)
        sa = SaSpec(local_ip, local_ip, spi, reqid, alg, key_a, ealg, key_e, sel, 5)
        try:
            client.add_sa(sa)
            client.del_sa(local_ip, spi)
            out[(alg, ealg)] = "ok"
        except XfrmError as exc:
            hint = {errno.EPROTONOSUPPORT: "no ESP in the kernel",
                    errno.ENOSYS: "algorithm not available",
                    errno.ENOENT: "algorithm not available"}.get(exc.errno, "refused")
            out[(alg, ealg)] = f"{hint} ({os.strerror(exc.errno)})"
        spi += 1
    return out
