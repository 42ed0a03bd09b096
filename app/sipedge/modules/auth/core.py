"""The auth module instance: which realm, which header, which reply (sans-IO)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ...errors import RemoteProtocolError
from ...sip.message import Request
from .. import ReplySpec
from .digest import (
    AuthResult,
    DigestAuth,
    Ha1Lookup,
    Verdict,
    base_algorithm,
    parse_credentials,
    parse_digest,
)
from .params import AuthParams


class Ha1Source(Protocol):
    """Where HA1 values come from (the registrar store implements it)."""

    def get_ha1(self, username: str, domain: str, algorithm: str) -> str | None: ...


class Auth:
    """Digest authentication for one worker. `now` is wall-clock seconds (nonces must stay
    valid across workers and restarts, which a per-boot monotonic clock cannot promise)."""

    def __init__(self, params: AuthParams, secret: bytes, subscribers: Ha1Source,
                 **digest_kw) -> None:
        self.params = params
        self.subscribers = subscribers
        self.digest = DigestAuth(secret, algorithms=tuple(params.algorithms),
                                 nonce_expires_s=params.nonce_expires_s,
                                 nc_table_size=params.nc_table_size,
                                 qop_required=params.qop_required,
                                 check_uri=params.check_uri, **digest_kw)
        # is a URI served by this box (its domains, its addresses)? Set by the runtime glue;
        # lets a digest uri naming our address match an R-URI naming our domain
        self.same_server: Callable[[Any], bool] | None = None

    # -- decisions ----------------------------------------------------------------

    @staticmethod
    def domain_for(req: Request) -> str:
        """The subscriber's domain: To host for REGISTER, From host otherwise."""
        addr = req.to if req.method == "REGISTER" else req.from_
        return addr.uri.host_bare

    def realm_for(self, req: Request) -> str:
        return self.params.realm or self.domain_for(req)

    def needs_auth(self, req: Request, our_domains: list[str] | tuple[str, ...] = ()) -> bool:
        """Is this request subject to authentication by method and domain?"""
        if req.method.upper() not in (m.upper() for m in self.params.challenge_methods):
            return False
        domains = self.params.domains or list(our_domains)
        if not domains:
            return True
        return self.realm_for(req) in (d.lower() for d in domains)

    @staticmethod
    def is_proxy_auth(req: Request) -> bool:
        """407/Proxy-Authorization for everything but REGISTER (401/Authorization)."""
        return req.method != "REGISTER"

    # -- challenge and check --------------------------------------------------------

    def challenge(self, req: Request, now: float, *, stale: bool = False,
                  realm: str | None = None, proxy: bool | None = None) -> ReplySpec:
        proxy = self.is_proxy_auth(req) if proxy is None else proxy
        realm = realm or self.realm_for(req)
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        values = self.digest.challenge(realm, now, stale=stale)
        if proxy:
            return ReplySpec(407, "Proxy Authentication Required",
                             tuple((name, v) for v in values))
        return ReplySpec(401, "Unauthorized", tuple((name, v) for v in values))

    def check(self, req: Request, now: float, *, realm: str | None = None,
              proxy: bool | None = None, lookup: Ha1Lookup | None = None) -> Verdict:
        """Verify the request's credentials for `realm`. `lookup` overrides the subscriber
        source (the async path passes the HA1 it fetched beforehand)."""
        proxy = self.is_proxy_auth(req) if proxy is None else proxy
        realm = realm or self.realm_for(req)
        values = req.get_all("proxy-authorization" if proxy else "authorization")
        if lookup is None:
            # HA1 rows are keyed by (username, domain); the realm may differ from the domain
            source, domain = self.subscribers, self.domain_for(req)

            def lookup(username: str, _realm: str, algorithm: str) -> str | None:
                return source.get_ha1(username, domain, algorithm)

        return self.digest.verify(values, method=req.method, request_uri=req.uri_text,
                                  realm=realm, lookup=lookup, now=now,
                                  same_server=self.same_server)

    def wanted_ha1(self, req: Request, *, realm: str | None = None,
                   proxy: bool | None = None) -> tuple[str, str, str] | None:
        """(username, domain, base algorithm) of the HA1 row `check` will need, so that an
        async caller can fetch it first. None when there is nothing to look up."""
        proxy = self.is_proxy_auth(req) if proxy is None else proxy
        realm = realm or self.realm_for(req)
        for value in req.get_all("proxy-authorization" if proxy else "authorization"):
            try:
                c = parse_credentials(value)
            except RemoteProtocolError:
                continue
            if c.realm == realm:
                return c.username, self.domain_for(req), base_algorithm(c.algorithm)
        return None

    def reply_for(self, req: Request, verdict: Verdict, now: float, *,
                  realm: str | None = None, proxy: bool | None = None) -> ReplySpec | None:
        """The reply a failed check calls for; None when the verdict is OK."""
        r = verdict.result
        if r is AuthResult.OK:
            return None
        if r in (AuthResult.MALFORMED, AuthResult.URI_MISMATCH):
            return ReplySpec(400, "Bad Request" if r is AuthResult.MALFORMED
                             else "Bad Request (digest uri)")
        if r.is_failure and self.params.wrong_password_status == 403:
            return ReplySpec(403, "Forbidden")
        return self.challenge(req, now, stale=verdict.stale, realm=realm, proxy=proxy)

    def consume_credentials(self, req: Request, realm: str | None = None,
                            proxy: bool | None = None) -> int:
        """Remove our realm's credentials before relaying (the next hop must not see them).
        Returns how many values were removed."""
        proxy = self.is_proxy_auth(req) if proxy is None else proxy
        realm = realm or self.realm_for(req)
        key = "proxy-authorization" if proxy else "authorization"
        keep, removed = [], 0
        for h in req.headers:
            if h[0] == key:
                if _realm_of(h[2]) == realm:
                    removed += 1
                    continue
            keep.append(h)
        req.headers[:] = keep
        return removed


def _realm_of(value: str) -> str | None:
    """The realm of an Authorization value, also of one `check` refused; None if unreadable."""
    try:
        return parse_credentials(value).realm  # the check parsed it already: cached
    except RemoteProtocolError:
        pass
    try:
        return parse_digest(value)[1].get("realm")
    except RemoteProtocolError:
        return None
