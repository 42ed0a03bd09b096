"""Probe requests and replies as bytes, sans-IO (the driver owns the socket).

A probe is an out-of-dialog request (OPTIONS unless configured otherwise) whose Via branch
carries the probe token, so a reply is matched to its probe without any other state:
`z9hG4bK-ds<instance>-<token>`. `instance` keeps two probers (two workers, a restart) from
taking each other's replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import RemoteProtocolError
from ...sip.message import Request, Response, parse_message
from ...sip.uri import format_host
from .table import Destination

_BRANCH = re.compile(r"z9hG4bK-ds([0-9a-z]+)-([0-9]+)$")


@dataclass(frozen=True, slots=True)
class ProbeReply:
    token: int
    status: int
    reason: str


def build_probe(dest: Destination, local_ip: str, local_port: int, token: int, *,
                instance: str = "0", method: str = "OPTIONS",
                from_uri: str = "sip:dispatcher@localhost") -> bytes:
    """The probe request for `dest`, sent from local_ip:local_port over UDP."""
    host = format_host(local_ip)
    uri = dest.uri.with_(params=tuple(p for p in dest.uri.params if p[0].lower() != "lr"))
    req = Request(method, uri, [])
    req.add("Via", f"SIP/2.0/UDP {host}:{local_port};branch=z9hG4bK-ds{instance}-{token};rport")
    req.add("Max-Forwards", "70")
    req.add("From", f"<{from_uri}>;tag=ds{instance}x{token}")
    req.add("To", f"<{dest.uri.with_(params=())}>")
    req.add("Call-ID", f"ds{instance}-{token}@{host}")
    req.add("CSeq", f"{token % 2147483648 or 1} {method}")
    req.add("User-Agent", "sipedge dispatcher")
    return req.to_bytes()


def parse_probe_reply(data: bytes, instance: str = "0") -> ProbeReply | None:
    """The probe a datagram answers, or None when it is not a reply to one of our probes.
    Garbage raises nothing: a prober socket only ever expects our replies."""
    try:
        msg = parse_message(data)
    except RemoteProtocolError:
        return None
    if not isinstance(msg, Response):
        return None
    try:
        branch = msg.via.branch or ""
    except RemoteProtocolError:
        return None
    m = _BRANCH.fullmatch(branch)
    if m is None or m.group(1) != instance:
        return None
    return ProbeReply(int(m.group(2)), msg.status, msg.reason)
