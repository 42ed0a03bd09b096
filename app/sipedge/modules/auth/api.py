"""Script-facing auth calls (`ksr.auth.*` once wired).

`msg` is the script's RequestMsg (`.raw` is the Request, `.src_ip` the source address).
`now` is wall-clock seconds (nonces are checked by every worker and after restarts).
Failed logins are reported to the security module when one is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import ReplySpec
from .core import Auth
from .digest import AuthResult, Verdict


@dataclass(frozen=True)
class AuthOutcome:
    verdict: Verdict
    reply: ReplySpec | None  # None: authenticated, go on
    # authenticated: the (username, domain) row whose HA1 matched (it exists)
    subscriber: tuple[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.reply is None


def auth_challenge(auth: Auth, msg, now: float, *, realm: str | None = None,
                   proxy: bool | None = None, stale: bool = False) -> ReplySpec:
    """401 with WWW-Authenticate (REGISTER) or 407 with Proxy-Authenticate (others)."""
    return auth.challenge(msg.raw, now, realm=realm, proxy=proxy, stale=stale)


def _report(verdict: Verdict, msg, security, sec_now: float) -> None:
    if security is None:
        return
    if verdict.result.is_failure:
        security.auth_failed(msg.src_ip, verdict.username, sec_now)
    elif verdict.result is AuthResult.OK:
        security.auth_succeeded(msg.src_ip)


def auth_check(auth: Auth, msg, now: float, *, realm: str | None = None,
               proxy: bool | None = None, security=None,
               sec_now: float | None = None) -> AuthOutcome:
    """Verify the credentials; the outcome carries the reply for a failure (a challenge,
    with stale=true when the password was right but the nonce old or reused; 400 for
    malformed credentials; 403 for a wrong password if so configured). HA1 values are read
    synchronously from the subscriber source (an indexed SQLite read in WAL mode)."""
    verdict = auth.check(msg.raw, now, realm=realm, proxy=proxy)
    _report(verdict, msg, security, now if sec_now is None else sec_now)
    return AuthOutcome(verdict, auth.reply_for(msg.raw, verdict, now, realm=realm, proxy=proxy))


async def auth_check_async(auth: Auth, msg, now: float, store, *, realm: str | None = None,
                           proxy: bool | None = None, security=None,
                           sec_now: float | None = None) -> AuthOutcome:
    """`auth_check` with the HA1 fetched through an AsyncStore (never blocks the loop)."""
    req = msg.raw
    # which header and realm, decided once for the three steps below
    proxy = auth.is_proxy_auth(req) if proxy is None else proxy
    realm = realm or auth.realm_for(req)
    if not req.has("proxy-authorization" if proxy else "authorization"):
        # the first request of a client: no credentials, nothing to read (check's verdict)
        verdict = Verdict(AuthResult.NO_CREDENTIALS, realm=realm)
        _report(verdict, msg, security, now if sec_now is None else sec_now)
        return AuthOutcome(verdict, auth.reply_for(req, verdict, now, realm=realm, proxy=proxy))
    wanted = auth.wanted_ha1(req, realm=realm, proxy=proxy)
    ha1 = await store.get_ha1(*wanted) if wanted else None

    def lookup(username: str, _realm: str, algorithm: str) -> str | None:
        if wanted is None or (username, algorithm) != (wanted[0], wanted[2]):
            return None
        return ha1

    verdict = auth.check(req, now, realm=realm, proxy=proxy, lookup=lookup)
    _report(verdict, msg, security, now if sec_now is None else sec_now)
    if verdict.result is AuthResult.OK:  # only the HA1 of `wanted` can have matched
        return AuthOutcome(verdict, None, (wanted[0], wanted[1]) if wanted else None)
    return AuthOutcome(verdict, auth.reply_for(req, verdict, now, realm=realm, proxy=proxy))


def consume_credentials(auth: Auth, msg, *, realm: str | None = None,
                        proxy: bool | None = None) -> int:
    """Remove our credentials before relaying (Kamailio's consume_credentials)."""
    return auth.consume_credentials(msg.raw, realm=realm, proxy=proxy)
