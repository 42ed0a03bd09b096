"""The host's IP addresses from one rtnetlink RTM_GETADDR dump (standard library only).

Wildcard listeners need every local address to recognise requests for themselves. pyroute2
answers the same question but costs seconds of imports on a slow (TCG) boot, before the proxy
can answer; this dump takes milliseconds. Messages: <linux/rtnetlink.h> nlmsghdr + ifaddrmsg
+ rtattrs (IFA_ADDRESS, IFA_LOCAL).
"""
from __future__ import annotations

import ipaddress
import os
import socket
import struct

RTM_GETADDR = 22
RTM_NEWADDR = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
NLMSG_HDR = struct.Struct("=IHHII")     # len, type, flags, seq, pid
IFADDRMSG = struct.Struct("=BBBBI")     # family, prefixlen, flags, scope, index
RTATTR = struct.Struct("=HH")           # len, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_addresses(data: bytes) -> tuple[set[str], bool]:
    """Addresses in a buffer of netlink messages; the flag is True once NLMSG_DONE is seen.
    Raises OSError for an NLMSG_ERROR answer."""
    ips: set[str] = set()
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size or off + length > len(data):
            break
        if mtype == NLMSG_DONE:
            return ips, True
        if mtype == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, off + NLMSG_HDR.size)
            if err:
                raise OSError(-err, os.strerror(-err))
        elif mtype == RTM_NEWADDR and length >= NLMSG_HDR.size + IFADDRMSG.size:
            family = data[off + NLMSG_HDR.size]
            pos = off + NLMSG_HDR.size + IFADDRMSG.size
            while pos + RTATTR.size <= off + length:
                alen, atype = RTATTR.unpack_from(data, pos)
                if alen < RTATTR.size:
                    break
                value = data[pos + RTATTR.size:pos + alen]
                if atype in (IFA_ADDRESS, IFA_LOCAL) and len(value) in (4, 16):
                    fam = socket.AF_INET if family == socket.AF_INET else socket.AF_INET6
                    ips.add(str(ipaddress.ip_address(socket.inet_ntop(fam, value))))
                pos += _align(alen)
        off += _align(length)
    return ips, False


def host_addresses(timeout_s: float = 2.0) -> set[str]:
    """Every IPv4 and IPv6 address configured on this host. Raises OSError."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.settimeout(timeout_s)
        s.bind((0, 0))
        body = IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        s.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), RTM_GETADDR,
                              NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        ips: set[str] = set()
        done = False
        while not done:
            found, done = parse_addresses(s.recv(65536))
            ips |= found
        return ips
