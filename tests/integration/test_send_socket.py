"""The registrar sends to a contact from the socket it registered through, and along its Path.

Two UDP listeners on 127.0.0.1. A UA registers through the second; a caller sends an INVITE
through the first. The INVITE must reach the UA from the second listener's port: a NAT
pinhole (and many UAs' "accept only from the registrar" setting) opens for that socket only.
A binding registered through the first listener gets its INVITE from the first. Real
sockets on 127.0.0.1, one call each, bounded waits."""

from __future__ import annotations

import socket
import uuid

import pytest
from sip_harness import SipEdge, free_port, make_config, reply_to, udp_socket

SCRIPT = '''
async def request_route(msg):
    if msg.method == "REGISTER":
        return msg.t_reply(*await ksr.registrar.save(msg))  # noqa: F821
    if msg.method in ("ACK", "CANCEL") or msg.in_dialog:
        return msg.t_relay()
    reply = await ksr.registrar.lookup(msg)  # noqa: F821
    if reply is not None:
        return msg.t_reply(*reply)
    if msg.has_hf("X-Stateless"):
        return msg.forward()
    return msg.t_relay()
'''


@pytest.fixture
def edge(tmp_path):
    script = tmp_path / "route.py"
    script.write_text(SCRIPT)
    p1, p2 = free_port(), free_port()
    extra = (f'[proxy]\ndomains = ["localhost"]\n\n[routing]\nscript = "{script}"\n\n'
             '[registrar]\ndb_path = "location.sqlite"\nnat_keepalive_interval_s = 0\n')
    config = make_config(str(tmp_path / "sipedge.ctl"),
                         [("udp", "127.0.0.1", p1), ("udp", "127.0.0.1", p2)], extra=extra)
    # the registrar serves known subscribers only (the auth module's store); no digest here
    config = config.replace("[core]\n", '[core]\nmodules = ["registrar", "auth"]\n', 1)
    proxy = SipEdge(tmp_path, config).start(workers=1)
    proxy.rpc("subscriber.add", {"username": "alice", "domain": "localhost", "password": "x"})
    proxy.ports = (p1, p2)
    yield proxy
    proxy.stop()


def _request(method: str, ruri: str, sock: socket.socket, user: str, to: str,
             extra: str = "") -> bytes:
    port = sock.getsockname()[1]
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@localhost>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <{to}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\nCSeq: 1 {method}\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n{extra}Content-Length: 0\r\n\r\n"
            ).encode()


def _recv(sock: socket.socket, start: bytes) -> tuple[bytes, tuple]:
    for _ in range(20):  # bounded: skip a 100 Trying and the like
        data, addr = sock.recvfrom(65535)
        if data.startswith(start):
            return data, addr
    raise AssertionError(f"no {start!r}")


@pytest.mark.parametrize("via", [0, 1], ids=["first-listener", "second-listener"])
def test_invite_leaves_from_the_socket_the_contact_registered_through(edge, via):
    registered_on = edge.ports[via]
    ua, caller = udp_socket(5), udp_socket(5)
    try:
        ua.sendto(_request("REGISTER", "sip:localhost", ua, "alice", "sip:alice@localhost",
                           "Expires: 60\r\n"), ("127.0.0.1", registered_on))
        ok, _ = _recv(ua, b"SIP/2.0 200")
        assert b"Contact:" in ok
        bindings = edge.rpc("ul.show", {"aor": "alice@localhost"})
        assert f"udp:127.0.0.1:{registered_on}" in str(bindings)

        caller.sendto(_request("INVITE", "sip:alice@localhost", caller, "bob",
                               "sip:alice@localhost"),
                      ("127.0.0.1", edge.ports[0]))  # always in through the first listener
        invite, addr = _recv(ua, b"INVITE ")
        assert addr == ("127.0.0.1", registered_on), (addr, edge.ports)
        ua.sendto(reply_to(invite, "486 Busy Here", "callee"), addr)
        busy, _ = _recv(caller, b"SIP/2.0 486")
        assert b"CSeq: 1 INVITE" in busy
    finally:
        ua.close()
        caller.close()


@pytest.mark.parametrize("stateless", [False, True], ids=["t_relay", "forward"])
def test_registered_path_is_the_route_of_the_request(edge, stateless):
    """A contact registered through an edge proxy (Path, RFC 3327) is reached through that
    proxy: the request goes to the Path URI with it as Route, statefully or not."""
    ua, caller, outbound = udp_socket(5), udp_socket(5), udp_socket(5)
    try:
        opx = outbound.getsockname()[1]
        ua.sendto(_request("REGISTER", "sip:localhost", ua, "alice", "sip:alice@localhost",
                           f"Expires: 60\r\nSupported: path\r\nPath: <sip:127.0.0.1:{opx};lr>\r\n"),
                  ("127.0.0.1", edge.ports[0]))
        _recv(ua, b"SIP/2.0 200")
        extra = "X-Stateless: yes\r\n" if stateless else ""
        caller.sendto(_request("INVITE", "sip:alice@localhost", caller, "bob",
                               "sip:alice@localhost", extra), ("127.0.0.1", edge.ports[0]))
        invite, _addr = _recv(outbound, b"INVITE ")
        head = invite.split(b"\r\n\r\n", 1)[0].decode()
        ua_port = ua.getsockname()[1]
        assert head.startswith(f"INVITE sip:alice@127.0.0.1:{ua_port} SIP/2.0"), head
        assert f"Route: <sip:127.0.0.1:{opx};lr>" in head, head
    finally:
        for s in (ua, caller, outbound):
            s.close()
