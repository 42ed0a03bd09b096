"""SSL contexts for SIP over TLS, built from `[tls]`.

Certificates, keys and CA bundles are file paths or inline PEM text. OpenSSL reads a
certificate chain and key only from files, so inline ones are written to a private (0600)
temporary file that is removed right after loading; inline CA bundles are passed as data.
"""

from __future__ import annotations

import os
import ssl
from contextlib import contextmanager
from typing import Iterator

from ..config.sections import TlsParams
from ..errors import TransportError

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def is_inline_pem(value: str) -> bool:
    return value.lstrip().startswith("-----BEGIN")


@contextmanager
def _as_file(value: str) -> Iterator[str]:
    if not is_inline_pem(value):
        yield value
        return
    import tempfile  # here: every worker imports this module, few have inline PEM

    fd, path = tempfile.mkstemp(prefix="sipedge-tls-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(value)
        yield path
    finally:
        os.unlink(path)


def _load_chain(ctx: ssl.SSLContext, p: TlsParams) -> None:
    try:
        with _as_file(p.certificate) as cert, _as_file(p.private_key) as key:
            ctx.load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        where = "inline PEM" if is_inline_pem(p.certificate) else p.certificate
        raise TransportError(f"tls: cannot load certificate/key ({where}): {exc}") from None


def _load_cas(ctx: ssl.SSLContext, bundle: str) -> None:
    try:
        if is_inline_pem(bundle):
            ctx.load_verify_locations(cadata=bundle)
        else:
            ctx.load_verify_locations(cafile=bundle)
    except (OSError, ValueError) as exc:
        where = "inline PEM" if is_inline_pem(bundle) else bundle
        raise TransportError(f"tls: cannot load ca_bundle ({where}): {exc}") from None


def server_context(p: TlsParams) -> ssl.SSLContext:
    """For tls listeners: our certificate; client certificates asked for (`verify_peer`)
    or required (`require_certificate`) and verified against `ca_bundle`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[p.min_version]
    _load_chain(ctx, p)
    if p.require_certificate or p.verify_peer:
        if p.ca_bundle:
            _load_cas(ctx, p.ca_bundle)
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED if p.require_certificate else ssl.CERT_OPTIONAL
    return ctx


def client_context(p: TlsParams) -> ssl.SSLContext:
    """For outbound connections: the server is verified against `ca_bundle` (else the system
    CAs) and the name we connect to, unless `verify_server` is off. Our certificate, when
    configured, is offered to servers that ask for one."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = _VERSIONS[p.min_version]
    if p.verify_server:
        if p.ca_bundle:
            _load_cas(ctx, p.ca_bundle)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if p.certificate and p.private_key:
        _load_chain(ctx, p)
    return ctx
