"""Link and address notifications from rtnetlink, standard library only.

The supervisor follows link and address changes all the time (the panel's address lines,
re-applying `[network]` when a link appears). pyroute2 did this before, but importing it costs
about 9 MiB and seconds of CPU under emulation, at boot, next to the starting proxy (issue 13);
it is now imported only to *change* the network (`[network] manage = true`).

Messages (<linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>): nlmsghdr, then
ifinfomsg + IFLA_* attributes (RTM_NEWLINK/DELLINK) or ifaddrmsg + IFA_* attributes
(RTM_NEWADDR/DELADDR). `parse_events()` is pure: bytes and the ifindex -> name map in, events out.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

log = logging.getLogger("sipedge.appliance.network")

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR = 20, 21
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
IFLA_IFNAME, IFLA_OPERSTATE = 3, 16
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
IF_OPER_UNKNOWN, IF_OPER_UP = 0, 6
IFF_UP = 0x1
CLONE_NEWNET = 0x40000000
NLMSG_HDR = struct.Struct("=IHHII")   # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")   # family, prefixlen, flags, scope, index
RTATTR = struct.Struct("=HH")         # len, type


@dataclass(frozen=True)
class LinkChanged:
    ifname: str
    up: bool  # administratively up and carrier (oper state UP, or UNKNOWN: loopback, tun)


@dataclass(frozen=True)
class AddressChanged:
    ifname: str
    cidr: str
    added: bool


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(data: bytes, pos: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while pos + RTATTR.size <= end:
        alen, atype = RTATTR.unpack_from(data, pos)
        if alen < RTATTR.size or pos + alen > end:
            break
        out.setdefault(atype & 0x3FFF, data[pos + RTATTR.size:pos + alen])
        pos += _align(alen)
    return out


def _text(value: bytes | None) -> str | None:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace") if value is not None else None


def parse_events(data: bytes, names: dict[int, str]) -> tuple[list[LinkChanged | AddressChanged],
                                                                bool]:
    """Events in a buffer of netlink messages; `names` (ifindex -> name) is kept up to date.
    The flag is True once NLMSG_DONE ended a dump. Raises OSError for an NLMSG_ERROR."""
    out: list[LinkChanged | AddressChanged] = []
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size or off + length > len(data):
            break
        body, end = off + NLMSG_HDR.size, off + length
        if mtype == NLMSG_DONE:
            return out, True
        if mtype == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, body)
            if err:
                raise OSError(-err, os.strerror(-err))
        elif mtype in (RTM_NEWLINK, RTM_DELLINK) and end - body >= IFINFOMSG.size:
            _fam, _type, index, flags, _change = IFINFOMSG.unpack_from(data, body)
            attrs = _attrs(data, body + IFINFOMSG.size, end)
            name = _text(attrs.get(IFLA_IFNAME)) or names.get(index, str(index))
            names[index] = name
            oper = attrs.get(IFLA_OPERSTATE)
            up = (mtype == RTM_NEWLINK and bool(flags & IFF_UP) and oper is not None
                  and oper[0] in (IF_OPER_UP, IF_OPER_UNKNOWN))
            out.append(LinkChanged(name, up))
        elif mtype in (RTM_NEWADDR, RTM_DELADDR) and end - body >= IFADDRMSG.size:
            family, prefixlen, _f, _scope, index = IFADDRMSG.unpack_from(data, body)
            attrs = _attrs(data, body + IFADDRMSG.size, end)
            raw = attrs.get(IFA_ADDRESS) if family == socket.AF_INET6 else (
                attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS))
            if raw is not None and len(raw) in (4, 16):
                addr = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6,
                                        raw)
                name = _text(attrs.get(IFA_LABEL)) or names.get(index, str(index))
                out.append(AddressChanged(name, f"{addr}/{prefixlen}", mtype == RTM_NEWADDR))
        off += _align(length)
    return out, False


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def open_sockets(netns: str | None = None) -> tuple[socket.socket, socket.socket]:
    """(events, dump): an rtnetlink socket joined to the link and address groups, and one for
    the link dump; in network namespace `netns` (/run/netns/NAME) if given. A socket stays in
    the namespace it was made in, so a short-lived thread enters it to make them."""
    def make() -> tuple[socket.socket, socket.socket]:
        ev = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            ev.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            ev.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            dump = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        except OSError:
            ev.close()
            raise
        return ev, dump

    if not netns:
        return make()
    result: list = []

    def in_netns() -> None:
        try:
            fd = os.open(netns if "/" in netns else f"/run/netns/{netns}", os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(make())
        except OSError as exc:
            result.append(exc)

    t = threading.Thread(target=in_netns, name="netns-socket")
    t.start()
    t.join()
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


def dump_link_names(sock: socket.socket, timeout_s: float = 5.0) -> dict[int, str]:
    """ifindex -> name of every link (one RTM_GETLINK dump)."""
    sock.settimeout(timeout_s)
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    sock.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), RTM_GETLINK,
                             NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
    names: dict[int, str] = {}
    done = False
    while not done:
        _events, done = parse_events(sock.recv(1 << 16), names)
    return names


class NetlinkWatcher:
    """Link and address notifications as an async stream of events (`async with`, then
    `events()`). The socket is read when the event loop sees it readable: no thread."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.sock: socket.socket | None = None
        self.names: dict[int, str] = {}
        self._async = False  # kept for callers that asked which pyroute2 API ran

    async def __aenter__(self) -> NetlinkWatcher:
        self.sock, dump = await asyncio.to_thread(open_sockets, self.netns)
        try:
            # subscribed first, then the dump: a link added in between is seen as an event
            self.names = await asyncio.to_thread(dump_link_names, dump)
        except OSError:
            self.sock.close()
            raise
        finally:
            dump.close()
        self.sock.setblocking(False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()

    async def events(self) -> AsyncIterator[LinkChanged | AddressChanged]:
        """Yields events as the kernel reports them; the caller bounds it (timeout, break)."""
        assert self.sock is not None, "use `async with NetlinkWatcher()`"
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = self.sock.fileno()
        loop.add_reader(fd, ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                while True:
                    try:
                        data = self.sock.recv(1 << 16)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno != errno.ENOBUFS:
                            raise
                        # the kernel dropped notifications (a burst): what follows is current
                        log.warning("netlink notifications lost (ENOBUFS)")
                        continue
                    try:
                        events, _done = parse_events(data, self.names)
                    except OSError as exc:
                        log.warning("netlink error message: %s", exc)
                        continue
                    for ev in events:
                        yield ev
        finally:
            loop.remove_reader(fd)


RTM_GETADDR = 22


def _dump(sock: socket.socket, mtype: int, body: bytes, names: dict[int, str],
          timeout_s: float) -> list[LinkChanged | AddressChanged]:
    sock.settimeout(timeout_s)
    sock.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP,
                             1, 0) + body)
    out: list[LinkChanged | AddressChanged] = []
    done = False
    while not done:
        events, done = parse_events(sock.recv(1 << 16), names)
        out.extend(events)
    return out


def read_state(netns: str | None = None,
               timeout_s: float = 5.0) -> tuple[set[str], set[tuple[str, str]]]:
    """(link names, (ifname, "addr/prefix") pairs) from one link and one address dump: what
    the supervisor shows when it does not manage the network (no pyroute2 needed)."""
    ev, sock = open_sockets(netns)
    ev.close()
    with sock:
        names: dict[int, str] = {}
        _dump(sock, RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), names, timeout_s)
        addrs = _dump(sock, RTM_GETADDR, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), names,
                      timeout_s)
    return set(names.values()), {(a.ifname, a.cidr) for a in addrs
                                 if isinstance(a, AddressChanged)}
