"""The registrar module instance: REGISTER handling and lookup over the async store."""

from __future__ import annotations

from ...errors import RemoteProtocolError
from ...sip.message import Request
from ...sip.uri import parse_uri
from .. import ReplySpec
from .aio import AsyncStore
from .core import (
    RegisterRequest,
    Source,
    Target,
    aor_of,
    apply_register,
    lookup,
    lookup_reply,
    parse_register,
)
from .params import RegistrarParams


class Registrar:
    """One per worker. `now` is wall-clock seconds (bindings are persisted)."""

    def __init__(self, params: RegistrarParams, store: AsyncStore,
                 domains: tuple[str, ...] | list[str] = ()) -> None:
        self.params = params
        self.store = store
        self.domains = tuple(d.lower() for d in domains)

    def is_our_domain(self, host: str) -> bool:
        return not self.domains or host.lower().strip("[]") in self.domains

    async def save(self, req: Request, source: Source, now: float, *, nat: bool = False,
                   auth_user: str | None = None,
                   known_subscriber: tuple[str, str] | None = None) -> ReplySpec:
        """Process a REGISTER (RFC 3261 10.3) and return the reply to send.
        `known_subscriber`: (user, domain) a digest check of this request has just found in
        the subscriber table (its HA1 matched); when it is the To user and domain, the
        table is not read again."""
        try:
            to_uri = req.to.uri
            if not self.is_our_domain(to_uri.host_bare):
                return ReplySpec(403, "Domain Not Served")
            if auth_user is not None and to_uri.user != auth_user:
                return ReplySpec(403, "Forbidden (To user differs from authenticated user)")
            if self.params.require_subscriber and known_subscriber != (
                    to_uri.user, to_uri.host_bare) and not await self.store.subscriber_exists(
                    to_uri.user or "", to_uri.host_bare):
                return ReplySpec(404, "Not Found")
        except RemoteProtocolError as exc:
            return ReplySpec(exc.status_hint, exc.reason)
        reg = parse_register(req, self.params, source, nat=nat)
        if isinstance(reg, ReplySpec):
            return reg
        params = self.params

        def compute(existing, reg: RegisterRequest = reg):
            return apply_register(reg, existing, params, now)

        # without subscribers an outsider picks the AORs: their number is bounded
        outcome = await self.store.update_aor(
            reg.aor, compute, None if params.require_subscriber else params.max_aors)
        return outcome.reply

    async def lookup(self, aor: str, now: float) -> list[Target]:
        bindings = await self.store.live_bindings(aor, now)
        return lookup(bindings, now, nat_to_received=self.params.nat_to_received)

    async def lookup_uri(self, uri: str, now: float) -> tuple[list[Target], ReplySpec | None]:
        """Targets for a Request-URI, or the 404/480 reply when there are none."""
        u = parse_uri(uri)
        aor = aor_of(u)
        targets = await self.lookup(aor, now)
        if targets:
            return targets, None
        known = await self.user_known(u.user or "", u.host_bare)
        return [], lookup_reply(known, targets)

    async def user_known(self, user: str, domain: str) -> bool:
        if not self.params.require_subscriber:
            return False
        return await self.store.subscriber_exists(user, domain)

    async def registered(self, aor: str, now: float) -> bool:
        return bool(await self.store.live_bindings(aor, now))

    async def purge(self, now: float) -> int:
        """Run every `purge_interval_s` from one process (the main process or worker 0)."""
        return await self.store.purge_expired(now)
