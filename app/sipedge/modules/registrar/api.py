"""Script-facing registrar calls (`ksr.registrar.save()` and friends once wired).

`msg` is the script's RequestMsg: `.raw` (the Request), `.src_ip`, `.src_port`, `.proto`, and
`.listener` (the receiving socket, "udp:127.0.0.1:5060") once the worker provides it.
`now` is wall-clock seconds.
"""

from __future__ import annotations

from .. import ReplySpec
from .core import Source, Target, aor_of
from .module import Registrar
from .nat import nat_reasons


def source_of(msg) -> Source:
    return Source(msg.src_ip, int(msg.src_port), (msg.proto or "udp").lower(),
                  getattr(msg, "listener", "") or "")


async def save(reg: Registrar, msg, now: float, *, auth_user: str | None = None) -> ReplySpec:
    """Store the REGISTER's bindings; returns the reply to send (200 with the contact list,
    or 400/403/404/420/423/500)."""
    src = source_of(msg)
    nat = bool(nat_reasons(msg.raw, src.ip, src.port, src.transport))
    return await reg.save(msg.raw, src, now, nat=nat, auth_user=auth_user,
                          known_subscriber=getattr(msg, "auth_subscriber", None))


async def lookup(reg: Registrar, msg, now: float) -> tuple[list[Target], ReplySpec | None]:
    """Targets for the R-URI, ordered by q (highest first). With none, the 404/480 reply.
    `apply_targets()` puts them into the request."""
    return await reg.lookup_uri(msg.raw.uri_text, now)


def apply_targets(msg, targets: list[Target]) -> None:
    """First target: new R-URI, dst URI (NAT), its Path as the Route of the main branch
    (`msg.tm.main_path`: the other branches must not inherit it) and the socket the contact
    registered through; every further target is an extra branch for parallel forking
    (`msg.append_branch(uri, dst_uri=, path=, socket=)`)."""
    first, rest = targets[0], targets[1:]
    msg.set_ruri(first.uri)
    if first.dst_uri:
        msg.set_dst_uri(first.dst_uri)
    if first.path:
        msg.tm.main_path = tuple(first.path)
    if first.socket:
        msg.force_send_socket(first.socket)  # a NAT pinhole only opens for that socket
    for t in rest:
        msg.append_branch(t.uri, dst_uri=t.dst_uri or None, path=t.path, socket=t.socket)


async def registered(reg: Registrar, aor: str, now: float) -> bool:
    """Has `aor` (`user@domain` or a SIP URI) a live binding?"""
    if ":" in aor:
        from ...sip.uri import parse_uri

        aor = aor_of(parse_uri(aor))
    return await reg.registered(aor, now)
