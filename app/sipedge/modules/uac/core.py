"""uac_auth without I/O: given the request as the failure route holds it and the 401/407
that ended the round, decide whether and how to answer (credentials header(s), new CSeq).

Credentials come from the trunks (`[[uac.trunk]]`), found by the challenge's realm.
Every decision not to answer names its reason, so the glue can log it once per (realm,
reason) and let the reply go upstream unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from .digest import (
    ChallengeError,
    ChallengeMemory,
    Secret,
    UnsupportedChallenge,
    authorization,
    challenges_of,
    pick,
)


@dataclass(frozen=True, slots=True)
class Trunk:
    """Credentials of one upstream, shared by uac_auth, send_request and registrations."""

    name: str
    realm: str
    username: str
    password: str | None = None
    ha1: str | None = None
    outbound_proxy: str = ""

    def __repr__(self) -> str:
        return f"Trunk(name={self.name!r}, realm={self.realm!r}, username={self.username!r})"

    @property
    def secret(self) -> Secret:
        return Secret(self.username, self.password, self.ha1)


class Credentials:
    """The trunks by realm (exact, case-sensitive as RFC 7616 3.3 says realms compare)."""

    def __init__(self, trunks: list[Trunk] | tuple[Trunk, ...] = ()) -> None:
        self.trunks = list(trunks)
        self.by_realm: dict[str, Trunk] = {}
        self.by_name: dict[str, Trunk] = {}
        for t in self.trunks:
            self.by_realm.setdefault(t.realm, t)
            self.by_name[t.name] = t

    def for_realm(self, realm: str) -> Secret | None:
        t = self.by_realm.get(realm)
        return t.secret if t is not None else None


@dataclass(frozen=True, slots=True)
class Answer:
    """Add these headers and send the request again with CSeq `cseq`."""

    headers: tuple[tuple[str, str], ...]
    cseq: int
    realms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """Leave the reply as it is (it goes upstream). `reason` is one short phrase."""

    reason: str
    realm: str = ""
    malformed: bool = False


def answer(*, method: str, uri: str, body: bytes, status: int,
           reply_headers: list[tuple[str, str]], upstream_cseq: int, creds: Credentials,
           memory: ChallengeMemory, cnonce: str,
           only: Secret | None = None) -> Answer | NoAnswer:
    """Answer the challenges of a 401/407. `upstream_cseq` is the CSeq the challenged
    request carried on the wire; the answer uses the next one. `only`: use this credential
    whatever the realm (send_request(auth=...))."""
    if status not in (401, 407):
        return NoAnswer(f"status {status} is not a challenge")
    try:
        found, skipped = challenges_of(reply_headers)
    except ChallengeError as exc:
        return NoAnswer(exc.reason, malformed=True)
    if not found:
        return NoAnswer("no digest challenge we support" + (f" ({skipped[0]})" if skipped
                                                            else ""))
    out: list[tuple[str, str]] = []
    realms: list[str] = []
    missing = ""
    for ch in pick(found):
        secret = only or creds.for_realm(ch.realm)
        if secret is None:
            missing = missing or ch.realm
            continue
        if not memory.may_answer(ch):
            return NoAnswer("challenge repeated: credentials refused", ch.realm)
        try:
            value = authorization(ch, secret, method=method, uri=uri, cnonce=cnonce,
                                  nc=memory.next_nc(ch.nonce), body=body)
        except UnsupportedChallenge as exc:
            return NoAnswer(exc.reason, ch.realm)
        memory.answered_now(ch)
        out.append((ch.header_name, value))
        realms.append(ch.realm)
    if not out:
        return NoAnswer("no credentials for realm", missing)
    return Answer(tuple(out), upstream_cseq + 1, tuple(realms))


def strip_credentials(headers: list[list[str]], realms: tuple[str, ...] | set[str]) -> None:
    """Remove earlier Authorization / Proxy-Authorization values for these realms (a
    request carries one answer per realm)."""
    keep = []
    for h in headers:
        if h[0] in ("authorization", "proxy-authorization") and _realm_of(h[2]) in realms:
            continue
        keep.append(h)
    headers[:] = keep


def _realm_of(value: str) -> str | None:
    from ...errors import RemoteProtocolError
    from ..auth.digest import parse_digest

    try:
        return parse_digest(value)[1].get("realm")
    except RemoteProtocolError:  # not ours to replace
        return None


__all__ = ["Answer", "Credentials", "NoAnswer", "Trunk", "answer", "strip_credentials"]
