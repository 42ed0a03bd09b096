"""netwatch.parse_events: rtnetlink notifications (bytes) -> LinkChanged / AddressChanged,
without a kernel. The messages are built here field by field (<linux/rtnetlink.h>)."""

import socket
import struct

import pytest

from sipedge.appliance import netwatch as nw


def attr(atype: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), atype) + value
    return raw + b"\0" * (-len(raw) % 4)


def msg(mtype: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


def link(mtype: int, index: int, flags: int, name: str | None, oper: int | None) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
    if name is not None:
        body += attr(nw.IFLA_IFNAME, name.encode() + b"\0")
    if oper is not None:
        body += attr(nw.IFLA_OPERSTATE, bytes([oper]))
    return msg(mtype, body)


def addr(mtype: int, family: int, index: int, ip: str, prefix: int, local: str | None = None,
         label: str | None = None) -> bytes:
    body = struct.pack("=BBBBI", family, prefix, 0, 0, index)
    body += attr(nw.IFA_ADDRESS, socket.inet_pton(family, ip))
    if local:
        body += attr(nw.IFA_LOCAL, socket.inet_pton(family, local))
    if label:
        body += attr(nw.IFA_LABEL, label.encode() + b"\0")
    return msg(mtype, body)


def test_links_up_down_and_names_remembered():
    names: dict[int, str] = {}
    data = (link(nw.RTM_NEWLINK, 2, nw.IFF_UP, "eth0", nw.IF_OPER_UP)
            + link(nw.RTM_NEWLINK, 3, nw.IFF_UP, "eth1", 2)       # up, no carrier (DOWN)
            + link(nw.RTM_NEWLINK, 1, nw.IFF_UP, "lo", nw.IF_OPER_UNKNOWN)
            + link(nw.RTM_NEWLINK, 4, 0, "eth2", nw.IF_OPER_UP)  # administratively down
            + link(nw.RTM_DELLINK, 2, nw.IFF_UP, "eth0", nw.IF_OPER_UP))
    events, done = nw.parse_events(data, names)
    assert events == [nw.LinkChanged("eth0", True), nw.LinkChanged("eth1", False),
                      nw.LinkChanged("lo", True), nw.LinkChanged("eth2", False),
                      nw.LinkChanged("eth0", False)]
    assert not done and names == {2: "eth0", 3: "eth1", 1: "lo", 4: "eth2"}


def test_addresses_ipv4_local_ipv6_address_label_and_index_names():
    names = {2: "eth0"}
    data = (addr(nw.RTM_NEWADDR, socket.AF_INET, 2, "10.0.2.2", 24, local="10.0.2.15")
            + addr(nw.RTM_NEWADDR, socket.AF_INET6, 2, "2001:db8::5", 64)
            + addr(nw.RTM_DELADDR, socket.AF_INET, 2, "192.0.2.1", 32, label="eth0:1")
            + addr(nw.RTM_NEWADDR, socket.AF_INET, 9, "192.0.2.9", 24))  # unknown index
    events, _ = nw.parse_events(data, names)
    assert events == [nw.AddressChanged("eth0", "10.0.2.15/24", True),
                      nw.AddressChanged("eth0", "2001:db8::5/64", True),
                      nw.AddressChanged("eth0:1", "192.0.2.1/32", False),
                      nw.AddressChanged("9", "192.0.2.9/24", True)]


def test_done_error_and_truncated_input():
    assert nw.parse_events(msg(nw.NLMSG_DONE, b"\0" * 4), {}) == ([], True)
    with pytest.raises(OSError):
        nw.parse_events(msg(nw.NLMSG_ERROR, struct.pack("=i", -1) + b"\0" * 16), {})
    assert nw.parse_events(msg(nw.NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16), {})[0] == []
    whole = link(nw.RTM_NEWLINK, 2, nw.IFF_UP, "eth0", nw.IF_OPER_UP)
    for cut in range(len(whole)):  # never raises, never invents an event
        events, _ = nw.parse_events(whole[:cut], {})
        assert events == []
    # an attribute whose length runs past the message is ignored, the message still counts
    bad = msg(nw.RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, 5, nw.IFF_UP, 0)
              + struct.pack("=HH", 200, nw.IFLA_IFNAME) + b"eth9")
    assert nw.parse_events(bad, {}) == ([nw.LinkChanged("5", False)], False)
