"""HTTP/1.1 client framing, sans-IO, on h11 (RFC 9112): request bytes out, response bytes in.

    data = build_request("GET", "/x", "example.com", [("Accept", "*/*")], b"")
    p = ResponseParser("GET", max_head_bytes=16384, max_body_bytes=1 << 20)
    p.feed(chunk) ...                  # until p.done; p.feed(b"") signals end of stream
    p.response                         # Response(status, reason, headers, body)
    p.keep_alive                       # may the connection be reused?

The framing itself (Content-Length, chunked, close-delimited; no body for HEAD, 1xx, 204
and 304) is h11's; this module keeps the project's small API on top of it, adds the size
bounds (head, body, header count) and maps h11's errors: a response that exceeds a limit
raises `HttpTooLarge`, anything malformed `HttpProtocolError`, a bad request argument
`ValueError`. Interim 1xx responses are skipped. `on_body` streams the body to a callback
instead of collecting it (the OTA channel download writes it to a file).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import h11

from ...errors import EdgeError

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class HttpError(EdgeError):
    """Root of the HTTP client's errors."""


class HttpProtocolError(HttpError):
    """The server sent something that is not HTTP/1.x."""


class HttpTooLarge(HttpError):
    """The response exceeds a configured size limit."""


@dataclass(frozen=True)
class Response:
    """An HTTP response. Unpacks as `(status, headers, body)`."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def header_dict(self) -> dict[str, str]:
        """Lower-case names; repeated headers joined with ", "."""
        out: dict[str, str] = {}
        for k, v in self.headers:
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return out

    @property
    def text(self) -> str:
        charset = "utf-8"
        ctype = self.header("content-type") or ""
        m = re.search(r"charset=\"?([A-Za-z0-9._-]+)", ctype)
        if m:
            charset = m.group(1)
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __iter__(self):
        return iter((self.status, self.headers, self.body))


def check_header(name: str, value: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"bad header name {name!r}")
    if any(c in value for c in "\r\n\x00"):
        raise ValueError(f"header {name} has a line break")


def build_request(method: str, target: str, host: str, headers: list[tuple[str, str]],
                  body: bytes | None) -> bytes:
    """Serialise a request. `Host` and `Content-Length` are added unless given."""
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"bad method {method!r}")
    if not target or any(c in target for c in " \r\n\x00"):
        raise ValueError(f"bad request target {target!r}")
    names = {k.lower() for k, _ in headers}
    hdrs: list[tuple[str, str]] = []
    if "host" not in names:
        hdrs.append(("Host", host))
    for k, v in headers:
        check_header(k, v)
        hdrs.append((k, v))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            hdrs.append(("Content-Length", str(len(body))))
    conn = h11.Connection(h11.CLIENT)
    try:
        out = conn.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        if body:
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError as exc:
        raise ValueError(f"bad request: {exc}") from None
    return out


class ResponseParser:
    """Incremental parser of one response (see the module doc)."""

    def __init__(self, method: str, *, max_head_bytes: int = 16384,
                 max_body_bytes: int = 1 << 20, max_headers: int = 100,
                 on_body: Callable[[bytes], None] | None = None) -> None:
        self.method = method.upper()
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.max_headers = max_headers
        self.on_body = on_body
        # h11 learns the method (HEAD has no body) from the request it "sent"; the bytes
        # themselves come from build_request() and are not used here.
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_bytes)
        self._conn.send(h11.Request(method=self.method, target="/", headers=[("Host", "h")]))
        self._conn.send(h11.EndOfMessage())
        self._received = 0
        self._body = bytearray()
        self._body_len = 0
        self._head: tuple[int, str, tuple[tuple[str, str], ...]] | None = None
        self._until_close = False
        self._done = False
        self._eof = False
        self.keep_alive = False
        self.response: Response | None = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def started(self) -> bool:
        """Has any byte of a response arrived (a reused connection that fails before this
        may be retried)?"""
        return self._received > 0

    @property
    def head(self) -> tuple[int, str, tuple[tuple[str, str], ...]] | None:
        """(status, reason, headers) once the final response head has arrived."""
        return self._head

    def feed(self, data: bytes) -> None:
        """Bytes from the connection; `b""` means the server closed it."""
        if self._done or self._eof:
            return
        if data and not self._received:
            data = data.lstrip(b"\r\n")  # stray CRLF before a response (RFC 9112 2.2)
            if not data:
                return
        self._received += len(data)
        self._eof = not data
        try:
            self._conn.receive_data(data)
            self._drain()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise HttpTooLarge(f"response head larger than {self.max_head_bytes} bytes") \
                    from None
            raise HttpProtocolError(f"bad response: {exc}") from None
        if self._eof and not self._done:
            raise HttpProtocolError("connection closed before the response was complete")

    def _drain(self) -> None:
        while not self._done:
            ev = self._conn.next_event()
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return
            if isinstance(ev, h11.InformationalResponse):
                if ev.status_code == 101:
                    raise HttpProtocolError("unexpected protocol switch")
                continue  # interim response: the final one follows
            if isinstance(ev, h11.Response):
                self._on_head(ev)
            elif isinstance(ev, h11.Data):
                self._append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                self._finish()
            elif isinstance(ev, h11.ConnectionClosed):
                return

    def _on_head(self, ev: h11.Response) -> None:
        hdrs = tuple((k.decode("latin-1"), v.decode("latin-1"))
                     for k, v in ev.headers.raw_items())
        if len(hdrs) > self.max_headers:
            raise HttpTooLarge(f"more than {self.max_headers} response headers")
        # h11 bounds only an incomplete head; a complete one that arrived at once is
        # measured here (status line + "name: value\r\n" lines + the blank line)
        size = 17 + len(ev.reason) + sum(len(k) + len(v) + 4 for k, v in hdrs) + 2
        if size > self.max_head_bytes:
            raise HttpTooLarge(f"response head larger than {self.max_head_bytes} bytes")
        self._head = (ev.status_code, ev.reason.decode("latin-1"), hdrs)
        minor = ev.http_version == b"1.1"
        conn = ",".join(v for k, v in hdrs if k.lower() == "connection").lower()
        tokens = {t.strip() for t in conn.split(",")}
        self.keep_alive = ("close" not in tokens) and (minor or "keep-alive" in tokens)
        te = ",".join(v for k, v in hdrs if k.lower() == "transfer-encoding").lower()
        lengths = [v.strip() for k, v in hdrs if k.lower() == "content-length"]
        no_body = self.method == "HEAD" or ev.status_code in (204, 304)
        if not no_body and not te and not lengths:
            self._until_close = True
            self.keep_alive = False
        if lengths and not no_body and not te:
            n = int(lengths[0])  # h11 has checked the value(s)
            if n > self.max_body_bytes:
                raise HttpTooLarge(f"response body of {n} bytes is larger than "
                                   f"{self.max_body_bytes}")

    def _append(self, data: bytes) -> None:
        if self._body_len + len(data) > self.max_body_bytes:
            raise HttpTooLarge(f"response body larger than {self.max_body_bytes} bytes")
        self._body_len += len(data)
        if self.on_body is not None:
            self.on_body(data)
        else:
            self._body += data

    def _finish(self) -> None:
        assert self._head is not None
        status, reason, hdrs = self._head
        self.response = Response(status, reason, hdrs, bytes(self._body))
        self._done = True
        trailing, _closed = self._conn.trailing_data
        if trailing or self._until_close:
            self.keep_alive = False  # bytes after the response: state of the link unknown
