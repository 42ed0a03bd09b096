"""[auth]: subscriber digest authentication (RFC 3261 22, RFC 7616, RFC 8760)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.schema import option, section


@section("auth")
@dataclass(frozen=True)
class AuthParams:
    """Digest authentication of subscribers (HA1 values in the registrar database)."""

    secret: str = option("", "key of the nonce HMAC, shared by all workers (at least 16 "
                         "characters); empty: generated once and kept on the data partition",
                         secret=True, reloadable=False)
    realm: str = option("", "realm of our challenges; empty: the domain of the To URI "
                        "(REGISTER) or the From URI (other requests)")
    algorithms: list[str] = option(default_factory=lambda: ["MD5"],
                                   doc="digest algorithms offered, preferred first, one "
                                   "challenge header each (MD5, MD5-sess, SHA-256, "
                                   "SHA-256-sess); many UAs (SIPp 3.6 among them) answer only "
                                   "the first header, so put SHA-256 first only when every "
                                   "phone supports RFC 8760")
    nonce_expires_s: float = option(300.0, "a nonce older than this is answered with a new "
                                    "challenge with stale=true", min=5, max=86400)
    nc_table_size: int = option(65536, "nonces whose highest nonce-count is remembered per "
                                "worker (replay protection); a forgotten nonce is refused "
                                "as stale unless nc=1", min=16, max=10000000)
    qop_required: bool = option(True, "refuse credentials without qop=auth (RFC 2069 style, "
                                "which cannot be protected against replays)")
    check_uri: bool = option(True, "the digest uri must name the Request-URI (400 otherwise)")
    challenge_methods: list[str] = option(
        default_factory=lambda: ["REGISTER", "INVITE", "MESSAGE", "SUBSCRIBE", "PUBLISH",
                                 "REFER", "NOTIFY"],
        doc="methods that must be authenticated (REGISTER with 401, others with 407)")
    domains: list[str] = option(default_factory=list,
                                doc="domains whose users must authenticate; empty: every "
                                "domain of [proxy] domains")
    wrong_password_status: int = option(401, "reply to wrong credentials: 401/407 "
                                        "(a new challenge) or 403", choices=(401, 403))
